"""Studies inside a study: the folds of cross-validation, and the searches of tuned baselines.

With k folds (``heldout = "kfold"``), fold k's study ``<name>-fold-<k>`` tunes on the other folds'
queries only, with the study's space, trial budget and seed (a worker's own seed under
``--workers``); the config it chooses is then scored
on fold k's queries. Every judged query so gets one held-out score from a config that never saw
it, and the verdict runs over all of them. The study ``<name>`` itself tunes on every judged query;
its best config is the one exported.

With ``baselines = "tuned"``, BM25-only and dense-only get searches of their own over the part of
the space that uses that retriever alone (``baseline_space``), ``baseline_trials`` trials each:
``<name>-bm25`` and ``<name>-dense`` with a held-out split, ``<name>-fold-<k>-bm25`` … inside each fold.

Every nested study shares the study's storage and its ``Resources`` (indexes, disk cache), so only
the first one pays for encoding. They log no MLflow runs of their own: the study's parent run gets
their summary (per-fold choices and the cross-validated figures). Judging what they chose lives
in ``crossval.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from workbench.errors import StudyError
from workbench.retrieval.pipeline import Resources
from workbench.study.attributes import EXHAUSTED_ATTR, TARGET_ATTR, TUNE_QUERIES_ATTR
from workbench.study.config import StudyConfig
from workbench.study.objective import Objective
from workbench.study.optuna_study import StudyLocations, enqueue_baselines, load_optuna_study
from workbench.study.space import BASELINES, baseline_space
from workbench.study.splits import StudySplits, query_digest
from workbench.study.workers import OrphanedTrialHandler, TrialProgress, study_done, trial_counts, work_on_study
from workbench.types import QuerySet


@dataclass(frozen=True)
class StudyStores:
    """What a study and its nested studies share: where their state lives, the indexes and disk
    cache (``Resources``), and the handler that closes a dead worker's trial."""

    locations: StudyLocations
    resources: Resources
    on_orphan: OrphanedTrialHandler


@dataclass(frozen=True)
class NestedStudy:
    """One study run inside a study: a fold's search, or a tuned baseline's."""

    config: StudyConfig  # the study's config under the nested study's name (and a baseline's space)
    tune: QuerySet  # the only queries its trials search
    heldout: QuerySet  # what its choice is judged on
    target: int  # finished trials to reach
    fold: int | None  # fold number; None with a held-out split
    baseline: str | None  # "bm25" or "dense" for a tuned baseline's search

    @property
    def name(self) -> str:
        return self.config.name


def nested_studies(config: StudyConfig, splits: StudySplits, target: int) -> list[NestedStudy]:
    """Returns the nested studies a study needs, in the order they run: per fold, the fold's search
    and its tuned baselines; with a held-out split, the tuned baselines only (if any)."""
    tuned = BASELINES if config.baselines == "tuned" else ()

    def searches(prefix: str, tune: QuerySet, heldout: QuerySet, fold: int | None, main: bool) -> list[NestedStudy]:
        found = (
            [NestedStudy(config.model_copy(update={"name": prefix}), tune, heldout, target, fold, None)] if main else []
        )
        for baseline in tuned:
            space = baseline_space(baseline, config.space)
            restricted = config.model_copy(update={"name": f"{prefix}-{baseline}", "space": space})
            found.append(NestedStudy(restricted, tune, heldout, config.baseline_trials, fold, baseline))
        return found

    if splits.folds:
        return [
            nested
            for fold in splits.folds
            for nested in searches(f"{config.name}-fold-{fold.number}", fold.tune, fold.heldout, fold.number, True)
        ]
    if splits.heldout is None:
        return []
    return searches(config.name, splits.tune, splits.heldout, None, False)


def check_tuning_queries(study, tune: QuerySet) -> None:
    """Records on ``study`` which queries it tunes on, or checks them against the record.

    Raises ``StudyError`` when the study was tuned on other queries (the held-out mode, folds,
    seed or splits changed since): resuming it would mix trials scored on different queries,
    and a fold's trials might have seen its held-out queries.
    """
    digest = query_digest(tune.queries)
    recorded = study.user_attrs.get(TUNE_QUERIES_ATTR)
    if recorded is None:
        study.set_user_attr(TUNE_QUERIES_ATTR, digest)
    elif recorded != digest:
        raise StudyError(
            f"study '{study.study_name}' was tuned on other queries than its {len(tune.queries)} queries of "
            f"'{tune.name}' now (heldout, folds, seed or the splits changed since it ran); "
            "give the study a new name, or use a fresh --state-dir"
        )


