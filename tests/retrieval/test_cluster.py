"""Tests of workbench/retrieval/cluster.py on a real Ray cluster of this machine's processes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from clusters import local_ray_cluster, shard_manifests

from workbench.errors import ConfigError
from workbench.files import file_sha256
from workbench.retrieval.cache import Cache, EmbeddingStore
from workbench.retrieval.cluster import RayCluster, check_ray_address, shard_texts
from workbench.retrieval.config import DenseConfig
from workbench.retrieval.retrievers.dense import Encoder


@pytest.mark.parametrize("address", ["auto", "10.0.0.5:6379", "ray://head.example:10001", "localhost:1"])
def test_ray_addresses_that_name_a_cluster(address: str):
    check_ray_address(address)


@pytest.mark.parametrize("address", ["", "head", "http://head:6379", "head:port", "auto "])
def test_other_ray_addresses_are_refused(address: str):
    with pytest.raises(ConfigError, match="give 'auto'"):
        check_ray_address(address)


def test_shards_give_every_replica_several_and_stay_bounded():
    assert shard_texts(1000, 2) == 125
    assert shard_texts(10, 4) == 16  # a few texts: one small shard, not one per text
    assert shard_texts(10_000_000, 2) == 4096


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.slow
@pytest.mark.extra("ray")
def test_a_node_killed_mid_encoding_loses_no_finished_shard(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = [f"passage {i}: " + " ".join(f"w{(i * j) % 97}" for j in range(30)) for i in range(480)]
    config = DenseConfig()
    with local_ray_cluster(worker_nodes=2) as (cluster, nodes):
        ray_cluster = RayCluster(cluster.address)
        ray_cluster.connect()
        cache = Cache(tmp_path / "shared-cache", ray_cluster)
        outcome: dict = {}

        def encode() -> None:
            try:
                outcome["vectors"] = Encoder(config, cache).encode(texts, "document")
            except BaseException as error:  # reported by the assertions below
                outcome["error"] = error

        encoding = threading.Thread(target=encode)
        encoding.start()
        victim = nodes[1]
        store_folder: Path | None = None
        kept: list[dict] = []
        deadline = time.monotonic() + 300
        while encoding.is_alive() and time.monotonic() < deadline:
            store_folder = next((tmp_path / "shared-cache").rglob("document"), None)
            manifests = shard_manifests(store_folder) if store_folder is not None else []
            if any(m["origin"]["ray_node"] == victim.node_id for m in manifests):
                cluster.remove_node(victim)  # SIGKILLs the node's raylet and workers
                kept = manifests
                break
            time.sleep(0.2)
        encoding.join(timeout=300)

    assert not encoding.is_alive() and "error" not in outcome, outcome.get("error")
    assert kept, "the encoding ended before the victim node finished a shard (nothing was killed mid-encoding)"
    assert len(kept) < len(shard_manifests(store_folder)), "the node was killed before the last shard"
    for manifest in kept:  # every shard finished before the kill is still there, byte for byte
        stem = store_folder / manifest["stem"]
        assert file_sha256(Path(f"{stem}.vectors.npy")) == manifest["vectors_sha256"]
        assert file_sha256(Path(f"{stem}.keys.npy")) == manifest["keys_sha256"]
    before = sorted(p.name for p in store_folder.glob("*.json"))
    store = EmbeddingStore(store_folder)  # drops any shard that fails its checksums
    assert sorted(p.name for p in store_folder.glob("*.json")) == before
    assert store.missing(texts) == []
    assert sum(m["rows"] for m in shard_manifests(store_folder)) >= len(texts)
    survivor_rows = sum(m["rows"] for m in shard_manifests(store_folder) if m["origin"]["ray_node"] == nodes[0].node_id)
    assert survivor_rows > 0, "the remaining node finished the encoding"
    local = Encoder(config, None).encode_uncached(texts[:64])
    assert cosine(outcome["vectors"][:64], local).min() >= 0.9999


def test_without_a_cluster_ray_is_never_imported():
    """A study, a worker and a dense index import this module's callers, not Ray, unless a cluster is named."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import workbench.cli, workbench.study.session, workbench.study.runner\n"
        "import workbench.retrieval.cluster, workbench.retrieval.retrievers.dense\n"
        "from workbench.study.config import StudyConfig\n"
        "StudyConfig(name='x', corpus='.', ray='auto', cache='memory://x')\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert finished.returncode == 0, finished.stderr
