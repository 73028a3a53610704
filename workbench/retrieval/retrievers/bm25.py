"""BM25 over chunks: bm25s as the engine, rank-bm25 as the reference backend.

Both backends see the same tokens (bm25s' tokenizer with the configured stemmer and stopwords),
so with ``method = "robertson"`` they rank identically.
"""

from __future__ import annotations

import array
import functools
import io
import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import SavedIndexError
from workbench.retrieval.config import BM25Config
from workbench.retrieval.components import BuildContext, FirstStageBase
from workbench.retrieval.retrievers import ChunkHits
from workbench.types import Chunk


def _stemmer(language: str):
    if language == "none":
        return None
    import Stemmer

    return Stemmer.Stemmer(language).stemWords


def tokenize(texts: Sequence[str], config: BM25Config) -> list[list[str]]:
    """Returns the token lists BM25 indexes for ``texts`` under ``config``'s tokenisation."""
    import bm25s

    stopwords = config.stopwords if config.stopwords != "none" else None
    return bm25s.tokenize(
        list(texts), stopwords=stopwords, stemmer=_stemmer(config.stemmer), return_ids=False, show_progress=False
    )


TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")  # bm25s.tokenize's default


@functools.cache
def _tokenizer_parts(stemmer: str, stopwords: str) -> tuple[Callable[[str], list[str]], frozenset[str], Callable | None]:
    """Returns what ``tokenize`` cuts with: the word splitter, the stopword set and the stemmer (None: no stemming)."""
    import bm25s.tokenization

    stop = frozenset(bm25s.tokenization.Tokenizer(stopwords=stopwords if stopwords != "none" else None).stopwords)
    return TOKEN_PATTERN.findall, stop, _stemmer(stemmer)


@functools.cache
def query_tokenizer(stemmer: str, stopwords: str) -> Callable[[str], list[str]]:
    """Returns a function that cuts one text exactly as ``tokenize`` does, without bm25s' per-call
    set-up (progress bars, a fresh stopword set, a vocabulary): what a single query needs."""
    split, stop, stem = _tokenizer_parts(stemmer, stopwords)

    def cut(text: str) -> list[str]:
        words = [word for word in split(text.lower()) if word not in stop]
        return stem(words) if stem is not None and words else words

    return cut


# Stands in for the tokens of a chunk that has none: the engines would otherwise drop its row.
NO_TOKEN = "\x00"


