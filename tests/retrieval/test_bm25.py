"""Tests of workbench/retrievers/bm25.py: bm25s against the rank-bm25 reference on ADI, tokenisation, edge queries."""

from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from workbench.retrieval.config import BM25Config
from workbench.retrieval.corpus import Corpus
from workbench.retrieval.retrievers.bm25 import BM25Index, query_tokenizer, tokenize, tokenize_corpus

ROBERTSON = BM25Config(backend="bm25s", method="robertson", k1=1.2, b=0.75)


@pytest.fixture(scope="module")
def adi_texts(adi: Corpus) -> list[str]:
    return [document.full_text for document in adi.documents.values()]


@pytest.fixture(scope="module")
def adi_queries(adi: Corpus) -> list[str]:
    return list(adi.queries.values())


def assert_same_ranking(indices: np.ndarray, scores: np.ndarray, reference: np.ndarray) -> None:
    """``indices``/``scores`` (best first) rank exactly the positively scored rows of ``reference``."""
    assert set(indices.tolist()) == set(np.flatnonzero(reference > 0).tolist())
    np.testing.assert_allclose(scores, reference[indices], rtol=1e-5)
    # best first; equal scores may come in any order
    assert np.all(np.diff(scores) <= 1e-6 * max(1.0, float(scores.max(initial=0.0))))


def test_bm25s_robertson_matches_rank_bm25_reference(adi_texts, adi_queries):
    """Oracle: the fast engine against rank-bm25's BM25Okapi on the very same tokens.

    Two known differences of formulation are taken out: BM25Okapi multiplies every term by
    ``k1 + 1`` (a constant per query), and replaces negative IDFs by ``epsilon * mean IDF``
    where bm25s' robertson clamps them to 0, so the reference runs with ``epsilon = 0``.
    """
    index = BM25Index(adi_texts, ROBERTSON)
    hits = index.search(adi_queries, k=len(adi_texts))
    reference = BM25Okapi(tokenize(adi_texts, ROBERTSON), k1=ROBERTSON.k1, b=ROBERTSON.b, epsilon=0.0)
    for query_tokens, indices, scores in zip(tokenize(adi_queries, ROBERTSON), hits.indices, hits.scores):
        expected = np.asarray(reference.get_scores(query_tokens)) / (ROBERTSON.k1 + 1)
        assert_same_ranking(indices, scores, expected)


def test_rank_bm25_backend_matches_plain_rank_bm25(adi_texts, adi_queries):
    config = ROBERTSON.model_copy(update={"backend": "rank_bm25"})
    hits = BM25Index(adi_texts, config).search(adi_queries, k=10)
    reference = BM25Okapi(tokenize(adi_texts, config), k1=config.k1, b=config.b, epsilon=0.0)
    for query_tokens, indices, scores in zip(tokenize(adi_queries, config), hits.indices, hits.scores):
        expected = np.asarray(reference.get_scores(query_tokens)) / (config.k1 + 1)
        top = sorted(np.flatnonzero(expected > 0).tolist(), key=lambda i: (-expected[i], i))[:10]
        assert indices.tolist() == top
        np.testing.assert_allclose(scores, expected[top])


def test_both_backends_rank_identically_with_robertson(adi_texts, adi_queries):
    """The module's promise: with method "robertson" the backends rank identically."""
    fast = BM25Index(adi_texts, ROBERTSON).search(adi_queries, k=len(adi_texts))
    slow = BM25Index(adi_texts, ROBERTSON.model_copy(update={"backend": "rank_bm25"})).search(
        adi_queries, k=len(adi_texts)
    )
    for fast_indices, fast_scores, slow_indices, slow_scores in zip(
        fast.indices, fast.scores, slow.indices, slow.scores
    ):
        reference = np.zeros(len(adi_texts))
        reference[slow_indices] = slow_scores
        assert_same_ranking(fast_indices, fast_scores, reference)


def test_search_returns_at_most_k_best_first(adi_texts, adi_queries):
    index = BM25Index(adi_texts, BM25Config())
    full = index.search(adi_queries, k=len(adi_texts))
    top3 = index.search(adi_queries, k=3)
    for all_scores, indices, scores in zip(full.scores, top3.indices, top3.scores):
        assert len(indices) == len(scores) == min(3, len(all_scores))
        np.testing.assert_allclose(scores, all_scores[: len(scores)], rtol=1e-6)
        assert np.all(scores > 0)


