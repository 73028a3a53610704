"""The one path a query takes: first stages over chunks → document run → fusion → re-ranking."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from workbench.retrieval.cache import Cache
from workbench.retrieval.chunking import chunk_documents
from workbench.retrieval.config import BM25Config, ChunkingConfig, DenseConfig, PipelineConfig, RerankConfig
from workbench.retrieval.corpus import Corpus
from workbench.retrieval.fusion import convex_fusion, reciprocal_rank_fusion, top_k
from workbench.retrieval.models import load_cross_encoder, load_encoder, load_tokenizer, model_fingerprint
from workbench.retrieval.rerank import Reranker
from workbench.retrieval.retrievers import ChunkHits
from workbench.retrieval.retrievers.bm25 import BM25Index, tokenize
from workbench.retrieval.retrievers.dense import DenseIndex
from workbench.types import Chunk, Run

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)

# Bumped whenever a stage's code changes what it produces, so old cache entries stop matching.
CHUNKING_STAGE = "chunking-1"
BM25_STAGE = "bm25-tokens-1"


@dataclass(frozen=True)
class ChunkSet:
    chunks: list[Chunk]
    doc_ids: np.ndarray  # doc id of each chunk, aligned with ``chunks``

    @property
    def chunks_per_doc(self) -> int:
        return max(1, math.ceil(len(self.chunks) / max(1, len(set(self.doc_ids.tolist())))))


def _chunking_tokenizer(chunking: ChunkingConfig, dense: DenseConfig) -> str | None:
    return dense.model if chunking.kind == "token" else None


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
        self._bm25: dict[tuple, BM25Index] = {}
        self._tokens: dict[tuple, list[list[str]]] = {}
        self._dense: dict[tuple, DenseIndex] = {}
        self._rerankers: dict[tuple[str, int], Reranker] = {}
        self.build_seconds: dict[tuple, float] = {}

    def chunk_set(self, chunking: ChunkingConfig, dense: DenseConfig) -> ChunkSet:
        """Returns the corpus cut by ``chunking`` (token chunking uses ``dense.model``'s tokenizer)."""
        key = (chunking, _chunking_tokenizer(chunking, dense))
        if key not in self._chunk_sets:
            chunks = self._cached_chunks(chunking, dense)
            self._chunk_sets[key] = ChunkSet(chunks, np.array([chunk.doc_id for chunk in chunks], dtype=object))
        return self._chunk_sets[key]

    def _chunk_address(self, chunking: ChunkingConfig, dense: DenseConfig) -> dict:
        tokenizer = _chunking_tokenizer(chunking, dense)
        return {
            "stage": CHUNKING_STAGE,
            "corpus": self.corpus.fingerprint,
            "chunking": chunking.model_dump(),
            "tokenizer": model_fingerprint(tokenizer) if tokenizer else None,
        }

    def _cached_chunks(self, chunking: ChunkingConfig, dense: DenseConfig) -> list[Chunk]:
        def compute() -> bytes:
            chunks = chunk_documents(self.corpus.documents.values(), chunking, dense.model)
            return json.dumps([[c.chunk_id, c.doc_id, c.text] for c in chunks]).encode()

        if self.cache is None:
            return chunk_documents(self.corpus.documents.values(), chunking, dense.model)
        rows = json.loads(self.cache.blob("chunks", self._chunk_address(chunking, dense), compute))
        return [Chunk(chunk_id, doc_id, text) for chunk_id, doc_id, text in rows]

    def bm25_index(self, chunking: ChunkingConfig, bm25: BM25Config, dense: DenseConfig) -> BM25Index:
        """Returns the BM25 index over the chunk set, building it on first use."""
        key = (chunking, _chunking_tokenizer(chunking, dense), bm25)
        if key not in self._bm25:
            chunk_set = self.chunk_set(chunking, dense)
            started = time.perf_counter()

            texts = [chunk.text for chunk in chunk_set.chunks]
            self._bm25[key] = BM25Index(texts, bm25, self._bm25_tokens(chunking, bm25, dense))
            self.build_seconds[("bm25", *key)] = time.perf_counter() - started
        return self._bm25[key]

    def _bm25_tokens(self, chunking: ChunkingConfig, bm25: BM25Config, dense: DenseConfig) -> list[list[str]]:
        """Returns the chunks' BM25 tokens; they depend on tokenisation only, not on k1 or b.

        Tokenising is most of the cost of a BM25 index, so tokens are what the disk cache keeps;
        the index for a given k1/b is rebuilt from them in a fraction of a second.
        """
        key = (chunking, _chunking_tokenizer(chunking, dense), bm25.stemmer, bm25.stopwords)
        if key not in self._tokens:
            texts = [chunk.text for chunk in self.chunk_set(chunking, dense).chunks]
            if self.cache is None:
                self._tokens[key] = tokenize(texts, bm25)
            else:
                address = self._chunk_address(chunking, dense) | {
                    "bm25_stage": BM25_STAGE,
                    "stemmer": bm25.stemmer,
                    "stopwords": bm25.stopwords,
                }
                payload = self.cache.blob("bm25-tokens", address, lambda: json.dumps(tokenize(texts, bm25)).encode())
                self._tokens[key] = json.loads(payload)
        return self._tokens[key]

    def dense_index(self, chunking: ChunkingConfig, dense: DenseConfig) -> DenseIndex:
        """Returns the dense index over the chunk set, encoding (or reading cached) vectors on first use."""
        key = (chunking, dense)
        if key not in self._dense:
            chunk_set = self.chunk_set(chunking, dense)
            started = time.perf_counter()
            total = len(chunk_set.chunks)
            done = 0

            def report(count: int) -> None:
                nonlocal done
                done += count
                if self.progress is not None:
                    self.progress(f"encoding with {dense.model}", done, total)

            self._dense[key] = DenseIndex([chunk.text for chunk in chunk_set.chunks], dense, self.cache, report)
            self.build_seconds[("dense", *key)] = time.perf_counter() - started
        return self._dense[key]

    @property
    def seconds_encoding(self) -> float:
        """Seconds spent encoding documents and queries so far, over every dense index."""
        return sum(index.seconds_encoding for index in self._dense.values())

    def reranker(self, rerank: RerankConfig) -> Reranker:
        """Returns the re-ranker for ``rerank``, keeping its score memory across pipelines."""
        key = (rerank.model, rerank.batch_size)
        if key not in self._rerankers:
            self._rerankers[key] = Reranker(rerank.model, rerank.batch_size, self.cache)
        return self._rerankers[key]


@dataclass
class SearchResult:
    run: Run
    stage_seconds: dict[str, float] = field(default_factory=dict)


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
    """Loads every model the pipeline uses (each loader keeps it for later); raises ``ModelError`` naming the model."""
    if config.fusion.uses_dense:
        load_encoder(config.dense.model)
    if config.chunking.kind == "token":
        load_tokenizer(config.dense.model)
    if config.rerank.enabled:
        load_cross_encoder(config.rerank.model)


class Pipeline:
    """A pipeline config bound to the indexes it needs: ``search`` turns queries into a document run."""

    def __init__(self, config: PipelineConfig, resources: Resources):
        self.config = config
        self.resources = resources
        fusion = config.fusion
        load_models(config)  # an unavailable model fails before any chunking, indexing or encoding
        self.chunk_set = resources.chunk_set(config.chunking, config.dense)
        self.bm25 = resources.bm25_index(config.chunking, config.bm25, config.dense) if fusion.uses_bm25 else None
        self.dense = resources.dense_index(config.chunking, config.dense) if fusion.uses_dense else None
        self.reranker = resources.reranker(config.rerank) if config.rerank.enabled else None

    @classmethod
    def build(cls, config: PipelineConfig, corpus: Corpus, cache: Cache | None = None) -> Pipeline:
        """Returns a ready pipeline over ``corpus``; raises ``ModelError`` for an unavailable model."""
        return cls(config, Resources(corpus, cache))

    def _chunk_depth(self) -> int:
        return self.config.first_stage_depth * self.chunk_set.chunks_per_doc

    def search(self, queries: Mapping[str, str], use_query_caches: bool = True) -> SearchResult:
        """Returns the ranked documents of every query and the seconds each stage took.

        ``use_query_caches=False`` encodes the queries and scores re-ranker pairs afresh, as a
        first-time query would be; latency measurements need that.
        """
        config = self.config
        query_ids, query_texts = list(queries), list(queries.values())
        seconds: dict[str, float] = {}
        bm25_run = dense_run = None
        if self.bm25 is not None:
            started = time.perf_counter()
            hits = self.bm25.search(query_texts, self._chunk_depth())
            bm25_run = _doc_run(hits, query_ids, self.chunk_set, config.first_stage_depth, config.doc_aggregation)
            seconds["bm25"] = time.perf_counter() - started
        if self.dense is not None:
            started = time.perf_counter()
            vectors = None if use_query_caches else self.dense.encoder.encode_uncached(query_texts)
            hits = self.dense.search(query_texts, self._chunk_depth(), vectors)
            dense_run = _doc_run(hits, query_ids, self.chunk_set, config.first_stage_depth, config.doc_aggregation)
            seconds["dense"] = time.perf_counter() - started
        started = time.perf_counter()
        run = self._fuse(bm25_run, dense_run)
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
                use_cache=use_query_caches,
                weight=config.rerank.weight,
            )
            seconds["rerank"] = time.perf_counter() - started
        return SearchResult(top_k(run, config.output_depth), seconds)

    def _fuse(self, bm25_run: Run | None, dense_run: Run | None) -> Run:
        fusion = self.config.fusion
        if dense_run is None:
            return bm25_run
        if bm25_run is None:
            return dense_run
        if fusion.method == "rrf":
            return reciprocal_rank_fusion([bm25_run, dense_run], fusion.rrf_k)
        return convex_fusion(dense_run, bm25_run, fusion.alpha, fusion.normalization)

    def measure_latency(self, queries: Mapping[str, str], sample: int = 50) -> dict[str, float]:
        """Returns p50/p95/mean milliseconds of answering single queries on one thread, cold query vectors.

        Uses the first ``sample`` queries in the given order, so the figure is repeatable.
        """
        import torch

        timings = []
        threads = torch.get_num_threads()
        # One thread per query, as a server answering queries side by side would run them; it also
        # keeps the figure steady when another process shares the cores.
        torch.set_num_threads(1)
        try:
            for query_id, text in list(queries.items())[:sample]:
                started = time.perf_counter()
                self.search({query_id: text}, use_query_caches=False)
                timings.append((time.perf_counter() - started) * 1000)
        finally:
            torch.set_num_threads(threads)
        if not timings:
            return {"latency_p50_ms": 0.0, "latency_p95_ms": 0.0, "latency_mean_ms": 0.0}
        quantiles = statistics.quantiles(timings, n=20, method="inclusive") if len(timings) > 1 else timings * 19
        return {
            "latency_p50_ms": statistics.median(timings),
            "latency_p95_ms": quantiles[18],
            "latency_mean_ms": statistics.fmean(timings),
        }
