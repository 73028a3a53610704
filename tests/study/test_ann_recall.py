"""A study over HNSW and IVF dense indexes on ADI: each index setting asked only where it applies,
recall@k against exact search stored per trial and logged to MLflow (real Optuna, MLflow, faiss, MiniLM)."""

from __future__ import annotations

import optuna
import pytest
import stores
from stores import mlflow_runs

from workbench.study.attributes import ANN_RECALL_ATTR, BASELINE_ATTR
from workbench.study.config import load_study_config
from workbench.study.runner import run_study

ANN_SPACE = """
[[space.retrievers]]
kind = "dense"
index = ["hnsw", "ivf"]
hnsw_m = 8
ef_search = [4, 200]
nlist = 8
nprobe = [1, 8]
"""


@pytest.fixture(scope="module")
def ann_study(tmp_path_factory, session_cache, mlflow_template):
    folder = tmp_path_factory.mktemp("ann-study")
    state = stores.linked_state(folder, session_cache, mlflow_template)
    config = load_study_config(stores.write_study(folder, "ann", 5, ANN_SPACE, seed=3))
    outcome = run_study(config, state, show_progress=False)
    _, _, children = mlflow_runs(outcome.session.locations.tracking_uri, config.name)
    complete = outcome.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return [trial for trial in complete if not trial.user_attrs.get(BASELINE_ATTR)], complete, children


def test_index_settings_are_asked_only_for_their_index_kind(ann_study):
    tuned, _, _ = ann_study
    assert tuned
    for trial in tuned:
        kind = trial.params["retrievers.dense.index"]
        asked = {key.rsplit(".", 1)[-1] for key in trial.params}
        assert ("ef_search" in asked) == (kind == "hnsw") and ("nprobe" in asked) == (kind == "ivf")


def test_each_ann_trial_stores_and_logs_its_recall_against_exact_search(ann_study):
    tuned, complete, children = ann_study
    for trial in tuned:
        recall = trial.user_attrs[ANN_RECALL_ATTR]["dense"]
        assert 0.0 < recall <= 1.0
        assert children[trial.number].data.metrics["ann_recall.dense"] == pytest.approx(recall)
        exhaustive = trial.params.get("retrievers.dense.ef_search") == 200 or trial.params.get(
            "retrievers.dense.nprobe"
        ) == 8
        assert (recall == 1.0) == exhaustive
    for trial in complete:
        if trial.user_attrs.get(BASELINE_ATTR):  # bm25, and dense over a flat index: exact, nothing to measure
            assert ANN_RECALL_ATTR not in trial.user_attrs
            assert "ann_recall.dense" not in children[trial.number].data.metrics


def test_the_study_tried_both_index_kinds(ann_study):
    tuned, _, _ = ann_study
    assert {trial.params["retrievers.dense.index"] for trial in tuned} == {"hnsw", "ivf"}
