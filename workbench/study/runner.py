"""Running a study: its stores, baselines first, then trials by one or several workers.

One worker runs in this process; ``workers`` > 1 start ``workbench worker`` processes that
share the study through its storage. The objective of one trial lives in ``objective.py``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import ModelError, StudyError
from workbench.provenance import code_version
from workbench.retrieval.cache import Cache
from workbench.retrieval.corpus import load_corpus
from workbench.retrieval.models import import_model_libraries
from workbench.retrieval.pipeline import ProgressCallback, Resources
from workbench.study.config import StudyConfig
from workbench.study.isolation import check_rerankers_against_splits
from workbench.study.objective import (  # noqa: F401  (the trial attributes are part of this module's interface)
    BASELINE_ATTR,
    CONFIG_ATTR,
    DUPLICATE_ATTR,
    LATENCY_KEY,
    METRICS_ATTR,
    WORSE_ATTR,
    Objective,
    best_baseline_value,
    trial_config,
)
from workbench.study.log import LOG_NAME, study_log
from workbench.study.space import BASELINES, key_of_value, space_points
from workbench.study.splits import study_splits
from workbench.study.storage import check_storage_url, journal_url, open_storage, storage_exists
from workbench.study.tracking import StudyTracker, sqlite_uri
from workbench.study.workers import (  # noqa: F401
    FAIL_ATTR,
    TARGET_ATTR,
    OrphanedTrialHandler,
    TrialProgress,
    fail_dead_local_trials,
    start_local_workers,
    supervise_local_workers,
    trial_counts,
    work_on_study,
    worker_label,
)

CORPUS_ATTR = "workbench.corpus_fingerprint"  # study attr: the corpus every worker must have


@dataclass(frozen=True)
class StudyLocations:
    """Where a study keeps its state: Optuna storage, MLflow store, outputs."""

    storage_url: str
    tracking_uri: str
    output_dir: Path
    cache_dir: Path

    @property
    def log_file(self) -> Path:
        """The study's log: Optuna's messages and the traceback of every failed trial."""
        return self.output_dir / LOG_NAME


def _default_storage(state_dir: Path) -> str:
    """Returns the state folder's journal file, or its sqlite file where an older workbench left one."""
    journal, sqlite = state_dir / "optuna.journal", state_dir / "optuna.db"
    return sqlite_uri(sqlite) if sqlite.is_file() and not journal.exists() else journal_url(journal)


def study_locations(
    config: StudyConfig, state_dir: Path, storage: str | None = None, tracking_uri: str | None = None
) -> StudyLocations:
    """Returns the study's locations: flags win over the study file, which wins over the state-folder defaults."""
    state_dir = state_dir.resolve()
    return StudyLocations(
        storage_url=storage or config.storage or _default_storage(state_dir),
        tracking_uri=tracking_uri or config.tracking_uri or sqlite_uri(state_dir / "mlflow.db"),
        output_dir=state_dir / "studies" / config.name,
        cache_dir=state_dir / "cache",
    )


def _sampler(config: StudyConfig, seed: int):
    import optuna

    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar (Optuna 5's default, stated here): running trials count as bad, so parallel workers spread out.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _pruner(config: StudyConfig):
    import optuna

    if config.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if config.pruner == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1)
    return optuna.pruners.NopPruner()


def load_optuna_study(
    config: StudyConfig,
    locations: StudyLocations,
    create: bool = False,
    on_orphan: OrphanedTrialHandler | None = None,
    sampler_seed: int | None = None,
):
    """Returns the study from its storage; creates it when ``create``; raises ``StudyError`` otherwise.

    ``on_orphan`` is called for each trial a database's heartbeat check finds abandoned.
    The sampler is seeded with ``sampler_seed``, by default the study's seed.
    """
    seed = config.seed if sampler_seed is None else sampler_seed
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    missing = StudyError(f"no study named '{config.name}' in {locations.storage_url}: run `workbench run` first")
    if not create and not storage_exists(locations.storage_url):
        raise missing  # opening would fail in a missing folder, or leave an empty file behind
    storage = open_storage(locations.storage_url, config.heartbeat_s, on_orphan)
    directions = ["maximize", "minimize"] if config.second_objective == "latency" else ["maximize"]
    if create:
        return optuna.create_study(
            study_name=config.name,
            storage=storage,
            sampler=_sampler(config, seed),
            pruner=_pruner(config),
            directions=directions,
            load_if_exists=True,
        )
    try:
        return optuna.load_study(
            study_name=config.name, storage=storage, sampler=_sampler(config, seed), pruner=_pruner(config)
        )
    except KeyError:
        raise missing from None


