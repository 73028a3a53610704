"""Pure functions over runs: per-query score normalisation, fusion of N runs, ranking order."""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

from workbench.types import Run


def normalize_minmax(run: Run) -> Run:
    """Returns the run with each query's scores mapped to [0, 1]; a constant ranking maps to 1."""
    normalized: Run = {}
    for query_id, doc_scores in run.items():
        if not doc_scores:
            normalized[query_id] = {}
            continue
        low, high = min(doc_scores.values()), max(doc_scores.values())
        span = high - low
        normalized[query_id] = {
            doc_id: (score - low) / span if span > 0 else 1.0 for doc_id, score in doc_scores.items()
        }
    return normalized


def normalize_zscore(run: Run) -> Run:
    """Returns the run with each query's scores standardised to mean 0 and unit deviation."""
    normalized: Run = {}
    for query_id, doc_scores in run.items():
        if not doc_scores:
            normalized[query_id] = {}
            continue
        values = list(doc_scores.values())
        if max(values) == min(values):
            normalized[query_id] = dict.fromkeys(doc_scores, 0.0)
            continue
        mean = sum(values) / len(values)
        deviation = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        normalized[query_id] = {
            doc_id: (score - mean) / deviation if deviation > 0 else 0.0 for doc_id, score in doc_scores.items()
        }
    return normalized


NORMALIZERS = {"minmax": normalize_minmax, "zscore": normalize_zscore}


def convex_fusion(runs: Sequence[Run], weights: Sequence[float], normalization: str = "minmax") -> Run:
    """Returns ``sum(weight_i * score_i)`` over the runs' per-query normalised scores.

    A document missing from a run takes that run's lowest normalised score for the query,
    so it is neither rewarded nor lost for being found by some retrievers only.
    """
    if len(runs) != len(weights):
        raise ValueError(f"{len(runs)} runs but {len(weights)} weights")
    normalize = NORMALIZERS[normalization]
    normalized = [normalize(run) for run in runs]
    fused: Run = {}
    for query_id in set().union(*(run.keys() for run in runs)):
        per_run = [run.get(query_id, {}) for run in normalized]
        floors = [min(scores.values(), default=0.0) for scores in per_run]
        doc_ids = set().union(*(scores.keys() for scores in per_run))
        fused[query_id] = {
            doc_id: sum(weight * scores.get(doc_id, floor) for weight, scores, floor in zip(weights, per_run, floors))
            for doc_id in doc_ids
        }
    return fused


def reciprocal_rank_fusion(runs: Sequence[Run], k: int = 60) -> Run:
    """Returns the RRF run: each document scores the sum of ``1 / (k + rank)`` over the runs.

    Ranks start at 1 and follow ``ranked`` order.
    """
    fused: Run = {}
    for run in runs:
        for query_id, doc_scores in run.items():
            query_scores = fused.setdefault(query_id, {})
            for rank, (doc_id, _) in enumerate(ranked(doc_scores), start=1):
                query_scores[doc_id] = query_scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    return fused


def fuse(runs: Sequence[Run], method: str, weights: Sequence[float], normalization: str, rrf_k: int) -> Run:
    """Returns one run from the first stages' runs: a single run as it is, else convex or RRF fusion."""
    if len(runs) == 1:
        return runs[0]
    if method == "rrf":
        return reciprocal_rank_fusion(runs, rrf_k)
    return convex_fusion(runs, weights, normalization)


def ranked(doc_scores: dict[str, float]) -> list[tuple[str, float]]:
    """Returns (doc id, score) pairs best first, in trec_eval's order: score descending, then doc id descending.

    Every ranking workbench shows or writes follows this order, so a printed ranking, a TREC run
    file and the metrics computed from it agree on ties.
    """
    return sorted(doc_scores.items(), key=lambda item: (item[1], item[0]), reverse=True)


def _best(doc_scores: dict[str, float], k: int) -> dict[str, float]:
    if k <= 0:
        return {}
    if len(doc_scores) <= k:
        return dict(ranked(doc_scores))
    # Selecting on bare scores first is ~2x faster than ranking (score, doc id) tuples;
    # only when ties straddle the cut are they broken in ``ranked`` order.
    threshold = heapq.nlargest(k, doc_scores.values())[-1]
    kept = {doc_id: score for doc_id, score in doc_scores.items() if score >= threshold}
    return dict(ranked(kept)[:k])


def top_k(run: Run, k: int) -> Run:
    """Returns each query's ``k`` best documents in ``ranked`` order."""
    return {query_id: _best(doc_scores, k) for query_id, doc_scores in run.items()}
