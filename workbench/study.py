"""Running a study: baselines first, then define-by-run trials scored on the tuning split.

Each trial builds a pipeline from shared ``Resources`` (so indexes are built once per study),
scores it on the tuning split's judged queries, and is logged as a child run in MLflow.
The held-out split is never touched here.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.cache import Cache
from workbench.config import PipelineConfig, pipeline_config_from_dict, save_pipeline_config
from workbench.corpus import Corpus, load_corpus
from workbench.errors import StudyError
from workbench.evaluation import DEFAULT_METRICS, evaluate, parse_metric
from workbench.pipeline import Pipeline, ProgressCallback, Resources
from workbench.provenance import code_version
from workbench.splits import study_splits
from workbench.search_space import BASELINES, baseline_config, suggest_pipeline
from workbench.storage import check_storage_url, journal_url, open_storage, storage_exists
from workbench.study_config import StudyConfig
from workbench.tracking import StudyTracker, sqlite_uri
from workbench.workers import (
    FAIL_ATTR,
    MLFLOW_RUN_ATTR,
    TARGET_ATTR,
    WORKER_ATTR,
    OrphanedTrialHandler,
    TrialProgress,
    fail_dead_local_trials,
    is_surplus,
    start_local_workers,
    supervise_local_workers,
    work_on_study,
    worker_label,
)

CONFIG_ATTR = "workbench.config"
BASELINE_ATTR = "workbench.baseline"
METRICS_ATTR = "workbench.metrics"
WORSE_ATTR = "workbench.worse_than_baseline"
DUPLICATE_ATTR = "workbench.duplicate_of"
LATENCY_KEY = "latency_mean_ms"


@dataclass(frozen=True)
class StudyLocations:
    """Where a study keeps its state: Optuna storage, MLflow store, outputs."""

    storage_url: str
    tracking_uri: str
    output_dir: Path
    cache_dir: Path


def study_locations(
    config: StudyConfig, state_dir: Path, storage: str | None = None, tracking_uri: str | None = None
) -> StudyLocations:
    """Returns the study's locations: flags win over the study file, which wins over the state-folder defaults."""
    state_dir = state_dir.resolve()
    return StudyLocations(
        storage_url=storage or config.storage or journal_url(state_dir / "optuna.journal"),
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


def trial_config(trial) -> PipelineConfig:
    """Returns the pipeline config a finished trial ran with."""
    return pipeline_config_from_dict(trial.user_attrs[CONFIG_ATTR], source=f"trial {trial.number}")


def best_baseline_value(study) -> float | None:
    """Returns the best primary-metric value among the study's finished baseline trials."""
    import optuna

    values = [
        trial.values[0]
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if trial.user_attrs.get(BASELINE_ATTR)
    ]
    return max(values) if values else None


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


def _same_params_trial(trial):
    """Returns an earlier finished, non-baseline trial with exactly these parameters, if any."""
    import optuna

    for other in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if (
            other.params == trial.params
            and not other.user_attrs.get(BASELINE_ATTR)
            and METRICS_ATTR in other.user_attrs
        ):
            return other
    return None


class Objective:
    """Scores one trial: suggest (or take the baseline), build, search the tuning split, evaluate, log."""

    def __init__(
        self,
        config: StudyConfig,
        corpus: Corpus,
        resources: Resources,
        tracker: StudyTracker | None,
        output_dir: Path,
        target: int | None = None,
    ):
        self.config = config
        self.target = target
        self.corpus = corpus
        self.resources = resources
        self.tracker = tracker
        self.output_dir = output_dir
        self.metric = parse_metric(config.metric).name
        self.metrics = tuple(dict.fromkeys((self.metric, *DEFAULT_METRICS)))
        tune = study_splits(config, corpus).tune
        self.queries = tune.queries
        self.qrels = tune.qrels

    def __call__(self, trial) -> float | tuple[float, float]:
        import optuna

        trial.set_user_attr(WORKER_ATTR, worker_label())
        if self.target is not None and is_surplus(trial.study, trial.number, self.target):
            # Another worker started the last needed trial at the same moment as this one.
            trial.set_user_attr(FAIL_ATTR, f"surplus: the study already has {self.target} trials")
            raise StudyError(f"surplus trial: the study already has {self.target} finished or running trials")
        baseline = trial.user_attrs.get(BASELINE_ATTR)
        name = f"{self.config.name}-trial-{trial.number}"
        config = (
            baseline_config(baseline, self.config.space, name)
            if baseline
            else suggest_pipeline(trial, self.config.space, name)
        )
        trial.set_user_attr(CONFIG_ATTR, config.to_toml_dict())
        earlier = None if baseline else _same_params_trial(trial)
        run_id = None
        if self.tracker is not None:
            run_id = self.tracker.start_trial(
                trial.number,
                {
                    "workbench.baseline": baseline or "none",
                    "workbench.corpus_fingerprint": self.corpus.fingerprint,
                    "workbench.code_version": code_version(),
                    WORKER_ATTR: worker_label(),
                },
            )
            trial.set_user_attr(MLFLOW_RUN_ATTR, run_id)
        try:
            if earlier is not None:
                # TPE can propose a configuration it already scored; the result would be identical.
                values, metrics = tuple(earlier.values), dict(earlier.user_attrs[METRICS_ATTR])
                trial.set_user_attr(DUPLICATE_ATTR, earlier.number)
            else:
                values, metrics = self._score(config, trial if baseline is None else None)
        except optuna.TrialPruned as pruned:
            if run_id is not None:
                self.tracker.finish_trial(
                    run_id, "PRUNED", params=dict(trial.params), tags={"workbench.pruned": str(pruned)}
                )
            raise
        except BaseException as error:
            reason = f"{type(error).__name__}: {error}"
            trial.set_user_attr(FAIL_ATTR, reason)
            if run_id is not None:
                self.tracker.finish_trial(run_id, "FAIL", params=dict(trial.params), tags={FAIL_ATTR: reason[:5000]})
            raise
        trial.set_user_attr(METRICS_ATTR, metrics)
        baseline_value = best_baseline_value(trial.study)
        worse = baseline is None and baseline_value is not None and values[0] < baseline_value
        trial.set_user_attr(WORSE_ATTR, worse)
        if run_id is not None:
            config_path = self.output_dir / "trials" / f"trial-{trial.number}.toml"
            save_pipeline_config(config, config_path)
            self.tracker.finish_trial(
                run_id,
                "COMPLETE",
                params=dict(trial.params) or {"baseline": baseline},
                metrics=metrics,
                tags={WORSE_ATTR: str(worse).lower(), DUPLICATE_ATTR: earlier.number if earlier else "none"},
                artifacts=[config_path],
            )
        return values if len(values) > 1 else values[0]

    def _score(self, config: PipelineConfig, prunable_trial=None) -> tuple[tuple[float, ...], dict[str, float]]:
        encoding_before = self.resources.seconds_encoding
        started = time.perf_counter()
        pipeline = Pipeline(config, self.resources)
        build_seconds = time.perf_counter() - started
        started = time.perf_counter()
        if prunable_trial is not None and self.config.pruner != "none":
            run = self._search_with_pruning(pipeline, prunable_trial)
        else:
            run = pipeline.search(self.queries).run
        search_seconds = time.perf_counter() - started
        evaluation = evaluate(run, self.qrels, self.metrics)
        latency = pipeline.measure_latency(self.queries, self.config.latency_sample)
        metrics = {parse_metric(name).tracking_name: value for name, value in evaluation.means.items()}
        metrics |= latency
        metrics |= {
            "index_build_s": build_seconds,
            "encoding_s": self.resources.seconds_encoding - encoding_before,
            "search_s": search_seconds,
        }
        values = (evaluation.means[self.metric],)
        if self.config.second_objective == "latency":
            values += (latency[LATENCY_KEY],)
        return values, metrics

    def _search_with_pruning(self, pipeline: Pipeline, trial) -> dict:
        """Searches the tuning queries in seeded shuffled batches, reporting to the pruner after each.

        Every trial sees the same order, so the Wilcoxon pruner compares the same queries.
        The median pruner gets the running mean; the Wilcoxon pruner each query's score.
        Raises ``optuna.TrialPruned`` when the pruner gives up on the trial.
        """
        import optuna

        order = sorted(self.queries)
        random.Random(self.config.seed).shuffle(order)
        position = {query_id: index for index, query_id in enumerate(order)}
        batch_size = -(-len(order) // self.config.pruning_batches)
        run: dict = {}
        for step, start in enumerate(range(0, len(order), batch_size)):
            batch = order[start : start + batch_size]
            batch_run = pipeline.search({query_id: self.queries[query_id] for query_id in batch}).run
            run |= batch_run
            if self.config.pruner == "wilcoxon":
                scores = evaluate(batch_run, {q: self.qrels[q] for q in batch if q in self.qrels}, (self.metric,))
                for query_id, score in scores.per_query[self.metric].items():
                    trial.report(score, step=position[query_id])
            else:
                so_far = {q: self.qrels[q] for q in order[: start + len(batch)] if q in self.qrels}
                trial.report(evaluate(run, so_far, (self.metric,)).means[self.metric], step=step)
            if start + batch_size < len(order) and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {start + len(batch)} of {len(order)} tuning queries")
        return run


@dataclass(frozen=True)
class StudyOutcome:
    study: Any  # optuna.Study
    locations: StudyLocations
    tracker: StudyTracker
    resources: Resources
    interrupted: bool


def _study_progress(write: Callable[[str], None]) -> ProgressCallback:
    reported: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        step = int(4 * done / max(total, 1))
        if reported.get(stage) != step or done == total:
            reported[stage] = step
            write(f"  {stage}: {done}/{total}")

    return progress


def _finished_count(study) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


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
    corpus = load_corpus(config.corpus)
    splits = study_splits(config, corpus)  # unknown or overlapping splits fail here, before any trial
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
    resources = Resources(corpus, Cache(locations.cache_dir), _study_progress(tqdm_write))
    timeout = timeout_s or config.timeout_s
    interrupted = False
    if _finished_count(study) < target:
        tracker.reopen_study()
        progress = TrialProgress(target, config.metric, enabled=show_progress)
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
                work_on_study(
                    study,
                    objective,
                    target,
                    locations.storage_url,
                    on_orphan,
                    deadline=time.time() + timeout if timeout else None,
                    on_trial_end=lambda study, trial: progress.update(study),
                )
        except KeyboardInterrupt:
            interrupted = True
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
    corpus = load_corpus(config.corpus)
    locations = study_locations(config, state_dir, storage, tracking_uri)
    tracker = StudyTracker(locations.tracking_uri, config.name, artifact_root=state_dir / "mlflow-artifacts")
    on_orphan = OrphanedTrialHandler(tracker)
    label_digest = hashlib.sha256(f"{config.seed}:{worker_label()}".encode()).digest()
    study = load_optuna_study(
        config, locations, on_orphan=on_orphan, sampler_seed=int.from_bytes(label_digest[:4], "big")
    )
    target = int(study.user_attrs.get(TARGET_ATTR, config.n_trials))
    resources = Resources(corpus, Cache(locations.cache_dir), _study_progress(tqdm_write))
    objective = Objective(config, corpus, resources, tracker, locations.output_dir, target)
    timeout = timeout_s or config.timeout_s
    work_on_study(
        study,
        objective,
        target,
        locations.storage_url,
        on_orphan,
        deadline=time.time() + timeout if timeout else None,
        on_trial_end=on_trial_end,
    )
    return study


def tqdm_write(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message)
