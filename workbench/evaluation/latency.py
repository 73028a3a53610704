"""Single-query latency of a pipeline, measured as a first-time query would meet it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

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


def measure_latency(pipeline: Pipeline, queries: Mapping[str, str], sample: int = 50) -> dict[str, float]:
    """Returns p50/p95/mean milliseconds of answering single queries on one thread, with query
    vectors and re-ranker scores computed afresh (no query cache).

    Uses the first ``sample`` queries in the given order, so the figure is repeatable.
    """
    cold = Pipeline(pipeline.config, pipeline.resources, query_cache=False)  # reuses the built indexes
    timings = []
    with one_torch_thread():
        for query_id, text in list(queries.items())[:sample]:
            started = time.perf_counter()
            cold.search({query_id: text})
            timings.append((time.perf_counter() - started) * 1000)
    if not timings:
        return {"latency_p50_ms": 0.0, "latency_p95_ms": 0.0, "latency_mean_ms": 0.0}
    quantiles = statistics.quantiles(timings, n=20, method="inclusive") if len(timings) > 1 else timings * 19
    return {
        "latency_p50_ms": statistics.median(timings),
        "latency_p95_ms": quantiles[18],
        "latency_mean_ms": statistics.fmean(timings),
    }
