"""Tests of workbench/retrieval/retrievers/dense.py on ADI with real MiniLM: HNSW and IVF against flat,
search-time settings on one built index, recall against exact search, saved ANN indexes."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from workbench.retrieval.config import ChunkingConfig, DenseConfig, PipelineConfig
from workbench.retrieval.pipeline import Pipeline, Resources
from workbench.retriever import Retriever

WHOLE = ChunkingConfig()
HNSW = DenseConfig(index="hnsw", hnsw_m=8, ef_search=200)  # ef_search above ADI's 82 documents: exhaustive
IVF = DenseConfig(index="ivf", nlist=8, nprobe=8)  # every list searched: exhaustive


@pytest.fixture(scope="module")
def queries(adi) -> list[str]:
    return list(adi.queries.values())


@pytest.mark.parametrize("config", [HNSW, IVF], ids=["hnsw", "ivf"])
def test_exhaustive_ann_settings_find_what_flat_finds(adi_resources, queries, config):
    exact = adi_resources.first_stage(WHOLE, DenseConfig()).search(queries, 10)
    approximate = adi_resources.first_stage(WHOLE, config).search(queries, 10)
    for exact_row, exact_scores, row, scores in zip(
        exact.indices, exact.scores, approximate.indices, approximate.scores
    ):
        assert row.tolist() == exact_row.tolist()
        np.testing.assert_allclose(scores, exact_scores, rtol=1e-5)


def test_ann_recall_is_one_when_exhaustive_and_lower_when_not(adi_resources, queries):
    assert adi_resources.first_stage(WHOLE, IVF).ann_recall(queries, 20) == 1.0
    narrow = adi_resources.first_stage(WHOLE, IVF.model_copy(update={"nprobe": 1})).ann_recall(queries, 20)
    assert 0.0 < narrow < 1.0
    assert adi_resources.first_stage(WHOLE, DenseConfig()).ann_recall(queries, 20) is None  # flat is exact


def test_search_time_settings_reuse_the_built_index(adi, session_cache, queries):
    resources = Resources(adi, session_cache)
    wide, narrow = (
        resources.first_stage(WHOLE, IVF.model_copy(update={"name": name, "nprobe": nprobe}))
        for name, nprobe in (("wide", 8), ("narrow", 1))
    )
    assert len(resources.build_seconds) == 1 and wide._index is narrow._index
    assert (wide.config.nprobe, narrow.config.nprobe) == (8, 1)  # each searches with its own setting
    assert wide.search(queries, 20).indices[0].tolist() != narrow.search(queries, 20).indices[0].tolist()
    first = resources.first_stage(WHOLE, HNSW.model_copy(update={"ef_search": 16}))
    second = resources.first_stage(WHOLE, HNSW.model_copy(update={"ef_search": 64}))
    assert len(resources.build_seconds) == 2 and first._index is second._index
    resources.first_stage(WHOLE, HNSW.model_copy(update={"hnsw_m": 16}))  # the graph's shape: a new build
    resources.first_stage(WHOLE, IVF.model_copy(update={"nlist": 4}))
    assert len(resources.build_seconds) == 4


def test_ivf_with_more_lists_than_chunks_searches_exactly_and_says_so(adi, session_cache, queries, caplog):
    config = DenseConfig(name="wide", index="ivf", nlist=500)
    with caplog.at_level(logging.WARNING, logger="workbench.retrieval.retrievers.dense"):
        index = Resources(adi, session_cache).first_stage(WHOLE, config)
    assert "nlist = 500 lists for 82 chunks" in caplog.text and "'wide'" in caplog.text
    assert not index.approximate
    flat = Resources(adi, session_cache).first_stage(WHOLE, DenseConfig()).search(queries, 10)
    assert [row.tolist() for row in index.search(queries, 10).indices] == [row.tolist() for row in flat.indices]


@pytest.mark.parametrize(
    "dense",
    [{"index": "hnsw", "hnsw_m": 8, "ef_search": 4}, {"index": "ivf", "nlist": 6, "nprobe": 2}],
    ids=["hnsw", "ivf"],
)
def test_a_saved_ann_index_loads_and_answers_as_built(adi, session_cache, tmp_path, queries, dense):
    config = PipelineConfig(retrievers=({"kind": "dense", **dense},), first_stage_depth=10, output_depth=10)
    built = Retriever.from_config(config, adi, cache_dir=session_cache.root)
    built.save(tmp_path / "index")
    loaded = Retriever.load(tmp_path / "index")
    assert loaded.config == config
    for query in queries[:15]:
        assert [hit.doc_id for hit in loaded.search(query)] == [hit.doc_id for hit in built.search(query)]
    # narrow settings miss some of the exact answers, and the loaded index misses the same ones
    pipeline = loaded._pipeline
    assert pipeline.ann_recall(dict(enumerate(queries))) == built._pipeline.ann_recall(dict(enumerate(queries)))
    assert pipeline.ann_recall(dict(enumerate(queries)))["dense"] < 1.0


def test_pipelines_that_differ_in_search_settings_share_resources(adi, session_cache, queries):
    resources = Resources(adi, session_cache)
    configs = [
        PipelineConfig(retrievers=(DenseConfig(index="hnsw", hnsw_m=8, ef_search=ef),), first_stage_depth=20)
        for ef in (4, 200)
    ]
    narrow, wide = (Pipeline(config, resources) for config in configs)
    assert len(resources.build_seconds) == 1
    batch = dict(enumerate(queries))
    assert wide.ann_recall(batch) == {"dense": 1.0} and narrow.ann_recall(batch)["dense"] < 1.0
