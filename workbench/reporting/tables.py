"""Rich tables for the terminal: metrics of one run, leaderboards of trials."""

from __future__ import annotations

from workbench.evaluation.metrics import Evaluation


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


def _describe_trial(trial) -> str:
    from workbench.study.runner import BASELINE_ATTR

    baseline = trial.user_attrs.get(BASELINE_ATTR)
    if baseline:
        return f"baseline: {baseline}-only, defaults"
    parts = []
    for key, value in trial.params.items():
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key.split('.')[-1]}={shown}")
    return ", ".join(parts)


def leaderboard_table(study, metric: str, top: int = 10):
    """Returns a rich ``Table`` of the best finished trials, baselines always included."""
    import optuna
    from rich.table import Table

    from workbench.study.runner import BASELINE_ATTR, DUPLICATE_ATTR, METRICS_ATTR, WORSE_ATTR

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    repeats = [trial for trial in complete if DUPLICATE_ATTR in trial.user_attrs]
    ranked = sorted(
        (trial for trial in complete if DUPLICATE_ATTR not in trial.user_attrs),
        key=lambda trial: (-trial.values[0], trial.number),
    )
    shown = ranked[:top] + [t for t in ranked[top:] if t.user_attrs.get(BASELINE_ATTR)]
    multi = len(study.directions) > 1
    table = Table(title=f"study {study.study_name}: top trials by {metric} on the tuning split", title_justify="left")
    table.add_column("trial", justify="right")
    table.add_column(metric, justify="right")
    if multi:
        table.add_column("latency ms", justify="right")
    table.add_column("recall@100", justify="right")
    table.add_column("flag")
    table.add_column("pipeline")
    for trial in shown:
        metrics = trial.user_attrs.get(METRICS_ATTR, {})
        flag = "baseline" if trial.user_attrs.get(BASELINE_ATTR) else ""
        if trial.user_attrs.get(WORSE_ATTR):
            flag = "worse than baseline"
        row = [str(trial.number), f"{trial.values[0]:.4f}"]
        if multi:
            row.append(f"{trial.values[1]:.1f}")
        row += [f"{metrics.get('recall_at_100', float('nan')):.4f}", flag, _describe_trial(trial)]
        table.add_row(*row, style="dim" if flag == "worse than baseline" else None)
    failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    table.caption = (
        f"{len(complete)} finished ({len(repeats)} repeated an earlier configuration and are not shown), "
        f"{len(pruned)} pruned, {len(failed)} failed trials"
    )
    return table
