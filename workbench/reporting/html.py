"""A self-contained HTML page about one study: settings, plots, per-fold choices, held-out verdict, per-query losses."""

from __future__ import annotations

import html
from pathlib import Path

from workbench.evaluation.heldout import HeldoutReport, interval_text, row_comparison_text
from workbench.reporting.plots import study_figures
from workbench.study.config import StudyConfig


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _heldout_section(report: HeldoutReport, query_texts: dict[str, str], max_losses: int) -> str:
    rows = report.rows()
    metrics = list(rows[0].intervals)
    table_rows = [
        [row.label, *[interval_text(ci) for ci in row.intervals.values()], row_comparison_text(row)] for row in rows
    ]
    verdict_class = "ok" if report.beats_baselines else "warn"
    parts = [
        f"<h2>{html.escape(report.title[0].upper() + report.title[1:])}</h2>",
        f"<p class='{verdict_class}'>{html.escape(report.verdict())}</p>",
        *[f"<p class='warn'>{html.escape(warning)}</p>" for warning in report.warnings],
        f"<p>Overfitting gap ({html.escape(report.metric)}, tuning − held-out): {report.overfitting_gap:+.4f}</p>",
        _table(
            [
                "system",
                *[f"{m} mean [95% CI]" for m in metrics],
                f"tuned − system on {report.metric}: Δ, p (Holm p), W/T/L",
            ],
            table_rows,
        ),
    ]
    if "bm25" in report.evaluations:
        tuned = report.evaluations["tuned"].per_query[report.metric]
        bm25 = report.evaluations["bm25"].per_query[report.metric]
        deltas = sorted(((tuned[q] - bm25[q], q) for q in tuned), key=lambda item: item[0])
        losses = [(d, q) for d, q in deltas if d < 0][:max_losses]
        wins = [(d, q) for d, q in reversed(deltas) if d > 0][:max_losses]
        loss_rows = [[q, query_texts.get(q, ""), f"{tuned[q]:.3f}", f"{bm25[q]:.3f}", f"{d:+.3f}"] for d, q in losses]
        win_rows = [[q, query_texts.get(q, ""), f"{tuned[q]:.3f}", f"{bm25[q]:.3f}", f"{d:+.3f}"] for d, q in wins]
        headers = ["query", "text", f"tuned {report.metric}", f"BM25 {report.metric}", "Δ"]
        parts += [
            f"<h2>Queries where the tuned pipeline does worse than BM25 ({sum(1 for d, _ in deltas if d < 0)})</h2>",
            _table(headers, loss_rows) if loss_rows else "<p>none</p>",
            f"<h2>Queries where it does better ({sum(1 for d, _ in deltas if d > 0)})</h2>",
            _table(headers, win_rows) if win_rows else "<p>none</p>",
        ]
    return "\n".join(parts)


def _folds_section(crossval) -> str:
    metric = crossval.report.metric
    headers = ["fold", "tuned on", "held out", "trial", f"tuning {metric}", f"held-out {metric}", "chosen pipeline"]
    headers += [f"{baseline}-only, tuned: held-out {metric}, choice" for baseline in crossval.baseline_folds]
    rows = []
    for index, choice in enumerate(crossval.folds):
        rows.append(
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
        )
    return "\n".join(
        [
            "<h2>Cross-validation: what each fold chose</h2>",
            (
                "<p>Each fold's study tuned on the other folds' queries only; its choice was scored on the fold's "
                "queries, so every judged query below has one score from a config that never saw it.</p>"
            ),
            _table(headers, rows),
            *[f"<p>{html.escape(line)}</p>" for line in crossval.agreement_lines()],
        ]
    )


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
) -> str:
    """Returns the study report as one HTML document with plotly inlined (opens offline).

    ``crossval`` (a ``study.crossval.CrossValidation``) adds what each fold chose.
    """
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
    sections = [
        f"<h1>Study {html.escape(config.name)}</h1>",
        "<h2>Settings</h2>",
        _table(["setting", "value"], settings),
    ]
    first_plot = True
    for figure in study_figures(study, config.metric):
        sections.append(f"<h2>{html.escape(figure.title)}</h2>")
        if figure.figure is None:
            sections.append(f"<p>not drawn: {html.escape(figure.reason)}</p>")
            continue
        sections.append(figure.figure.to_html(full_html=False, include_plotlyjs=first_plot))
        first_plot = False
    if crossval is not None:
        sections.append(_folds_section(crossval))
    if report is not None:
        sections.append(_heldout_section(report, query_texts, max_losses))
    else:
        sections.append("<h2>Held-out</h2><p>No held-out split in this study.</p>")
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "th{background:#f3f3f3}.warn{color:#a40000;font-weight:bold}.ok{color:#006400;font-weight:bold}"
    )
    body = "\n".join(sections)
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>workbench study {html.escape(config.name)}</title><style>{style}</style></head><body>{body}</body></html>"


def write_report(path: Path, page: str) -> None:
    """Writes the page atomically."""
    from workbench.files import atomic_write_bytes

    atomic_write_bytes(path, page.encode("utf-8"))
