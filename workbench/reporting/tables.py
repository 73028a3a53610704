"""Rich tables for the terminal: metrics of one run, and the ``views.py`` tables (leaderboard, held-out, folds)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.evaluation.heldout import HeldoutReport
from workbench.evaluation.metrics import Evaluation
from workbench.reporting.views import TableView, folds_view, heldout_view, leaderboard_view

if TYPE_CHECKING:
    from workbench.study.result import Leaderboard


def metrics_table(evaluation: Evaluation, title: str):
    """Returns a rich ``Table`` with one row per metric: mean over judged queries."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("metric")
    table.add_column("mean", justify="right")
    for name, mean in evaluation.means.items():
        table.add_row(name, f"{mean:.4f}")
    table.caption = f"{evaluation.num_queries} judged queries"
    return table


def render_table(view: TableView):
    """Returns a rich ``Table`` of a ``TableView``: its title, columns, rows (dim ones muted) and caption."""
    from rich.table import Table

    table = Table(title=view.title, title_justify="left")
    for column in view.columns:
        table.add_column(column.header, justify="right" if column.right else "left")
    for index, row in enumerate(view.rows):
        table.add_row(*row, style="dim" if index in view.dim else None)
    table.caption = "\n".join(view.caption)
    return table


def leaderboard_table(board: Leaderboard):
    """Returns a rich ``Table`` of a study's leaderboard (``study.result.leaderboard``)."""
    return render_table(leaderboard_view(board))


def heldout_table(report: HeldoutReport):
    """Returns a rich ``Table`` of the report's rows: mean [95% CI] per metric, the tuned pipeline against each."""
    return render_table(heldout_view(report))


def folds_table(crossval):
    """Returns a rich ``Table`` of what each fold's study chose (a ``study.crossval.CrossValidation``)."""
    return render_table(folds_view(crossval))