def enqueue_baselines(study) -> list[str]:
    """Queues the BM25-only and dense-only baselines unless the study already has them; returns those queued.

    A baseline that failed (e.g. interrupted by Ctrl-C) does not count: it is queued again.
    """
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    present = {trial.user_attrs.get(BASELINE_ATTR) for trial in study.get_trials(deepcopy=False, states=states)}
    queued = [name for name in BASELINES if name not in present]
    for name in queued:
        study.enqueue_trial({}, user_attrs={BASELINE_ATTR: name})
    return queued


@dataclass(frozen=True)
class StudyOutcome:
    study: Any  # optuna.Study
    locations: StudyLocations
    tracker: StudyTracker
    resources: Resources
    interrupted: bool


def check_space_models(config: StudyConfig, source: str) -> None:
    """Loads every model the study can use (dense models, their tokenizers, re-rankers, the dense baseline's model).

    Run before the first trial, so that a model that cannot load stops the study at once. Raises
    ``ModelError`` naming ``source`` (the study file) and the study key that named the model.
    """
    from workbench.retrieval.pipeline import load_models

    checked: set[tuple] = set()
    for point in space_points(config.space):
        pipeline = point.config
        uses = (pipeline.fusion.uses_dense, pipeline.chunking.kind, pipeline.dense.model, pipeline.rerank.model)
        if uses in checked:
            continue  # the loaders keep only a few models: do not load one twice
        checked.add(uses)
        try:
            load_models(point.config)
        except ModelError as error:
            key = key_of_value(config.space, error.model, "model", point.params)
            raise ModelError(f"{source}: {key}: {error}", error.model) from None


def _study_progress(write: Callable[[str], None]) -> ProgressCallback:
    reported: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        step = int(4 * done / max(total, 1))
        if reported.get(stage) != step or done == total:
            reported[stage] = step
            write(f"  {stage}: {done}/{total}")

    return progress


def _work_here(study, objective: Objective, storage_url: str, on_orphan, timeout_s: float | None, on_trial_end=None):
    """This process' share of a study: trials until the objective's target or the timeout."""
    deadline = time.time() + timeout_s if timeout_s else None
    work_on_study(study, objective, objective.target, storage_url, on_orphan, deadline, on_trial_end)


