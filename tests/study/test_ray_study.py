"""A study whose workers encode on a real two-node Ray cluster into one shared cache (``ray``, ``cache``)."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import stores
from clusters import local_ray_cluster, rows_per_node, shard_manifests
from stores import ADI

from workbench.retrieval.cache import EmbeddingStore, text_keys
from workbench.retrieval.chunking import chunk_documents
from workbench.retrieval.corpus import load_corpus
from workbench.retrieval.retrievers.dense import Encoder
from workbench.study.attributes import WORKER_ATTR
from workbench.study.config import load_study_config
from workbench.study.objective import trial_config
from workbench.study.optuna_study import load_optuna_study, study_locations

pytestmark = [pytest.mark.slow, pytest.mark.extra("ray")]

# With the BM25 baseline, three configurations: two of them dense, over two chunkings.
DENSE_OVER_TWO_CHUNKINGS = """
[space.chunking]
kind = ["none", "recursive"]
chunk_size = [300]
[space.fusion]
method = ["dense"]
"""

write_study = functools.partial(stores.write_study, space=DENSE_OVER_TWO_CHUNKINGS, seed=3)


def test_two_workers_on_a_two_node_cluster_encode_each_text_once(tmp_path: Path, monkeypatch, mlflow_template):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    state = tmp_path / "state"
    state.mkdir()
    (state / "mlflow.db").write_bytes(mlflow_template.read_bytes())
    shared = tmp_path / "shared-cache"
    path = write_study(tmp_path, "onray", n_trials=3, extra=f'cache = "{shared}"')

    with local_ray_cluster(worker_nodes=2) as (cluster, nodes):
        command = [sys.executable, "-m", "workbench.cli", "run", str(path), "--state-dir", str(state)]
        finished = subprocess.run(
            [*command, "--workers", "2", "--ray", cluster.address],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
            check=False,
        )
    assert finished.returncode == 0, finished.stdout + finished.stderr

    config = load_study_config(path)
    study = load_optuna_study(config, study_locations(config, state))
    complete = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    dense_trials = [trial for trial in complete if any(r.kind == "dense" for r in trial_config(trial).retrievers)]
    assert len({trial.user_attrs[WORKER_ATTR] for trial in dense_trials}) == 2, "both workers ran dense trials"

    corpus = load_corpus(ADI)
    chunkings = {trial_config(trial).chunking for trial in dense_trials}
    texts = sorted({chunk.text for chunking in chunkings for chunk in chunk_documents(corpus.documents.values(), chunking)})
    (store_folder,) = shared.glob("embeddings/*/document")
    manifests = shard_manifests(store_folder)
    encoded = np.concatenate([np.load(store_folder / f"{m['stem']}.keys.npy") for m in manifests])
    assert len(encoded) == len(np.unique(encoded)), "no text was encoded twice, on any node"
    assert set(encoded.tolist()) == set(text_keys(texts).tolist()), "every chunk the trials used, and nothing else"
    per_node = rows_per_node(store_folder)
    assert set(per_node) <= {node.node_id for node in nodes}, f"every shard was encoded on a cluster node: {per_node}"

    shared_vectors = EmbeddingStore(store_folder).vectors(texts)
    local_vectors = Encoder(trial_config(dense_trials[0]).retrievers[0], None).encode_uncached(texts)
    cosines = (shared_vectors * local_vectors).sum(axis=1)  # both unit length
    assert cosines.min() >= 0.9999
