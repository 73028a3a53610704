"""The terminal and the HTML report render the same table views."""

from __future__ import annotations

import optuna
from rich.console import Console

from workbench.reporting.tables import leaderboard_table
from workbench.reporting.views import leaderboard_view
from workbench.study.attributes import BASELINE_ATTR, WORSE_ATTR
from workbench.study.result import leaderboard


def _board():
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="views")
    for values, params, attrs in (
        ([0.6, 3.0], {}, {BASELINE_ATTR: "bm25"}),
        ([0.8, 9.5], {"retrievers.bm25.k1": 1.5, "retrievers.bm25_strict.k1": 0.8}, {}),
        ([0.5, 2.0], {"bm25.b": 0.4}, {WORSE_ATTR: True}),
    ):
        distributions = {key: optuna.distributions.FloatDistribution(0.0, 10.0) for key in params}
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=distributions, values=values, user_attrs=attrs)
        )
    return leaderboard(study, "nDCG@10")


def test_leaderboard_view_names_each_stages_parameters_and_mutes_worse_trials():
    view = leaderboard_view(_board())

    assert view.headers == ["trial", "nDCG@10", "latency ms", "recall@100", "flag", "pipeline"]
    assert view.rows[0] == ("1", "0.8000", "9.5", "nan", "", "bm25.k1=1.5, bm25_strict.k1=0.8")
    assert view.dim == frozenset({2}) and view.rows[2][4] == "worse than baseline"
    assert view.caption == ("3 finished, 0 pruned, 0 failed trials",)


def test_terminal_table_renders_the_view():
    view = leaderboard_view(_board())
    console = Console(width=200, record=True)
    console.print(leaderboard_table(_board()))
    text = console.export_text()
    assert view.title in text and view.caption[0] in text
    for row in view.rows:
        assert all(cell in text for cell in row)