def test_k_larger_than_the_index_is_capped(adi_texts):
    hits = BM25Index(adi_texts[:5], BM25Config()).search([adi_texts[0]], k=1000)
    assert len(hits.indices[0]) <= 5
    assert hits.indices[0][0] == 0


def test_stemming_changes_tokens():
    text = ["The cats were running to their retrieval systems"]
    stemmed = tokenize(text, BM25Config(stemmer="english"))[0]
    unstemmed = tokenize(text, BM25Config(stemmer="none"))[0]
    assert stemmed != unstemmed
    assert "running" in unstemmed and "running" not in stemmed and "run" in stemmed
    assert len(stemmed) == len(unstemmed)


def test_stopwords_are_removed_only_when_asked():
    text = ["the retrieval of the documents"]
    with_stopwords = tokenize(text, BM25Config(stopwords="none", stemmer="none"))[0]
    without = tokenize(text, BM25Config(stopwords="en", stemmer="none"))[0]
    assert "the" in with_stopwords and "the" not in without
    assert set(without) < set(with_stopwords)


def test_stemming_lets_a_query_match_another_word_form():
    texts = ["systems for retrieving documents", "a cat on a mat"]
    for stemmer, expect_match in (("english", True), ("none", False)):
        hits = BM25Index(texts, BM25Config(stemmer=stemmer)).search(["retrieved system"], k=2)
        assert (0 in hits.indices[0].tolist()) == expect_match


@pytest.mark.parametrize("backend", ["bm25s", "rank_bm25"])
def test_stopword_and_unknown_queries_return_empty_rankings(adi_texts, backend):
    config = BM25Config(backend=backend, method="robertson")
    queries = ["the of and", "zzxqv plughbarf", "", "information retrieval"]
    hits = BM25Index(adi_texts, config).search(queries, k=10)
    assert len(hits.indices) == len(hits.scores) == len(queries)
    for row in range(3):
        assert len(hits.indices[row]) == 0 and len(hits.scores[row]) == 0
    assert len(hits.indices[3]) == 10  # answerable queries in the same batch still get answers


def test_empty_document_keeps_rows_aligned():
    texts = ["information retrieval", "", "the of and", "retrieval of documents"]
    hits = BM25Index(texts, BM25Config()).search(["retrieval"], k=4)
    assert sorted(hits.indices[0].tolist()) == [0, 3]


@pytest.mark.parametrize("stemmer", ["english", "none"])
@pytest.mark.parametrize("stopwords", ["en", "none"])
def test_query_and_corpus_tokenizers_cut_as_bm25s_does(adi_texts, adi_queries, stemmer, stopwords):
    edge_cases = ["", "  ", "The THE the", "Ünïcode café naïve Straße", "x_y foo-bar it's 1 22 333", "日本語のテキスト", "a\ttab\nline"]
    texts = edge_cases + adi_queries + adi_texts[:30]
    config = BM25Config(stemmer=stemmer, stopwords=stopwords)
    cut = query_tokenizer(stemmer, stopwords)
    assert [cut(text) for text in texts] == tokenize(texts, config)
    assert tokenize_corpus(texts, config).rows() == tokenize(texts, config)


@pytest.mark.parametrize("edit", ["mixed", "all new", "none new", "emptied"])
def test_tokens_of_an_update_equal_tokenising_the_new_chunks(adi_texts, edit):
    config = BM25Config()
    old = adi_texts[:40]
    if edit == "mixed":  # reordered, some dropped, an empty chunk and unseen words among the new
        kept = [5, None, 0, 39, None, None] + list(range(10, 30)) + [None]
        fresh = ["", "zygote xylophone retrieval", adi_texts[60], "the of and"]
    elif edit == "all new":
        kept, fresh = [None] * 3, adi_texts[50:53]
    elif edit == "none new":
        kept, fresh = [39, 3, 3, 0], []
    else:
        kept, fresh = [None], [""]
    fresh_rows = iter(fresh)
    new_texts = [old[row] if row is not None else next(fresh_rows) for row in kept]

    result = tokenize_corpus(old, config).rearranged(kept, tokenize_corpus(fresh, config))
    expected = tokenize_corpus(new_texts, config)
    assert result.rows() == expected.rows()
    assert sorted(result.vocab) == sorted(expected.vocab)  # no token of a dropped row is left behind
    np.testing.assert_array_equal(result.offsets, expected.offsets)
    assert result.ids.dtype == np.int32 and result.offsets.dtype == np.int64
