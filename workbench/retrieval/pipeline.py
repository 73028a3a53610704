"""The one path a query takes: first stages over chunks → document run → fusion → re-ranking."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from workbench.progress import ProgressCallback
from workbench.retrieval.cache import Cache
from workbench.retrieval.chunking import chunk_documents
from workbench.retrieval.components import BuildContext, FirstStage, component_identity, component_of, own_settings
from workbench.retrieval.config import (
    AnyChunkerConfig,
    AnyRerankerConfig,
    BM25Config,
    DenseConfig,
    PipelineConfig,
    RetrieverConfig,
)
from workbench.retrieval.corpus import Corpus
from workbench.retrieval.fusion import fuse, top_k
from workbench.retrieval.rerank import Reranker, reranker_for
from workbench.retrieval.retrievers import ChunkHits
from workbench.types import Chunk, Run

# Bumped whenever a stage's code changes what it produces, so old cache entries stop matching.
CHUNKING_STAGE = "chunking-1"


@dataclass(frozen=True)
class ChunkSet:
    chunks: list[Chunk]
    doc_ids: np.ndarray  # doc id of each chunk, aligned with ``chunks``

    @property
    def chunks_per_doc(self) -> int:
        return max(1, math.ceil(len(self.chunks) / max(1, len(set(self.doc_ids.tolist())))))


def _unnamed(retriever: RetrieverConfig) -> RetrieverConfig:
    """The retriever's settings without its name: two names for the same settings share one index."""
    return retriever.model_copy(update={"name": retriever.kind})


def _settings_key(config: AnyChunkerConfig | AnyRerankerConfig) -> tuple:
    """The component's kind and own settings, hashable: configs equal in these share one chunk set or re-ranker."""
    return (config.kind, json.dumps(own_settings(config), sort_keys=True))


def _chunk_key(chunking: AnyChunkerConfig) -> tuple:
    return _settings_key(chunking)


class Resources:
    """Chunk sets, indexes and re-rankers for one corpus, built once and shared by pipelines.

    A study keeps one ``Resources`` so that trials which differ only in fusion or depths
    reuse every index built before them.
    """

    def __init__(self, corpus: Corpus, cache: Cache | None = None, progress: ProgressCallback | None = None):
        self.corpus = corpus
        self.cache = cache
        self.progress = progress
        self._chunk_sets: dict[tuple, ChunkSet] = {}
        self._memos: dict[tuple, dict] = {}  # per chunk set: what first stages over it share
        self._first_stages: dict[tuple, FirstStage] = {}
        self._rerankers: dict[tuple, Reranker] = {}
        self.build_seconds: dict[tuple, float] = {}

    def chunk_set(self, chunking: AnyChunkerConfig) -> ChunkSet:
        """Returns the corpus cut by ``chunking``."""
        key = _chunk_key(chunking)
        if key not in self._chunk_sets:
            chunks = self._cached_chunks(chunking)
            self._chunk_sets[key] = ChunkSet(chunks, np.array([chunk.doc_id for chunk in chunks], dtype=object))
        return self._chunk_sets[key]

    def _chunk_address(self, chunking: AnyChunkerConfig) -> dict:
        # The chunker's class, version and fingerprint (or settings): two chunkers never share chunks.
        return {"stage": CHUNKING_STAGE, "corpus": self.corpus.fingerprint, "chunker": component_identity(chunking)}

    def _cached_chunks(self, chunking: AnyChunkerConfig) -> list[Chunk]:
        def compute() -> bytes:
            chunks = chunk_documents(self.corpus.documents.values(), chunking)
            return json.dumps([[c.chunk_id, c.doc_id, c.text] for c in chunks]).encode()

        if self.cache is None:
            return chunk_documents(self.corpus.documents.values(), chunking)
        rows = json.loads(self.cache.blob("chunks", self._chunk_address(chunking), compute))
        return [Chunk(chunk_id, doc_id, text) for chunk_id, doc_id, text in rows]

    def adopt(self, chunking: AnyChunkerConfig, chunks: list[Chunk], stages: dict[RetrieverConfig, FirstStage]) -> None:
        """Uses a chunk list and first-stage indexes built elsewhere (a saved index) for ``chunking``,
        so pipelines over these resources search them instead of building their own."""
        self._chunk_sets[_chunk_key(chunking)] = ChunkSet(chunks, np.array([c.doc_id for c in chunks], dtype=object))
        for retriever, index in stages.items():
            self._first_stages[(_chunk_key(chunking), _unnamed(retriever))] = index

    def build_context(self, chunking: AnyChunkerConfig) -> BuildContext:
        """Returns what a first stage over the chunk set of ``chunking`` is built from."""
        chunks = self.chunk_set(chunking).chunks
        memo = self._memos.setdefault(_chunk_key(chunking), {})
        return BuildContext(chunks, self.cache, self._chunk_address(chunking), memo, self.progress)

    def first_stage(self, chunking: AnyChunkerConfig, retriever: RetrieverConfig) -> FirstStage:
        """Returns the index ``retriever`` searches over the chunk set, building it on first use
        (two retrievers that differ only in name share one)."""
        key = (_chunk_key(chunking), _unnamed(retriever))
        if key not in self._first_stages:
            context = self.build_context(chunking)
            started = time.perf_counter()
            self._first_stages[key] = component_of(retriever).build(retriever, context)
            self.build_seconds[(retriever.kind, *key)] = time.perf_counter() - started
        return self._first_stages[key]

    @property
    def seconds_encoding(self) -> float:
        """Seconds spent encoding documents and queries so far, over every first stage."""
        return sum(index.seconds_encoding for index in self._first_stages.values())

    def reranker(self, rerank: AnyRerankerConfig) -> Reranker:
        """Returns the re-ranker for ``rerank``, keeping its score memory across pipelines (whatever
        their depth and weight)."""
        key = _settings_key(rerank)
        if key not in self._rerankers:
            self._rerankers[key] = reranker_for(rerank, self.cache)
        return self._rerankers[key]


