"""A study's result as data: the leaderboard's rows and counts, one description of a trial's choice
that keeps first stages apart, and crossval/nested studies that never reach into the session."""

from __future__ import annotations

import ast
from pathlib import Path

import optuna

from workbench.study.attributes import BASELINE_ATTR, DUPLICATE_ATTR, EXHAUSTED_ATTR, METRICS_ATTR, WORSE_ATTR
from workbench.study.objective import describe_choice, param_label
from workbench.study.result import leaderboard

STUDY_PACKAGE = Path(__file__).parents[2] / "workbench" / "study"


def _trial(value: float, params: dict, user_attrs: dict | None = None, state=optuna.trial.TrialState.COMPLETE):
    distributions = {
        key: optuna.distributions.FloatDistribution(0.0, 10.0)
        if isinstance(value_, float)
        else optuna.distributions.CategoricalDistribution([value_])
        for key, value_ in params.items()
    }
    return optuna.trial.create_trial(
        params=params,
        distributions=distributions,
        value=value if state == optuna.trial.TrialState.COMPLETE else None,
        user_attrs=user_attrs or {},
        state=state,
    )


def test_parameters_of_several_first_stages_keep_their_stage():
    params = {
        "retrievers": "bm25+bm25_strict",
        "retrievers.bm25.k1": 1.2,
        "retrievers.bm25_strict.k1": 0.7,
        "fusion.weight.bm25": 0.25,
    }
    assert describe_choice(params) == "retrievers=bm25+bm25_strict, bm25.k1=1.2, bm25_strict.k1=0.7, weight.bm25=0.25"
    # the two-stage layout's names (one stage per table) stay short, as in earlier studies' leaderboards
    assert [param_label(key) for key in ("bm25.k1", "fusion.alpha", "first_stage_depth")] == [
        "k1",
        "alpha",
        "first_stage_depth",
    ]
    assert describe_choice({}, "bm25") == "baseline: bm25-only, defaults"


def test_leaderboard_ranks_flags_and_counts_trials():
    study = optuna.create_study(direction="maximize", study_name="board")
    study.add_trial(_trial(0.50, {}, {BASELINE_ATTR: "bm25", METRICS_ATTR: {"recall_at_100": 0.9}}))
    study.add_trial(_trial(0.70, {"retrievers.bm25.k1": 1.5, "retrievers.tfidf.sublinear": "yes"}))
    study.add_trial(_trial(0.45, {"bm25.k1": 0.9}, {WORSE_ATTR: True}))
    study.add_trial(_trial(0.70, {"bm25.k1": 1.5}, {DUPLICATE_ATTR: 1}))  # a repeat an older workbench scored
    study.add_trial(_trial(0.0, {"bm25.k1": 1.1}, {DUPLICATE_ATTR: 1}, optuna.trial.TrialState.FAIL))
    study.add_trial(_trial(0.0, {"bm25.k1": 1.3}, state=optuna.trial.TrialState.PRUNED))
    study.set_user_attr(EXHAUSTED_ATTR, "2 configurations")

    board = leaderboard(study, "nDCG@10", top=1)

    assert [row.trial for row in board.rows] == [1, 0]  # the best, then the baseline outside the top
    best, baseline = board.rows
    assert best.pipeline == "bm25.k1=1.5, tfidf.sublinear=yes" and best.flag == "" and best.latency_ms is None
    assert baseline.flag == "baseline" and baseline.recall_at_100 == 0.9
    assert (board.finished, board.pruned, board.failed, board.skipped, board.repeats) == (3, 1, 0, 1, 1)
    assert board.exhausted == "2 configurations" and not board.two_objectives


def test_nested_studies_and_their_judging_never_import_the_session():
    for module in ("nested.py", "crossval.py"):
        tree = ast.parse((STUDY_PACKAGE / module).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert "workbench.study.session" not in imported, module
