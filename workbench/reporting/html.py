"""A self-contained HTML page about one study: settings, plots, per-fold choices, held-out verdict, per-query losses.

The page is the Jinja template ``templates/report.html.j2`` filled with data prepared here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.evaluation.heldout import HeldoutReport, interval_text, row_comparison_text
from workbench.reporting.plots import study_figures
from workbench.study.config import StudyConfig

TEMPLATES = Path(__file__).parent / "templates"


def _per_query(report: HeldoutReport, query_texts: dict[str, str], max_rows: int) -> dict[str, Any] | None:
    """The queries where the tuned pipeline loses to BM25 and where it wins, worst and best first."""
    if "bm25" not in report.evaluations:
        return None
    tuned = report.evaluations["tuned"].per_query[report.metric]
    bm25 = report.evaluations["bm25"].per_query[report.metric]
    deltas = sorted(((tuned[q] - bm25[q], q) for q in tuned), key=lambda item: item[0])

    def row(delta: float, query_id: str) -> list[str]:
        return [
            query_id,
            query_texts.get(query_id, ""),
            f"{tuned[query_id]:.3f}",
            f"{bm25[query_id]:.3f}",
            f"{delta:+.3f}",
        ]

    return {
        "headers": ["query", "text", f"tuned {report.metric}", f"BM25 {report.metric}", "Δ"],
        "losses": [row(d, q) for d, q in deltas if d < 0][:max_rows],
        "wins": [row(d, q) for d, q in reversed(deltas) if d > 0][:max_rows],
        "loss_count": sum(1 for d, _ in deltas if d < 0),
        "win_count": sum(1 for d, _ in deltas if d > 0),
    }


def _folds(crossval) -> dict[str, Any]:
    """What each fold's study chose and how its choice scored on the fold's own queries."""
    metric = crossval.report.metric
    headers = ["fold", "tuned on", "held out", "trial", f"tuning {metric}", f"held-out {metric}", "chosen pipeline"]
    headers += [f"{baseline}-only, tuned: held-out {metric}, choice" for baseline in crossval.baseline_folds]
    rows = [
        [
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
        ]
        for index, choice in enumerate(crossval.folds)
    ]
    return {"headers": headers, "rows": rows, "agreement": crossval.agreement_lines()}


def _heldout_setting(config: StudyConfig, report: HeldoutReport | None) -> str:
    if report is not None and report.folds:
        return f"{report.folds}-fold cross-validation over {report.num_queries} judged queries of {config.tune_split} (seeded)"
    return config.heldout_split or f"{config.heldout_fraction:.0%} of {config.tune_split} (seeded)"


def render_report(
    config: StudyConfig,
    study,
    report: HeldoutReport | None,
    query_texts: dict[str, str],
    max_losses: int = 25,
    crossval=None,
    export_reason: str = "",
) -> str:
    """Returns the study report as one HTML document with plotly inlined (opens offline).

    ``crossval`` (a ``study.crossval.CrossValidation``) adds what each fold chose; ``export_reason``
    (``study.export.ExportChoice.reason``) which config `workbench export` writes, and why.
    """
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    settings = [
        ["corpus", str(config.corpus)],
        ["tuning split", config.tune_split],
        ["held-out", _heldout_setting(config, report)],
        ["baselines", config.baselines],
        ["metric", config.metric],
        ["second objective", config.second_objective],
        ["trials", str(len(study.trials))],
        ["sampler / seed", f"{config.sampler} / {config.seed}"],
        ["search space", config.space.model_dump_json()],
    ]
    figures = []
    first_plot = True
    for figure in study_figures(study, config.metric):
        html = None
        if figure.figure is not None:
            html = figure.figure.to_html(full_html=False, include_plotlyjs=first_plot)
            first_plot = False
        figures.append({"title": figure.title, "html": html, "reason": figure.reason})
    context: dict[str, Any] = {
        "config": config,
        "settings": settings,
        "figures": figures,
        "heldout": report,
        "folds": _folds(crossval) if crossval is not None else None,
        "export_reason": export_reason,
    }
    if report is not None:
        rows = report.rows()
        context["heldout_headers"] = [
            "system",
            *[f"{metric} mean [95% CI]" for metric in rows[0].intervals],
            f"tuned − system on {report.metric}: Δ, p (Holm p), W/T/L",
        ]
        context["heldout_rows"] = [
            [row.label, *[interval_text(ci) for ci in row.intervals.values()], row_comparison_text(row)] for row in rows
        ]
        context["per_query"] = _per_query(report, query_texts, max_losses)
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    return environment.get_template("report.html.j2").render(context)


def write_report(path: Path, page: str) -> None:
    """Writes the page atomically."""
    from workbench.files import atomic_write_bytes

    atomic_write_bytes(path, page.encode("utf-8"))