def open_nested_study(nested: NestedStudy, stores: StudyStores, create: bool = False, sampler_seed: int | None = None):
    """Returns the nested study's Optuna study; raises ``StudyError`` when it does not exist and not ``create``."""
    return load_optuna_study(nested.config, stores.locations, create, stores.on_orphan, sampler_seed)


def prepare_nested_studies(
    config: StudyConfig, splits: StudySplits, stores: StudyStores, target: int
) -> list[tuple[NestedStudy, Any]]:
    """Creates (or reopens) every nested study of the study with its baselines queued and its target set;
    returns each with its Optuna study, in the order they run.

    Done by `workbench run` alone, before any worker joins them: two workers queueing the same
    baselines would run them twice. Raises ``StudyError`` when one was tuned on other queries.
    """
    prepared = []
    for nested in nested_studies(config, splits, target):
        study = open_nested_study(nested, stores, create=True)
        check_tuning_queries(study, nested.tune)
        enqueue_baselines(study, (nested.baseline,) if nested.baseline else BASELINES)
        study.set_user_attr(TARGET_ATTR, nested.target)
        study.set_user_attr(EXHAUSTED_ATTR, "")
        prepared.append((nested, study))
    return prepared


def _work_on(
    nested: NestedStudy, study, stores: StudyStores, deadline: float | None, on_trial_end: Callable | None
) -> None:
    objective = Objective(
        nested.config, nested.tune, stores.resources, None, stores.locations.output_dir, nested.target
    )
    work_on_study(
        study,
        objective,
        nested.target,
        stores.locations.storage_url,
        stores.on_orphan,
        deadline,
        on_trial_end,
        objective.space_exhausted,
    )


def run_nested_studies(
    prepared: list[tuple[NestedStudy, Any]],
    stores: StudyStores,
    deadline: float | None = None,
    show_progress: bool = True,
    write: Callable[[str], None] = print,
) -> None:
    """Runs (or resumes) the nested studies ``prepare_nested_studies`` returned until each has its trials,
    or ``deadline`` passes.

    Ctrl-C raises ``KeyboardInterrupt``; the next run resumes where this one stopped.
    """
    pending = [(nested, study) for nested, study in prepared if not study_done(study, nested.target)]
    if pending:
        write(f"{len(pending)} nested studies: " + ", ".join(nested.name for nested, _ in pending))
    for nested, study in pending:
        if deadline is not None and time.time() >= deadline:
            return
        progress = TrialProgress(nested.target, nested.config.metric, enabled=show_progress, label=nested.name)
        try:
            _work_on(nested, study, stores, deadline, lambda study, trial, progress=progress: progress.update(study))
        finally:
            progress.update(study)
            progress.close()


def join_nested_studies(
    config: StudyConfig,
    splits: StudySplits,
    stores: StudyStores,
    target: int,
    sampler_seed: int,
    deadline: float | None = None,
    on_trial_end: Callable | None = None,
) -> None:
    """A worker's share of the nested studies `workbench run` prepared: works on each in turn until it
    has its trials, with the worker's own sampler seed. A nested study not prepared yet is left to
    `workbench run`, which runs whatever the workers did not."""
    for nested in nested_studies(config, splits, target):
        if deadline is not None and time.time() >= deadline:
            return
        try:
            study = open_nested_study(nested, stores, sampler_seed=sampler_seed)
        except StudyError:
            continue
        check_tuning_queries(study, nested.tune)
        if TARGET_ATTR not in study.user_attrs:
            continue  # created by a `workbench run` that stopped before preparing it
        goal = replace(nested, target=int(study.user_attrs[TARGET_ATTR]))  # what `workbench run` recorded
        if trial_counts(study)[0] < goal.target:
            _work_on(goal, study, stores, deadline, on_trial_end)