def run_study(
    config: StudyConfig,
    state_dir: Path,
    n_trials: int | None = None,
    timeout_s: float | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    show_progress: bool = True,
    workers: int = 1,
    study_file: Path | None = None,
) -> StudyOutcome:
    """Runs (or resumes) a study until it has ``n_trials`` finished trials or the timeout passes.

    With ``workers`` > 1, that many ``workbench worker`` processes (reading ``study_file``)
    share the study and the cache. Returns the outcome; Ctrl-C stops after marking the running
    trials failed, and the next call resumes. Raises ``CorpusError``/``ConfigError``/``StudyError``
    before any trial on unusable input.
    """
    import_model_libraries()  # before anything is opened: a Ctrl-C in here only ends the process
    corpus = load_corpus(config.corpus)
    splits = study_splits(config, corpus)  # unknown or overlapping splits fail here, before any trial
    rerankers = config.space.rerank.model
    reranker_warnings = check_rerankers_against_splits(
        rerankers if isinstance(rerankers, list) else [rerankers], corpus, splits
    )
    check_space_models(config, str(study_file or f"study '{config.name}'"))
    locations = study_locations(config, state_dir, storage, tracking_uri)
    check_storage_url(locations.storage_url, workers)
    if workers > 1 and study_file is None:
        raise StudyError("several workers need the study file they read")
    locations.output_dir.mkdir(parents=True, exist_ok=True)
    tracker = StudyTracker(locations.tracking_uri, config.name, artifact_root=state_dir / "mlflow-artifacts")
    on_orphan = OrphanedTrialHandler(tracker)
    study = load_optuna_study(config, locations, create=True, on_orphan=on_orphan)
    tracker.log_study_settings(
        {
            "corpus": str(config.corpus),
            "tune_split": config.tune_split,
            "tune_queries": len(splits.tune.queries),
            "heldout_split": splits.heldout.name if splits.heldout else "none",
            "heldout_queries": len(splits.heldout.queries) if splits.heldout else 0,
            "metric": config.metric,
            "second_objective": config.second_objective,
            "sampler": config.sampler,
            "seed": config.seed,
        },
        {"workbench.corpus_fingerprint": corpus.fingerprint, "workbench.code_version": code_version()},
    )
    fail_dead_local_trials(study, locations.storage_url, on_orphan)  # left by an earlier run that was killed
    enqueue_baselines(study)
    target = n_trials or config.n_trials
    study.set_user_attr(TARGET_ATTR, target)
    study.set_user_attr(CORPUS_ATTR, corpus.fingerprint)
    resources = Resources(corpus, Cache(locations.cache_dir), _study_progress(tqdm_write))
    for warning in reranker_warnings:
        tqdm_write(warning)
    timeout = timeout_s or config.timeout_s
    interrupted = False
    if trial_counts(study)[0] < target:
        tracker.reopen_study()
        progress = TrialProgress(
            target, config.metric, enabled=show_progress, study=study, log_path=locations.log_file
        )
        try:
            if workers > 1:
                local_workers = start_local_workers(
                    workers,
                    study_file,
                    state_dir,
                    locations.storage_url,
                    locations.tracking_uri,
                    locations.output_dir / "workers",
                    timeout,
                )
                progress.write(f"{workers} workers started; logs in {locations.output_dir / 'workers'}")
                supervise_local_workers(local_workers, study, locations.storage_url, on_orphan, progress)
            else:
                objective = Objective(config, corpus, resources, tracker, locations.output_dir, target)
                with study_log(locations.log_file):
                    _work_here(
                        study,
                        objective,
                        locations.storage_url,
                        on_orphan,
                        timeout,
                        lambda study, trial: progress.update(study),
                    )
        except KeyboardInterrupt:
            interrupted = True
            if workers == 1:
                tracker.fail_running_trials(worker_label(), "KeyboardInterrupt: the study was interrupted")
        finally:
            progress.update(study)
            progress.close()
            tracker.finish_study(interrupted)
    return StudyOutcome(study, locations, tracker, resources, interrupted)


def run_worker(
    config: StudyConfig,
    state_dir: Path,
    timeout_s: float | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    on_trial_end: Callable[[Any, Any], None] | None = None,
) -> Any:
    """Joins an existing study (made by ``run_study``) and runs trials until it has its target.

    Each worker seeds its sampler from the study's seed and its own name, so workers started
    together do not propose the same points; a study run by several workers is therefore not
    reproducible trial by trial. ``on_trial_end(study, trial)`` follows each of this worker's trials.
    Returns the study. Raises ``StudyError`` when the study does not exist yet.
    Ctrl-C raises ``KeyboardInterrupt`` after the running trial is marked failed.
    """
    import_model_libraries()
    corpus = load_corpus(config.corpus)
    check_space_models(config, f"study '{config.name}'")
    locations = study_locations(config, state_dir, storage, tracking_uri)
    tracker = StudyTracker(locations.tracking_uri, config.name, artifact_root=state_dir / "mlflow-artifacts")
    on_orphan = OrphanedTrialHandler(tracker)
    label_digest = hashlib.sha256(f"{config.seed}:{worker_label()}".encode()).digest()
    study = load_optuna_study(
        config, locations, on_orphan=on_orphan, sampler_seed=int.from_bytes(label_digest[:4], "big")
    )
    target = int(study.user_attrs.get(TARGET_ATTR, config.n_trials))
    expected = study.user_attrs.get(CORPUS_ATTR)
    if expected is not None and expected != corpus.fingerprint:
        raise StudyError(
            f"{config.corpus}: this corpus differs from the one study '{config.name}' was started on "
            f"(fingerprint {corpus.fingerprint[:12]}, expected {expected[:12]}); every worker needs the same corpus"
        )
    resources = Resources(corpus, Cache(locations.cache_dir), _study_progress(tqdm_write))
    objective = Objective(config, corpus, resources, tracker, locations.output_dir, target)
    try:
        with study_log(locations.log_file):
            _work_here(study, objective, locations.storage_url, on_orphan, timeout_s or config.timeout_s, on_trial_end)
    except KeyboardInterrupt:
        tracker.fail_running_trials(worker_label(), "KeyboardInterrupt: the worker was interrupted")
        raise
    return study


def tqdm_write(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message)
