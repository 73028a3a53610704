"""What a study found, as one typed result: the leaderboard, the chosen trial, its held-out (or
cross-validated) verdict, and what is exported with which provenance.

`workbench run`, `export` and `report` each build it with ``study_result``; ``reporting`` renders
it, ``save_result`` writes it into the study's output folder and logs it to the MLflow parent run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from workbench.errors import EnvironmentFault, StudyError
from workbench.retrieval.config import PipelineConfig, save_pipeline_config
from workbench.study.attributes import BASELINE_ATTR, DUPLICATE_ATTR, EXHAUSTED_ATTR, METRICS_ATTR, WORSE_ATTR
from workbench.study.config import StudyConfig
from workbench.study.export import (
    ExportChoice,
    TrialVerdict,
    choose_export,
    choose_trial,
    export_provenance,
    write_verdict_files,
)
from workbench.study.guard import guard_generated_choice, is_generated_split
from workbench.study.objective import describe_choice
from workbench.study.session import StudySession

LEADERBOARD_TOP = 10  # best trials the leaderboard shows (baselines are always shown)


@dataclass(frozen=True)
class LeaderboardRow:
    """One finished trial on the leaderboard."""

    trial: int
    value: float  # the study metric on the tuning queries
    latency_ms: float | None  # the second objective; None when the study has one objective
    recall_at_100: float  # NaN when the trial did not record it
    flag: str  # "baseline", "worse than baseline" or ""
    pipeline: str  # the trial's choice in one line (``describe_choice``)


@dataclass(frozen=True)
class Leaderboard:
    """The best finished trials of a study, best first, and how many trials ended otherwise."""

    study_name: str
    metric: str
    two_objectives: bool
    rows: tuple[LeaderboardRow, ...]
    finished: int  # finished trials, repeats scored by an older workbench aside
    pruned: int
    failed: int  # failed trials, skipped repeats aside
    skipped: int  # proposals that repeated a tried configuration
    repeats: int  # repeats scored by an older workbench (not shown)
    exhausted: str  # why the search space is exhausted, or ""


def leaderboard(study, metric: str, top: int = LEADERBOARD_TOP) -> Leaderboard:
    """Returns the ``top`` best finished trials of ``study`` (an Optuna study), baselines always included."""
    import optuna

    states = optuna.trial.TrialState
    complete = study.get_trials(deepcopy=False, states=(states.COMPLETE,))
    repeats = [trial for trial in complete if DUPLICATE_ATTR in trial.user_attrs]
    ranked = sorted(
        (trial for trial in complete if DUPLICATE_ATTR not in trial.user_attrs),
        key=lambda trial: (-trial.values[0], trial.number),
    )
    shown = ranked[:top] + [t for t in ranked[top:] if t.user_attrs.get(BASELINE_ATTR)]
    two_objectives = len(study.directions) > 1
    rows = []
    for trial in shown:
        baseline = trial.user_attrs.get(BASELINE_ATTR)
        flag = "worse than baseline" if trial.user_attrs.get(WORSE_ATTR) else "baseline" if baseline else ""
        rows.append(
            LeaderboardRow(
                trial.number,
                trial.values[0],
                trial.values[1] if two_objectives else None,
                trial.user_attrs.get(METRICS_ATTR, {}).get("recall_at_100", float("nan")),
                flag,
                describe_choice(trial.params, baseline),
            )
        )
    failed = study.get_trials(deepcopy=False, states=(states.FAIL,))
    skipped = sum(1 for trial in failed if DUPLICATE_ATTR in trial.user_attrs)
    return Leaderboard(
        study.study_name,
        metric,
        two_objectives,
        tuple(rows),
        finished=len(complete) - len(repeats),
        pruned=len(study.get_trials(deepcopy=False, states=(states.PRUNED,))),
        failed=len(failed) - skipped,
        skipped=skipped,
        repeats=len(repeats),
        exhausted=study.user_attrs.get(EXHAUSTED_ATTR) or "",
    )


@dataclass(frozen=True)
class StudyResult:
    """What a study found. ``verdict`` holds the chosen trial and its held-out (or cross-validated)
    report; it is None when no trial qualifies (``unchosen`` says why). ``unjudged`` says why a
    chosen trial has no verdict yet (a nested study has not run), else "". ``export`` is what the
    study exports (the tuned pipeline, or the baseline its verdict puts above it) and ``provenance``
    the table written with it."""

    config: StudyConfig
    corpus_fingerprint: str
    leaderboard: Leaderboard
    verdict: TrialVerdict | None
    export: ExportChoice | None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # facts about the study's inputs every view shows (e.g. generated queries)
    unchosen: str = ""
    unjudged: str = ""

    @property
    def best_config(self) -> PipelineConfig | None:
        """The config the study exports, or None when no trial qualifies."""
        return self.export.config if self.export is not None else None

    def require_verdict(self) -> TrialVerdict:
        """Returns the verdict; raises ``StudyError`` when no trial was chosen or it could not be judged yet."""
        if self.verdict is None or self.unjudged:
            raise StudyError(self.unchosen or self.unjudged)
        return self.verdict

    def tracking_metrics(self) -> dict[str, float]:
        """The MLflow metrics of the study's parent run: the chosen trial, the verdict's figures, the folds'."""
        if self.verdict is None:
            return {}
        trial = self.verdict.trial
        metrics = {"best_trial": trial.number, "best_value": trial.values[0]}
        if self.verdict.crossval is not None:
            metrics |= self.verdict.crossval.to_metrics()
        if self.verdict.heldout is not None:
            metrics |= self.verdict.heldout.to_metrics()
        if self.verdict.guard is not None:
            guard = self.verdict.guard
            metrics["guard_p_beats_robust_default"] = guard.p_beats_default
            metrics["guard_keeps_choice"] = float(guard.keeps_choice)
            if guard.agreement is not None:
                metrics["guard_split_half_agreement"] = guard.agreement
        return metrics

    def tracking_tags(self) -> dict[str, str]:
        """The MLflow tags of the study's parent run: each fold's choice, what is exported and why."""
        tags: dict[str, str] = {}
        if self.verdict is not None and self.verdict.crossval is not None:
            tags |= self.verdict.crossval.to_tags()
        if self.export is not None:
            tags |= self.export.to_tags()
        return tags


