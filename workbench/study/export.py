"""Choosing a study's best trial and writing it as a runnable pipeline config with provenance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import OutputError, StudyError
from workbench.evaluation.heldout import HeldoutReport
from workbench.provenance import code_version, package_versions
from workbench.retrieval.config import PipelineConfig, save_pipeline_config
from workbench.study.attributes import BASELINE_ATTR, CONFIG_ATTR, HELDOUT_MODE_ATTR, METRICS_ATTR, WORSE_ATTR
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


def export_trial(
    study, trial, config: StudyConfig, corpus_fingerprint: str, out: Path, extra: dict[str, Any] | None = None
) -> PipelineConfig:
    """Writes the trial's pipeline config with provenance to ``out`` (atomically); returns the config.

    Raises ``StudyError`` for a trial without a config, ``OutputError`` when ``out`` cannot be written.
    """
    if CONFIG_ATTR not in trial.user_attrs:
        raise StudyError(f"trial {trial.number} has no recorded pipeline config")
    pipeline = trial_config(trial)
    provenance = provenance_of(study, trial, config, corpus_fingerprint) | (extra or {})
    try:
        save_pipeline_config(pipeline, out, provenance=provenance)
    except OSError as error:
        raise OutputError(f"cannot write {out}: {error.strerror or error}") from None
    return pipeline


@dataclass(frozen=True)
class TrialVerdict:
    """A chosen trial of a study and its held-out report (None when the study holds nothing out).

    With k-fold cross-validation the report is the cross-validated one, and ``crossval`` (a
    ``study.crossval.CrossValidation``) holds what each fold chose.
    """

    study: Any  # optuna.Study
    trial: Any  # optuna.trial.FrozenTrial
    heldout: HeldoutReport | None
    crossval: Any = None  # CrossValidation | None


def export_verdict(verdict: TrialVerdict, config: StudyConfig, corpus_fingerprint: str, out: Path) -> PipelineConfig:
    """Writes the verdict's trial as a pipeline config whose provenance carries the held-out report
    and, with cross-validation, the per-fold choices and how far they agree."""
    extra: dict[str, Any] = {}
    if verdict.heldout is not None:
        extra["heldout"] = verdict.heldout.to_dict()
    if verdict.crossval is not None:
        extra["crossval"] = verdict.crossval.to_dict()
    return export_trial(verdict.study, verdict.trial, config, corpus_fingerprint, out, extra or None)
