"""Choosing a study's best trial and writing it as a runnable pipeline config with provenance."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import EnvironmentFault, OutputError, StudyError
from workbench.files import atomic_write_bytes
from workbench.evaluation.heldout import HeldoutReport
from workbench.provenance import code_version, package_versions
from workbench.retrieval.config import PipelineConfig, save_pipeline_config
from workbench.study.attributes import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    EXPORT_REASON_TAG,
    EXPORTED_TAG,
    HELDOUT_MODE_ATTR,
    METRICS_ATTR,
    WORSE_ATTR,
)
from workbench.study.config import StudyConfig
from workbench.study.objective import trial_config

PARETO_TOLERANCE = 0.01  # metric points a faster Pareto trial may give up and still be chosen


def choose_trial(study, trial_number: int | None = None):
    """Returns the trial to export.

    Single objective: the best trial. Two objectives (metric, latency): among the Pareto
    trials, the fastest one whose metric is within ``PARETO_TOLERANCE`` of the best Pareto
    metric. ``trial_number`` overrides the rule. Raises ``StudyError`` when nothing qualifies.
    """
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if trial_number is not None:
        for trial in complete:
            if trial.number == trial_number:
                return trial
        raise StudyError(
            f"trial {trial_number} of study '{study.study_name}' is not a finished trial; "
            f"finished: {sorted(t.number for t in complete)}"
        )
    if not complete:
        raise StudyError(f"study '{study.study_name}' has no finished trial to export")
    if len(study.directions) == 1:
        return study.best_trial
    pareto = study.best_trials
    best_metric = max(trial.values[0] for trial in pareto)
    near_best = [trial for trial in pareto if trial.values[0] >= best_metric - PARETO_TOLERANCE]
    return min(near_best, key=lambda trial: (trial.values[1], -trial.values[0], trial.number))


def provenance_of(study, trial, config: StudyConfig, corpus_fingerprint: str) -> dict[str, Any]:
    """Returns the provenance table written next to an exported config."""
    heldout_mode = study.user_attrs.get(HELDOUT_MODE_ATTR, "split")
    return {
        "study": study.study_name,
        "trial": trial.number,
        "baseline": trial.user_attrs.get(BASELINE_ATTR) or "none",
        "worse_than_baseline": bool(trial.user_attrs.get(WORSE_ATTR, False)),
        "corpus": str(config.corpus),
        "corpus_fingerprint": corpus_fingerprint,
        "tune_split": config.tune_split,
        "heldout_split": config.heldout_split or "",
        "heldout_mode": heldout_mode,
        "metric": config.metric,
        "tuning_metrics": dict(trial.user_attrs.get(METRICS_ATTR, {})),
        "params": {key: value for key, value in trial.params.items()},
        "code_version": code_version(),
        "packages": package_versions(),
    }


@dataclass(frozen=True)
class TrialVerdict:
    """A chosen trial of a study and its held-out report (None when the study holds nothing out).

    With k-fold cross-validation the report is the cross-validated one, and ``crossval`` (a
    ``study.crossval.CrossValidation``) holds what each fold chose. When the report puts a baseline
    above the tuned pipeline (``report.baseline_above_tuned``), ``baseline_config`` is the config that
    baseline exports as and ``baseline_source`` says where it comes from.
    """

    study: Any  # optuna.Study
    trial: Any  # optuna.trial.FrozenTrial
    heldout: HeldoutReport | None
    crossval: Any = None  # CrossValidation | None
    baseline_config: PipelineConfig | None = None
    baseline_source: str = ""  # e.g. "default settings", "the choice of study 'demo-bm25'"
    guard: Any = None  # GeneratedChoiceGuard | None (not imported: study.guard imports this module's neighbours)


@dataclass(frozen=True)
class ExportChoice:
    """What a study exports: the tuned pipeline, or the baseline its verdict puts above it, and why."""

    config: PipelineConfig
    system: str  # "tuned", the baseline exported instead ("bm25", "dense"), or "robust-default" (the guard's)
    reason: str  # one sentence with the figures
    forced: bool = False  # the tuned pipeline was exported as asked although a baseline (or the guard) would not be
    source: str = ""  # where a baseline's config comes from; "" for the tuned pipeline

    def to_provenance(self) -> dict[str, Any]:
        """The keys ``[provenance]`` gets: which config the file holds and why."""
        provenance = {"exported": self.system, "export_reason": self.reason, "forced_tuned": self.forced}
        return provenance | ({"exported_config": self.source} if self.source else {})

    def to_tags(self) -> dict[str, str]:
        """The MLflow tags of the study's parent run."""
        return {EXPORTED_TAG: self.system, EXPORT_REASON_TAG: self.reason[:5000]}


