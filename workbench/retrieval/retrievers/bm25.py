"""BM25 over chunks: bm25s as the engine, rank-bm25 as the reference backend.

Both backends see the same tokens (bm25s' tokenizer with the configured stemmer and stopwords),
so with ``method = "robertson"`` they rank identically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workbench.errors import SavedIndexError
from workbench.retrieval.config import BM25Config
from workbench.retrieval.components import BuildContext, FirstStageBase
from workbench.retrieval.retrievers import ChunkHits
from workbench.types import Chunk


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


def _engine(config: BM25Config, corpus_tokens: list[list[str]]):
    """Returns the BM25 engine of ``config``'s backend over the token lists."""
    # Empty token lists would make the engine drop the row; a never-matching token keeps rows aligned.
    rows = [tokens or ["\x00"] for tokens in corpus_tokens]
    if config.backend == "bm25s":
        import bm25s

        engine = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
        engine.index(rows, show_progress=False)
        return engine
    from rank_bm25 import BM25Okapi

    # epsilon 0 keeps negative IDFs at zero as bm25s does (rank-bm25 floors them otherwise).
    return BM25Okapi(rows, k1=config.k1, b=config.b, epsilon=0.0)


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    candidates = np.flatnonzero(scores > 0)
    if len(candidates) > k:
        candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
    order = np.lexsort((candidates, -scores[candidates]))
    ranked = candidates[order]
    return ranked, scores[ranked]


class BM25Index(FirstStageBase):
    """A BM25 index over a fixed list of chunk texts; keeps the chunks' tokens, from which an update
    and the rank-bm25 backend rebuild it."""

    config_type = BM25Config
    version = "bm25-tokens-1"  # what the cached tokens were made by

    def __init__(self, texts: Sequence[str], config: BM25Config, corpus_tokens: list[list[str]] | None = None):
        """Indexes ``texts``; pass ``corpus_tokens`` (``tokenize(texts, config)``) to skip tokenising them again."""
        self.config = config
        self.num_chunks = len(texts)
        if corpus_tokens is None:
            corpus_tokens = tokenize(texts, config)
        self.tokens = corpus_tokens
        self._engine = _engine(config, corpus_tokens)

    @classmethod
    def build(cls, config: BM25Config, context: BuildContext) -> BM25Index:
        """Returns the index over ``context``'s chunks. Tokens depend on tokenisation only, not on k1
        or b: they are what the context keeps (in memory and in the disk cache), so the index for
        another k1/b is rebuilt from them in a fraction of a second."""
        texts = context.texts
        key = ("bm25-tokens", config.stemmer, config.stopwords)
        if key not in context.memo:
            parts = {"bm25_stage": cls.version, "stemmer": config.stemmer, "stopwords": config.stopwords}
            context.memo[key] = context.cached("bm25-tokens", parts, lambda: tokenize(texts, config))
        return cls(texts, config, context.memo[key])

    def updated(self, context: BuildContext, kept: Sequence[int | None]) -> BM25Index:
        """Returns the index over ``context``'s chunks, tokenising only the new ones; statistics are
        rebuilt over every chunk, so it ranks as an index built from scratch."""
        texts = context.texts
        fresh = [position for position, old in enumerate(kept) if old is None]
        fresh_tokens = iter(tokenize([texts[p] for p in fresh], self.config) if fresh else [])
        tokens = [self.tokens[old] if old is not None else next(fresh_tokens) for old in kept]
        return type(self)(texts, self.config, tokens)

    def save(self, folder: Path) -> None:
        """Writes ``tokens.jsonl`` (one token list per chunk) and, for bm25s, its own files (``BM25.save``)."""
        if self.config.backend == "bm25s":
            self._engine.save(str(folder), show_progress=False)
        lines = "".join(json.dumps(tokens, ensure_ascii=False) + "\n" for tokens in self.tokens)
        (folder / "tokens.jsonl").write_bytes(lines.encode("utf-8"))

    @classmethod
    def load(cls, config: BM25Config, folder: Path, chunks: Sequence[Chunk]) -> BM25Index:
        """Returns the index ``save`` wrote under ``folder``; tokenises nothing (rank-bm25 is rebuilt
        from the tokens). Raises ``SavedIndexError`` when the files were written with other BM25
        parameters than ``config``'s, or hold another number of chunks."""
        with (folder / "tokens.jsonl").open(encoding="utf-8") as handle:
            tokens = [json.loads(line) for line in handle if line.strip()]
        if len(tokens) != len(chunks):
            raise SavedIndexError(f"{folder / 'tokens.jsonl'}: holds {len(tokens)} chunks, chunks.jsonl {len(chunks)}")
        if config.backend != "bm25s":
            return cls([chunk.text for chunk in chunks], config, tokens)
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
        index.tokens = tokens
        index._engine = engine
        return index

    def search(self, queries: Sequence[str], k: int, query_cache: bool = True) -> ChunkHits:
        """Returns the top ``k`` chunks with a positive score for each query, best first (BM25 keeps
        no per-query work, so ``query_cache`` changes nothing)."""
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
