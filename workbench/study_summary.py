"""What a finished (or interrupted) study run prints and leaves behind: leaderboard, best config, plots."""

from __future__ import annotations

from pathlib import Path

from workbench.corpus import load_corpus
from workbench.errors import StudyError
from workbench.export import choose_trial, export_trial
from workbench.plots import write_study_plots
from workbench.study import StudyOutcome
from workbench.study_config import StudyConfig
from workbench.tables import leaderboard_table


def summarize_study(config: StudyConfig, outcome: StudyOutcome, console, study_file: Path) -> Path | None:
    """Prints the leaderboard, writes the best config and plots to the study's output folder,
    attaches them to the MLflow parent run, and says where to look next.

    Returns the best config's path, or None when no trial finished.
    """
    study, locations = outcome.study, outcome.locations
    console.print(leaderboard_table(study, config.metric))
    try:
        best = choose_trial(study)
    except StudyError as error:
        console.print(f"no best config: {error}")
        return None
    corpus = load_corpus(config.corpus)
    best_path = locations.output_dir / "best.toml"
    export_trial(study, best, config, corpus.fingerprint, best_path)
    plots, skipped = write_study_plots(study, config.metric, locations.output_dir / "plots")
    for reason in skipped:
        console.print(f"plot skipped: {reason}", markup=False)
    outcome.tracker.log_parent_artifacts(
        [best_path, *plots],
        metrics={"best_trial": best.number, "best_value": best.values[0]},
    )
    console.print(f"best: trial {best.number}, {config.metric} {best.values[0]:.4f} on split '{config.tune_split}'")
    console.print("next:")
    console.print(f"  workbench export {study_file} --out best.toml      # the best pipeline, with provenance", markup=False)
    if config.heldout_split:
        console.print(
            f"  workbench evaluate best.toml --corpus {config.corpus} --split {config.heldout_split}   # held-out check",
            markup=False,
        )
    console.print(f"  workbench ui      # MLflow dashboard ({locations.tracking_uri})", markup=False)
    return best_path