def choose_export(verdict: TrialVerdict, force_tuned: bool = False) -> ExportChoice:
    """Returns what to export: the tuned trial's config, unless

    * the study tuned on generated questions and its guard (``verdict.guard``) does not keep the
      choice: then the robust default (RRF of BM25 and dense at default settings), decided on the
      tuning questions alone;
    * or the verdict puts a baseline's mean above the tuned pipeline's on the study metric
      (significant or not): then the best such baseline's.

    ``force_tuned`` keeps the tuned pipeline anyway; the reason then says what would have been exported.
    Raises ``StudyError`` for a trial without a recorded config.
    """
    if CONFIG_ATTR not in verdict.trial.user_attrs:
        raise StudyError(f"trial {verdict.trial.number} has no recorded pipeline config")
    tuned = trial_config(verdict.trial)
    guard = verdict.guard
    if guard is not None and not guard.keeps_choice:
        if force_tuned:
            reason = (
                f"exported the tuned pipeline as asked, although it was tuned on generated questions and "
                f"the guard would export the robust default: {guard.reason()}"
            )
            return ExportChoice(tuned, "tuned", reason, forced=True)
        reason = (
            f"exported the robust default ({guard.default_label}) instead of the tuned pipeline (trial "
            f"{verdict.trial.number}), tuned on generated questions: {guard.reason()}"
        )
        return ExportChoice(guard.default_config, "robust-default", reason, source=guard.default_label)
    backed = f"; tuned on generated questions, kept: {guard.reason()}" if guard is not None else ""
    report = verdict.heldout
    if report is None:
        return ExportChoice(tuned, "tuned", f"exported the tuned pipeline: no held-out verdict judged it{backed}")
    metric, scope = report.metric, report.scope
    baseline = report.baseline_above_tuned
    if baseline is None:
        best = report.best_baseline
        against = f"best baseline '{report.label(best)}' {report.mean(best):.4f}, {report.figures_against(best)}"
        if report.beats_baselines:
            reason = (
                f"exported the tuned pipeline: it beats every baseline on {scope} {metric} "
                f"({report.mean('tuned'):.4f}; {against})"
            )
        else:
            reason = (
                f"exported the tuned pipeline: its {scope} {metric} {report.mean('tuned'):.4f} is at or above every "
                f"baseline's, but not significantly ({against})"
            )
        return ExportChoice(tuned, "tuned", reason + backed)
    figures = (
        f"{scope} {metric} {report.mean(baseline):.4f} against the tuned pipeline's {report.mean('tuned'):.4f} "
        f"({report.figures_against(baseline)})"
    )
    if force_tuned:
        reason = (
            f"exported the tuned pipeline as asked, although baseline '{report.label(baseline)}' scores above it: "
            f"{figures}"
        )
        return ExportChoice(tuned, "tuned", reason, forced=True)
    if verdict.baseline_config is None:
        raise StudyError(f"the verdict puts baseline '{baseline}' above the tuned pipeline but has no config for it")
    reason = (
        f"exported baseline '{report.label(baseline)}' instead of the tuned pipeline: its {scope} {metric} "
        f"{report.mean(baseline):.4f} beats the tuned pipeline's {report.mean('tuned'):.4f} "
        f"({report.figures_against(baseline)})"
    )
    return ExportChoice(verdict.baseline_config, baseline, reason, source=verdict.baseline_source)


def export_provenance(
    verdict: TrialVerdict, choice: ExportChoice, config: StudyConfig, corpus_fingerprint: str
) -> dict[str, Any]:
    """Returns the ``[provenance]`` table of what ``choice`` exports.

    It carries the held-out report, which config the file holds and why, with cross-validation
    the per-fold choices and how far they agree, and for a study tuned on generated questions the
    guard's figures. ``trial`` and ``params`` in it
    are always the tuned trial the verdict judged.
    """
    extra: dict[str, Any] = choice.to_provenance()
    if verdict.heldout is not None:
        extra["heldout"] = verdict.heldout.to_dict()
    if verdict.crossval is not None:
        extra["crossval"] = verdict.crossval.to_dict()
    if verdict.guard is not None:
        extra["guard"] = verdict.guard.to_dict()
    return provenance_of(verdict.study, verdict.trial, config, corpus_fingerprint) | extra


# Write failures that are the machine's, not the user's choice of --out: a full disk, a quota, a read-only mount.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def write_export(config: PipelineConfig, provenance: dict[str, Any], out: Path) -> None:
    """Writes an exported pipeline config with its provenance, whole or not at all.

    Raises ``EnvironmentFault`` when the disk is full or read-only, ``OutputError`` when ``out``
    cannot be written for another reason (a missing folder, no permission).
    """
    try:
        save_pipeline_config(config, out, provenance=provenance)
    except OSError as error:
        fault = EnvironmentFault if error.errno in _ENVIRONMENT_ERRNOS else OutputError
        raise fault(f"cannot write {out}: {error.strerror or error}") from None


def write_verdict_files(verdict: TrialVerdict, folder: Path) -> list[Path]:
    """Writes the verdict as JSON into ``folder``: ``crossval.json`` (with k folds) and ``heldout.json``
    (when a held-out report judged the trial). Returns the files written.

    Raises ``OSError`` naming the file that could not be written; each is written whole or not at all.
    """
    import json

    written = []
    for name, part in (("crossval.json", verdict.crossval), ("heldout.json", verdict.heldout)):
        if part is not None:
            path = folder / name
            atomic_write_bytes(path, json.dumps(part.to_dict(), indent=2).encode())
            written.append(path)
    return written
