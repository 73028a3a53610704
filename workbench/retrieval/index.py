"""A saved index: a pipeline config with its chunks and first-stage indexes, in one folder that updates in place.

Layout of an index folder::

    current              the name of the version folder in use; replaced atomically (os.replace)
    v000002/             one complete version, never changed once ``current`` names it
      manifest.json      how it was made: config hash, model fingerprints, corpus fingerprint,
                         package versions, a content hash per document, a sha256 per file
      pipeline.toml      the pipeline config, with the ``[provenance]`` of a study's export
      documents.jsonl    [doc id, title, text] per line, in index order
      chunks.jsonl       [chunk id, doc id, text] per line, in index order
      retrievers/<name>/ what the first stage's ``save`` writes (``components.FirstStage``). BM25:
                         bm25s' own files (``BM25.save``) and tokens.npz (each chunk's token
                         ids and the vocabulary, so an update re-tokenises changed documents
                         only); dense: index.faiss (``faiss.write_index``: flat, HNSW or IVF)

Loading reads files and encodes nothing; it refuses a model whose fingerprint differs from the
manifest's. An update re-chunks only new or changed documents and hands each first stage the
positions of the chunks it keeps (BM25 re-tokenises and dense re-encodes only the others), writes
a new version folder beside the current one and then switches ``current``: a writer that dies
half-way leaves the previous version in use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from workbench.errors import CorpusError, SavedIndexError
from workbench.files import atomic_write_bytes, file_lock, file_sha256
from workbench.progress import ProgressCallback
from workbench.provenance import code_version, package_versions
from workbench.retrieval.cache import Cache
from workbench.retrieval.chunking import chunk_documents
from workbench.retrieval.components import BuildContext, FirstStage, component_identity, component_of
from workbench.retrieval.config import (
    PipelineConfig,
    RetrieverConfig,
    load_pipeline_config,
    read_toml,
    save_pipeline_config,
)
from workbench.retrieval.corpus import Corpus, documents_fingerprint
from workbench.retrieval.models import model_fingerprint
from workbench.retrieval.pipeline import Pipeline, Resources, load_models
from workbench.types import Chunk, Document

FORMAT = "workbench-index-1"
CURRENT = "current"
LOCK = ".lock"
MANIFEST = "manifest.json"
VERSIONS_KEPT = 2  # the current version and the one before: a reader that just read `current` still finds its folder


@dataclass(frozen=True)
class Stage:
    """One first stage of an index: its config and its built index."""

    retriever: RetrieverConfig
    index: FirstStage


@dataclass(frozen=True)
class DocumentIndex:
    """Documents, chunks and first-stage indexes under one pipeline config, ready to search or save.

    ``documents`` and ``chunks`` keep index order: chunks are grouped by document in document order,
    exactly as indexing the documents from scratch would cut them.
    """

    config: PipelineConfig
    documents: dict[str, Document]
    chunks: list[Chunk]
    stages: tuple[Stage, ...]
    provenance: dict[str, Any] = field(default_factory=dict)  # the exported config's [provenance] table
    source: str = ""  # where the documents were read from
    manifest: dict[str, Any] = field(default_factory=dict)  # as loaded; empty for an index not saved yet

    @cached_property
    def fingerprint(self) -> str:
        """The corpus fingerprint of the documents, in index order (computed once)."""
        return documents_fingerprint(self.documents.values())

    def corpus(self) -> Corpus:
        """Returns the documents as a Corpus with no queries or splits."""
        return Corpus(Path(self.source or "."), self.documents, {}, {}, self.fingerprint)

    def pipeline(self) -> Pipeline:
        """Returns a pipeline that searches this index's chunks and first stages (it builds nothing).

        Queries are encoded and re-ranker pairs scored afresh each time (no query cache), so a
        long-running service does not grow its memory with every query it answers.
        """
        resources = Resources(self.corpus())
        resources.adopt(self.config.chunking, self.chunks, {stage.retriever: stage.index for stage in self.stages})
        return Pipeline(self.config, resources, query_cache=False)


@dataclass(frozen=True)
class UpdateSummary:
    """What an update did: document counts by fate, and the chunks it had to chunk and encode afresh."""

    added: int
    changed: int
    removed: int
    unchanged: int
    chunks_indexed: int  # chunks cut, tokenised and encoded by this update
    seconds: float

    def __str__(self) -> str:
        return (
            f"{self.added} added, {self.changed} changed, {self.removed} removed, {self.unchanged} unchanged; "
            f"{self.chunks_indexed} chunks indexed in {self.seconds:.1f} s"
        )


def document_hash(document: Document) -> str:
    """Returns the content hash of a document (title and text): an update re-indexes a document whose hash changed."""
    payload = json.dumps([document.title, document.text], ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()[:32]


def build_index(
    config: PipelineConfig,
    corpus: Corpus,
    cache: Cache | None = None,
    progress: ProgressCallback | None = None,
    provenance: dict[str, Any] | None = None,
) -> DocumentIndex:
    """Chunks, tokenises and encodes ``corpus`` under ``config``; returns the index (in memory).

    With a ``cache``, chunk lists, BM25 tokens and vectors a study already computed are reused.
    Raises ``ModelError`` for a model that cannot load, before any document is encoded.
    """
    _check_documents(corpus.documents.values())
    resources = Resources(corpus, cache, progress)
    load_models(config)
    chunks = resources.chunk_set(config.chunking).chunks
    stages = tuple(Stage(stage, resources.first_stage(config.chunking, stage)) for stage in config.retrievers)
    return DocumentIndex(config, dict(corpus.documents), list(chunks), stages, provenance or {}, str(corpus.path))


def update_index(
    index: DocumentIndex, documents: Sequence[Document], cache: Cache | None = None, source: str | None = None
) -> tuple[DocumentIndex, UpdateSummary]:
    """Returns the index over ``documents`` (the whole new document set, in its order) and what changed.

    Documents whose id and content hash are unchanged keep their chunks, tokens and vectors; new and
    changed ones are chunked, tokenised and encoded; BM25 statistics and the faiss index are rebuilt
    over every chunk, so the result searches exactly as an index built from scratch on ``documents``.
    ``index`` itself is not modified. Raises ``CorpusError`` for an empty set or duplicate ids.
    """
    started = time.perf_counter()
    _check_documents(documents)
    config = index.config
    old_hashes = {doc_id: document_hash(document) for doc_id, document in index.documents.items()}
    kept = {doc.doc_id for doc in documents if old_hashes.get(doc.doc_id) == document_hash(doc)}
    fresh_chunks = chunk_documents([doc for doc in documents if doc.doc_id not in kept], config.chunking)

    old_positions = _positions_by_doc(index.chunks)
    fresh_positions = _positions_by_doc(fresh_chunks)
    # Each chunk of the new index as (from the old index?, position there), in new document order.
    sources: list[tuple[bool, int]] = []
    for doc in documents:
        if doc.doc_id in kept:
            sources.extend((True, position) for position in old_positions[doc.doc_id])
        else:
            sources.extend((False, position) for position in fresh_positions[doc.doc_id])
    chunks = [index.chunks[p] if old else fresh_chunks[p] for old, p in sources]
    kept_positions = [p if old else None for old, p in sources]
    context = BuildContext(chunks, cache)  # no address: new chunks of an update are not a cached chunk list
    stages = tuple(Stage(stage.retriever, stage.index.updated(context, kept_positions)) for stage in index.stages)

    new_ids = {doc.doc_id for doc in documents}
    updated = DocumentIndex(
        config,
        {doc.doc_id: doc for doc in documents},
        chunks,
        stages,
        index.provenance,
        index.source if source is None else source,
        index.manifest,
    )
    summary = UpdateSummary(
        added=len(new_ids - old_hashes.keys()),
        changed=len((new_ids & old_hashes.keys()) - kept),
        removed=len(old_hashes.keys() - new_ids),
        unchanged=len(kept),
        chunks_indexed=len(fresh_chunks),
        seconds=time.perf_counter() - started,
    )
    return updated, summary


def _positions_by_doc(chunks: Sequence[Chunk]) -> dict[str, list[int]]:
    positions: dict[str, list[int]] = {}
    for position, chunk in enumerate(chunks):
        positions.setdefault(chunk.doc_id, []).append(position)
    return positions


def _check_documents(documents: Iterable[Document]) -> None:
    seen: set[str] = set()
    for document in documents:
        if document.doc_id in seen:
            raise CorpusError(f"doc id {document.doc_id!r} appears twice; doc ids must be unique")
        seen.add(document.doc_id)
    if not seen:
        raise CorpusError("an index needs at least one document")


# ---- on disk -----------------------------------------------------------------------------------


def is_index(folder: str | Path) -> bool:
    """True when ``folder`` holds a saved index (a ``current`` pointer file)."""
    return (Path(folder) / CURRENT).is_file()


def _model_references(config: PipelineConfig) -> dict[str, str]:
    """Returns role → model for every model whose weights decide this index's results."""
    models = {
        f"retrievers.{retriever.name}" + ("" if role == "model" else f".{role}"): model
        for retriever in config.retrievers
        for role, model in component_of(retriever).models(retriever).items()
    }
    parts = [("chunking", config.chunking)] + ([("rerank", config.rerank)] if config.rerank.enabled else [])
    for table, part in parts:
        for role, model in component_of(part).models(part).items():
            models[table + ("" if role == "model" else f".{role}")] = model
    return models


