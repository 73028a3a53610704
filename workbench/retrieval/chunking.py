"""Cutting documents into chunks. Every chunk keeps its document id.

A chunker is anything with ``chunk(documents) -> chunks`` (the ``Chunker`` protocol); the pipeline
and a saved index call only that. ``CHUNKERS`` maps a ``[chunking] kind`` to the chunker that
cuts that way: whole documents, or langchain-text-splitters by characters or by tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from workbench.retrieval.config import ChunkingConfig
from workbench.retrieval.models import load_tokenizer
from workbench.types import Chunk, Document


@runtime_checkable
class Chunker(Protocol):
    """Cuts documents into chunks."""

    def chunk(self, documents: Iterable[Document]) -> list[Chunk]:
        """Returns the chunks of ``documents`` in document order; chunk ids are ``<doc id>#<n>``.
        A document with no text still yields one (empty) chunk, so that it stays retrievable by id."""
        ...


class WholeDocuments:
    """One chunk per document: its whole text."""

    def chunk(self, documents: Iterable[Document]) -> list[Chunk]:
        return [Chunk(f"{doc.doc_id}#0", doc.doc_id, doc.full_text) for doc in documents]


class TextSplitterChunker:
    """Chunks cut by a langchain text splitter (anything with ``split_text``)."""

    def __init__(self, splitter):
        self.splitter = splitter

    def chunk(self, documents: Iterable[Document]) -> list[Chunk]:
        chunks: list[Chunk] = []
        for doc in documents:
            pieces = self.splitter.split_text(doc.full_text) or [doc.full_text]
            chunks.extend(Chunk(f"{doc.doc_id}#{n}", doc.doc_id, piece) for n, piece in enumerate(pieces))
        return chunks


def _characters(config: ChunkingConfig) -> Chunker:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return TextSplitterChunker(
        RecursiveCharacterTextSplitter(chunk_size=config.chunk_size, chunk_overlap=config.chunk_overlap)
    )


def _tokens(config: ChunkingConfig) -> Chunker:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return TextSplitterChunker(
        RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            load_tokenizer(config.tokenizer), chunk_size=config.chunk_size, chunk_overlap=config.chunk_overlap
        )
    )


# ``[chunking] kind`` → the chunker that cuts that way.
CHUNKERS: dict[str, Callable[[ChunkingConfig], Chunker]] = {
    "none": lambda config: WholeDocuments(),
    "recursive": _characters,
    "token": _tokens,
}


def chunker_for(config: ChunkingConfig) -> Chunker:
    """Returns the chunker of ``config.kind``."""
    return CHUNKERS[config.kind](config)


def chunk_documents(documents: Iterable[Document], config: ChunkingConfig) -> list[Chunk]:
    """Returns the chunks of ``documents`` cut as ``config`` says, in document order; chunk ids are
    ``<doc id>#<n>``. A document with no text still yields one (empty) chunk."""
    return chunker_for(config).chunk(documents)
