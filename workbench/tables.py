"""Rich tables for the terminal: metrics of one run, leaderboards of trials."""

from __future__ import annotations

from workbench.evaluation import Evaluation


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
