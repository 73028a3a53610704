"""Encoding on a Ray cluster: the texts an embedding store misses, encoded by replicas on every node.

A study, a worker or ``workbench index`` that names a cluster (``ray = "auto"`` or an address)
sends each encoding to one service per cluster, a named actor on the head node. The service
encodes one store's texts at a time, and only those the store still misses when their turn
comes: two workers that need the same chunking wait for one encoding, wherever they run. It
runs a Ray Data pipeline: the missing texts longest first, cut into shards, ``map_batches`` over
a pool of encoder replicas (one per GPU the cluster offers, else one per CPU); each replica
writes the shards it encodes straight into the cache, so a finished shard survives its node,
and a shard lost with a node is encoded again by another replica (Ray Data retries it).

The cache must be one every node reaches: a folder every node mounts, or a URL (``s3://…``).
Nothing here imports ray until a cluster is named.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from workbench.errors import CacheError, ConfigError, EnvironmentFault, install_hint
from workbench.files import process_label
from workbench.retrieval.cache import SHARD_TEXTS, EmbeddingStore, length_ordered_shards, write_shard
from workbench.retrieval.cache_files import cache_files
from workbench.retrieval.config import DenseConfig

SERVICE_NAME = "workbench-encoding"
NAMESPACE = "workbench"
SHARDS_PER_REPLICA = 4  # shards per replica at least, so a lost node costs little and the pool stays busy
MIN_SHARD_TEXTS = 16
POLL_S = 1.0
# What a replica needs from the environment of the process that asked: no model hub, the same model folder.
FORWARDED_ENVIRONMENT = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "WORKBENCH_MODEL_DIR")


def check_ray_address(address: str) -> None:
    """Raises ``ConfigError`` unless ``address`` can name a Ray cluster: ``auto``, ``host:port`` or ``ray://host:port``."""
    if not re.fullmatch(r"auto|(ray://)?[A-Za-z0-9_.-]+:[0-9]{1,5}", address):
        raise ConfigError(f"ray = {address!r}: give 'auto' or the cluster head's host:port (or ray://host:port)")


def shard_texts(missing: int, replicas: int) -> int:
    """Returns the texts per shard of an encoding of ``missing`` texts on ``replicas`` replicas."""
    return max(MIN_SHARD_TEXTS, min(SHARD_TEXTS, math.ceil(missing / (SHARDS_PER_REPLICA * max(1, replicas)))))


class EncoderReplica:
    """One encoder on one node: encodes a batch of texts (one shard) and writes it into the store."""

    def __init__(self, model: dict[str, Any], store_location: str):
        import ray

        from workbench.retrieval.retrievers.dense import Encoder

        self.encoder = Encoder(DenseConfig.model_validate(model), None)
        self.files = cache_files(store_location)
        self.origin = {"process": process_label(), "ray_node": ray.get_runtime_context().get_node_id()}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = batch["text"].tolist()
        info = write_shard(self.files, texts, self.encoder.encode_uncached(texts), self.origin)
        return {"rows": np.array([info.rows]), "ray_node": np.array([self.origin["ray_node"]])}


def _replica_resources(device: str) -> tuple[int, dict[str, float]]:
    """Returns (replicas, resources of one): a GPU each where the cluster has GPUs and the model may use one."""
    import ray

    offered = ray.cluster_resources()
    gpus = int(offered.get("GPU", 0))
    if gpus and device != "cpu":
        return gpus, {"num_gpus": 1, "num_cpus": 0}
    return max(1, int(offered.get("CPU", 1))), {"num_cpus": 1}