def _config_sha256(config: PipelineConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_toml_dict(), sort_keys=True).encode()).hexdigest()


def _jsonl(rows: Iterable[list]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def _read_jsonl(path: Path) -> list[list]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _write_stage(stage: Stage, folder: Path) -> None:
    folder.mkdir(parents=True)
    stage.index.save(folder)


def _write_version(index: DocumentIndex, folder: Path, version: int) -> None:
    """Writes every file of one version under ``folder`` (which must not exist); the manifest goes last."""
    folder.mkdir(parents=True)
    save_pipeline_config(index.config, folder / "pipeline.toml", provenance=index.provenance or None)
    (folder / "documents.jsonl").write_bytes(_jsonl([d.doc_id, d.title, d.text] for d in index.documents.values()))
    (folder / "chunks.jsonl").write_bytes(_jsonl([c.chunk_id, c.doc_id, c.text] for c in index.chunks))
    for stage in index.stages:
        _write_stage(stage, folder / "retrievers" / stage.retriever.name)
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    manifest = {
        "format": FORMAT,
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config_sha256": _config_sha256(index.config),
        "first_stages": {
            stage.retriever.name: {"kind": stage.retriever.kind, "version": component_of(stage.retriever).version}
            for stage in index.stages
        },
        # What cut the chunks and re-ranks: class, version, fingerprint (a user's own chunker or re-ranker too).
        "chunker": component_identity(index.config.chunking),
        "reranker": component_identity(index.config.rerank) if index.config.rerank.enabled else None,
        "models": {
            role: {"model": model, "fingerprint": model_fingerprint(model)}
            for role, model in _model_references(index.config).items()
        },
        "corpus": {
            "source": index.source,
            "fingerprint": index.fingerprint,
            "documents": len(index.documents),
            "chunks": len(index.chunks),
        },
        "code_version": code_version(),
        "packages": package_versions(),
        "document_hashes": {doc_id: document_hash(doc) for doc_id, doc in index.documents.items()},
        "files": {path.relative_to(folder).as_posix(): file_sha256(path) for path in files},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    for path in [*files, folder / MANIFEST]:  # on disk before `current` may name the folder
        with path.open("rb") as handle:
            os.fsync(handle.fileno())


def _version_folders(folder: Path) -> list[Path]:
    return sorted(path for path in folder.glob("v[0-9]*") if path.is_dir() and path.name[1:].isdigit())


def save_index(index: DocumentIndex, folder: str | Path) -> Path:
    """Writes ``index`` as the new current version of the index folder ``folder``; returns the version folder.

    The version is written in full beside the current one, then ``current`` is replaced in one
    rename; if writing fails, the folder keeps its previous version. Older versions beyond the
    last ``VERSIONS_KEPT`` are removed. Raises ``SavedIndexError`` when ``folder`` is neither an
    index nor empty (nothing is overwritten).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SavedIndexError(f"{folder}: exists and is not a folder")
    if folder.is_dir() and not is_index(folder) and any(p.name != LOCK for p in folder.iterdir()):
        raise SavedIndexError(f"{folder}: not empty and not a workbench index; choose a new or empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / LOCK):
        versions = _version_folders(folder)
        number = int(versions[-1].name[1:]) + 1 if versions else 1
        name = f"v{number:06d}"
        staging = folder / f".{name}.partial-{os.getpid()}"
        try:
            _write_version(index, staging, number)
            staging.rename(folder / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        atomic_write_bytes(folder / CURRENT, f"{name}\n".encode())
        _prune(folder, keep=name)
    return folder / name


def _prune(folder: Path, keep: str) -> None:
    """Removes versions older than the last ``VERSIONS_KEPT`` and folders of writers that died half-way."""
    for stale in folder.glob(".v*.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    versions = [path for path in _version_folders(folder) if path.name <= keep]
    for old in versions[:-VERSIONS_KEPT]:
        shutil.rmtree(old, ignore_errors=True)


def current_version(folder: str | Path) -> Path:
    """Returns the version folder that ``current`` names; raises ``SavedIndexError`` when there is none."""
    folder = Path(folder)
    pointer = folder / CURRENT
    if not pointer.is_file():
        raise SavedIndexError(
            f"{folder}: not a workbench index (no '{CURRENT}' file); build one with `workbench index CONFIG DOCS --out {folder}`"
        )
    name = pointer.read_text().strip()
    version = folder / name
    # `current` holds one folder name written by save_index; anything else (a path, "..", a link
    # out of the folder) would load and serve files the index folder does not hold.
    if name in ("", ".", "..") or Path(name).name != name or not version.resolve().is_relative_to(folder.resolve()):
        raise SavedIndexError(
            f"{pointer}: names {name!r}, which is not a version folder inside {folder}; the index is damaged"
        )
    if not (version / MANIFEST).is_file():
        raise SavedIndexError(f"{pointer}: names {version.name}, which has no {MANIFEST}; the index is damaged")
    return version


def load_index(folder: str | Path) -> DocumentIndex:
    """Reads the current version of a saved index; encodes and tokenises nothing (rank-bm25 is rebuilt from tokens).

    Raises ``SavedIndexError`` when the folder is not an index, a file is missing or does not match
    its checksum, or a model's fingerprint differs from the one the index was built with.
    """
    version = current_version(folder)
    try:
        manifest = json.loads((version / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SavedIndexError(f"{version / MANIFEST}: unreadable ({error})") from None
    if not isinstance(manifest, dict):
        raise SavedIndexError(f"{version / MANIFEST}: not a JSON object; the index is damaged, rebuild it")
    if manifest.get("format") != FORMAT:
        raise SavedIndexError(f"{version / MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    _check_manifest_keys(version / MANIFEST, manifest)
    _verify_files(version, manifest["files"])
    config = load_pipeline_config(version / "pipeline.toml")
    _verify_models(version, manifest["models"])
    documents = {
        doc_id: Document(doc_id, title, text) for doc_id, title, text in _read_jsonl(version / "documents.jsonl")
    }
    chunks = [Chunk(chunk_id, doc_id, text) for chunk_id, doc_id, text in _read_jsonl(version / "chunks.jsonl")]
    stages = tuple(
        _read_stage(retriever, version / "retrievers" / retriever.name, chunks) for retriever in config.retrievers
    )
    provenance = read_toml(version / "pipeline.toml").get("provenance", {})
    return DocumentIndex(config, documents, chunks, stages, provenance, manifest["corpus"]["source"], manifest)


def _check_manifest_keys(path: Path, manifest: dict[str, Any]) -> None:
    """Raises ``SavedIndexError`` when a manifest that parses lacks a table the loader reads."""
    for key, kind in (("files", dict), ("models", dict), ("corpus", dict)):
        if not isinstance(manifest.get(key), kind):
            raise SavedIndexError(f"{path}: no '{key}' table; the index is damaged, rebuild it with `workbench index`")
    if not isinstance(manifest["corpus"].get("source"), str):
        raise SavedIndexError(f"{path}: no 'corpus.source'; the index is damaged, rebuild it with `workbench index`")


def _verify_files(version: Path, checksums: dict[str, str]) -> None:
    for relative, expected in checksums.items():
        path = version / relative
        if not path.is_file():
            raise SavedIndexError(f"{path}: missing; the index is damaged, rebuild it")
        if file_sha256(path) != expected:
            raise SavedIndexError(
                f"{path}: does not match its checksum in {MANIFEST}; the index is damaged, rebuild it"
            )


def _verify_models(version: Path, models: dict[str, dict[str, str]]) -> None:
    for role, recorded in models.items():
        found = model_fingerprint(recorded["model"])
        if found != recorded["fingerprint"]:
            raise SavedIndexError(
                f"{version / MANIFEST}: {role} model '{recorded['model']}' has fingerprint {found}, but the index "
                f"was built with {recorded['fingerprint']}; its vectors or scores would not match. Restore that "
                f"model, or rebuild the index with `workbench index`"
            )


def _read_stage(retriever: RetrieverConfig, folder: Path, chunks: list[Chunk]) -> Stage:
    index = component_of(retriever).load(retriever, folder, chunks)
    if index.num_chunks != len(chunks):
        raise SavedIndexError(f"{folder}: holds {index.num_chunks} chunks, chunks.jsonl {len(chunks)}")
    return Stage(retriever, index)
