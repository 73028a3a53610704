"""A self-contained HTML page about one study: settings, plots, per-fold choices, held-out verdict, per-query losses.

The page is the Jinja template ``templates/report.html.j2`` filled with data prepared here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.evaluation.heldout import HeldoutReport
from workbench.reporting.plots import study_figures
from workbench.reporting.views import folds_view, heldout_view
from workbench.study.config import StudyConfig

if TYPE_CHECKING:
    from workbench.study.result import StudyResult

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


def _heldout_setting(config: StudyConfig, report: HeldoutReport | None) -> str:
    if report is not None and report.folds:
        return f"{report.folds}-fold cross-validation over {report.num_queries} judged queries of {config.tune_split} (seeded)"
    return config.heldout_split or f"{config.heldout_fraction:.0%} of {config.tune_split} (seeded)"


def render_report(result: StudyResult, study, query_texts: dict[str, str], max_losses: int = 25) -> str:
    """Returns the report of a study's result (``study.result.study_result``) as one HTML document with
    plotly inlined (opens offline): settings, plots of ``study`` (its Optuna study), what each fold chose,
    the held-out verdict, which config `workbench export` writes and why, and per-query losses.
    """
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    config = result.config
    verdict = result.verdict
    report = verdict.heldout if verdict is not None else None
    crossval = verdict.crossval if verdict is not None else None
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
        "folds": folds_view(crossval) if crossval is not None else None,
        "export_reason": result.export.reason if result.export is not None else "",
    }
    if report is not None:
        context["heldout_table"] = heldout_view(report)
        context["per_query"] = _per_query(report, query_texts, max_losses)
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    return environment.get_template("report.html.j2").render(context)


def write_report(path: Path, page: str) -> None:
    """Writes the page atomically."""
    from workbench.files import atomic_write_bytes

    atomic_write_bytes(path, page.encode("utf-8"))