@dataclass(frozen=True, eq=False)
class CorpusTokens:
    """The BM25 tokens of every chunk, kept as arrays: token ids into one vocabulary, flat, with
    row offsets. A million chunks cost four bytes a token instead of a Python list per chunk."""

    vocab: list[str]  # token id → token
    ids: np.ndarray  # int32, every chunk's token ids one after another
    offsets: np.ndarray  # int64, len = chunks + 1: chunk i's ids are ids[offsets[i]:offsets[i + 1]]

    @classmethod
    def from_id_rows(cls, rows: Sequence[Sequence[int]], vocab: dict[str, int]) -> CorpusTokens:
        """Returns the tokens of id rows over ``vocab`` (token → id, ids 0..n-1)."""
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(offsets[-1]))
        tokens = [""] * len(vocab)
        for token, token_id in vocab.items():
            tokens[token_id] = token
        return cls(tokens, ids, offsets)

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[str]]) -> CorpusTokens:
        """Returns the tokens of token-string rows."""
        vocab: dict[str, int] = {}
        return cls.from_id_rows([[vocab.setdefault(token, len(vocab)) for token in row] for row in rows], vocab)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def id_rows(self) -> list[list[int]]:
        """Returns one list of token ids per chunk (what the engines index; made when needed, not kept)."""
        flat, bounds = self.ids.tolist(), self.offsets.tolist()
        return [flat[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]

    def rows(self) -> list[list[str]]:
        """Returns one list of token strings per chunk."""
        vocab = self.vocab
        return [[vocab[token_id] for token_id in row] for row in self.id_rows()]

    def rearranged(self, kept: Sequence[int | None], fresh: CorpusTokens) -> CorpusTokens:
        """Returns the tokens of a new chunk list: row i is this object's row ``kept[i]``, or, where
        that is None, the next row of ``fresh`` (tokens of the new chunks, in order). Works on the id
        arrays alone; the vocabulary keeps only tokens some row still uses (this object's first, in
        their order, then ``fresh``'s new ones)."""
        index = {token: token_id for token_id, token in enumerate(self.vocab)}
        extra = [token for token in fresh.vocab if token not in index]
        merged = self.vocab + extra
        index.update((token, len(self.vocab) + n) for n, token in enumerate(extra))
        fresh_ids = np.fromiter((index[token] for token in fresh.vocab), dtype=np.int32, count=len(fresh.vocab))
        ids = np.concatenate([self.ids, fresh_ids[fresh.ids]]) if len(fresh.ids) else self.ids
        offsets = np.concatenate([self.offsets[:-1], fresh.offsets + len(self.ids)])

        old_rows = np.fromiter((-1 if row is None else row for row in kept), dtype=np.int64, count=len(kept))
        new = old_rows < 0
        if int(new.sum()) != len(fresh):
            raise ValueError(f"{int(new.sum())} new rows asked for, {len(fresh)} given")
        sources = old_rows.copy()
        sources[new] = len(self) + np.arange(len(fresh))
        starts, lengths = offsets[sources], offsets[sources + 1] - offsets[sources]
        new_offsets = np.zeros(len(kept) + 1, dtype=np.int64)
        np.cumsum(lengths, out=new_offsets[1:])
        positions = np.arange(int(new_offsets[-1]), dtype=np.int64) + np.repeat(starts - new_offsets[:-1], lengths)
        gathered = ids[positions]

        used = np.bincount(gathered, minlength=len(merged)) > 0
        renumber = (np.cumsum(used) - 1).astype(np.int32)
        vocab = [token for token, kept_token in zip(merged, used.tolist()) if kept_token]
        return CorpusTokens(vocab, renumber[gathered], new_offsets)

    def to_bytes(self) -> bytes:
        """Returns the tokens as one ``.npz`` file's bytes (no pickles)."""
        buffer = io.BytesIO()
        vocab = np.frombuffer(json.dumps(self.vocab, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
        np.savez(buffer, ids=self.ids, offsets=self.offsets, vocab=vocab)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CorpusTokens:
        """Returns the tokens ``to_bytes`` wrote; raises ``ValueError`` (or ``KeyError``) for other bytes."""
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            vocab = json.loads(arrays["vocab"].tobytes().decode("utf-8"))
            ids, offsets = arrays["ids"].astype(np.int32, copy=False), arrays["offsets"].astype(np.int64, copy=False)
        return cls(vocab, ids, offsets)


class _IdRows(list):
    """Every chunk's token ids as bm25s iterates them, one short list at a time: the rows are never
    all held as Python ints at once (bm25s wants a list, hence the base class; it stays empty)."""

    def __init__(self, tokens: CorpusTokens, no_token: int | None):
        super().__init__()
        self.tokens, self.no_token = tokens, no_token

    def __len__(self) -> int:
        return len(self.tokens)

    def __iter__(self):
        ids, bounds = self.tokens.ids, self.tokens.offsets.tolist()
        for start, stop in zip(bounds[:-1], bounds[1:]):
            yield ids[start:stop].tolist() if stop > start else [self.no_token]


def tokenize_corpus(texts: Sequence[str], config: BM25Config) -> CorpusTokens:
    """Returns the tokens of ``texts`` as ``tokenize`` cuts them, as ids into one vocabulary.

    One pass: each text's words go into one flat int32 array as it is read (a million texts never
    exist as lists of Python ints), and each distinct word is stemmed once at the end."""
    split, stop, stem = _tokenizer_parts(config.stemmer, config.stopwords)
    word_ids: dict[str, int] = {}
    flat, lengths = array.array("i"), array.array("q")
    for text in texts:
        row = [word_ids.setdefault(word, len(word_ids)) for word in split(text.lower()) if word not in stop]
        flat.extend(row)
        lengths.append(len(row))
    words = list(word_ids)
    stems = stem(words) if stem is not None and words else words
    vocab: dict[str, int] = {}
    stem_ids = np.fromiter((vocab.setdefault(word, len(vocab)) for word in stems), dtype=np.int32, count=len(stems))
    ids = stem_ids[np.frombuffer(flat, dtype=np.int32)] if len(flat) else np.empty(0, dtype=np.int32)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    if lengths:
        np.cumsum(np.frombuffer(lengths, dtype=np.int64), out=offsets[1:])
    return CorpusTokens(list(vocab), ids, offsets)


def _engine(config: BM25Config, tokens: CorpusTokens):
    """Returns the BM25 engine of ``config``'s backend over the tokens."""
    if config.backend == "bm25s":
        import bm25s

        vocab = {token: token_id for token_id, token in enumerate(tokens.vocab)}
        no_token = vocab.setdefault(NO_TOKEN, len(vocab)) if np.any(np.diff(tokens.offsets) == 0) else None
        engine = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
        engine.index((_IdRows(tokens, no_token), vocab), show_progress=False)
        return engine
    from rank_bm25 import BM25Okapi

    # epsilon 0 keeps negative IDFs at zero as bm25s does (rank-bm25 floors them otherwise).
    return BM25Okapi([row or [NO_TOKEN] for row in tokens.rows()], k1=config.k1, b=config.b, epsilon=0.0)


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    candidates = np.flatnonzero(scores > 0)
    if len(candidates) > k:
        candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
    order = np.lexsort((candidates, -scores[candidates]))
    ranked = candidates[order]
    return ranked, scores[ranked]


TOKENS_FILE = "tokens.npz"


def _read_tokens(folder: Path) -> CorpusTokens:
    if (folder / TOKENS_FILE).is_file():
        try:
            return CorpusTokens.from_bytes((folder / TOKENS_FILE).read_bytes())
        except (ValueError, KeyError, OSError) as error:
            raise SavedIndexError(f"{folder / TOKENS_FILE}: unreadable ({error}); rebuild the index") from None
    with (folder / "tokens.jsonl").open(encoding="utf-8") as handle:
        return CorpusTokens.from_rows([json.loads(line) for line in handle if line.strip()])


class BM25Index(FirstStageBase):
    """A BM25 index over a fixed list of chunk texts; keeps the chunks' tokens, from which an update
    and the rank-bm25 backend rebuild it."""

    config_type = BM25Config
    version = "bm25-tokens-2"  # what the cached tokens were made by

    def __init__(self, texts: Sequence[str], config: BM25Config, corpus_tokens: CorpusTokens | None = None):
        """Indexes ``texts``; pass ``corpus_tokens`` (``tokenize_corpus(texts, config)``) to skip tokenising again."""
        self.config = config
        self.num_chunks = len(texts)
        self.tokens = corpus_tokens if corpus_tokens is not None else tokenize_corpus(texts, config)
        self._engine = _engine(config, self.tokens)

    @classmethod
    def build(cls, config: BM25Config, context: BuildContext) -> BM25Index:
        """Returns the index over ``context``'s chunks. Tokens depend on tokenisation only, not on k1
        or b: they are what the context keeps (in memory and in the disk cache), so the index for
        another k1/b is rebuilt from them without tokenising again."""
        texts = context.texts
        key = ("bm25-tokens", config.stemmer, config.stopwords)
        if key not in context.memo:
            parts = {"bm25_stage": cls.version, "stemmer": config.stemmer, "stopwords": config.stopwords}
            payload = context.cached_bytes("bm25-tokens", parts, lambda: tokenize_corpus(texts, config).to_bytes())
            context.memo[key] = CorpusTokens.from_bytes(payload)
        return cls(texts, config, context.memo[key])

    def updated(self, context: BuildContext, kept: Sequence[int | None]) -> BM25Index:
        """Returns the index over ``context``'s chunks, tokenising only the new ones; statistics are
        rebuilt over every chunk, so it ranks as an index built from scratch."""
        texts = context.texts
        fresh = tokenize_corpus([text for text, old in zip(texts, kept) if old is None], self.config)
        return type(self)(texts, self.config, self.tokens.rearranged(kept, fresh))

    def save(self, folder: Path) -> None:
        """Writes ``tokens.npz`` (every chunk's token ids and the vocabulary) and, for bm25s, its own
        files (``BM25.save``)."""
        if self.config.backend == "bm25s":
            self._engine.save(str(folder), show_progress=False)
        (folder / TOKENS_FILE).write_bytes(self.tokens.to_bytes())

    @classmethod
    def load(cls, config: BM25Config, folder: Path, chunks: Sequence[Chunk]) -> BM25Index:
        """Returns the index ``save`` wrote under ``folder``; tokenises nothing (rank-bm25 is rebuilt
        from the tokens; an index saved before ``tokens.npz`` has ``tokens.jsonl``). Raises
        ``SavedIndexError`` when the files were written with other BM25 parameters than ``config``'s,
        or hold another number of chunks."""
        tokens = _read_tokens(folder)
        if len(tokens) != len(chunks):
            raise SavedIndexError(f"{folder}: tokens of {len(tokens)} chunks, chunks.jsonl {len(chunks)}")
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
        """Returns the top ``k`` chunks with a positive score for each query, best first, ties by
        chunk position (BM25 keeps no per-query work, so ``query_cache`` changes nothing)."""
        k = min(k, self.num_chunks)
        cut = query_tokenizer(self.config.stemmer, self.config.stopwords)
        query_tokens = [cut(query) for query in queries]
        if self.config.backend == "bm25s":
            return self._search_bm25s(query_tokens, k)
        # rank-bm25 scores carry an extra (k1 + 1) factor that bm25s leaves out; divide it away.
        scale = self.config.k1 + 1
        hits = [_top_k(np.asarray(self._engine.get_scores(tokens)) / scale, k) for tokens in query_tokens]
        return ChunkHits([indices for indices, _ in hits], [scores for _, scores in hits])

    def _search_bm25s(self, query_tokens: list[list[str]], k: int) -> ChunkHits:
        # bm25s' scoring one query at a time: its ``retrieve`` adds a batch's set-up to every call.
        known = self._engine.vocab_dict
        empty = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))
        hits = []
        for tokens in query_tokens:
            ids = [known[token] for token in tokens if token in known]
            hits.append(_top_k(self._engine.get_scores_from_ids(ids), k) if ids else empty)
        return ChunkHits([indices for indices, _ in hits], [scores for _, scores in hits])
