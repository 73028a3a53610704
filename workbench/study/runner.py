"""Running a study: baselines first, then trials by one or several workers, then nested studies.

One worker runs in this process; ``workers`` > 1 start ``workbench worker`` processes that
share the study through its storage. The fold studies of cross-validation and the searches of
tuned baselines (``nested.py``) follow, run by the same workers; what they leave, this process
finishes. The objective of one trial lives in
``objective.py``, the study's inputs and stores in ``session.py``.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import ModelError, StudyError
from workbench.progress import stage_lines
from workbench.provenance import code_version
from workbench.retrieval.models import import_model_libraries
from workbench.study.attributes import CODE_VERSION_TAG, CORPUS_ATTR, EXHAUSTED_ATTR, HELDOUT_MODE_ATTR, TARGET_ATTR
from workbench.study.config import StudyConfig
from workbench.study.isolation import check_trained_models_against_splits
from workbench.study.log import study_log
from workbench.study.nested import (
    check_tuning_queries,
    join_nested_studies,
    prepare_nested_studies,
    run_nested_studies,
)
from workbench.study.objective import Objective
from workbench.study.optuna_study import enqueue_baselines
from workbench.study.session import StudySession
from workbench.study.space import key_of_model, space_models, space_points
from workbench.study.storage import check_storage_url
from workbench.study.workers import (
    FollowedStudy,
    TrialProgress,
    fail_dead_local_trials,
    start_local_workers,
    supervise_local_workers,
    study_done,
    work_on_study,
    worker_label,
)


@dataclass(frozen=True)
class StudyOutcome:
    session: StudySession
    study: Any  # optuna.Study
    interrupted: bool


def check_space_models(config: StudyConfig, source: str) -> None:
    """Loads every model the study can use (dense models, their tokenizers, re-rankers, the dense baseline's model).

    Run before the first trial, so that a model that cannot load stops the study at once. Raises
    ``ModelError`` naming ``source`` (the study file) and the study key that named the model.
    """
    from workbench.retrieval.components import component_of
    from workbench.retrieval.pipeline import load_models

    checked: set[tuple] = set()
    for point in space_points(config.space):
        pipeline = point.config
        stage_models = tuple(  # the first stages that load a model, their names set aside
            r.model_copy(update={"name": r.kind}) for r in pipeline.retrievers if component_of(r).models(r)
        )
        component_models = [  # the chunker's and re-ranker's models
            tuple(component_of(part).models(part).items()) for part in (pipeline.chunking, pipeline.rerank)
        ]
        uses = (stage_models, *component_models)
        if uses in checked:
            continue  # the loaders keep only a few models: do not load one twice
        checked.add(uses)
        try:
            load_models(pipeline)
        except ModelError as error:
            raise ModelError(f"{source}: {key_of_model(config.space, error.model)}: {error}", error.model) from None


def _work_here(study, objective: Objective, session: StudySession, deadline: float | None, on_trial_end=None):
    """This process' share of a study: trials until the objective's target or ``deadline`` (epoch seconds)."""
    work_on_study(
        study,
        objective,
        objective.target,
        session.locations.storage_url,
        session.on_orphan,
        deadline,
        on_trial_end,
        objective.space_exhausted,
    )


def _followed_studies(session: StudySession, study, target: int, nested, show_progress: bool) -> list[FollowedStudy]:
    """The study, then its nested studies, each with the progress bar shown while the workers are on it."""
    metric = session.config.metric
    followed = [
        FollowedStudy(
            study,
            target,
            lambda: TrialProgress(target, metric, show_progress, study=study, log_path=session.locations.log_file),
        )
    ]
    for goal, one in nested:
        progress = functools.partial(TrialProgress, goal.target, metric, show_progress, label=goal.name)
        followed.append(FollowedStudy(one, goal.target, progress))
    return followed


def _objective(session: StudySession, target: int) -> Objective:
    return Objective(
        session.config, session.splits.tune, session.resources, session.tracker, session.locations.output_dir, target
    )


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
    session = StudySession(config, state_dir, storage, tracking_uri, stage_lines(tqdm_write))
    session.check_cache()
    splits, locations = session.splits, session.locations
    trained_model_warnings = check_trained_models_against_splits(
        [model for models in space_models(config.space).values() for model in models], session.corpus, splits
    )
    check_space_models(config, str(study_file or f"study '{config.name}'"))
    check_storage_url(locations.storage_url, workers)
    if workers > 1 and study_file is None:
        raise StudyError("several workers need the study file they read")
    locations.output_dir.mkdir(parents=True, exist_ok=True)
    tracker = session.tracker
    study = session.optuna_study(create=True)
    check_tuning_queries(study, splits.tune)
    tracker.log_study_settings(
        {
            "corpus": str(config.corpus),
            "tune_split": config.tune_split,
            "tune_queries": len(splits.tune.queries),
            "heldout_split": splits.heldout.name if splits.heldout else "none",
            "heldout_queries": len(splits.heldout.queries) if splits.heldout else 0,
            "heldout": splits.mode,
            "folds": len(splits.folds),
            "baselines": config.baselines,
            "metric": config.metric,
            "second_objective": config.second_objective,
            "sampler": config.sampler,
            "seed": config.seed,
        },
        {CORPUS_ATTR: session.corpus.fingerprint, CODE_VERSION_TAG: code_version()},
    )
    fail_dead_local_trials(study, locations.storage_url, session.on_orphan)  # left by an earlier run that was killed
    enqueue_baselines(study)
    target = n_trials or config.n_trials
    study.set_user_attr(TARGET_ATTR, target)
    study.set_user_attr(EXHAUSTED_ATTR, "")  # found again by the search if the space is still exhausted
    study.set_user_attr(CORPUS_ATTR, session.corpus.fingerprint)
    study.set_user_attr(HELDOUT_MODE_ATTR, splits.mode)
    for warning in [*trained_model_warnings, *splits.warnings()]:
        tqdm_write(warning)
    if splits.folds:
        sizes = sorted({len(fold.heldout.queries) for fold in splits.folds})
        tqdm_write(
            f"{len(splits.folds)}-fold cross-validation over {len(splits.tune.queries)} judged queries of "
            f"'{config.tune_split}' ({'/'.join(map(str, sizes))} per fold): the study '{config.name}' tunes on all "
            f"of them (its best config is exported), then {len(splits.folds)} fold studies judge the search"
        )
    timeout = timeout_s or config.timeout_s
    deadline = time.time() + timeout if timeout else None
    interrupted = False
    tracker.reopen_study()
    try:
        nested = prepare_nested_studies(config, splits, session.stores, target)  # before any worker joins them
        goals = [(study, target), *((one, goal.target) for goal, one in nested)]
        if workers > 1 and any(not study_done(one, goal) for one, goal in goals):
            local_workers = start_local_workers(
                workers,
                study_file,
                session.state_dir,
                locations.storage_url,
                locations.tracking_uri,
                locations.output_dir / "workers",
                timeout,
                cache=config.cache,
                ray=config.ray,
            )
            tqdm_write(f"{workers} workers started; logs in {locations.output_dir / 'workers'}")
            followed = _followed_studies(session, study, target, nested, show_progress)
            supervise_local_workers(local_workers, followed, locations.storage_url, session.on_orphan, tqdm_write)
        elif not study_done(study, target):
            progress = TrialProgress(
                target, config.metric, enabled=show_progress, study=study, log_path=locations.log_file
            )
            try:
                with study_log(locations.log_file):
                    _work_here(
                        study,
                        _objective(session, target),
                        session,
                        deadline,
                        lambda study, trial: progress.update(study),
                    )
            finally:
                progress.update(study)
                progress.close()
        if exhausted := study.user_attrs.get(EXHAUSTED_ATTR):
            tqdm_write(f"search space exhausted: {exhausted}")
        # What the workers left of the nested studies (folds, tuned baselines) runs here, in this process.
        with study_log(locations.log_file):
            run_nested_studies(nested, session.stores, deadline, show_progress, tqdm_write)
    except KeyboardInterrupt:
        interrupted = True
        if workers == 1:
            tracker.fail_running_trials(worker_label(), "KeyboardInterrupt: the study was interrupted")
    finally:
        tracker.finish_study(interrupted)
    return StudyOutcome(session, study, interrupted)


def run_worker(
    config: StudyConfig,
    state_dir: Path,
    timeout_s: float | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    on_trial_end: Callable[[Any, Any], None] | None = None,
) -> Any:
    """Joins an existing study (made by ``run_study``) and runs trials until it has its target, then does the
    same for each nested study ``run_study`` prepared (``nested.join_nested_studies``).

    Each worker seeds its sampler from the study's seed and its own name, so workers started
    together do not propose the same points; a study run by several workers is therefore not
    reproducible trial by trial. ``on_trial_end(study, trial)`` follows each of this worker's trials.
    Returns the study. Raises ``StudyError`` when the study does not exist yet.
    Ctrl-C raises ``KeyboardInterrupt`` after the running trial is marked failed.
    """
    import_model_libraries()
    check_space_models(config, f"study '{config.name}'")
    session = StudySession(config, state_dir, storage, tracking_uri, stage_lines(tqdm_write))
    session.check_cache()
    label_digest = hashlib.sha256(f"{config.seed}:{worker_label()}".encode()).digest()
    sampler_seed = int.from_bytes(label_digest[:4], "big")
    study = session.optuna_study(sampler_seed=sampler_seed)
    check_tuning_queries(study, session.splits.tune)
    target = int(study.user_attrs.get(TARGET_ATTR, config.n_trials))
    expected = study.user_attrs.get(CORPUS_ATTR)
    if expected is not None and expected != session.corpus.fingerprint:
        raise StudyError(
            f"{config.corpus}: this corpus differs from the one study '{config.name}' was started on "
            f"(fingerprint {session.corpus.fingerprint[:12]}, expected {expected[:12]}); every worker needs the same corpus"
        )
    timeout = timeout_s or config.timeout_s
    deadline = time.time() + timeout if timeout else None
    try:
        with study_log(session.locations.log_file):
            _work_here(study, _objective(session, target), session, deadline, on_trial_end)
            join_nested_studies(
                config, session.splits, session.stores, target, sampler_seed, deadline, on_trial_end
            )
    except KeyboardInterrupt:
        session.tracker.fail_running_trials(worker_label(), "KeyboardInterrupt: the worker was interrupted")
        raise
    return study


def tqdm_write(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message)
