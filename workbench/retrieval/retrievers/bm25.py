"""BM25 over chunks: bm25s as the engine, rank-bm25 as the reference backend.

Both backends see the same tokens (bm25s' tokenizer with the configured stemmer and stopwords),
so with ``method = "robertson"`` they rank identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workbench.errors import SavedIndexError
from workbench.retrieval.config import BM25Config
from workbench.retrieval.retrievers import ChunkHits


def _stemmer(config: BM25Config):
    if config.stemmer == "none":
        return None
    import Stemmer

    return Stemmer.Stemmer(config.stemmer).stemWords


def tokenize(texts: Sequence[str], config: BM25Config) -> list[list[str]]:
    """Returns the token lists BM25 indexes for ``texts`` under ``config``'s tokenisation."""
    import bm25s

    stopwords = config.stopwords if config.stopwords != "none" else None
    return bm25s.tokenize(
        list(texts), stopwords=stopwords, stemmer=_stemmer(config), return_ids=False, show_progress=False
    )


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    candidates = np.flatnonzero(scores > 0)
    if len(candidates) > k:
        candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
    order = np.lexsort((candidates, -scores[candidates]))
    ranked = candidates[order]
    return ranked, scores[ranked]


class BM25Index:
    """A BM25 index over a fixed list of chunk texts."""

    def __init__(self, texts: Sequence[str], config: BM25Config, corpus_tokens: list[list[str]] | None = None):
        """Indexes ``texts``; pass ``corpus_tokens`` (``tokenize(texts, config)``) to skip tokenising them again."""
        self.config = config
        self.num_chunks = len(texts)
        if corpus_tokens is None:
            corpus_tokens = tokenize(texts, config)
        if config.backend == "bm25s":
            import bm25s

            self._engine = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
            # Empty token lists would make bm25s drop the row; a never-matching token keeps rows aligned.
            self._engine.index([tokens or ["\x00"] for tokens in corpus_tokens], show_progress=False)
        else:
            from rank_bm25 import BM25Okapi

            # epsilon 0 keeps negative IDFs at zero as bm25s does (rank-bm25 floors them otherwise).
            self._engine = BM25Okapi(
                [tokens or ["\x00"] for tokens in corpus_tokens], k1=config.k1, b=config.b, epsilon=0.0
            )

    def save(self, folder: Path) -> None:
        """Writes the bm25s index in bm25s' own format (``BM25.save``) under ``folder``.

        Raises ``SavedIndexError`` for the rank-bm25 backend, which has no file format: a saved
        index rebuilds it from the chunks' tokens instead.
        """
        if self.config.backend != "bm25s":
            raise SavedIndexError("the rank_bm25 backend has no file format; rebuild it from tokens")
        self._engine.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path, config: BM25Config) -> BM25Index:
        """Returns the index ``save`` wrote under ``folder``; tokenises nothing.

        Raises ``SavedIndexError`` when the files were written with other BM25 parameters than ``config``'s.
        """
        import bm25s

        engine = bm25s.BM25.load(str(folder), mmap=False, show_progress=False)
        saved = (engine.k1, engine.b, engine.method)
        if saved != (config.k1, config.b, config.method):
            raise SavedIndexError(
                f"{folder}: BM25 files were written with k1, b, method = {saved}, "
                f"but the config says {(config.k1, config.b, config.method)}"
            )
        index = cls.__new__(cls)
        index.config = config
        index.num_chunks = int(engine.scores["num_docs"])
        index._engine = engine
        return index

    def search(self, queries: Sequence[str], k: int) -> ChunkHits:
        """Returns the top ``k`` chunks with a positive score for each query, best first."""
        k = min(k, self.num_chunks)
        query_tokens = tokenize(queries, self.config)
        if self.config.backend == "bm25s":
            return self._search_bm25s(query_tokens, k)
        # rank-bm25 scores carry an extra (k1 + 1) factor that bm25s leaves out; divide it away.
        scale = self.config.k1 + 1
        hits = [_top_k(np.asarray(self._engine.get_scores(tokens)) / scale, k) for tokens in query_tokens]
        return ChunkHits([indices for indices, _ in hits], [scores for _, scores in hits])

    def _search_bm25s(self, query_tokens: list[list[str]], k: int) -> ChunkHits:
        indices_out, scores_out = [], []
        known = self._engine.vocab_dict
        # bm25s scores queries as a batch; queries with no indexed token are answered empty.
        answerable = [i for i, tokens in enumerate(query_tokens) if any(t in known for t in tokens)]
        rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if answerable:
            documents, scores = self._engine.retrieve(
                [[t for t in query_tokens[i] if t in known] for i in answerable],
                k=k,
                show_progress=False,
                n_threads=0,
            )
            for row, query_index in enumerate(answerable):
                keep = scores[row] > 0
                rows[query_index] = (documents[row][keep].astype(np.int64), scores[row][keep].astype(np.float32))
        empty = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))
        for query_index in range(len(query_tokens)):
            indices, scores = rows.get(query_index, empty)
            indices_out.append(indices)
            scores_out.append(scores)
        return ChunkHits(indices_out, scores_out)
