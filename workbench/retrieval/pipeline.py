"""The one path a query takes: first stages over chunks → document run → fusion → re-ranking."""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Mapping, Sequence
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


@dataclass(frozen=True, eq=False)
class ChunkSet:
    """Chunks of a corpus with the tables a search needs, computed once when the set is made:
    the query path looks chunks up in these arrays and never walks the chunk list."""

    chunks: Sequence[Chunk]
    doc_ids: list[str]  # every document with a chunk, in chunk order: a doc code indexes it
    doc_codes: np.ndarray  # int32, one per chunk: the position of its document in ``doc_ids``
    chunks_per_doc: int  # ceil(chunks / documents): how many chunks deep a document depth searches
    doc_order: np.ndarray  # int32, one per doc code: its document's place among the doc ids in sorted order

    @classmethod
    def of(cls, chunks: Sequence[Chunk]) -> ChunkSet:
        """Returns the chunk set of ``chunks`` (chunks of one document need not be adjacent)."""
        codes: dict[str, int] = {}
        doc_codes = np.fromiter(
            (codes.setdefault(chunk.doc_id, len(codes)) for chunk in chunks), dtype=np.int32, count=len(chunks)
        )
        chunks_per_doc = max(1, math.ceil(len(chunks) / max(1, len(codes))))
        doc_ids = list(codes)
        doc_order = np.empty(len(doc_ids), dtype=np.int32)
        doc_order[sorted(range(len(doc_ids)), key=doc_ids.__getitem__)] = np.arange(len(doc_ids), dtype=np.int32)
        return cls(chunks, doc_ids, doc_codes, chunks_per_doc, doc_order)

    @property
    def one_chunk_per_doc(self) -> bool:
        return len(self.doc_ids) == len(self.doc_codes)


def _built_by(retriever: RetrieverConfig) -> RetrieverConfig:
    """The retriever's settings that decide the index it builds: without its name or its search-time
    settings, so two retrievers that differ only there share one index."""
    component = component_of(retriever)
    defaults = {name: type(retriever).model_fields[name].default for name in getattr(component, "search_settings", ())}
    return retriever.model_copy(update={"name": retriever.kind} | defaults)


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
            self._chunk_sets[key] = ChunkSet.of(self._cached_chunks(chunking))
        return self._chunk_sets[key]

    def _chunk_address(self, chunking: AnyChunkerConfig) -> dict:
        # The chunker's class, version and fingerprint (or settings): two chunkers never share chunks.
        return {"stage": CHUNKING_STAGE, "corpus": self.corpus.fingerprint, "chunker": component_identity(chunking)}

    def _cached_chunks(self, chunking: AnyChunkerConfig) -> list[Chunk]:
        def compute() -> bytes:
            chunks = chunk_documents(self.corpus.documents.values(), chunking)
            return json.dumps([[c.chunk_id, c.doc_id, c.text] for c in chunks]).encode()

        if self.cache is None or chunking.kind == "none":  # whole documents: cutting costs less than reading a copy
            return chunk_documents(self.corpus.documents.values(), chunking)
        rows = json.loads(self.cache.blob("chunks", self._chunk_address(chunking), compute))
        return [Chunk(chunk_id, doc_id, text) for chunk_id, doc_id, text in rows]

    def adopt(
        self, chunking: AnyChunkerConfig, chunks: ChunkSet | list[Chunk], stages: dict[RetrieverConfig, FirstStage]
    ) -> None:
        """Uses a chunk list and first-stage indexes built elsewhere (a saved index) for ``chunking``,
        so pipelines over these resources search them instead of building their own."""
        self._chunk_sets[_chunk_key(chunking)] = chunks if isinstance(chunks, ChunkSet) else ChunkSet.of(chunks)
        for retriever, index in stages.items():
            self._first_stages[(_chunk_key(chunking), _built_by(retriever))] = index

    def build_context(self, chunking: AnyChunkerConfig) -> BuildContext:
        """Returns what a first stage over the chunk set of ``chunking`` is built from."""
        chunks = self.chunk_set(chunking).chunks
        memo = self._memos.setdefault(_chunk_key(chunking), {})
        return BuildContext(chunks, self.cache, self._chunk_address(chunking), memo, self.progress)

    def first_stage(self, chunking: AnyChunkerConfig, retriever: RetrieverConfig) -> FirstStage:
        """Returns the index ``retriever`` searches over the chunk set, building it on first use
        (two retrievers that differ only in name or search-time settings share one), set to search
        with ``retriever``'s search-time settings."""
        built_by = _built_by(retriever)
        key = (_chunk_key(chunking), built_by)
        if key not in self._first_stages:
            context = self.build_context(chunking)
            started = time.perf_counter()
            self._first_stages[key] = component_of(retriever).build(retriever, context)
            self.build_seconds[(retriever.kind, *key)] = time.perf_counter() - started
        index = self._first_stages[key]
        return index.searching(retriever) if hasattr(index, "searching") else index

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
    run: Run  # each query's documents in ``ranked`` order
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # retriever name → its chunk hits, one row per query in the order given; positions index ``Pipeline.chunk_set``
    chunk_hits: dict[str, ChunkHits] = field(default_factory=dict)


def _doc_run(hits: ChunkHits, query_ids: list[str], chunk_set: ChunkSet, depth: int, aggregation: str) -> Run:
    """Returns each query's ``depth`` best documents in ``ranked`` order, a document scoring the max
    (or sum) of its chunks' scores; only the hit chunks are touched."""
    run: Run = {}
    for query_id, indices, scores in zip(query_ids, hits.indices, hits.scores):
        codes = chunk_set.doc_codes[indices]
        if chunk_set.one_chunk_per_doc:
            pooled = scores.astype(np.float64)
        else:
            codes, slots = np.unique(codes, return_inverse=True)
            if aggregation == "max":
                pooled = np.full(len(codes), -np.inf, dtype=np.float64)
                np.maximum.at(pooled, slots, scores)
            else:
                pooled = np.bincount(slots, weights=scores, minlength=len(codes))
        # score descending, then doc id descending: ``ranked`` order without comparing strings
        best = np.lexsort((-chunk_set.doc_order[codes], -pooled))[:depth]
        doc_ids = chunk_set.doc_ids
        run[query_id] = {doc_ids[code]: score for code, score in zip(codes[best].tolist(), pooled[best].tolist())}
    return run


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

    def ann_recall(self, queries: Mapping[str, str]) -> dict[str, float]:
        """Returns, for each first stage that searches approximately (an ``ann_recall`` method that
        answers a number: dense HNSW or IVF), the mean recall@k of its chunk hits for ``queries``
        against an exact search over the same vectors, k being the chunk depth the pipeline asks for."""
        recalls: dict[str, float] = {}
        for retriever, stage in zip(self.config.retrievers, self.first_stages):
            measure = getattr(stage, "ann_recall", None)
            recall = measure(list(queries.values()), self._chunk_depth()) if measure is not None else None
            if recall is not None:
                recalls[retriever.name] = recall
        return recalls

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
        if len(runs) == 1 and self.reranker is None:  # one first stage's run is ranked already
            run = {query_id: dict(itertools.islice(docs.items(), config.output_depth)) for query_id, docs in run.items()}
        else:
            run = top_k(run, config.output_depth)
        return SearchResult(run, seconds, chunk_hits)


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
