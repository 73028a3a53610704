"""Tests of workbench/retrieval/index.py on ADI with BM25 and real MiniLM: a saved index searches as the
in-memory pipeline does, loads without encoding, refuses a changed model, updates to what a rebuild
gives, and survives a writer that fails half-way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rankings import assert_same_rankings

from workbench.errors import CorpusError, SavedIndexError
from workbench.retrieval import index as index_module
from workbench.retrieval.config import DEFAULT_MODEL, pipeline_config_from_dict
from workbench.retrieval.corpus import Corpus
from workbench.retrieval.fusion import ranked
from workbench.retrieval.index import (
    CURRENT,
    build_index,
    current_version,
    document_hash,
    load_index,
    save_index,
    update_index,
)
from workbench.retrieval.models import load_encoder, resolve_model
from workbench.retrieval.pipeline import Pipeline, Resources
from workbench.retrieval.retrievers import bm25 as bm25_module
from workbench.retrieval.retrievers.dense import DenseIndex
from workbench.retriever import Retriever
from workbench.types import Document


def rankings(retriever: Retriever, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
    return [[(hit.doc_id, hit.score) for hit in hits] for hits in retriever.search_many(queries, k)]


@pytest.fixture(scope="module")
def adi_queries(adi: Corpus) -> list[str]:
    return list(adi.judged_queries("test").values())


@pytest.fixture
def index_copy(adi_index_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the saved ADI index that a test may update."""
    return Path(shutil.copytree(adi_index_dir, tmp_path / "index"))


def test_saved_index_searches_as_the_in_memory_pipeline(adi, adi_index_dir, adi_queries, adi_retriever, session_cache):
    loaded = Retriever.load(adi_index_dir)
    k = loaded.max_k
    # The oracle: the pipeline the studies use, built over the same corpus and config.
    pipeline = Pipeline(loaded.config, Resources(adi, session_cache), query_cache=False)
    run = pipeline.search({str(i): query for i, query in enumerate(adi_queries)}).run
    expected = [ranked(run[str(i)])[:k] for i in range(len(adi_queries))]
    assert_same_rankings(rankings(loaded, adi_queries, k), expected)
    assert_same_rankings(rankings(adi_retriever, adi_queries, k), expected)
    assert len(loaded) == len(adi.documents) and loaded.info()["chunks"] > len(adi.documents)


def test_index_folder_holds_each_library_own_format(adi_index_dir: Path):
    import bm25s
    import faiss

    version = current_version(adi_index_dir)
    manifest = json.loads((version / "manifest.json").read_text())
    chunks = manifest["corpus"]["chunks"]
    assert bm25s.BM25.load(str(version / "retrievers" / "bm25")).scores["num_docs"] == chunks
    assert faiss.read_index(str(version / "retrievers" / "dense" / "index.faiss")).ntotal == chunks
    assert manifest["models"]["retrievers.dense"]["model"] == DEFAULT_MODEL
    assert len(manifest["models"]["retrievers.dense"]["fingerprint"]) == 16
    assert {"bm25s", "faiss-cpu", "sentence-transformers"} <= manifest["packages"].keys()
    assert len(manifest["document_hashes"]) == manifest["corpus"]["documents"] == 82
    assert "pipeline.toml" in manifest["files"] and "chunks.jsonl" in manifest["files"]


