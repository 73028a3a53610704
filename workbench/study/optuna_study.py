"""The Optuna study a study file describes: where its state lives, how it opens, its queued baselines."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

from workbench import state
from workbench.errors import StudyError
from workbench.study.attributes import BASELINE_ATTR
from workbench.study.config import StudyConfig
from workbench.study.log import LOG_NAME
from workbench.study.space import BASELINES
from workbench.study.storage import journal_url, open_storage, storage_exists
from workbench.study.tracking import sqlite_uri
from workbench.study.workers import OrphanedTrialHandler


@dataclass(frozen=True)
class StudyLocations:
    """Where a study keeps its state: Optuna storage, MLflow store, outputs, cache (a folder or a URL)."""

    storage_url: str
    tracking_uri: str
    output_dir: Path
    cache_dir: str | Path
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
    """Returns the study's locations: flags win over the study file, which wins over the state-folder defaults
    (a ``--cache`` flag is already in ``config``)."""
    state_dir = state_dir.resolve()
    return StudyLocations(
        storage_url=storage or config.storage or _default_storage(state_dir),
        tracking_uri=tracking_uri or config.tracking_uri or sqlite_uri(state.tracking_db(state_dir)),
        output_dir=state.studies_dir(state_dir) / config.name,
        cache_dir=config.cache or state.cache_dir(state_dir),
        artifact_root=state.artifact_root(state_dir),
    )


def _pruner(config: StudyConfig):
    import optuna

    if config.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if config.pruner == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1)
    return optuna.pruners.NopPruner()


def resumed_seed(seed: int, trials_so_far: int) -> int:
    """Returns the sampler seed of a process that joins a study holding ``trials_so_far`` trials.

    A new study samples with its own seed (a run from scratch is reproducible); a resumed one with
    a seed drawn from it and the trial count, so a restarted sampler does not propose again the
    points its first run proposed.
    """
    if trials_so_far == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{trials_so_far}".encode()).digest()[:4], "big")


def _trials_so_far(storage, name: str) -> int:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))


def load_optuna_study(
    config: StudyConfig,
    locations: StudyLocations,
    create: bool = False,
    on_orphan: OrphanedTrialHandler | None = None,
    sampler_seed: int | None = None,
):
    """Returns the study from its storage; creates it when ``create``; raises ``StudyError`` otherwise.

    ``on_orphan`` is called for each trial a database's heartbeat check finds abandoned.
    The sampler is seeded with ``sampler_seed``, by default with ``resumed_seed``: the study's seed
    for a new study, a seed drawn from it and the trials so far for a resumed one.
    """
    import optuna

    from workbench.study.sampler import study_sampler  # not at import: it loads optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    missing = StudyError(f"no study named '{config.name}' in {locations.storage_url}: run `workbench run` first")
    if not create and not storage_exists(locations.storage_url):
        raise missing  # opening would fail in a missing folder, or leave an empty file behind
    storage = open_storage(locations.storage_url, config.heartbeat_s, on_orphan)
    seed = resumed_seed(config.seed, _trials_so_far(storage, config.name)) if sampler_seed is None else sampler_seed
    directions = ["maximize", "minimize"] if config.second_objective == "latency" else ["maximize"]
    if create:
        study = optuna.create_study(
            study_name=config.name,
            storage=storage,
            sampler=study_sampler(config.sampler, seed),
            pruner=_pruner(config),
            directions=directions,
            load_if_exists=True,
        )
        _refuse_two_stage_parameters(study, locations)  # reading an old study (export, report) is fine
    else:
        try:
            study = optuna.load_study(
                study_name=config.name, storage=storage, sampler=study_sampler(config.sampler, seed), pruner=_pruner(config)
            )
        except KeyError:
            raise missing from None
    return study


# Parameter names only the sampler of the two-stage space (before [[space.retrievers]]) asked for.
TWO_STAGE_PARAMETERS = ("bm25.", "dense.", "fusion.alpha")


def _refuse_two_stage_parameters(study, locations: StudyLocations) -> None:
    """Raises ``StudyError`` when the study's stored trials were sampled with the parameter names of
    the two-stage space: a sampler resuming it would mix two names for each setting."""
    for trial in study.get_trials(deepcopy=False):
        old = [name for name in trial.params if name.startswith(TWO_STAGE_PARAMETERS)]
        if old or trial.params.get("fusion.method") in ("bm25", "dense"):
            raise StudyError(
                f"study '{study.study_name}' in {locations.storage_url} holds trials sampled with the parameter "
                f"names of an older workbench ({', '.join(old) or 'fusion.method'}), which this one names "
                "differently; give the study a new name, or run it with a fresh --state-dir (or --storage)"
            )


def enqueue_baselines(study, names: tuple[str, ...] = BASELINES) -> list[str]:
    """Queues the baselines (by default BM25-only and dense-only) unless the study already has them;
    returns those queued.

    A baseline that failed (e.g. interrupted by Ctrl-C) does not count: it is queued again.
    """
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    present = {trial.user_attrs.get(BASELINE_ATTR) for trial in study.get_trials(deepcopy=False, states=states)}
    queued = [name for name in names if name not in present]
    for name in queued:
        study.enqueue_trial({}, user_attrs={BASELINE_ATTR: name})
    return queued
