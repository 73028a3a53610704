"""Property tests of workbench/fusion.py: normalisers, convex fusion, RRF and top-k are pure functions."""

from __future__ import annotations

import math
from itertools import combinations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workbench.retrieval.fusion import (
    convex_fusion,
    fuse,
    normalize_minmax,
    normalize_zscore,
    ranked,
    reciprocal_rank_fusion,
    top_k,
)

scores = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
doc_ids = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
rankings = st.dictionaries(doc_ids, scores, max_size=12)
runs = st.dictionaries(st.sampled_from(["q1", "q2", "q3"]), rankings, max_size=3)
alphas = st.floats(min_value=0.0, max_value=1.0)


def ranked_ids(ranking: dict[str, float]) -> list[str]:
    return [doc_id for doc_id, _ in ranked(ranking)]


def two_way(dense_run, bm25_run, alpha, normalization="minmax"):
    """The two-retriever hybrid: BM25 weighted 1 - alpha, dense alpha."""
    return convex_fusion([bm25_run, dense_run], [1.0 - alpha, alpha], normalization)


def assert_order_preserved(before: dict[str, float], after: dict[str, float]) -> None:
    for a, b in combinations(before, 2):
        if before[a] > before[b]:
            assert after[a] >= after[b]
        elif before[a] < before[b]:
            assert after[a] <= after[b]
        else:
            assert after[a] == after[b]


# --- normalisers -----------------------------------------------------------------------------


@given(runs)
def test_minmax_maps_into_unit_interval_and_keeps_order(run):
    normalized = normalize_minmax(run)
    assert normalized.keys() == run.keys()
    for query_id, ranking in run.items():
        assert normalized[query_id].keys() == ranking.keys()
        assert all(0.0 <= score <= 1.0 for score in normalized[query_id].values())
        assert_order_preserved(ranking, normalized[query_id])
        if len(set(ranking.values())) > 1:
            assert max(normalized[query_id].values()) == 1.0
            assert min(normalized[query_id].values()) == 0.0


def test_minmax_constant_ranking_maps_to_one():
    assert normalize_minmax({"q": {"a": 3.0, "b": 3.0}, "empty": {}}) == {"q": {"a": 1.0, "b": 1.0}, "empty": {}}


def test_minmax_hand_checked():
    assert normalize_minmax({"q": {"a": 10.0, "b": 5.0, "c": 0.0}}) == {"q": {"a": 1.0, "b": 0.5, "c": 0.0}}


@given(runs)
def test_zscore_standardises_and_keeps_order(run):
    normalized = normalize_zscore(run)
    assert normalized.keys() == run.keys()
    for query_id, ranking in run.items():
        assert normalized[query_id].keys() == ranking.keys()
        assert_order_preserved(ranking, normalized[query_id])
        values = list(ranking.values())
        # Only well-conditioned rankings: a spread near float resolution cannot be standardised.
        if len(values) > 1 and max(values) - min(values) > 1e-6 * max(1.0, max(abs(v) for v in values)):
            z = list(normalized[query_id].values())
            mean = math.fsum(z) / len(z)
            deviation = math.sqrt(math.fsum((v - mean) ** 2 for v in z) / len(z))
            assert mean == pytest.approx(0.0, abs=1e-6)
            assert deviation == pytest.approx(1.0, rel=1e-6)


def test_zscore_hand_checked():
    # mean 2, population deviation sqrt(2/3)
    z = normalize_zscore({"q": {"a": 1.0, "b": 2.0, "c": 3.0}})["q"]
    assert z["a"] == pytest.approx(-math.sqrt(1.5))
    assert z["b"] == pytest.approx(0.0)
    assert z["c"] == pytest.approx(math.sqrt(1.5))


def test_zscore_integer_constant_ranking_maps_to_zero():
    assert normalize_zscore({"q": {"a": 2.0, "b": 2.0}}) == {"q": {"a": 0.0, "b": 0.0}}


@pytest.mark.parametrize("value", [0.1, 0.7, 3.3])
def test_zscore_any_constant_ranking_maps_to_zero(value):
    assert normalize_zscore({"q": {"a": value, "b": value, "c": value}}) == {"q": {"a": 0.0, "b": 0.0, "c": 0.0}}


# --- convex fusion ---------------------------------------------------------------------------