def test_loading_encodes_and_tokenises_nothing(adi_index_dir: Path, monkeypatch):
    model = load_encoder(DEFAULT_MODEL)
    encoded: list[int] = []
    real_encode = model.encode
    monkeypatch.setattr(model, "encode", lambda texts, **kw: encoded.append(len(texts)) or real_encode(texts, **kw))
    tokenised: list[int] = []  # texts cut as a corpus is
    for name in ("tokenize", "tokenize_corpus"):
        real = getattr(bm25_module, name)
        monkeypatch.setattr(bm25_module, name, lambda texts, config, real=real: tokenised.append(len(texts)) or real(texts, config))
    cut_queries: list[str] = []
    real_tokenizer = bm25_module.query_tokenizer
    monkeypatch.setattr(
        bm25_module, "query_tokenizer", lambda *names: lambda text: cut_queries.append(text) or real_tokenizer(*names)(text)
    )

    loaded = Retriever.load(adi_index_dir)
    assert encoded == [] and tokenised == [], "loading reads vectors and BM25 statistics from files"
    loaded.search("computer programs for information retrieval", k=5)
    assert encoded == [1] and tokenised == [], "a search encodes and tokenises its query only"
    assert cut_queries == ["computer programs for information retrieval"]


def test_a_changed_model_is_refused(adi: Corpus, tmp_path: Path):
    model_copy = Path(shutil.copytree(resolve_model(DEFAULT_MODEL), tmp_path / "minilm"))
    config = pipeline_config_from_dict({"retrievers": [{"kind": "dense", "model": str(model_copy)}]})
    few = Corpus(adi.path, dict(list(adi.documents.items())[:8]), {}, {}, "")
    save_index(build_index(config, few), tmp_path / "index")
    assert len(load_index(tmp_path / "index").documents) == 8

    modules = model_copy / "modules.json"
    modules.write_text(json.dumps(json.loads(modules.read_text()), indent=4) + "\n")  # any byte of the model changes
    with pytest.raises(
        SavedIndexError, match=r"retrievers\.dense model .* has fingerprint .* but the index was built with"
    ):
        load_index(tmp_path / "index")


def test_a_damaged_file_is_refused(index_copy: Path):
    faiss_file = current_version(index_copy) / "retrievers" / "dense" / "index.faiss"
    faiss_file.write_bytes(faiss_file.read_bytes()[:-8])
    with pytest.raises(SavedIndexError, match="does not match its checksum"):
        Retriever.load(index_copy)


def test_a_folder_that_is_not_an_index(tmp_path: Path, adi_retriever):
    with pytest.raises(SavedIndexError, match="not a workbench index"):
        Retriever.load(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SavedIndexError, match="not empty and not a workbench index"):
        adi_retriever.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def edited_documents(adi: Corpus) -> tuple[list[Document], list[Document]]:
    """ADI's first 70 documents, and a new set: 5 removed, 3 changed, 12 added, in a new order."""
    documents = list(adi.documents.values())
    before = documents[:70]
    changed = {
        doc.doc_id: Document(doc.doc_id, doc.title, doc.text + " retrieval of satellite images")
        for doc in before[10:13]
    }
    after = [changed.get(doc.doc_id, doc) for doc in before if doc.doc_id not in {d.doc_id for d in before[20:25]}]
    return before, after + documents[70:]


def test_update_searches_as_a_rebuild(adi: Corpus, adi_queries, adi_index_config_path, session_cache, tmp_path):
    before, after = edited_documents(adi)
    retriever = Retriever.from_config(adi_index_config_path, before, cache_dir=session_cache.root)
    retriever.save(tmp_path / "index")
    old_chunks = len(retriever._index.chunks)

    updated = Retriever.load(tmp_path / "index")
    summary = updated.replace_all(after)  # no cache: changed and new documents are encoded here
    assert (summary.added, summary.changed, summary.removed, summary.unchanged) == (12, 3, 5, 62)
    assert 0 < summary.chunks_indexed < old_chunks / 2, "unchanged documents are not chunked or encoded again"
    updated.save(tmp_path / "index")

    # From scratch (the cache only saves re-encoding; the update encoded its documents without it).
    rebuilt = Retriever.from_config(adi_index_config_path, after, cache_dir=session_cache.root)
    reloaded = Retriever.load(tmp_path / "index")
    k = rebuilt.max_k
    expected = rankings(rebuilt, adi_queries, k)
    assert_same_rankings(rankings(updated, adi_queries, k), expected)
    assert_same_rankings(rankings(reloaded, adi_queries, k), expected)
    assert reloaded._index.chunks == rebuilt._index.chunks
    assert reloaded._index.fingerprint == rebuilt._index.fingerprint


