"""No two finished trials of a study hold the same parameters: a proposal that repeats a tried
configuration is skipped without counting, a resumed sampler draws new points, and a space with
fewer configurations than the budget ends the search with a note (issue 22)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import stores
from gates import TrialGate

from workbench.reporting.tables import leaderboard_table
from workbench.study.attributes import BASELINE_ATTR, DUPLICATE_ATTR, EXHAUSTED_ATTR, FAIL_ATTR
from workbench.study.config import load_study_config
from workbench.study.optuna_study import resumed_seed
from workbench.study.result import leaderboard
from workbench.study.runner import run_study
from workbench.study.space import space_size
from workbench.study.storage import journal_url, open_storage

TWO_POINTS = '[space.fusion]\nmethod = "bm25"\n[space.bm25]\nb = [0.5, 0.75]\n'
CONTINUOUS = '[space.fusion]\nmethod = "bm25"\n[space.bm25]\nk1 = { low = 0.5, high = 2.0 }\n'


def finished(study) -> list:
    states = optuna.trial.TrialState
    return study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED))


def searched_params(study) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in finished(study) if not t.user_attrs.get(BASELINE_ATTR)]


def test_a_space_smaller_than_the_budget_is_searched_once_and_said(tmp_path, state):
    path = stores.write_study(tmp_path, "repeats", 8, TWO_POINTS, latency_sample=1)

    study = run_study(load_study_config(path), state, show_progress=False).study

    params = searched_params(study)
    assert sorted(params) == [(("retrievers.bm25.b", 0.5),), (("retrievers.bm25.b", 0.75),)]  # 2 baselines + the 2 points, no repeat
    skipped = [t for t in study.get_trials(deepcopy=False) if DUPLICATE_ATTR in t.user_attrs]
    assert all(
        t.state == optuna.trial.TrialState.FAIL and t.user_attrs[FAIL_ATTR].startswith("duplicate") for t in skipped
    )
    assert "2 configurations" in study.user_attrs[EXHAUSTED_ATTR]
    assert "search space exhausted" in str(leaderboard_table(leaderboard(study, "nDCG@10")).caption)


def test_a_resumed_study_draws_new_points_and_counts_distinct_ones(tmp_path, state):
    config = load_study_config(stores.write_study(tmp_path, "resumed", 3, CONTINUOUS, latency_sample=1))

    run_study(config, state, n_trials=3, show_progress=False)
    study = run_study(config, state, n_trials=5, show_progress=False).study

    params = searched_params(study)
    assert len(finished(study)) == 5 and len(params) == 3
    assert len(set(params)) == 3  # before: the restarted sampler proposed trial 2's point again


def test_the_sampler_seed_of_a_resumed_study_differs_from_a_new_one():
    assert resumed_seed(42, 0) == 42
    assert len({resumed_seed(42, count) for count in range(1, 50)}) == 49


def test_space_size_counts_what_the_sampler_can_propose(tmp_path):
    def size(space: str, limit: int = 1000):
        return space_size(load_study_config(stores.write_study(tmp_path, "size", 5, space)).space, limit)

    assert size(TWO_POINTS) == 2
    assert size(CONTINUOUS) is None
    # rrf_k only applies to RRF fusion: bm25 alone (2 b values) + rrf (2 b × 3 rrf_k)
    mixed = '[space.fusion]\nmethod = ["bm25", "rrf"]\nrrf_k = [10, 60, 100]\n[space.bm25]\nb = [0.5, 0.75]\n'
    assert size(mixed) == 8
    assert size('[space.bm25]\nk1 = { low = 1, high = 2, step = 0.25 }\n[space.fusion]\nmethod = "bm25"\n') == 5
    assert size(mixed, limit=5) is None


@pytest.mark.slow
def test_a_study_killed_three_times_ends_with_distinct_finished_trials(tmp_path, state):
    """Each run is killed with SIGKILL inside a gated trial; every rerun fails and queues that trial again
    (a new number), then draws a new point. Trials 0 and 1 are the baselines."""
    study_file = stores.write_study(tmp_path, "killed", 6, CONTINUOUS, latency_sample=1)
    gated = [3, 5, 7]  # run 1: 2 and 3; run 2: 4 (3 again) and 5; run 3: 6 (5 again) and 7; run 4: 8 (7 again)
    gate = TrialGate(tmp_path / "gate", gated)
    command = [sys.executable, "-m", "workbench.cli", "run", str(study_file), "--state-dir", str(state)]
    for number in gated:
        log = tmp_path / f"run-before-{number}.log"
        with log.open("w") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=gate.environment())
        try:
            pid = gate.wait_until_inside(number, process, log)
            assert pid == process.pid
            os.kill(pid, signal.SIGKILL)
        finally:
            process.wait(timeout=60)
    final = subprocess.run(command, capture_output=True, text=True, env=gate.environment(), timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr

    study = optuna.load_study(study_name="killed", storage=open_storage(journal_url(state / "optuna.journal")))
    params = searched_params(study)
    assert len(finished(study)) == 6 and len(params) == 4
    assert len(set(params)) == 4, params