@st.composite
def run_pairs(draw):
    """Two runs over the same queries, sharing some documents."""
    query_ids = draw(st.lists(st.sampled_from(["q1", "q2", "q3"]), unique=True, max_size=3))
    dense_run, bm25_run = {}, {}
    for query_id in query_ids:
        dense_run[query_id] = draw(rankings)
        bm25_run[query_id] = draw(rankings)
    return dense_run, bm25_run


@given(run_pairs(), st.sampled_from(["minmax", "zscore"]))
def test_alpha_zero_is_bm25_alone(pair, normalization):
    dense_run, bm25_run = pair
    fused = two_way(dense_run, bm25_run, 0.0, normalization)
    normalized = normalize_minmax(bm25_run) if normalization == "minmax" else normalize_zscore(bm25_run)
    for query_id, bm25_scores in bm25_run.items():
        # every document either run found is kept
        assert fused[query_id].keys() == bm25_scores.keys() | dense_run[query_id].keys()
        for doc_id in bm25_scores:
            assert fused[query_id][doc_id] == pytest.approx(normalized[query_id][doc_id], abs=1e-12)
        assert_order_preserved(bm25_scores, {d: fused[query_id][d] for d in bm25_scores})


@given(run_pairs())
def test_alpha_one_is_dense_alone_on_docs_both_retrieved(pair):
    dense_run, bm25_run = pair
    fused = two_way(dense_run, bm25_run, 1.0)
    for query_id, dense_scores in dense_run.items():
        both = dense_scores.keys() & bm25_run[query_id].keys()
        assert_order_preserved({d: dense_scores[d] for d in both}, {d: fused[query_id][d] for d in both})
        # a doc only BM25 found takes dense's floor, so it cannot beat a doc dense ranked
        floor = min(normalize_minmax(dense_run)[query_id].values(), default=0.0)
        for doc_id in bm25_run[query_id].keys() - dense_scores.keys():
            assert fused[query_id][doc_id] == pytest.approx(floor)


@given(run_pairs(), alphas, st.sampled_from(["minmax", "zscore"]))
def test_convex_fusion_is_symmetric(pair, alpha, normalization):
    dense_run, bm25_run = pair
    forward = two_way(dense_run, bm25_run, alpha, normalization)
    swapped = two_way(bm25_run, dense_run, 1.0 - alpha, normalization)
    assert forward.keys() == swapped.keys()
    for query_id, fused_scores in forward.items():
        assert fused_scores.keys() == swapped[query_id].keys()
        for doc_id, score in fused_scores.items():
            assert swapped[query_id][doc_id] == pytest.approx(score, abs=1e-9)


@given(run_pairs(), alphas)
def test_minmax_convex_scores_stay_in_unit_interval(pair, alpha):
    fused = two_way(*pair, alpha)
    assert all(-1e-12 <= s <= 1 + 1e-12 for ranking in fused.values() for s in ranking.values())


def test_convex_fusion_hand_checked():
    dense_run = {"q": {"a": 0.9, "b": 0.5, "c": 0.1}}  # minmax: a 1, b 0.5, c 0
    bm25_run = {"q": {"b": 8.0, "d": 2.0}}  # minmax: b 1, d 0; floor 0
    fused = two_way(dense_run, bm25_run, 0.5)["q"]
    assert fused == pytest.approx({"a": 0.5, "b": 0.75, "c": 0.0, "d": 0.0})
    assert ranked_ids(fused)[:2] == ["b", "a"]


@given(st.lists(runs, min_size=1, max_size=4), st.data())
def test_convex_fusion_of_n_runs_ignores_their_order(run_list, data):
    weights = data.draw(st.lists(st.floats(0.01, 1.0), min_size=len(run_list), max_size=len(run_list)))
    order = data.draw(st.permutations(range(len(run_list))))
    forward = convex_fusion(run_list, weights)
    permuted = convex_fusion([run_list[i] for i in order], [weights[i] for i in order])
    assert forward.keys() == permuted.keys()
    for query_id, fused_scores in forward.items():
        assert permuted[query_id] == pytest.approx(fused_scores, abs=1e-9)


def test_three_way_convex_fusion_hand_checked():
    first = {"q": {"a": 2.0, "b": 1.0}}  # minmax: a 1, b 0
    second = {"q": {"b": 5.0, "c": 1.0}}  # minmax: b 1, c 0
    third = {"q": {"c": 3.0, "a": 0.0}}  # minmax: c 1, a 0
    fused = convex_fusion([first, second, third], [0.5, 0.3, 0.2])["q"]
    # a missing document takes its run's floor (0 after min-max)
    assert fused == pytest.approx({"a": 0.5, "b": 0.3, "c": 0.2})


