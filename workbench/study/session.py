"""One study's session: config, corpus, query splits, locations, tracker and shared indexes, built once.

``workbench run``, ``worker``, ``export`` and ``report`` each open a ``StudySession`` and ask it for
the Optuna study, the objective, or the held-out verdict of a trial, so the set-up is written once.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from workbench.evaluation.heldout import HeldoutReport, evaluate_heldout
from workbench.progress import ProgressCallback
from workbench.retrieval.cache import Cache
from workbench.retrieval.cluster import RayCluster
from workbench.retrieval.config import PipelineConfig
from workbench.retrieval.corpus import Corpus, load_corpus
from workbench.retrieval.pipeline import Resources
from workbench.study.config import StudyConfig
from workbench.study.crossval import (
    cross_validate,
    default_baselines,
    tuned_baseline_configs,
    tuned_baseline_for_export,
)
from workbench.study.export import TrialVerdict, choose_trial
from workbench.study.objective import trial_config
from workbench.study.nested import StudyStores
from workbench.study.optuna_study import load_optuna_study, study_locations
from workbench.study.splits import StudySplits, study_splits
from workbench.study.tracking import StudyTracker
from workbench.study.workers import OrphanedTrialHandler


class StudySession:
    """A study's inputs and stores, opened once per command.

    Opening loads the corpus and computes the query splits, so unknown or overlapping splits fail
    before anything is written. The tracker (MLflow) opens on first use.
    """

    def __init__(
        self,
        config: StudyConfig,
        state_dir: Path,
        storage: str | None = None,
        tracking_uri: str | None = None,
        progress: ProgressCallback | None = None,
    ):
        self.config = config
        self.state_dir = state_dir.resolve()
        self.corpus: Corpus = load_corpus(config.corpus)
        self.splits: StudySplits = study_splits(config, self.corpus)
        self.locations = study_locations(config, self.state_dir, storage, tracking_uri)
        cluster = RayCluster(config.ray) if config.ray else None
        self.resources = Resources(self.corpus, Cache(self.locations.cache_dir, cluster), progress)

    def check_cache(self) -> None:
        """Checks, before any trial, that the cache can be written and the Ray cluster (if named) answers.

        Raises ``CacheError`` or ``EnvironmentFault`` in one line naming the location or address.
        """
        cache = self.resources.cache
        cache.check()
        if cache.cluster is not None:
            cache.cluster.connect()

    @cached_property
    def tracker(self) -> StudyTracker:
        return StudyTracker(self.locations.tracking_uri, self.config.name, artifact_root=self.locations.artifact_root)

    @cached_property
    def on_orphan(self) -> OrphanedTrialHandler:
        """Closes the MLflow run of a trial whose worker died."""
        return OrphanedTrialHandler(self.tracker)

    @cached_property
    def stores(self) -> StudyStores:
        """What the study shares with its nested studies: locations, indexes and cache, the orphan handler."""
        return StudyStores(self.locations, self.resources, self.on_orphan)

    def optuna_study(self, create: bool = False, sampler_seed: int | None = None):
        """Returns the Optuna study (created when ``create``); raises ``StudyError`` when it does not exist."""
        return load_optuna_study(self.config, self.locations, create, self.on_orphan, sampler_seed)

    def baselines(self) -> dict[str, PipelineConfig]:
        """Returns the configs of the BM25-only and dense-only baselines with default settings, by name."""
        return default_baselines(self.config)

    def heldout_report(self, trial) -> HeldoutReport | None:
        """Returns the held-out report of a finished trial against both baselines, or None without a held-out split.

        With k folds it is the cross-validated report (the same for every trial: it judges the
        search, not one trial). Raises ``StudyError`` when a nested study it needs has not run.
        """
        return self.judge(None, trial).heldout

    def judge(self, study, trial) -> TrialVerdict:
        """Returns the verdict on a finished trial of ``study``: against the baselines on the held-out
        split, or, with k folds, the cross-validated verdict with each fold's choice.

        Raises ``StudyError`` when a nested study it needs (a fold, a tuned baseline) has not run.
        """
        tuned = self.config.baselines == "tuned"
        if self.splits.folds:
            crossval = cross_validate(self.config, self.splits, self.stores, trial_config(trial))
            baseline = crossval.report.baseline_above_tuned
            if baseline is None:
                return TrialVerdict(study, trial, crossval.report, crossval)
            if not tuned:
                config, source = self.baselines()[baseline], "default settings"
            else:
                choice, value = tuned_baseline_for_export(
                    self.config, self.splits, self.resources, crossval.baseline_folds[baseline]
                )
                config = choice.config
                source = (
                    f"the choice of study '{choice.study}' (trial {choice.trial}): of the folds' choices, the best "
                    f"on every judged query ({self.config.metric} {value:.4f})"
                )
            return TrialVerdict(study, trial, crossval.report, crossval, config, source)
        heldout = self.splits.heldout
        if heldout is None:
            return TrialVerdict(study, trial, None)
        if tuned:
            baselines, unfinished = tuned_baseline_configs(self.config, self.splits, self.stores)
        else:
            baselines, unfinished = self.baselines(), []
        report = evaluate_heldout(
            trial_config(trial),
            baselines,
            heldout,
            self.resources,
            self.config.metric,
            trial.values[0],
            seed=self.config.seed,
            tuned_baselines=tuned,
            warnings=[*self.splits.warnings(), *unfinished],
        )
        baseline = report.baseline_above_tuned
        if baseline is None:
            return TrialVerdict(study, trial, report)
        source = f"the choice of study '{self.config.name}-{baseline}'" if tuned else "default settings"
        return TrialVerdict(study, trial, report, None, baselines[baseline], source)

    def verdict(self, trial_number: int | None = None) -> TrialVerdict:
        """Loads the study, chooses its best trial (or ``trial_number``) and judges it on the held-out queries.

        Raises ``StudyError`` when the study or the trial does not exist.
        """
        study = self.optuna_study()
        return self.judge(study, choose_trial(study, trial_number))
