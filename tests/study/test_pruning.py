"""Pruning by query batches: real Optuna pruners over a real study on ADI."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from workbench.errors import ConfigError
from workbench.study.attributes import BASELINE_ATTR
from workbench.study.config import load_study_config
from workbench.study.runner import run_study

REPO = Path(__file__).resolve().parents[2]

STUDY = """
name = "pruned"
corpus = "{corpus}"
tune_split = "test"
heldout_fraction = 0.3
n_trials = 10
sampler = "random"
seed = 3
latency_sample = 1
pruner = "{pruner}"
pruning_batches = 4
[space.fusion]
method = "bm25"
[space.bm25]
k1 = {{ low = 0.0, high = 3.0 }}
b = {{ low = 0.0, high = 1.0 }}
"""


@pytest.mark.parametrize("pruner", ["median", "wilcoxon"])
def test_pruned_trials_report_batches_and_count_towards_the_budget(tmp_path, pruner):
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(corpus=REPO / "corpora" / "adi", pruner=pruner))
    outcome = run_study(load_study_config(path), tmp_path / "state", show_progress=False)
    trials = outcome.study.get_trials()
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 10
    for trial in trials:
        # every trial reports per batch or per query; baselines too, so that a pruner can compare
        # a trial with a baseline that leads, but they are never pruned
        assert trial.intermediate_values
        if trial.user_attrs.get(BASELINE_ATTR):
            assert trial.state == optuna.trial.TrialState.COMPLETE
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the space holds clearly bad points (k1 or b near 0): the pruner must stop some"
    assert all(not t.user_attrs.get(BASELINE_ATTR) for t in pruned)
    if pruner == "median":
        assert all(len(t.intermediate_values) <= 4 for t in trials)
    runs = {run.data.tags["workbench.trial_number"]: run for run in outcome.session.tracker.child_runs()}
    for trial in trials:
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert runs[str(trial.number)].info.status == "KILLED"


def test_pruning_refuses_two_objectives(tmp_path):
    path = tmp_path / "study.toml"
    text = STUDY.format(corpus=REPO / "corpora" / "adi", pruner="median")
    path.write_text(text.replace("[space.fusion]", 'second_objective = "latency"\n[space.fusion]'))
    with pytest.raises(ConfigError, match="pruner needs a single objective"):
        load_study_config(path)