def test_fuse_passes_a_single_run_through_and_dispatches_by_method():
    bm25_run, dense_run = {"q": {"a": 3.0, "b": 1.0}}, {"q": {"b": 0.9, "c": 0.2}}
    assert fuse([bm25_run], "convex", [1.0], "minmax", 60) is bm25_run
    assert fuse([bm25_run, dense_run], "rrf", [0.5, 0.5], "minmax", 10) == reciprocal_rank_fusion(
        [bm25_run, dense_run], 10
    )
    convex = fuse([bm25_run, dense_run], "convex", [0.3, 0.7], "zscore", 60)
    assert convex["q"] == pytest.approx(two_way(dense_run, bm25_run, 0.7, "zscore")["q"])


def test_ties_follow_trec_eval_order():
    assert ranked({"a": 1.0, "c": 1.0, "b": 2.0}) == [("b", 2.0), ("c", 1.0), ("a", 1.0)]
    assert list(top_k({"q": {"a": 1.0, "c": 1.0, "b": 1.0}}, 2)["q"]) == ["c", "b"]


def test_convex_fusion_does_not_mutate_inputs():
    dense_run = {"q": {"a": 0.9, "b": 0.5}}
    bm25_run = {"q": {"b": 8.0}}
    two_way(dense_run, bm25_run, 0.5)
    assert dense_run == {"q": {"a": 0.9, "b": 0.5}} and bm25_run == {"q": {"b": 8.0}}


# --- reciprocal rank fusion -----------------------------------------------------------------


def test_rrf_hand_checked():
    first = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    second = {"q": {"b": 5.0, "d": 1.0}}
    fused = reciprocal_rank_fusion([first, second], k=60)["q"]
    assert fused == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 63, "d": 1 / 62})
    assert ranked_ids(fused) == ["b", "a", "d", "c"]


def test_rrf_breaks_score_ties_as_trec_eval_does():
    fused = reciprocal_rank_fusion([{"q": {"z": 1.0, "a": 1.0}}], k=1)["q"]
    assert fused == {"z": 1 / 2, "a": 1 / 3}  # doc id descending


@given(st.lists(runs, min_size=1, max_size=3), st.integers(min_value=1, max_value=100))
def test_rrf_doc_in_both_runs_beats_doc_ranked_no_higher_in_one(run_list, k):
    fused = reciprocal_rank_fusion(run_list, k)
    ranks = [
        {
            query_id: {doc_id: rank for rank, doc_id in enumerate(ranked_ids(ranking), start=1)}
            for query_id, ranking in run.items()
        }
        for run in run_list
    ]
    for query_id, fused_scores in fused.items():
        found_in = {
            doc_id: [r[query_id][doc_id] for r in ranks if doc_id in r.get(query_id, {})] for doc_id in fused_scores
        }
        for doc_id, doc_ranks in found_in.items():
            assert fused_scores[doc_id] == pytest.approx(sum(1 / (k + rank) for rank in doc_ranks))
        for many, one in combinations(found_in, 2):
            for x, y in ((many, one), (one, many)):
                if len(found_in[x]) >= 2 and len(found_in[y]) == 1 and min(found_in[x]) <= found_in[y][0]:
                    assert fused_scores[x] > fused_scores[y]


@given(runs, runs)
def test_rrf_ignores_run_order(first, second):
    assert reciprocal_rank_fusion([first, second]) == reciprocal_rank_fusion([second, first])


# --- top k ----------------------------------------------------------------------------------


@given(runs, st.integers(min_value=0, max_value=15))
def test_top_k_keeps_the_k_best(run, k):
    cut = top_k(run, k)
    assert cut.keys() == run.keys()
    for query_id, ranking in run.items():
        kept = cut[query_id]
        assert len(kept) == min(k, len(ranking))
        assert all(ranking[doc_id] == score for doc_id, score in kept.items())
        assert list(kept) == ranked_ids(ranking)[:k]
        dropped = ranking.keys() - kept.keys()
        if kept and dropped:
            assert min(kept.values()) >= max(ranking[d] for d in dropped)


def test_top_k_ties_by_doc_id_descending():
    assert list(top_k({"q": {"c": 1.0, "b": 1.0, "a": 2.0}}, 2)["q"]) == ["a", "c"]
