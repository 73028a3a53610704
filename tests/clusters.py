"""Real Ray clusters on this machine for tests: a head and worker nodes, one CPU each, shut down however the test ends."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path


@contextlib.contextmanager
def local_ray_cluster(worker_nodes: int, head_cpus: int = 0):
    """Yields (cluster, worker nodes) of a ``ray.cluster_utils.Cluster`` on free ports; shuts it down at the end.

    Nodes inherit this process' environment (set ``HF_HUB_OFFLINE`` before), so they import this checkout.
    """
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus})
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(worker_nodes)]
        cluster.wait_for_nodes()
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()


def shard_manifests(store_folder: Path) -> list[dict]:
    """Returns the manifests of an embedding store's shards, each with its ``stem`` added."""
    return [json.loads(path.read_text()) | {"stem": path.stem} for path in sorted(store_folder.glob("*.json"))]


def rows_per_node(store_folder: Path) -> Counter:
    """Returns texts encoded per Ray node id (``None`` for shards encoded outside the cluster)."""
    counts: Counter = Counter()
    for manifest in shard_manifests(store_folder):
        counts[manifest.get("origin", {}).get("ray_node")] += manifest["rows"]
    return counts
