"""Optuna's plots of a study: drawn once here, written as HTML files or embedded in the report."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

from workbench.files import atomic_write_with


@dataclass(frozen=True)
class StudyFigure:
    file_name: str
    title: str
    figure: object | None  # a plotly Figure, or None when it could not be drawn
    reason: str = ""  # why it could not be drawn


def study_figures(study, metric: str) -> list[StudyFigure]:
    """Returns optimisation history, parameter importances, slices and (two objectives) the Pareto front."""
    import optuna.visualization as vis

    multi = len(study.directions) > 1
    target = (lambda trial: trial.values[0]) if multi else None
    drawers = [
        (
            "optimization_history.html",
            "Optimisation history",
            lambda: vis.plot_optimization_history(study, target=target, target_name=metric),
        ),
        (
            "param_importances.html",
            "Parameter importances",
            lambda: vis.plot_param_importances(study, target=target, target_name=metric),
        ),
        (
            "slices.html",
            "Score by parameter (slices: chunk size, model, alpha, ...)",
            lambda: vis.plot_slice(study, target=target, target_name=metric),
        ),
    ]
    if multi:
        drawers.append(
            (
                "pareto_front.html",
                "Pareto front",
                lambda: vis.plot_pareto_front(study, target_names=[metric, "latency ms"]),
            )
        )
    figures = []
    for file_name, title, draw in drawers:
        try:
            with warnings.catch_warnings():
                # Importance estimates warn about sparse regimes on small studies; the plot still says enough.
                warnings.simplefilter("ignore", UserWarning)
                figures.append(StudyFigure(file_name, title, draw()))
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            figures.append(StudyFigure(file_name, title, None, str(error)))
    return figures


def write_study_plots(study, metric: str, folder: Path) -> tuple[list[Path], list[str]]:
    """Writes each study figure as a self-contained HTML file, each whole or not at all (temp file, then rename).

    Returns the files written and, for each plot that could not be drawn, why. Raises ``OSError``
    naming the file when one cannot be written (a full disk); the plots written before it are
    kept, and no half-written file is left.
    """
    written, skipped = [], []
    for figure in study_figures(study, metric):
        if figure.figure is None:
            skipped.append(f"{figure.file_name}: {figure.reason}")
            continue
        path = folder / figure.file_name
        try:
            atomic_write_with(path, functools.partial(_write_html, figure.figure))
        except OSError as error:
            raise OSError(error.errno, error.strerror or str(error), str(path)) from None
        written.append(path)
    return written, skipped


def _write_html(figure, path: Path) -> None:
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)
