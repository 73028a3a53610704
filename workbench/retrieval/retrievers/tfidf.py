"""TF-IDF over chunks: cosine similarity of l2-normalised tf-idf vectors, in scipy sparse matrices.

A first stage shipped through the same door as a user's own (the ``workbench.components`` entry
point ``tfidf``). It weighs terms as scikit-learn's ``TfidfVectorizer`` does (smooth idf,
optionally sublinear tf), which a test holds it to. Everything per-corpus (vocabulary, idf, the
chunk-term matrix) is computed at build time; a query touches only the postings of its terms.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from workbench.errors import SavedIndexError
from workbench.retrieval.components import BuildContext, FirstStageBase
from workbench.retrieval.config_base import FirstStageConfig
from workbench.retrieval.retrievers import ChunkHits
from workbench.types import Chunk

TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern


class TfidfConfig(FirstStageConfig):
    """Lexical first stage without stemming: tf-idf vectors of word n-grams, ranked by cosine."""

    kind: Literal["tfidf"] = "tfidf"
    name: str = Field(default="tfidf", pattern=r"^[A-Za-z0-9_.-]+$")
    ngram_max: int = Field(default=1, ge=1, le=3)  # word n-grams of length 1..ngram_max
    min_df: int = Field(default=1, ge=1)  # a term in fewer chunks is left out of the vocabulary
    sublinear_tf: bool = False  # 1 + log(tf) instead of tf


def terms(text: str, ngram_max: int) -> list[str]:
    """Returns the word n-grams of ``text`` (lower-cased, words of two or more characters)."""
    words = TOKEN.findall(text.lower())
    return [" ".join(words[i : i + n]) for n in range(1, ngram_max + 1) for i in range(len(words) - n + 1)]


class TfidfIndex(FirstStageBase):
    """A tf-idf matrix (chunks × vocabulary, rows of unit length) over a fixed list of chunk texts."""

    config_type = TfidfConfig
    version = "tfidf-1"

    def __init__(self, config: TfidfConfig, vocabulary: list[str], idf: np.ndarray, matrix):
        self.config = config
        self.vocabulary = vocabulary
        self._columns = {term: column for column, term in enumerate(vocabulary)}
        self.idf = idf
        self.matrix = matrix  # scipy.sparse CSR, float32

    @property
    def num_chunks(self) -> int:
        return self.matrix.shape[0]

    @classmethod
    def build(cls, config: TfidfConfig, context: BuildContext) -> TfidfIndex:
        """Returns the index over ``context``'s chunks: vocabulary, smooth idf and the normalised matrix."""
        import scipy.sparse as sparse

        chunk_terms = [terms(text, config.ngram_max) for text in context.texts]
        document_frequency: dict[str, int] = {}
        for row in chunk_terms:
            for term in set(row):
                document_frequency[term] = document_frequency.get(term, 0) + 1
        vocabulary = sorted(term for term, count in document_frequency.items() if count >= config.min_df)
        frequencies = np.array([document_frequency[term] for term in vocabulary], dtype=np.float64)
        idf = np.log((1 + len(chunk_terms)) / (1 + frequencies)) + 1
        index = cls(config, vocabulary, idf, sparse.csr_matrix((0, len(vocabulary)), dtype=np.float32))
        index.matrix = index._weigh(chunk_terms)
        return index

    def _weigh(self, rows: list[list[str]]):
        """Returns the l2-normalised tf-idf rows of term lists (terms outside the vocabulary dropped)."""
        import scipy.sparse as sparse

        indptr, columns, counts = [0], [], []
        for row in rows:
            row_counts: dict[int, int] = {}
            for term in row:
                if (column := self._columns.get(term)) is not None:
                    row_counts[column] = row_counts.get(column, 0) + 1
            columns.extend(row_counts)
            counts.extend(row_counts.values())
            indptr.append(len(columns))
        tf = np.asarray(counts, dtype=np.float64)
        if self.config.sublinear_tf:
            tf = 1 + np.log(tf)
        weights = tf * self.idf[np.asarray(columns, dtype=np.int64)]
        matrix = sparse.csr_matrix((weights, columns, indptr), shape=(len(rows), len(self.vocabulary)))
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sparse.csr_matrix(sparse.diags(1 / norms) @ matrix, dtype=np.float32)

    def search(self, queries: Sequence[str], k: int, query_cache: bool = True) -> ChunkHits:
        """Returns the top ``k`` chunks with a positive cosine for each query, best first (ties by position)."""
        query_matrix = self._weigh([terms(query, self.config.ngram_max) for query in queries])
        scores = (self.matrix @ query_matrix.T).tocsc()  # chunks × queries, only chunks sharing a term
        indices_out, scores_out = [], []
        for column in range(len(queries)):
            start, end = scores.indptr[column], scores.indptr[column + 1]
            rows, values = scores.indices[start:end], scores.data[start:end]
            keep = values > 0
            rows, values = rows[keep], values[keep]
            order = np.lexsort((rows, -values))[:k]
            indices_out.append(rows[order].astype(np.int64))
            scores_out.append(values[order].astype(np.float32))
        return ChunkHits(indices_out, scores_out)

    def save(self, folder: Path) -> None:
        """Writes ``vocabulary.json`` (terms in column order), ``idf.npy`` and ``matrix.npz`` (scipy's format)."""
        import scipy.sparse as sparse

        (folder / "vocabulary.json").write_text(json.dumps(self.vocabulary, ensure_ascii=False), encoding="utf-8")
        np.save(folder / "idf.npy", self.idf, allow_pickle=False)
        sparse.save_npz(folder / "matrix.npz", self.matrix)

    @classmethod
    def load(cls, config: TfidfConfig, folder: Path, chunks: Sequence[Chunk]) -> TfidfIndex:
        """Returns the index ``save`` wrote under ``folder``; raises ``SavedIndexError`` when its
        shapes do not fit each other or ``chunks``."""
        import scipy.sparse as sparse

        vocabulary = json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
        idf = np.load(folder / "idf.npy", allow_pickle=False)
        matrix = sparse.load_npz(folder / "matrix.npz").tocsr()
        if matrix.shape != (len(chunks), len(vocabulary)) or idf.shape != (len(vocabulary),):
            raise SavedIndexError(
                f"{folder}: a {matrix.shape[0]}×{matrix.shape[1]} matrix, {len(vocabulary)} terms and "
                f"{idf.shape[0]} idf values for {len(chunks)} chunks; the index is damaged, rebuild it"
            )
        return cls(config, vocabulary, idf, matrix)
