"""What a finished (or interrupted) study run prints and leaves behind: leaderboard, held-out
verdict, best config with provenance, plots, all attached to the MLflow parent run."""

from __future__ import annotations

import json
from pathlib import Path

from workbench.errors import EnvironmentFault, StudyError
from workbench.files import atomic_write_bytes
from workbench.reporting.plots import write_study_plots
from workbench.reporting.tables import folds_table, heldout_table, leaderboard_table
from workbench.study.export import TrialVerdict, choose_trial, export_verdict
from workbench.study.runner import StudyOutcome
from workbench.synthesis.writer import generated_queries_note


def summarize_study(outcome: StudyOutcome, console, study_file: Path) -> Path | None:
    """Prints the leaderboard and held-out table, writes the best config (the tuned pick, or the
    baseline the verdict puts above it; the held-out verdict and why in its provenance) and plots,
    attaches them to the MLflow parent run, and says where to look next. Returns the best config's
    path, or None when no trial finished.
    """
    session, study = outcome.session, outcome.study
    config, locations = session.config, session.locations
    console.print(leaderboard_table(study, config.metric))
    try:
        best = choose_trial(study)
    except StudyError as error:
        console.print(f"no best config: {error}")
        return None
    console.print(f"best: trial {best.number}, {config.metric} {best.values[0]:.4f} on the tuning queries")
    if note := generated_queries_note(session.corpus, config.tune_split, config.heldout_split):
        console.print(note, markup=False)
    try:
        verdict = session.judge(study, best)
    except StudyError as error:  # e.g. a fold's study did not finish: the next run resumes it
        console.print(f"no verdict yet: {error}", markup=False)
        verdict = TrialVerdict(study, best, None)
    try:
        best_path = _write_outputs(session, study, verdict, console)
    except OSError as error:
        import optuna

        finished = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
        raise EnvironmentFault(
            f"{error.filename or locations.output_dir}: cannot be written ({error.strerror or error}); "
            f"the study's {finished} finished trials are kept in {locations.storage_url}: "
            f"free space, then run `workbench run {study_file}` again to write its outputs"
        ) from None
    console.print("next:")
    console.print(
        f"  workbench export {study_file} --out best.toml      # the best pipeline, with provenance", markup=False
    )
    console.print(f"  workbench ui      # MLflow dashboard ({locations.tracking_uri})", markup=False)
    return best_path


def _write_outputs(session, study, verdict: TrialVerdict, console) -> Path:
    """Writes the verdict's JSON, the best config and the plots, and attaches them to the MLflow parent run.

    Returns the best config's path. Raises ``OSError`` naming the file that could not be written;
    each file is written whole or not at all.
    """
    config, locations, best = session.config, session.locations, verdict.trial
    artifacts: list[Path] = []
    parent_metrics = {"best_trial": best.number, "best_value": best.values[0]}
    parent_tags: dict[str, str] = {}
    if verdict.crossval is not None:
        console.print(folds_table(verdict.crossval))
        parent_metrics |= verdict.crossval.to_metrics()
        parent_tags |= verdict.crossval.to_tags()
        crossval_path = locations.output_dir / "crossval.json"
        atomic_write_bytes(crossval_path, json.dumps(verdict.crossval.to_dict(), indent=2).encode())
        artifacts.append(crossval_path)
    if verdict.heldout is not None:
        console.print(heldout_table(verdict.heldout))
        report_path = locations.output_dir / "heldout.json"
        atomic_write_bytes(report_path, json.dumps(verdict.heldout.to_dict(), indent=2).encode())
        artifacts.append(report_path)
        parent_metrics |= verdict.heldout.to_metrics()
    best_path = locations.output_dir / "best.toml"
    choice = export_verdict(verdict, config, session.corpus.fingerprint, best_path)
    console.print(choice.reason, markup=False)
    parent_tags |= choice.to_tags()
    plots, skipped = write_study_plots(study, config.metric, locations.output_dir / "plots")
    for reason in skipped:
        console.print(f"plot skipped: {reason}", markup=False)
    session.tracker.log_parent_artifacts([best_path, *artifacts, *plots], metrics=parent_metrics, tags=parent_tags)
    return best_path
