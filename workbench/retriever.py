"""The tuned retriever as a library: build it from an exported config, or load a saved index; search; update.

    from workbench import Retriever

    retriever = Retriever.from_config("best.toml", documents="docs/")   # chunks and encodes the documents
    retriever.save("index/")                                              # or: workbench index best.toml docs/ --out index/
    retriever = Retriever.load("index/")                                  # reads files, encodes nothing
    for hit in retriever.search("vitamin D and bone density", k=5):
        print(hit.rank, hit.score, hit.doc_id, hit.title, hit.chunk_text[:80])

A hit's ``chunk_text`` is the best-matching chunk: the chunk that gave the document its first-stage
score (its highest-scoring chunk). With several first stages, it is the chunk ranked highest by its
own stage; a tie goes to the stage listed first in the config. With ``chunking.kind = "none"`` the
chunk is the whole document (title and text).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from workbench.errors import CorpusError, SearchError
from workbench.progress import ProgressCallback
from workbench.retrieval.cache import Cache
from workbench.retrieval.config import PipelineConfig, load_pipeline_config, read_toml
from workbench.retrieval.corpus import Corpus, documents_fingerprint, load_documents
from workbench.retrieval.index import (
    MANIFEST,
    DocumentIndex,
    UpdateSummary,
    build_index,
    load_index,
    save_index,
    update_index,
)
from workbench.retrieval.pipeline import SearchResult
from workbench.types import Document, Run

DEFAULT_K = 10
MAX_QUERY_CHARS = 10_000  # a query longer than this is a pasted document, not a question


@dataclass(frozen=True)
class Hit:
    """One retrieved document: ``rank`` starts at 1; ``score`` is the pipeline's final score (higher is better)."""

    rank: int
    doc_id: str
    score: float
    title: str
    text: str
    chunk_id: str  # the best-matching chunk (see the module docstring)
    chunk_text: str

    def to_dict(self) -> dict[str, Any]:
        """Returns the hit as plain JSON-ready data."""
        return {
            "rank": self.rank,
            "doc_id": self.doc_id,
            "score": self.score,
            "title": self.title,
            "text": self.text,
            "chunk_id": self.chunk_id,
            "chunk_text": self.chunk_text,
        }


@dataclass(frozen=True)
class Query:
    """One search request: its text, how many hits, and optionally the only doc ids it may return."""

    text: str
    k: int = 10
    doc_ids: frozenset[str] | None = None


DocumentsLike = str | Path | Corpus | Iterable[Document | Mapping[str, Any]]


def as_documents(documents: Iterable[Document | Mapping[str, Any]]) -> list[Document]:
    """Returns ``Document``s from documents or mappings with ``_id`` (or ``id``/``doc_id``), optional ``title``, ``text``.

    Raises ``CorpusError`` for a mapping without an id or text.
    """
    result = []
    for position, item in enumerate(documents):
        if isinstance(item, Document):
            result.append(item)
            continue
        doc_id = next((item[key] for key in ("_id", "id", "doc_id") if key in item), None)
        text, title = item.get("text"), item.get("title") or ""
        if not isinstance(doc_id, str) or not doc_id or not isinstance(text, str) or not isinstance(title, str):
            raise CorpusError(f"document {position}: needs a string '_id' (or 'id') and a string 'text'")
        result.append(Document(doc_id, title, text))
    return result


def _as_corpus(documents: DocumentsLike) -> Corpus:
    if isinstance(documents, Corpus):
        return documents
    if isinstance(documents, (str, Path)):
        return load_documents(documents)
    listed = as_documents(documents)
    counts = Counter(doc.doc_id for doc in listed)
    duplicate = next((doc_id for doc_id, count in counts.items() if count > 1), None)
    if duplicate is not None:
        raise CorpusError(f"doc id {duplicate!r} appears twice; doc ids must be unique")
    return Corpus(Path("<memory>"), {doc.doc_id: doc for doc in listed}, {}, {}, documents_fingerprint(listed))


def _cache(cache_dir: str | Path | None, ray: str | None) -> Cache | None:
    """Returns the cache at ``cache_dir`` (none without one), encoding on the Ray cluster ``ray`` when named."""
    if cache_dir is None:
        return None
    from workbench.retrieval.cluster import RayCluster

    return Cache(cache_dir, RayCluster(ray) if ray else None)

