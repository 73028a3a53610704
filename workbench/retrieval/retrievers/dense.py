"""Dense retrieval: a sentence-transformers encoder and a faiss index of normalised vectors."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from workbench.errors import SavedIndexError
from workbench.retrieval.cache import Cache
from workbench.retrieval.components import BuildContext, FirstStageBase
from workbench.retrieval.config import DenseConfig
from workbench.retrieval.models import load_encoder, model_fingerprint
from workbench.retrieval.retrievers import ChunkHits
from workbench.types import Chunk

log = logging.getLogger(__name__)


class Encoder:
    """Encodes texts with one model, through the embedding cache when one is given."""

    def __init__(self, config: DenseConfig, cache: Cache | None):
        self.config = config
        self.cache = cache
        self.seconds_encoding = 0.0

    def encode_uncached(self, texts: list[str]) -> np.ndarray:
        """Returns unit-length vectors of ``texts`` straight from the model."""
        started = time.perf_counter()
        model = load_encoder(self.config.model, self.config.device, self.config.backend)
        vectors = model.encode(
            texts,
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        self.seconds_encoding += time.perf_counter() - started
        return np.asarray(vectors, dtype=np.float32)

    def encode(self, texts: Sequence[str], role: str, on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Returns unit-length float32 vectors of ``texts``; ``role`` is "document" or "query"."""
        if self.cache is None:
            return self.encode_uncached(list(texts))
        store = self.cache.embeddings(f"{model_fingerprint(self.config.model)}{self.config.cache_key}", role)
        if self.cache.cluster is not None and role == "document":  # queries are too few to be worth replicas
            self.cache.cluster.encode_missing(store, texts, self.config, on_progress)
        return store.get_or_encode(texts, self.encode_uncached, on_progress)


def ivf_lists(config: DenseConfig, num_vectors: int) -> int:
    """Returns how many k-means lists an IVF index over ``num_vectors`` vectors gets: ``config.nlist``,
    or 4·sqrt(vectors) rounded, at most the vector count."""
    if config.nlist is not None:
        return config.nlist
    return max(1, min(num_vectors, round(4 * math.sqrt(num_vectors))))


def faiss_index(vectors: np.ndarray, config: DenseConfig):
    """Returns a faiss inner-product index (flat, HNSW or IVF, as ``config`` says) holding ``vectors`` in order.

    An IVF index needs at least one training vector per list: with fewer vectors than ``nlist``
    the index is flat (exact) instead, and a warning says so.
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dim = vectors.shape
    if config.index == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
    elif config.index == "ivf" and ivf_lists(config, count) <= count:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, ivf_lists(config, count), faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # few vectors per list is the user's choice, not worth a warning
        index.train(vectors)
    else:
        if config.index == "ivf":
            log.warning(
                "dense retriever %r: nlist = %d lists for %d chunks; IVF needs a chunk per list, so the index "
                "is flat (exact search)",
                config.name,
                config.nlist,
                count,
            )
        index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    return index


def _vectors(index) -> np.ndarray:
    """Returns the vectors a faiss index holds, in order."""
    import faiss

    if isinstance(index, faiss.IndexIVF):
        index.make_direct_map()  # IVF lists hold vectors by list; the map finds them by position
    return index.reconstruct_n(0, index.ntotal)


def _search_parameters(index, config: DenseConfig):
    """Returns the faiss search parameters of ``config``'s search-time settings for ``index`` (None for flat)."""
    import faiss

    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(efSearch=config.ef_search)
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(nprobe=min(config.nprobe, index.nlist))
    return None


class ExactSearch:
    """A flat index over the vectors of an approximate one, built on first use: what the approximate
    index's answers are measured against. Indexes over one chunk set and model share one."""

    def __init__(self):
        self._index = None

    def search(self, approximate, query_vectors: np.ndarray, k: int) -> np.ndarray:
        """Returns the positions of the ``k`` nearest vectors of each query, exactly."""
        import faiss

        if self._index is None:
            self._index = faiss.IndexFlatIP(approximate.d)
            self._index.add(_vectors(approximate))
        return self._index.search(query_vectors, k)[1]


