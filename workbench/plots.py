"""Optuna's plots of a study, written as self-contained HTML files."""

from __future__ import annotations

from pathlib import Path


def write_study_plots(study, metric: str, folder: Path) -> tuple[list[Path], list[str]]:
    """Writes optimisation history, parameter importances and (two objectives) the Pareto front.

    Returns the files written and, for each plot that could not be drawn, why.
    """
    import optuna.visualization as vis

    folder.mkdir(parents=True, exist_ok=True)
    multi = len(study.directions) > 1
    target = (lambda trial: trial.values[0]) if multi else None
    plots = {
        "optimization_history.html": lambda: vis.plot_optimization_history(study, target=target, target_name=metric),
        "param_importances.html": lambda: vis.plot_param_importances(study, target=target, target_name=metric),
    }
    if multi:
        plots["pareto_front.html"] = lambda: vis.plot_pareto_front(study, target_names=[metric, "latency ms"])
    written, skipped = [], []
    for name, draw in plots.items():
        try:
            figure = draw()
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            skipped.append(f"{name}: {error}")
            continue
        path = folder / name
        figure.write_html(str(path), include_plotlyjs=True, full_html=True)
        written.append(path)
    return written, skipped
