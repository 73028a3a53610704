"""What `workbench run` and `workbench export` print about a study's result (``study.result.StudyResult``):
leaderboard, chosen trial, per-fold choices, held-out verdict, and what is exported and why."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from workbench.reporting.tables import folds_table, heldout_table, leaderboard_table

if TYPE_CHECKING:
    from workbench.study.result import StudyResult


def print_study_result(console, result: StudyResult) -> None:
    """Prints the leaderboard, the chosen trial, why it has no verdict yet (if so), the folds and held-out
    tables, and which config is exported and why."""
    console.print(leaderboard_table(result.leaderboard))
    verdict, metric = result.verdict, result.config.metric
    if verdict is None:
        console.print(f"no best config: {result.unchosen}")
        return
    console.print(f"best: trial {verdict.trial.number}, {metric} {verdict.trial.values[0]:.4f} on the tuning queries")
    for note in result.notes:
        console.print(note, markup=False)
    if result.unjudged:
        console.print(f"no verdict yet: {result.unjudged}", markup=False)
    _print_verdict(console, result)


def print_export(console, result: StudyResult) -> None:
    """Prints the exported trial, the folds and held-out tables, and which config is exported and why."""
    trial = result.require_verdict().trial
    console.print(f"trial {trial.number}: {result.config.metric} {trial.values[0]:.4f} on the tuning queries")
    _print_verdict(console, result)


def _print_verdict(console, result: StudyResult) -> None:
    verdict = result.verdict
    if verdict.crossval is not None:
        console.print(folds_table(verdict.crossval))
    if verdict.heldout is not None:
        console.print(heldout_table(verdict.heldout))
    console.print(result.export.reason, markup=False)


def print_next_steps(console, study_file: Path, tracking_uri: str, exported_to: Path | None = None) -> None:
    """Says where to look after a run: the exported config (or the command that exports it) and the MLflow dashboard."""
    console.print("next:")
    if exported_to is None:
        console.print(
            f"  workbench export {study_file} --out best.toml      # the best pipeline, with provenance", markup=False
        )
    else:
        console.print(f'  workbench search {exported_to} --corpus CORPUS "QUERY"      # ask it something', markup=False)
    console.print(f"  workbench ui      # MLflow dashboard ({tracking_uri})", markup=False)
