"""Tests of workbench/chunking.py: whole documents, character chunks with overlap, token chunks."""

from __future__ import annotations

import pytest

from workbench.retrieval.chunking import chunk_documents
from workbench.retrieval.config import DEFAULT_MODEL, ChunkingConfig
from workbench.retrieval.corpus import Corpus
from workbench.retrieval.models import load_tokenizer
from workbench.types import Document

DOCS = [
    Document("a", "Title A", "Body of document a."),
    Document("b", "", "Only a body."),
    Document("empty", "", ""),
]


def spans(text: str, pieces: list[str]) -> list[tuple[int, int]]:
    """Returns (start, end) of each piece in ``text``, each found after the previous one started."""
    found, position = [], 0
    for piece in pieces:
        start = text.find(piece, position)
        assert start >= 0, f"chunk {piece!r} is not a substring of its document"
        found.append((start, start + len(piece)))
        position = start + 1
    return found


def test_none_gives_one_chunk_per_document_with_its_full_text():
    chunks = chunk_documents(DOCS, ChunkingConfig(kind="none"))
    assert [(c.chunk_id, c.doc_id, c.text) for c in chunks] == [
        ("a#0", "a", "Title A Body of document a."),
        ("b#0", "b", "Only a body."),
        ("empty#0", "empty", ""),
    ]


@pytest.mark.parametrize(("size", "overlap"), [(200, 0), (120, 40), (64, 16)])
def test_recursive_respects_size_and_overlap(adi: Corpus, size: int, overlap: int):
    config = ChunkingConfig(kind="recursive", chunk_size=size, chunk_overlap=overlap)
    chunks = chunk_documents(adi.documents.values(), config)
    by_doc: dict[str, list[str]] = {}
    for chunk in chunks:
        assert chunk.doc_id in adi.documents
        assert chunk.chunk_id == f"{chunk.doc_id}#{len(by_doc.get(chunk.doc_id, []))}"
        assert 0 < len(chunk.text) <= size
        by_doc.setdefault(chunk.doc_id, []).append(chunk.text)
    assert list(by_doc) == list(adi.documents), "every document, in corpus order"
    overlaps = []
    for doc_id, pieces in by_doc.items():
        text = adi.documents[doc_id].full_text
        located = spans(text, pieces)
        covered = set()
        for (start, end), (next_start, _) in zip(located, located[1:]):
            overlaps.append(max(0, end - next_start))
        for start, end in located:
            covered.update(range(start, end))
        # nothing but whitespace is lost between chunks
        assert all(text[i].isspace() for i in range(len(text)) if i not in covered)
    assert max(overlaps) <= overlap
    if overlap:
        assert max(overlaps) > 0, "an overlap was asked for, so some neighbours must share text"
    assert len(chunks) > len(adi.documents), "ADI abstracts are longer than one chunk"


def test_recursive_keeps_an_empty_document_retrievable():
    chunks = chunk_documents(DOCS, ChunkingConfig(kind="recursive", chunk_size=16, chunk_overlap=0))
    assert [c.chunk_id for c in chunks if c.doc_id == "empty"] == ["empty#0"]
    assert {c.doc_id for c in chunks} == {"a", "b", "empty"}


def test_token_chunks_fit_the_model_tokenizer(adi: Corpus):
    config = ChunkingConfig(kind="token", chunk_size=32, chunk_overlap=8)
    chunks = chunk_documents(adi.documents.values(), config)
    tokenizer = load_tokenizer(DEFAULT_MODEL)
    lengths = [len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) for chunk in chunks]
    assert max(lengths) <= 32
    assert {c.doc_id for c in chunks} == set(adi.documents)
    # measured in tokens, not characters: 32 tokens hold far more than 32 characters
    assert max(len(chunk.text) for chunk in chunks) > 32
    longest_doc = max(adi.documents.values(), key=lambda d: len(tokenizer(d.full_text)["input_ids"]))
    assert sum(1 for c in chunks if c.doc_id == longest_doc.doc_id) > 1


@pytest.mark.parametrize("kind", ["none", "recursive", "token"])
def test_every_chunking_kind_is_a_chunker_the_pipeline_calls_alike(kind):
    from workbench.retrieval.chunking import Chunker, chunker_for

    config = ChunkingConfig(kind=kind, chunk_size=16)
    chunker = chunker_for(config)

    assert isinstance(chunker, Chunker)
    assert chunker.chunk(DOCS) == chunk_documents(DOCS, config)
