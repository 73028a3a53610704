"""Rich tables for the terminal: metrics of one run, leaderboards of trials, held-out reports."""

from __future__ import annotations

from workbench.evaluation.heldout import HeldoutReport, interval_text, row_comparison_text
from workbench.evaluation.metrics import Evaluation
from workbench.study.attributes import BASELINE_ATTR, DUPLICATE_ATTR, EXHAUSTED_ATTR, METRICS_ATTR, WORSE_ATTR


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
    skipped = [trial for trial in failed if DUPLICATE_ATTR in trial.user_attrs]
    table.caption = (
        f"{len(complete) - len(repeats)} finished, {len(pruned)} pruned, {len(failed) - len(skipped)} failed trials"
        + (f"; {len(skipped)} proposals repeated a tried configuration and were skipped" if skipped else "")
        + (f"; {len(repeats)} repeats scored by an older workbench are not shown" if repeats else "")
    )
    if exhausted := study.user_attrs.get(EXHAUSTED_ATTR):
        table.caption += f"\nsearch space exhausted: {exhausted}"
    return table


def heldout_table(report: HeldoutReport):
    """Returns a rich ``Table`` of the report's rows: mean [95% CI] per metric, the tuned pipeline against each."""
    from rich.table import Table

    table = Table(title=f"{report.title}: mean [95% bootstrap CI]", title_justify="left")
    table.add_column("system")
    metrics = list(report.rows()[0].intervals)
    for metric in metrics:
        table.add_column(metric, justify="right")
    table.add_column(f"tuned vs it on {report.metric}: Δ, p (Holm p), W/T/L", justify="right")
    for row in report.rows():
        table.add_row(row.label, *[interval_text(ci) for ci in row.intervals.values()], row_comparison_text(row))
    table.caption = "\n".join(
        [
            f"overfitting gap ({report.metric}, tuning − held-out): {report.overfitting_gap:+.4f}. {report.verdict()}",
            *report.warnings,
        ]
    )
    return table


def folds_table(crossval):
    """Returns a rich ``Table`` of what each fold's study chose (a ``study.crossval.CrossValidation``):
    its tuning and held-out scores, its pipeline, and each tuned baseline's choice."""
    from rich.table import Table

    metric = crossval.report.metric
    table = Table(title=f"cross-validation: what each fold chose ({metric})", title_justify="left")
    for column in ("fold", "tuned on", "held out", "trial", f"tuning {metric}", f"held-out {metric}"):
        table.add_column(column, justify="right")
    table.add_column("chosen pipeline")
    for baseline in crossval.baseline_folds:
        table.add_column(f"{baseline}-only, tuned: held-out {metric}, choice")
    for index, choice in enumerate(crossval.folds):
        baselines = [
            f"{choices[index].heldout_value:.4f}, {choices[index].describe()}"
            for choices in crossval.baseline_folds.values()
        ]
        table.add_row(
            str(choice.fold),
            str(choice.tune_queries),
            str(choice.heldout_queries),
            str(choice.trial),
            f"{choice.tuning_value:.4f}",
            f"{choice.heldout_value:.4f}",
            choice.describe(),
            *baselines,
        )
    table.caption = "\n".join(crossval.agreement_lines())
    return table