def test_add_and_remove_equal_a_rebuild_of_the_result(
    adi: Corpus, index_copy: Path, adi_index_config_path, session_cache
):
    retriever = Retriever.load(index_copy)
    documents = list(adi.documents.values())
    new = {"_id": "new-1", "title": "Cat videos", "text": "Indexing cat videos for retrieval by their captions."}
    replaced = {"_id": documents[3].doc_id, "title": "Replaced", "text": "Automatic abstracting of cat videos."}
    summary = retriever.add([new, replaced])
    assert (summary.added, summary.changed, summary.unchanged) == (1, 1, 81)
    retriever.remove([documents[0].doc_id])
    assert documents[0].doc_id not in retriever and "new-1" in retriever

    # What the index should now hold: replaced in place, removed dropped, new appended.
    replacement = Document(replaced["_id"], replaced["title"], replaced["text"])
    expected = [replacement if d.doc_id == replacement.doc_id else d for d in documents[1:]]
    expected.append(Document("new-1", new["title"], new["text"]))
    rebuilt = Retriever.from_config(adi_index_config_path, expected, cache_dir=session_cache.root)
    queries = ["cat videos", "automatic abstracting", "computer indexing of documents"]
    assert_same_rankings(rankings(retriever, queries, 20), rankings(rebuilt, queries, 20))
    assert retriever.search("cat videos captions", k=1)[0].doc_id == "new-1"
    with pytest.raises(CorpusError, match="not in the index: 'nowhere'"):
        retriever.remove(["nowhere"])


def test_an_update_that_fails_half_way_leaves_the_previous_index(index_copy: Path, adi_queries, monkeypatch):
    adi_queries = adi_queries[:5]
    before = rankings(Retriever.load(index_copy), adi_queries, 10)
    old_version = current_version(index_copy)
    retriever = Retriever.load(index_copy)
    retriever.add([{"_id": "late", "text": "information retrieval about late documents"}])

    def disk_full(self, path):  # BM25 and the documents are written by now; the FAISS file fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DenseIndex, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        retriever.save(index_copy)
    monkeypatch.undo()

    assert current_version(index_copy) == old_version
    assert [p.name for p in index_copy.iterdir() if p.name.startswith(".v")] == [], "no half-written version left"
    reloaded = Retriever.load(index_copy)
    assert "late" not in reloaded
    assert rankings(reloaded, adi_queries, 10) == before


def test_a_writer_killed_half_way_leaves_the_previous_index(index_copy: Path, adi_queries):
    adi_queries = adi_queries[:5]
    before = rankings(Retriever.load(index_copy), adi_queries, 10)
    # What a SIGKILLed writer leaves: a partial version folder that `current` never named.
    partial = index_copy / ".v000099.partial-4242"
    shutil.copytree(current_version(index_copy), partial)
    (partial / "manifest.json").unlink()
    (partial / "chunks.jsonl").write_text("[truncated")

    reloaded = Retriever.load(index_copy)
    assert rankings(reloaded, adi_queries, 10) == before
    version = reloaded.save(index_copy)  # the next writer clears the leftovers
    assert not partial.exists() and (index_copy / CURRENT).read_text().strip() == version.name


def test_versions_switch_and_old_ones_are_pruned(index_copy: Path):
    retriever = Retriever.load(index_copy)
    names = [retriever.save(index_copy).name for _ in range(3)]
    assert names == sorted(names) and len(set(names)) == 3
    assert sorted(p.name for p in index_copy.glob("v*")) == names[-2:]


