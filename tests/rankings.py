"""Comparing rankings computed two ways (another engine, another batch shape, a saved copy) as
precisely as what matters allows: the same order wherever the scores are further apart than the
arithmetic can blur them. Float sums reorder with the instruction set (AVX2, AVX-512, VNNI), so
two documents closer than ``tie`` may swap; nothing else may."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def assert_same_order(expected: Mapping[str, float], actual: Mapping[str, float], tie: float) -> None:
    """Fails unless every pair that ``expected`` orders by more than ``tie`` comes in that order in ``actual``."""
    assert set(expected) == set(actual), sorted(set(expected) ^ set(actual))
    ordered = sorted(expected, key=lambda doc_id: -expected[doc_id])
    for position, higher in enumerate(ordered):
        for lower in ordered[position + 1 :]:
            if expected[higher] - expected[lower] > tie:
                assert actual[higher] > actual[lower], (higher, lower, expected[higher], expected[lower])


def assert_same_rankings(
    actual: Sequence[Sequence[tuple[str, float]]], expected: Sequence[Sequence[tuple[str, float]]], tie: float = 1e-5
) -> None:
    """Per query, the same documents (except at a cut-off between near-ties), scores within ``tie``, same order."""
    for got, want in zip(actual, expected, strict=True):
        got_scores, want_scores = dict(got), dict(want)
        cutoff = min(want_scores.values(), default=0.0)
        # a document may enter or leave the tail only when it ties with the last one kept
        for doc_id in set(got_scores) ^ set(want_scores):
            score = got_scores.get(doc_id, want_scores.get(doc_id))
            assert abs(score - cutoff) <= 2 * tie, (doc_id, score, cutoff)
        shared = set(got_scores) & set(want_scores)
        for doc_id in shared:
            assert abs(got_scores[doc_id] - want_scores[doc_id]) <= tie, (doc_id, got_scores[doc_id], want_scores[doc_id])
        assert_same_order({d: want_scores[d] for d in shared}, {d: got_scores[d] for d in shared}, tie)