class Retriever:
    """A tuned pipeline over a document set: search it, update it, save it as an index folder.

    Thread-safe: searches and updates may come from several threads; they run one at a time.
    """

    def __init__(self, index: DocumentIndex):
        self._lock = threading.RLock()
        self._use(index)

    def _use(self, index: DocumentIndex) -> None:
        pipeline = index.pipeline()
        with self._lock:
            self._index, self._pipeline = index, pipeline

    @classmethod
    def from_config(
        cls,
        config: str | Path | PipelineConfig,
        documents: DocumentsLike,
        cache_dir: str | Path | None = None,
        progress: ProgressCallback | None = None,
        ray: str | None = None,
    ) -> Retriever:
        """Builds the retriever a config describes (e.g. ``best.toml`` from ``workbench export``) over ``documents``.

        ``documents`` is a folder or ``corpus.jsonl`` (see ``load_documents``), a Corpus, or an
        iterable of ``Document``s or dicts (``_id``, ``title``, ``text``). With ``cache_dir`` (a
        state folder's ``cache/``, a shared folder or a URL such as ``s3://bucket/prefix``), chunks,
        tokens and vectors computed before are reused; with ``ray`` (``"auto"`` or an address) a Ray
        cluster encodes the chunks into that cache. Raises ``ConfigError``, ``CorpusError`` or ``ModelError``.
        """
        provenance: dict[str, Any] = {}
        if isinstance(config, (str, Path)):
            provenance = read_toml(config).get("provenance", {})
            config = load_pipeline_config(config)
        cache = _cache(cache_dir, ray)
        return cls(build_index(config, _as_corpus(documents), cache, progress, provenance))

    @classmethod
    def load(cls, path: str | Path) -> Retriever:
        """Loads a saved index folder; encodes nothing. Raises ``SavedIndexError`` (e.g. a model that changed)."""
        return cls(load_index(path))

    @property
    def config(self) -> PipelineConfig:
        return self._index.config

    @property
    def max_k(self) -> int:
        """The most hits a search returns: the config's ``output_depth``."""
        return self._index.config.output_depth

    def __len__(self) -> int:
        """The number of indexed documents."""
        return len(self._index.documents)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._index.documents

    def document(self, doc_id: str) -> Document:
        """Returns an indexed document; raises ``KeyError`` for an unknown id."""
        return self._index.documents[doc_id]

    def info(self) -> dict[str, Any]:
        """Returns what this retriever is: config, provenance (incl. a study's held-out verdict), manifest, sizes."""
        index = self._index
        manifest = {key: value for key, value in index.manifest.items() if key not in ("document_hashes", "files")}
        return {
            "config": index.config.to_toml_dict(),
            "provenance": index.provenance,
            "manifest": manifest,
            "documents": len(index.documents),
            "chunks": len(index.chunks),
            "corpus_fingerprint": index.fingerprint,
        }

    def search(self, query: str, k: int | None = None, doc_ids: Iterable[str] | None = None) -> list[Hit]:
        """Returns the best ``k`` documents for ``query``, best first (``k``: 10 by default, or ``max_k`` if smaller).

        ``doc_ids`` keeps only those documents (among the pipeline's ranking of ``output_depth``
        documents; ids not in the index match nothing). Raises ``SearchError`` for an empty or
        overlong query or a ``k`` outside 1..``max_k``.
        """
        return self.search_many([query], k, doc_ids)[0]

    def search_many(
        self, queries: Sequence[str], k: int | None = None, doc_ids: Iterable[str] | None = None
    ) -> list[list[Hit]]:
        """Returns one list of hits per query, in the order given (see ``search``); queries run as one batch."""
        if isinstance(queries, str):
            raise SearchError("search_many takes a list of queries; use search for one")
        allowed = frozenset(doc_ids) if doc_ids is not None else None
        k = min(DEFAULT_K, self.max_k) if k is None else k
        return self.search_queries([Query(text, k, allowed) for text in queries])

    def search_queries(self, queries: Sequence[Query]) -> list[list[Hit]]:
        """Returns one list of hits per ``Query`` (each with its own ``k`` and filter), run as one batch."""
        for query in queries:
            self.check(query)
        if not queries:
            return []
        batch = {str(position): query.text for position, query in enumerate(queries)}
        with self._lock:
            index, pipeline = self._index, self._pipeline
            result = pipeline.search(batch)
        return [self._hits(index, pipeline, result, row, query.k, query.doc_ids) for row, query in enumerate(queries)]

    def run(self, queries: Mapping[str, str]) -> Run:
        """Returns the document run of a batch {query id: text}: query id → doc id → final score,
        ``output_depth`` documents deep, as ``workbench.evaluate`` scores it. Queries are not checked
        as ``search`` checks them: an empty query matches nothing."""
        with self._lock:
            pipeline = self._pipeline
            return pipeline.search(queries).run

    def check(self, query: Query) -> None:
        """Raises ``SearchError`` when ``query`` cannot be answered: empty or overlong text, ``k`` outside 1..``max_k``."""
        k = query.k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.max_k:
            raise SearchError(f"k must be an integer from 1 to {self.max_k} (the config's output_depth), got {k!r}")
        if not isinstance(query.text, str) or not query.text.strip():
            raise SearchError(f"a query must be a non-empty string, got {query.text!r}")
        if len(query.text) > MAX_QUERY_CHARS:
            raise SearchError(f"a query may have at most {MAX_QUERY_CHARS} characters, got {len(query.text)}")

    @staticmethod
    def _hits(index: DocumentIndex, pipeline, result: SearchResult, row: int, k: int, allowed) -> list[Hit]:
        ranking = result.run[str(row)].items()  # in ranked order
        if allowed is not None:
            ranking = ((doc_id, score) for doc_id, score in ranking if doc_id in allowed)
        ranking = list(itertools.islice(ranking, k))
        chunk_set = pipeline.chunk_set
        best: dict[str, tuple[int, int, int]] = {}  # doc id → (chunk rank in its stage, stage order, chunk position)
        wanted = {doc_id for doc_id, _ in ranking}
        doc_ids = chunk_set.doc_ids
        for stage_order, hits in enumerate(result.chunk_hits.values()):
            positions = hits.indices[row]
            codes = chunk_set.doc_codes[positions].tolist()
            for chunk_rank, (position, code) in enumerate(zip(positions.tolist(), codes)):
                doc_id = doc_ids[code]
                if doc_id in wanted and (doc_id not in best or (chunk_rank, stage_order) < best[doc_id][:2]):
                    best[doc_id] = (chunk_rank, stage_order, position)
        output = []
        for rank, (doc_id, score) in enumerate(ranking, start=1):
            document = index.documents[doc_id]
            chunk = chunk_set.chunks[best[doc_id][2]]
            output.append(Hit(rank, doc_id, float(score), document.title, document.text, chunk.chunk_id, chunk.text))
        return output

    def add(
        self, documents: Iterable[Document | Mapping[str, Any]], cache_dir: str | Path | None = None
    ) -> UpdateSummary:
        """Adds documents, replacing those whose id is already indexed (in place); new ones go last.

        Only new and changed documents are chunked and encoded. Returns what changed; raises
        ``CorpusError`` for malformed documents or an id given twice.
        """
        incoming = as_documents(documents)
        with self._lock:
            merged = dict(self._index.documents)
            replacements = {doc.doc_id: doc for doc in incoming}
            if len(replacements) != len(incoming):
                raise CorpusError("add: a doc id appears twice among the documents given")
            merged.update(replacements)
            return self._update(list(merged.values()), cache_dir)

    def remove(self, doc_ids: Iterable[str]) -> UpdateSummary:
        """Removes documents by id; raises ``CorpusError`` naming ids that are not indexed."""
        doomed = set(doc_ids)
        with self._lock:
            unknown = sorted(doomed - self._index.documents.keys())
            if unknown:
                raise CorpusError(f"remove: not in the index: {', '.join(map(repr, unknown[:5]))}")
            return self._update([doc for doc in self._index.documents.values() if doc.doc_id not in doomed], None)

    def replace_all(
        self, documents: DocumentsLike, cache_dir: str | Path | None = None, ray: str | None = None
    ) -> UpdateSummary:
        """Makes the index hold exactly ``documents`` (in their order), re-indexing only new or changed ones
        (encoded by the Ray cluster ``ray`` when one is named)."""
        corpus = _as_corpus(documents)
        with self._lock:
            summary = self._update(list(corpus.documents.values()), cache_dir, source=str(corpus.path), ray=ray)
        return summary

    def _update(
        self, documents: list[Document], cache_dir, source: str | None = None, ray: str | None = None
    ) -> UpdateSummary:
        cache = _cache(cache_dir, ray)
        updated, summary = update_index(self._index, documents, cache, source)
        self._use(updated)
        return summary

    def save(self, path: str | Path) -> Path:
        """Writes the retriever as a new version of the index folder ``path`` (created if needed);
        returns the version folder. The previous version stays in use until the new one is complete.

        Raises ``SavedIndexError`` for a folder that is neither empty nor an index.
        """
        with self._lock:
            index = self._index
            version = save_index(index, path)
            saved = replace(index, manifest=json.loads((version / MANIFEST).read_text(encoding="utf-8")))
            if self._index is index:
                self._index = saved
        return version
