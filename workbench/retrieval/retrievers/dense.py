"""Dense retrieval: a sentence-transformers encoder and a faiss index of normalised vectors."""

from __future__ import annotations

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


def faiss_index(vectors: np.ndarray, config: DenseConfig):
    """Returns a faiss inner-product index (flat or HNSW, as ``config`` says) holding ``vectors`` in order."""
    import faiss

    dim = vectors.shape[1]
    if config.index == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


class DenseIndex(FirstStageBase):
    """A faiss inner-product index over the normalised vectors of a fixed list of chunk texts."""

    config_type = DenseConfig
    version = "dense-1"

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

    @classmethod
    def build(cls, config: DenseConfig, context: BuildContext) -> DenseIndex:
        """Returns the index over ``context``'s chunks, encoding them (or reading cached vectors)."""
        total, done = len(context.chunks), 0

        def report(count: int) -> None:
            nonlocal done
            done += count
            if context.progress is not None:
                context.progress(f"encoding with {config.model}", done, total)

        return cls(context.texts, config, context.cache, report)

    @classmethod
    def from_faiss(cls, index, config: DenseConfig, cache: Cache | None = None) -> DenseIndex:
        """Returns a dense index over a faiss index built elsewhere (saved, or from reused vectors); encodes nothing."""
        dense = cls.__new__(cls)
        dense.config = config
        dense.encoder = Encoder(config, cache)
        dense.num_chunks = index.ntotal
        dense._index = index
        return dense

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
        return self._index.reconstruct_n(0, self._index.ntotal)

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

    def search(self, queries: Sequence[str], k: int, query_cache: bool = True) -> ChunkHits:
        """Returns the ``k`` nearest chunks of each query by cosine similarity, best first; with
        ``query_cache`` False the queries are encoded afresh, as a first-time query would be."""
        queries = list(queries)
        query_vectors = self.encoder.encode(queries, "query") if query_cache else self.encoder.encode_uncached(queries)
        k = min(k, self.num_chunks)
        scores, indices = self._index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), k)
        valid = indices >= 0
        return ChunkHits(
            [row[mask].astype(np.int64) for row, mask in zip(indices, valid)],
            [row[mask] for row, mask in zip(scores, valid)],
        )
