"""The tables every view shows, as plain data: the terminal (``tables.py``, rich) and the HTML report
(``html.py``, Jinja) render the same ``TableView``, so their rows and column headers cannot drift."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench.evaluation.heldout import HeldoutReport, interval_text, row_comparison_text

if TYPE_CHECKING:
    from workbench.study.result import Leaderboard


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False  # numbers are right-aligned


@dataclass(frozen=True)
class TableView:
    """A titled table of text cells with a caption; ``dim`` marks rows shown muted."""

    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: tuple[str, ...] = ()
    dim: frozenset[int] = frozenset()

    @property
    def headers(self) -> list[str]:
        return [column.header for column in self.columns]


def leaderboard_view(board: Leaderboard) -> TableView:
    """The leaderboard: trial, metric (and latency), recall@100, flag, pipeline; counts in the caption."""
    columns = [Column("trial", True), Column(board.metric, True)]
    if board.two_objectives:
        columns.append(Column("latency ms", True))
    columns += [Column("recall@100", True), Column("flag"), Column("pipeline")]
    rows = []
    for row in board.rows:
        cells = [str(row.trial), f"{row.value:.4f}"]
        if board.two_objectives:
            cells.append(f"{row.latency_ms:.1f}")
        rows.append((*cells, f"{row.recall_at_100:.4f}", row.flag, row.pipeline))
    counts = (
        f"{board.finished} finished, {board.pruned} pruned, {board.failed} failed trials"
        + (f"; {board.skipped} proposals repeated a tried configuration and were skipped" if board.skipped else "")
        + (f"; {board.repeats} repeats scored by an older workbench are not shown" if board.repeats else "")
    )
    caption = [counts] + ([f"search space exhausted: {board.exhausted}"] if board.exhausted else [])
    return TableView(
        f"study {board.study_name}: top trials by {board.metric} on the tuning split",
        tuple(columns),
        tuple(rows),
        tuple(caption),
        frozenset(index for index, row in enumerate(board.rows) if row.flag == "worse than baseline"),
    )


def heldout_view(report: HeldoutReport) -> TableView:
    """The held-out table: mean [95% CI] per metric per system, the tuned pipeline against each."""
    rows = report.rows()
    columns = [Column("system"), *[Column(metric, True) for metric in rows[0].intervals]]
    columns.append(Column(f"tuned vs it on {report.metric}: Δ, p (Holm p), W/T/L", True))
    return TableView(
        f"{report.title}: mean [95% bootstrap CI]",
        tuple(columns),
        tuple(
            (row.label, *[interval_text(ci) for ci in row.intervals.values()], row_comparison_text(row))
            for row in rows
        ),
        (
            f"overfitting gap ({report.metric}, tuning − held-out): {report.overfitting_gap:+.4f}. {report.verdict()}",
            *report.warnings,
        ),
    )


def agreement_text(name: str, entry: dict[str, Any]) -> str:
    """``fusion.method convex in 4/5 folds`` or ``bm25.k1 0.62–1.87 over 5/5 folds``."""
    if "value" in entry:
        return f"{name} {entry['value']} in {entry['folds']}/{entry['of']} folds"
    return f"{name} {entry['low']:.3g}–{entry['high']:.3g} over {entry['set_in']}/{entry['of']} folds"


def agreement_lines(crossval) -> tuple[str, ...]:
    """How far the folds of a ``study.crossval.CrossValidation`` agree, in a few lines."""
    k = len(crossval.folds)
    lines = [
        f"the {k} folds chose {crossval.distinct_configs} distinct pipelines; "
        f"{crossval.identical_to_exported}/{k} chose exactly the exported one"
    ]
    baselines = sum(1 for choice in crossval.folds if choice.baseline)
    if baselines:
        lines.append(f"{baselines}/{k} folds chose a default baseline")
    if entries := crossval.agreement():
        lines.append("per parameter: " + "; ".join(agreement_text(name, e) for name, e in entries.items()))
    return tuple(lines)


def folds_view(crossval) -> TableView:
    """What each fold's study chose (a ``study.crossval.CrossValidation``): its tuning and held-out
    scores, its pipeline, and each tuned baseline's choice; how far the folds agree in the caption."""
    metric = crossval.report.metric
    columns = [
        Column(header, True)
        for header in ("fold", "tuned on", "held out", "trial", f"tuning {metric}", f"held-out {metric}")
    ]
    columns.append(Column("chosen pipeline"))
    columns += [Column(f"{baseline}-only, tuned: held-out {metric}, choice") for baseline in crossval.baseline_folds]
    rows = tuple(
        (
            str(choice.fold),
            str(choice.tune_queries),
            str(choice.heldout_queries),
            str(choice.trial),
            f"{choice.tuning_value:.4f}",
            f"{choice.heldout_value:.4f}",
            choice.describe(),
            *[
                f"{choices[index].heldout_value:.4f}, {choices[index].describe()}"
                for choices in crossval.baseline_folds.values()
            ],
        )
        for index, choice in enumerate(crossval.folds)
    )
    return TableView(
        f"cross-validation: what each fold chose ({metric})", tuple(columns), rows, agreement_lines(crossval)
    )
