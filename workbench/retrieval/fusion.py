"""Pure functions over runs: per-query score normalisation and fusion of two runs."""

from __future__ import annotations

import math

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


def convex_fusion(dense_run: Run, bm25_run: Run, alpha: float, normalization: str = "minmax") -> Run:
    """Returns ``alpha * dense + (1 - alpha) * bm25`` over normalised scores.

    A document missing from one run takes that run's lowest normalised score for the query,
    so it is neither rewarded nor lost for being found by one retriever only.
    """
    normalize = NORMALIZERS[normalization]
    dense_norm, bm25_norm = normalize(dense_run), normalize(bm25_run)
    fused: Run = {}
    for query_id in dense_run.keys() | bm25_run.keys():
        dense_scores = dense_norm.get(query_id, {})
        bm25_scores = bm25_norm.get(query_id, {})
        dense_floor = min(dense_scores.values(), default=0.0)
        bm25_floor = min(bm25_scores.values(), default=0.0)
        fused[query_id] = {
            doc_id: alpha * dense_scores.get(doc_id, dense_floor) + (1 - alpha) * bm25_scores.get(doc_id, bm25_floor)
            for doc_id in dense_scores.keys() | bm25_scores.keys()
        }
    return fused


def reciprocal_rank_fusion(runs: list[Run], k: int = 60) -> Run:
    """Returns the RRF run: each document scores the sum of ``1 / (k + rank)`` over the runs.

    Ranks start at 1 and follow score order, ties broken by doc id for determinism.
    """
    fused: Run = {}
    for run in runs:
        for query_id, doc_scores in run.items():
            query_scores = fused.setdefault(query_id, {})
            ranked = sorted(doc_scores.items(), key=lambda item: (-item[1], item[0]))
            for rank, (doc_id, _) in enumerate(ranked, start=1):
                query_scores[doc_id] = query_scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    return fused


def top_k(run: Run, k: int) -> Run:
    """Returns each query's ``k`` best documents (ties by doc id)."""
    return {
        query_id: dict(sorted(doc_scores.items(), key=lambda item: (-item[1], item[0]))[:k])
        for query_id, doc_scores in run.items()
    }