def test_rank_bm25_backend_round_trips_through_tokens(adi: Corpus, tmp_path: Path):
    config = pipeline_config_from_dict(
        {"retrievers": [{"kind": "bm25", "backend": "rank_bm25", "method": "robertson"}]}
    )
    built = build_index(config, adi)
    save_index(built, tmp_path / "index")
    loaded, queries = Retriever.load(tmp_path / "index"), ["computer retrieval", "abstracts of papers"]
    assert rankings(loaded, queries, 10) == rankings(Retriever(built), queries, 10)


def test_document_hash_follows_content_not_id():
    assert document_hash(Document("a", "t", "x")) == document_hash(Document("b", "t", "x"))
    assert document_hash(Document("a", "t", "x")) != document_hash(Document("a", "t", "y"))
    assert document_hash(Document("a", "tx", "")) != document_hash(Document("a", "t", "x"))


def test_update_refuses_duplicates_and_emptiness(adi: Corpus):
    config = pipeline_config_from_dict({"retrievers": [{"kind": "bm25"}]})
    built = build_index(config, adi)
    doc = next(iter(adi.documents.values()))
    with pytest.raises(CorpusError, match="appears twice"):
        update_index(built, [doc, doc])
    with pytest.raises(CorpusError, match="at least one document"):
        update_index(built, [])
    assert np.array_equal(
        np.array([c.chunk_id for c in update_index(built, list(adi.documents.values()))[0].chunks]),
        np.array([c.chunk_id for c in built.chunks]),
    )


def test_index_module_names_every_file_it_writes(index_copy: Path):
    version = current_version(index_copy)
    listed = set(json.loads((version / "manifest.json").read_text())["files"])
    on_disk = {p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file()} - {"manifest.json"}
    assert listed == on_disk
    assert index_module.FORMAT in (version / "manifest.json").read_text()


def test_a_reranker_is_saved_as_its_reference_and_checked_by_fingerprint(
    adi: Corpus, tmp_path: Path, cross_encoder_path
):
    config = pipeline_config_from_dict(
        {"retrievers": [{"kind": "bm25"}], "rerank": {"model": cross_encoder_path, "depth": 5}, "output_depth": 10}
    )
    built = Retriever(build_index(config, adi))
    built.save(tmp_path / "index")
    manifest = json.loads((current_version(tmp_path / "index") / "manifest.json").read_text())
    assert manifest["models"]["rerank"]["model"] == cross_encoder_path
    queries = ["computer retrieval of abstracts", "automatic indexing"]
    assert_same_rankings(rankings(Retriever.load(tmp_path / "index"), queries, 10), rankings(built, queries, 10))


@pytest.mark.parametrize("pointer", ["../elsewhere/v1", "{outside}", "v1/../../elsewhere/v1", "..", "."])
def test_a_current_pointer_outside_the_index_folder_is_refused(adi: Corpus, tmp_path: Path, pointer: str):
    # A complete index outside the folder: `current` must not be able to name it.
    config = pipeline_config_from_dict({"retrievers": [{"kind": "bm25"}]})
    save_index(build_index(config, adi), tmp_path / "elsewhere-index")
    outside = current_version(tmp_path / "elsewhere-index")
    shutil.copytree(outside, tmp_path / "elsewhere" / "v1")
    index = tmp_path / "index"
    index.mkdir()
    (index / CURRENT).write_text(pointer.format(outside=outside) + "\n")
    with pytest.raises(SavedIndexError, match="not a version folder inside"):
        Retriever.load(index)


def test_a_version_folder_that_is_a_symlink_out_of_the_index_is_refused(adi: Corpus, tmp_path: Path):
    config = pipeline_config_from_dict({"retrievers": [{"kind": "bm25"}]})
    save_index(build_index(config, adi), tmp_path / "elsewhere-index")
    index = tmp_path / "index"
    index.mkdir()
    (index / "v000009").symlink_to(current_version(tmp_path / "elsewhere-index"), target_is_directory=True)
    (index / CURRENT).write_text("v000009\n")
    with pytest.raises(SavedIndexError, match="not a version folder inside"):
        Retriever.load(index)
