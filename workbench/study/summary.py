"""What a finished (or interrupted) study run prints and leaves behind: leaderboard, held-out
verdict, best config with provenance, plots, all attached to the MLflow parent run."""

from __future__ import annotations

import json
from pathlib import Path

from workbench.errors import StudyError
from workbench.evaluation.heldout import HeldoutReport, evaluate_heldout, heldout_table
from workbench.evaluation.metrics import parse_metric
from workbench.files import atomic_write_bytes
from workbench.reporting.plots import write_study_plots
from workbench.reporting.tables import leaderboard_table
from workbench.retrieval.pipeline import Resources
from workbench.study.config import StudyConfig
from workbench.study.export import choose_trial, export_trial
from workbench.study.runner import StudyOutcome, trial_config
from workbench.study.space import BASELINES, baseline_config
from workbench.study.splits import study_splits
from workbench.synthesis.writer import generated_queries_note


def final_evaluation(config: StudyConfig, trial, resources: Resources) -> HeldoutReport | None:
    """Returns the held-out report of ``trial`` against both baselines, or None without a held-out split."""
    heldout = study_splits(config, resources.corpus).heldout
    if heldout is None:
        return None
    baselines = {name: baseline_config(name, config.space, f"{name}-baseline") for name in BASELINES}
    return evaluate_heldout(
        trial_config(trial), baselines, heldout, resources, config.metric, trial.values[0], seed=config.seed
    )


def heldout_metrics(report: HeldoutReport) -> dict[str, float]:
    """Returns the report's numbers as flat MLflow metric names (no '@')."""
    metrics = {
        "heldout_overfitting_gap": report.overfitting_gap,
        "heldout_beats_baselines": float(report.beats_baselines),
    }
    for system, intervals in report.intervals.items():
        for name, ci in intervals.items():
            key = parse_metric(name).tracking_name
            metrics[f"heldout_{system}_{key}"] = ci.mean
            metrics[f"heldout_{system}_{key}_ci_low"] = ci.low
            metrics[f"heldout_{system}_{key}_ci_high"] = ci.high
    for baseline, by_metric in report.comparisons.items():
        for name, comparison in by_metric.items():
            metrics[f"heldout_p_vs_{baseline}_{parse_metric(name).tracking_name}"] = comparison.p_value
    return metrics


def summarize_study(config: StudyConfig, outcome: StudyOutcome, console, study_file: Path) -> Path | None:
    """Prints the leaderboard and held-out table, writes the best config (with the held-out
    verdict in its provenance) and plots, attaches them to the MLflow parent run, and says
    where to look next. Returns the best config's path, or None when no trial finished.
    """
    study, locations = outcome.study, outcome.locations
    console.print(leaderboard_table(study, config.metric))
    try:
        best = choose_trial(study)
    except StudyError as error:
        console.print(f"no best config: {error}")
        return None
    console.print(f"best: trial {best.number}, {config.metric} {best.values[0]:.4f} on the tuning queries")
    if note := generated_queries_note(outcome.resources.corpus, config.tune_split, config.heldout_split):
        console.print(note, markup=False)
    report = final_evaluation(config, best, outcome.resources)
    artifacts: list[Path] = []
    parent_metrics = {"best_trial": best.number, "best_value": best.values[0]}
    if report is not None:
        console.print(heldout_table(report))
        report_path = locations.output_dir / "heldout.json"
        atomic_write_bytes(report_path, json.dumps(report.to_dict(), indent=2).encode())
        artifacts.append(report_path)
        parent_metrics |= heldout_metrics(report)
    best_path = locations.output_dir / "best.toml"
    export_trial(
        study,
        best,
        config,
        outcome.resources.corpus.fingerprint,
        best_path,
        extra={"heldout": report.to_dict()} if report is not None else None,
    )
    plots, skipped = write_study_plots(study, config.metric, locations.output_dir / "plots")
    for reason in skipped:
        console.print(f"plot skipped: {reason}", markup=False)
    outcome.tracker.log_parent_artifacts([best_path, *artifacts, *plots], metrics=parent_metrics)
    console.print("next:")
    console.print(
        f"  workbench export {study_file} --out best.toml      # the best pipeline, with provenance", markup=False
    )
    console.print(f"  workbench ui      # MLflow dashboard ({locations.tracking_uri})", markup=False)
    return best_path
