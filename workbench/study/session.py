"""One study's session: config, corpus, query splits, locations, tracker and shared indexes, built once.

``workbench run``, ``worker``, ``export`` and ``report`` each open a ``StudySession`` and ask it for
the Optuna study, the objective, or the held-out verdict of a trial, so the set-up is written once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from workbench.errors import StudyError
from workbench.evaluation.heldout import HeldoutReport, evaluate_heldout
from workbench.progress import ProgressCallback
from workbench.retrieval.cache import Cache
from workbench.retrieval.config import PipelineConfig
from workbench.retrieval.corpus import Corpus, load_corpus
from workbench.retrieval.pipeline import Resources
from workbench.study.config import StudyConfig
from workbench.study.crossval import cross_validate, tuned_baseline_configs
from workbench.study.export import TrialVerdict, choose_trial
from workbench.study.log import LOG_NAME
from workbench.study.objective import trial_config
from workbench.study.space import BASELINES, baseline_config
from workbench.study.splits import StudySplits, study_splits
from workbench.study.storage import journal_url, open_storage, storage_exists
from workbench.study.tracking import StudyTracker, sqlite_uri
from workbench.study.workers import OrphanedTrialHandler


@dataclass(frozen=True)
class StudyLocations:
    """Where a study keeps its state: Optuna storage, MLflow store, outputs."""

    storage_url: str
    tracking_uri: str
    output_dir: Path
    cache_dir: Path
    artifact_root: Path

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
        artifact_root=state_dir / "mlflow-artifacts",
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
    import optuna

    seed = config.seed if sampler_seed is None else sampler_seed
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
        self.resources = Resources(self.corpus, Cache(self.locations.cache_dir), progress)

    @cached_property
    def tracker(self) -> StudyTracker:
        return StudyTracker(self.locations.tracking_uri, self.config.name, artifact_root=self.locations.artifact_root)

    @cached_property
    def on_orphan(self) -> OrphanedTrialHandler:
        """Closes the MLflow run of a trial whose worker died."""
        return OrphanedTrialHandler(self.tracker)

    def optuna_study(self, create: bool = False, sampler_seed: int | None = None):
        """Returns the Optuna study (created when ``create``); raises ``StudyError`` when it does not exist."""
        return load_optuna_study(self.config, self.locations, create, self.on_orphan, sampler_seed)

    def baselines(self) -> dict[str, PipelineConfig]:
        """Returns the configs of the BM25-only and dense-only baselines with default settings, by name."""
        return {name: baseline_config(name, self.config.space, f"{name}-baseline") for name in BASELINES}

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
        if self.splits.folds:
            crossval = cross_validate(self, trial_config(trial))
            return TrialVerdict(study, trial, crossval.report, crossval)
        heldout = self.splits.heldout
        if heldout is None:
            return TrialVerdict(study, trial, None)
        tuned = self.config.baselines == "tuned"
        report = evaluate_heldout(
            trial_config(trial),
            tuned_baseline_configs(self) if tuned else self.baselines(),
            heldout,
            self.resources,
            self.config.metric,
            trial.values[0],
            seed=self.config.seed,
            tuned_baselines=tuned,
            warnings=self.splits.warnings(),
        )
        return TrialVerdict(study, trial, report)

    def verdict(self, trial_number: int | None = None) -> TrialVerdict:
        """Loads the study, chooses its best trial (or ``trial_number``) and judges it on the held-out queries.

        Raises ``StudyError`` when the study or the trial does not exist.
        """
        study = self.optuna_study()
        return self.judge(study, choose_trial(study, trial_number))