@dataclass
class SearchResult:
    run: Run
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # retriever name → its chunk hits, one row per query in the order given; positions index ``Pipeline.chunk_set``
    chunk_hits: dict[str, ChunkHits] = field(default_factory=dict)


def _doc_run(hits: ChunkHits, query_ids: list[str], chunk_set: ChunkSet, depth: int, aggregation: str) -> Run:
    run: Run = {}
    for query_id, indices, scores in zip(query_ids, hits.indices, hits.scores):
        doc_scores: dict[str, float] = {}
        for doc_id, score in zip(chunk_set.doc_ids[indices], scores.tolist()):
            if aggregation == "max":
                if score > doc_scores.get(doc_id, -math.inf):
                    doc_scores[doc_id] = score
            else:
                doc_scores[doc_id] = doc_scores.get(doc_id, 0.0) + score
        run[query_id] = doc_scores
    return top_k(run, depth)


def load_models(config: PipelineConfig) -> None:
    """Loads every model ``config`` names (encoders, tokenizer, cross-encoder); raises ``ModelError`` for one
    that cannot load. Loaded models stay in memory, so the pipeline that follows reuses them."""
    for retriever in config.retrievers:
        component_of(retriever).load_models(retriever)
    component_of(config.chunking).load_models(config.chunking)
    if config.rerank.enabled:
        component_of(config.rerank).load_models(config.rerank)


class Pipeline:
    """A pipeline config bound to the indexes it needs: ``search`` turns queries into a document run.

    Building one builds (or reads from the cache) every index the config needs. With
    ``query_cache=False`` queries are encoded and re-ranker pairs scored afresh each time, as a
    first-time query would be.
    """

    def __init__(self, config: PipelineConfig, resources: Resources, query_cache: bool = True):
        self.config = config
        self.resources = resources
        self.query_cache = query_cache
        load_models(config)  # an unavailable model fails before any chunking, indexing or encoding
        self.chunk_set = resources.chunk_set(config.chunking)
        self.first_stages = [resources.first_stage(config.chunking, retriever) for retriever in config.retrievers]
        self.reranker = resources.reranker(config.rerank) if config.rerank.enabled else None

    @classmethod
    def build(cls, config: PipelineConfig, corpus: Corpus, cache: Cache | None = None) -> Pipeline:
        """Returns a ready pipeline over ``corpus``; raises ``ModelError`` for an unavailable model."""
        return cls(config, Resources(corpus, cache))

    def _chunk_depth(self) -> int:
        return self.config.first_stage_depth * self.chunk_set.chunks_per_doc

    def search(self, queries: Mapping[str, str]) -> SearchResult:
        """Returns the ranked documents of every query and the seconds each stage took."""
        config = self.config
        query_ids, query_texts = list(queries), list(queries.values())
        seconds: dict[str, float] = {}
        runs = []
        chunk_hits: dict[str, ChunkHits] = {}
        for retriever, stage in zip(config.retrievers, self.first_stages):
            started = time.perf_counter()
            hits = chunk_hits[retriever.name] = stage.search(query_texts, self._chunk_depth(), self.query_cache)
            runs.append(_doc_run(hits, query_ids, self.chunk_set, config.first_stage_depth, config.doc_aggregation))
            seconds[retriever.name] = time.perf_counter() - started
        started = time.perf_counter()
        fusion = config.fusion
        run = fuse(runs, fusion.method, config.fusion_weights, fusion.normalization, fusion.rrf_k)
        seconds["fusion"] = time.perf_counter() - started
        if self.reranker is not None:
            started = time.perf_counter()
            doc_texts = {
                doc_id: self.resources.corpus.documents[doc_id].full_text
                for doc_scores in run.values()
                for doc_id in doc_scores
            }
            run = self.reranker.rerank(
                run,
                dict(queries),
                doc_texts,
                config.rerank.depth,
                use_cache=self.query_cache,
                weight=config.rerank.weight,
            )
            seconds["rerank"] = time.perf_counter() - started
        return SearchResult(top_k(run, config.output_depth), seconds, chunk_hits)


def bm25_and_dense_runs(
    corpus: Corpus,
    queries: dict[str, str],
    depth: int,
    cache: Cache | None,
    progress: ProgressCallback | None = None,
) -> list[Run]:
    """Returns the top-``depth`` runs of BM25 alone and of dense retrieval alone, whole documents and
    default settings: the two views training and the synthetic round trip consult side by side."""
    resources = Resources(corpus, cache, progress)
    return [
        Pipeline(
            PipelineConfig(
                name=f"{retriever.kind}-only", retrievers=(retriever,), first_stage_depth=depth, output_depth=depth
            ),
            resources,
        )
        .search(queries)
        .run
        for retriever in (BM25Config(), DenseConfig())
    ]
