"""Held-out verdict, the HTML report and reproducibility, on real small studies over ADI."""

from __future__ import annotations

import tomllib
from pathlib import Path

import optuna
import stores
from typer.testing import CliRunner

from workbench.cli import app
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
    assert 0.0 <= comparison["p_value"] <= 1.0
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
