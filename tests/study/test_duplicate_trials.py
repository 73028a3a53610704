"""A configuration the sampler proposes twice is scored once and listed once."""

from __future__ import annotations

from pathlib import Path

import optuna

from workbench.reporting.tables import leaderboard_table
from workbench.study.attributes import BASELINE_ATTR, DUPLICATE_ATTR, METRICS_ATTR
from workbench.study.config import load_study_config
from workbench.study.runner import run_study

REPO = Path(__file__).resolve().parents[2]

STUDY = f"""
name = "repeats"
corpus = "{REPO / "corpora" / "adi"}"
tune_split = "test"
heldout_fraction = 0.3
n_trials = 8
sampler = "random"
seed = 5
latency_sample = 1
[space.fusion]
method = "bm25"
[space.bm25]
b = [0.5, 0.75]
"""


def test_repeated_configurations_reuse_the_first_score(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    study = run_study(load_study_config(path), tmp_path / "state", show_progress=False).study
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    searched = [t for t in trials if not t.user_attrs.get(BASELINE_ATTR)]
    repeats = [t for t in searched if DUPLICATE_ATTR in t.user_attrs]
    assert len(searched) == 6 and len(repeats) >= 4  # only two distinct configurations exist
    by_number = {t.number: t for t in trials}
    for repeat in repeats:
        first = by_number[repeat.user_attrs[DUPLICATE_ATTR]]
        assert first.params == repeat.params and DUPLICATE_ATTR not in first.user_attrs
        assert repeat.values == first.values
        assert repeat.user_attrs[METRICS_ATTR] == first.user_attrs[METRICS_ATTR]
    shown = [row for row in leaderboard_table(study, "nDCG@10").columns[0].cells]
    assert len(shown) == len(trials) - len(repeats)