def study_result(
    session: StudySession, study=None, trial_number: int | None = None, force_tuned: bool = False
) -> StudyResult:
    """Returns what the study found: its leaderboard, its best trial (or ``trial_number``) judged on
    the held-out queries, and what to export (``force_tuned`` keeps the tuned trial even when a
    baseline scores above it). A study tuned on generated questions is also guarded (``study.guard``):
    its choice is checked on the tuning questions themselves, and may give way to the robust default.

    ``study`` is the session's Optuna study when already open. A study without a qualifying trial,
    or whose nested studies have not all run, still gives a result (``unchosen``, ``unjudged``).
    Raises ``StudyError`` when the study does not exist.
    """
    from workbench.synthesis.writer import generated_queries_note

    config = session.config
    study = study if study is not None else session.optuna_study()
    board = leaderboard(study, config.metric)
    note = generated_queries_note(session.corpus, config.tune_split, config.heldout_split)
    fingerprint = session.corpus.fingerprint
    notes = (note,) if note else ()
    try:
        trial = choose_trial(study, trial_number)
    except StudyError as error:
        return StudyResult(config, fingerprint, board, None, None, notes=notes, unchosen=str(error))
    unjudged = ""
    try:
        verdict = session.judge(study, trial)
    except StudyError as error:  # e.g. a fold's study did not finish: the next run resumes it
        verdict, unjudged = TrialVerdict(study, trial, None), str(error)
    if is_generated_split(session.corpus.path, config.tune_split):
        verdict = replace(
            verdict, guard=guard_generated_choice(study, trial, config, session.splits.tune, session.resources)
        )
    choice = choose_export(verdict, force_tuned)
    provenance = export_provenance(verdict, choice, config, fingerprint)
    return StudyResult(config, fingerprint, board, verdict, choice, provenance, notes, unjudged=unjudged)


def save_result(
    session: StudySession,
    result: StudyResult,
    study_file: Path,
    write_plots: Callable[[Path], list[Path]] | None = None,
) -> Path:
    """Writes the result into the study's output folder (``crossval.json``, ``heldout.json``, the exported
    ``best.toml``), then whatever ``write_plots(folder)`` writes into its ``plots/`` folder, and attaches
    them all, with the result's metrics and tags, to the study's MLflow parent run. Returns ``best.toml``.

    Raises ``StudyError`` when the result has no chosen trial, ``EnvironmentFault`` (the trials are
    kept) when a file cannot be written.
    """
    if result.verdict is None or result.export is None:
        raise StudyError(result.unchosen)
    folder = session.locations.output_dir
    best_path = folder / "best.toml"
    try:
        verdict_files = write_verdict_files(result.verdict, folder)
        save_pipeline_config(result.export.config, best_path, provenance=dict(result.provenance))
        plots = write_plots(folder / "plots") if write_plots is not None else []
    except OSError as error:
        finished = result.leaderboard.finished + result.leaderboard.repeats
        raise EnvironmentFault(
            f"{error.filename or folder}: cannot be written ({error.strerror or error}); "
            f"the study's {finished} finished trials are kept in {session.locations.storage_url}: "
            f"free space, then run `workbench run {study_file}` again to write its outputs"
        ) from None
    session.tracker.log_parent_artifacts(
        [best_path, *verdict_files, *plots], metrics=result.tracking_metrics(), tags=result.tracking_tags()
    )
    return best_path