class DenseIndex(FirstStageBase):
    """A faiss inner-product index over the normalised vectors of a fixed list of chunk texts."""

    config_type = DenseConfig
    version = "dense-1"
    search_settings = ("ef_search", "nprobe")

    def __init__(
        self,
        texts: Sequence[str],
        config: DenseConfig,
        cache: Cache | None,
        on_progress: Callable[[int], None] | None = None,
    ):
        self.config = config
        self.encoder = Encoder(config, cache)
        vectors = self.encoder.encode(texts, "document", on_progress)
        self.num_chunks = len(texts)
        self._index = faiss_index(vectors, config)
        self._exact = ExactSearch()

    @classmethod
    def build(cls, config: DenseConfig, context: BuildContext) -> DenseIndex:
        """Returns the index over ``context``'s chunks, encoding them (or reading cached vectors)."""
        total, done = len(context.chunks), 0

        def report(count: int) -> None:
            nonlocal done
            done += count
            if context.progress is not None:
                context.progress(f"encoding with {config.model}", done, total)

        index = cls(context.texts, config, context.cache, report)
        # One exact index per chunk set and model answers the recall of every approximate index over them.
        index._exact = context.memo.setdefault(("dense-exact", config.model, config.backend), ExactSearch())
        return index

    @classmethod
    def from_faiss(cls, index, config: DenseConfig, cache: Cache | None = None) -> DenseIndex:
        """Returns a dense index over a faiss index built elsewhere (saved, or from reused vectors); encodes nothing."""
        dense = cls.__new__(cls)
        dense.config = config
        dense.encoder = Encoder(config, cache)
        dense.num_chunks = index.ntotal
        dense._index = index
        dense._exact = ExactSearch()
        return dense

    def searching(self, config: DenseConfig) -> DenseIndex:
        """Returns this index searched with ``config``'s search-time settings (``ef_search``,
        ``nprobe``): it shares the built faiss index, so nothing is rebuilt."""
        view = copy.copy(self)
        view.config = config
        return view

    @property
    def approximate(self) -> bool:
        """Whether searches may miss a nearer vector (HNSW or IVF), rather than search every vector."""
        return _search_parameters(self._index, self.config) is not None

    def updated(self, context: BuildContext, kept: Sequence[int | None]) -> DenseIndex:
        """Returns the index over ``context``'s chunks, encoding only the new ones (the faiss index is rebuilt)."""
        texts = context.texts
        fresh = [position for position, old in enumerate(kept) if old is None]
        old_vectors = self.vectors()
        fresh_vectors = iter(
            Encoder(self.config, context.cache).encode([texts[p] for p in fresh], "document") if fresh else []
        )
        vectors = np.stack([old_vectors[old] if old is not None else next(fresh_vectors) for old in kept])
        return type(self).from_faiss(faiss_index(vectors, self.config), self.config)

    def vectors(self) -> np.ndarray:
        """Returns the indexed vectors, one row per chunk in chunk order."""
        return _vectors(self._index)

    def save(self, folder: Path) -> None:
        """Writes the faiss index to ``folder / "index.faiss"`` with faiss' own writer."""
        import faiss

        faiss.write_index(self._index, str(folder / "index.faiss"))

    @classmethod
    def load(cls, config: DenseConfig, folder: Path, chunks: Sequence[Chunk]) -> DenseIndex:
        """Returns the index ``save`` wrote under ``folder``; encodes nothing (queries are encoded
        uncached). Raises ``SavedIndexError`` when it holds another number of vectors than chunks."""
        import faiss

        dense = cls.from_faiss(faiss.read_index(str(folder / "index.faiss")), config)
        if dense.num_chunks != len(chunks):
            raise SavedIndexError(
                f"{folder / 'index.faiss'}: holds {dense.num_chunks} vectors, chunks.jsonl {len(chunks)}"
            )
        return dense

    @classmethod
    def models(cls, config: DenseConfig) -> dict[str, str]:
        return {"model": config.model}

    @classmethod
    def load_models(cls, config: DenseConfig) -> None:
        load_encoder(config.model, config.device, config.backend)

    @property
    def seconds_encoding(self) -> float:
        return self.encoder.seconds_encoding

    def _query_vectors(self, queries: Sequence[str], query_cache: bool) -> np.ndarray:
        queries = list(queries)
        vectors = self.encoder.encode(queries, "query") if query_cache else self.encoder.encode_uncached(queries)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def search(self, queries: Sequence[str], k: int, query_cache: bool = True) -> ChunkHits:
        """Returns the ``k`` nearest chunks of each query by cosine similarity, best first (HNSW and
        IVF: as near as ``ef_search`` or ``nprobe`` let them find); with ``query_cache`` False the
        queries are encoded afresh, as a first-time query would be."""
        k = min(k, self.num_chunks)
        parameters = _search_parameters(self._index, self.config)
        scores, indices = self._index.search(self._query_vectors(queries, query_cache), k, params=parameters)
        valid = indices >= 0
        return ChunkHits(
            [row[mask].astype(np.int64) for row, mask in zip(indices, valid)],
            [row[mask] for row, mask in zip(scores, valid)],
        )

    def ann_recall(self, queries: Sequence[str], k: int) -> float | None:
        """Returns the mean over ``queries`` of recall@k: the share of each query's ``k`` nearest chunks
        (searched exactly, over the same vectors) that this index's top ``k`` holds. None for a flat
        index, which searches exactly."""
        if not self.approximate or not queries:
            return None
        k = min(k, self.num_chunks)
        query_vectors = self._query_vectors(queries, query_cache=True)
        found = self._index.search(query_vectors, k, params=_search_parameters(self._index, self.config))[1]
        exact = self._exact.search(self._index, query_vectors, k)
        shares = [len(set(row.tolist()) & set(truth.tolist())) / k for row, truth in zip(found, exact)]
        return float(np.mean(shares))
