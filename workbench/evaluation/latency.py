"""Single-query latency of a pipeline, measured as a first-time query would meet it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from workbench.retrieval.pipeline import Pipeline


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Runs the block on one torch thread, as a server answering queries side by side would,
    and restores the thread count after. It also keeps the figure steady when another process
    shares the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Latency:
    """Milliseconds to answer one query: median, 95th percentile and mean over the timed queries."""

    p50_ms: float
    p95_ms: float
    mean_ms: float

    def to_dict(self) -> dict[str, float]:
        """Returns the figures under the names results and MLflow metrics use (``latency_p50_ms``, …)."""
        return {"latency_p50_ms": self.p50_ms, "latency_p95_ms": self.p95_ms, "latency_mean_ms": self.mean_ms}


def time_queries(search: Callable[[Mapping[str, str]], object], queries: Mapping[str, str], sample: int) -> Latency:
    """Returns the latency of ``search`` answering the first ``sample`` queries (in the given order,
    so the figure is repeatable) one at a time, on one torch thread. ``search`` takes a batch
    {query id: text}; pass one that computes query vectors and re-ranker scores afresh."""
    timings = []
    with one_torch_thread():
        for query_id, text in list(queries.items())[:sample]:
            started = time.perf_counter()
            search({query_id: text})
            timings.append((time.perf_counter() - started) * 1000)
    if not timings:
        return Latency(0.0, 0.0, 0.0)
    quantiles = statistics.quantiles(timings, n=20, method="inclusive") if len(timings) > 1 else timings * 19
    return Latency(statistics.median(timings), quantiles[18], statistics.fmean(timings))


def measure_latency(pipeline: Pipeline, queries: Mapping[str, str], sample: int = 50) -> dict[str, float]:
    """Returns p50/p95/mean milliseconds of answering single queries on one thread, with query
    vectors and re-ranker scores computed afresh (no query cache); see ``time_queries``.
    """
    cold = Pipeline(pipeline.config, pipeline.resources, query_cache=False)  # reuses the built indexes
    return time_queries(cold.search, queries, sample).to_dict()