class EncodingService:
    """The cluster's one encoder front: one encoding per store at a time, each of what the store still misses."""

    def __init__(self):
        from ray.data import DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        self._guard = threading.Lock()
        self._store_locks: dict[str, threading.Lock] = {}
        self._encoded: dict[str, int] = {}

    def encoded(self, store_location: str) -> int:
        """Returns how many texts were encoded into a store since the service started (for progress)."""
        return self._encoded.get(store_location, 0)

    def encode(self, store_location: str, texts: Sequence[str], model: dict[str, Any]) -> dict[str, int]:
        """Encodes the texts the store misses; returns texts encoded per Ray node id."""
        import ray.data

        with self._guard:
            lock = self._store_locks.setdefault(store_location, threading.Lock())
        with lock:
            missing = EmbeddingStore(store_location).missing(texts)
            if not missing:
                return {}
            replicas, resources = _replica_resources(model.get("device", "auto"))
            size = shard_texts(len(missing), replicas)
            shards = list(length_ordered_shards(missing, size))
            dataset = ray.data.from_items([{"text": text} for shard in shards for text in shard], override_num_blocks=len(shards))
            encoded = dataset.map_batches(
                EncoderReplica,
                fn_constructor_kwargs={"model": model, "store_location": store_location},
                batch_size=size,
                batch_format="numpy",
                concurrency=replicas,
                **resources,
            )
            per_node: dict[str, int] = {}
            for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
                for rows, node in zip(batch["rows"].tolist(), batch["ray_node"].tolist()):
                    per_node[node] = per_node.get(node, 0) + rows
                    self._encoded[store_location] = self._encoded.get(store_location, 0) + rows
            return per_node


def _one_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error
    text = " ".join(f"{type(cause).__name__}: {cause}".split())
    return text if len(text) <= 300 else text[:297] + "..."


class RayCluster:
    """A Ray cluster (``"auto"`` or an address) that encodes what embedding stores miss.

    Connects on first use, or at once with ``connect`` (a study does, before its first trial).
    """

    def __init__(self, address: str):
        self.address = address
        self._service = None
        self.encoded_per_node: dict[str, int] = {}  # texts this process asked for, by the node that encoded them

    def connect(self) -> None:
        """Connects to the cluster and finds (or starts) its encoding service.

        Raises ``ConfigError`` without the ray extra, ``EnvironmentFault`` when no cluster answers.
        """
        if self._service is not None:
            return
        try:
            import ray
        except ImportError:
            raise ConfigError(f"ray = '{self.address}' needs Ray: {install_hint('ray')}") from None
        try:
            if not ray.is_initialized():
                environment = {name: os.environ[name] for name in FORWARDED_ENVIRONMENT if name in os.environ}
                ray.init(
                    address=self.address,
                    namespace=NAMESPACE,
                    runtime_env={"env_vars": environment},
                    log_to_driver=False,
                    logging_level="ERROR",
                    configure_logging=False,
                )
            service = ray.remote(EncodingService).options(
                name=SERVICE_NAME,
                namespace=NAMESPACE,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=0,
                max_concurrency=64,
                resources={"node:__internal_head__": 0.001},  # lives as long as the cluster does
            )
            self._service = service.remote()
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise EnvironmentFault(f"ray cluster {self.address}: cannot connect ({_one_line(error)})") from None

    def encode_missing(
        self,
        store: EmbeddingStore,
        texts: Sequence[str],
        config: DenseConfig,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Has the cluster encode the texts ``store`` misses into it, then reads them into ``store``.

        ``on_progress`` gets counts of texts encoded as they complete. Raises ``EnvironmentFault``
        when the encoding fails on the cluster, ``CacheError`` when the vectors the nodes wrote do
        not reach this process (a cache folder the nodes do not share).
        """
        if not store.missing(texts):
            return
        self.connect()
        import ray

        model = config.model_dump(mode="json")
        request = self._service.encode.remote(store.location, ray.put(list(texts)), model)
        start = ray.get(self._service.encoded.remote(store.location))
        reported = 0
        try:
            while not ray.wait([request], timeout=POLL_S)[0]:
                reported = self._report(store, start, reported, on_progress)
            per_node = ray.get(request)
        except ray.exceptions.RayError as error:
            raise EnvironmentFault(f"ray cluster {self.address}: encoding failed ({_one_line(error)})") from None
        self._report(store, start, reported, on_progress)
        for node, rows in per_node.items():
            self.encoded_per_node[node] = self.encoded_per_node.get(node, 0) + rows
        store.refresh()
        if store.missing(texts):
            raise CacheError(
                f"cache {store.location}: the Ray nodes wrote vectors this process cannot read; "
                "use a cache every node reaches (a shared folder, or an s3:// URL)"
            )

    def _report(self, store: EmbeddingStore, start: int, reported: int, on_progress) -> int:
        import ray

        done = ray.get(self._service.encoded.remote(store.location)) - start
        if on_progress is not None and done > reported:
            on_progress(done - reported)
        return max(done, reported)
