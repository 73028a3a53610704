"""Held-out verdict, the HTML report and reproducibility, on real small studies over ADI."""

from __future__ import annotations

import tomllib
from pathlib import Path

import optuna
import pytest
import stores
from typer.testing import CliRunner

from workbench.cli import app
from workbench.evaluation.heldout import HeldoutReport, SystemRow, combine_evaluations
from workbench.evaluation.metrics import Evaluation
from workbench.evaluation.significance import ConfidenceInterval, PairedComparison, holm_adjusted
from workbench.study.config import load_study_config
from workbench.study.runner import run_study
from workbench.study.splits import study_splits

REPO = Path(__file__).resolve().parents[2]

SPACE = """
[space.fusion]
method = ["bm25", "convex"]
[space.bm25]
k1 = { low = 0.5, high = 2.0 }
"""


def write_study(folder: Path, name: str, n_trials: int = 4) -> Path:
    return stores.write_study(folder, name, n_trials, SPACE, seed=11, latency_sample=2, extra="heldout_fraction = 0.3")


def test_carved_heldout_split_is_seeded_disjoint_and_recorded(tmp_path, adi):
    config = load_study_config(write_study(tmp_path, "carve"))
    first, again = study_splits(config, adi), study_splits(config, adi)
    assert first == again
    tune, heldout = first.tune.queries.keys(), first.heldout.queries.keys()
    assert not tune & heldout
    assert tune | heldout == adi.judged_queries("test").keys()
    assert len(heldout) == round(0.3 * len(adi.judged_queries("test")))


def test_run_prints_heldout_table_and_export_carries_it(tmp_path):
    study_file = write_study(tmp_path, "verdict")
    state = tmp_path / "state"
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(study_file), "--state-dir", str(state)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "held-out split 'test-heldout'" in result.output
    assert "overfitting gap" in result.output
    out = tmp_path / "best.toml"
    result = runner.invoke(app, ["export", str(study_file), "--out", str(out), "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    heldout = tomllib.loads(out.read_text())["provenance"]["heldout"]
    assert set(heldout["systems"]) == {"tuned", "bm25", "dense"}
    assert set(heldout["vs_baselines"]) == {"bm25", "dense"}
    ndcg = heldout["systems"]["tuned"]["nDCG@10"]
    assert ndcg["ci_low"] <= ndcg["mean"] <= ndcg["ci_high"]
    comparison = heldout["vs_baselines"]["bm25"]["nDCG@10"]
    assert 0.0 <= comparison["p_value"] <= comparison["p_corrected"] <= 1.0
    assert comparison["wins"] + comparison["ties"] + comparison["losses"] == heldout["num_queries"]
    beats = heldout["beats_best_baseline"]
    assert heldout["verdict"].startswith("WARNING") != beats


def test_report_has_every_section(tmp_path):
    study_file = write_study(tmp_path, "report")
    state = tmp_path / "state"
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(study_file), "--state-dir", str(state)]).exit_code == 0
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(study_file), "--out", str(out), "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    for section in (
        "Settings",
        "Optimisation history",
        "Parameter importances",
        "Score by parameter",
        "Held-out split",
        "Queries where the tuned pipeline does worse than BM25",
    ):
        assert section in page, section
    assert '<script src="http' not in page  # self-contained: plotly is inlined

    again = ["report", str(study_file), "--out", str(out), "--state-dir", str(state)]
    refused = runner.invoke(app, again)
    assert refused.exit_code == 2 and "exists; pass --force" in refused.output
    assert out.read_text() == page
    assert runner.invoke(app, [*again, "--force"]).exit_code == 0


def test_same_seed_same_trials_same_scores(tmp_path):
    outcomes = []
    for run in ("first", "second"):
        (tmp_path / run).mkdir()
        config = load_study_config(write_study(tmp_path / run, "repro", 5))
        outcome = run_study(config, tmp_path / run / "state", show_progress=False)
        trials = outcome.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        outcomes.append([(t.number, t.params, t.values) for t in trials])
    assert len(outcomes[0]) == 5
    assert outcomes[0] == outcomes[1]


def _evaluation(mean: float) -> Evaluation:
    return Evaluation({"nDCG@10": {"q": mean}, "MAP": {"q": mean}}, {"nDCG@10": mean, "MAP": mean}, 1)


def _comparison(p_value: float) -> PairedComparison:
    return PairedComparison(mean_difference=0.05, p_value=p_value, wins=3, ties=0, losses=1)


def test_the_verdict_keys_on_the_holm_corrected_p_of_the_study_metric():
    # nDCG@10 vs the best baseline (bm25) has raw p 0.03, below 0.05, but among four comparisons
    # Holm gives 0.01 x 4 = 0.04, 0.02 x 3 = 0.06, 0.03 x 2 = 0.06, 0.04 -> 0.06: not significant.
    ci = ConfidenceInterval(0.5, 0.4, 0.6, 0.95)
    report = HeldoutReport(
        "test",
        4,
        "nDCG@10",
        {"tuned": _evaluation(0.6), "bm25": _evaluation(0.55), "dense": _evaluation(0.5)},
        {system: {"nDCG@10": ci, "MAP": ci} for system in ("tuned", "bm25", "dense")},
        {
            "bm25": {"nDCG@10": _comparison(0.03), "MAP": _comparison(0.02)},
            "dense": {"nDCG@10": _comparison(0.01), "MAP": _comparison(0.04)},
        },
        tuning_value=0.62,
    )
    assert report.num_comparisons == 4
    assert report.corrected == {
        "bm25": {"nDCG@10": pytest.approx(0.06), "MAP": pytest.approx(0.06)},
        "dense": {"nDCG@10": pytest.approx(0.04), "MAP": pytest.approx(0.06)},
    }
    assert holm_adjusted([0.03, 0.02, 0.01, 0.04]) == pytest.approx([0.06, 0.06, 0.04, 0.06])
    assert report.best_baseline == "bm25" and not report.beats_baselines
    assert report.verdict().startswith("WARNING") and "p = 0.03" in report.verdict() and "0.06" in report.verdict()
    rows = report.rows()
    assert rows[0] == SystemRow("tuned", "tuned", rows[0].intervals, None, None)
    assert rows[1].p_corrected == pytest.approx(0.06) and rows[1].comparison.p_value == 0.03
    metrics = report.to_metrics()
    assert metrics["heldout_p_vs_bm25_ndcg_at_10"] == 0.03
    assert metrics["heldout_p_holm_vs_bm25_ndcg_at_10"] == pytest.approx(0.06)
    assert report.to_dict()["vs_baselines"]["dense"]["nDCG@10"]["p_corrected"] == pytest.approx(0.04)


def test_combined_evaluations_score_each_query_once():
    first = Evaluation({"MAP": {"a": 1.0, "b": 0.0}}, {"MAP": 0.5}, 2)
    second = Evaluation({"MAP": {"c": 0.5}}, {"MAP": 0.5}, 1)
    combined = combine_evaluations([first, second])
    assert combined.per_query == {"MAP": {"a": 1.0, "b": 0.0, "c": 0.5}}
    assert combined.means == {"MAP": pytest.approx(0.5)} and combined.num_queries == 3
    with pytest.raises(ValueError, match="scored twice"):
        combine_evaluations([first, first])
