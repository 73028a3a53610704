"""Cutting documents into chunks with langchain-text-splitters. Every chunk keeps its document id."""

from __future__ import annotations

from collections.abc import Iterable

from workbench.retrieval.config import ChunkingConfig
from workbench.retrieval.models import load_tokenizer
from workbench.types import Chunk, Document


def _splitter(config: ChunkingConfig):
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    if config.kind == "recursive":
        return RecursiveCharacterTextSplitter(chunk_size=config.chunk_size, chunk_overlap=config.chunk_overlap)
    return RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        load_tokenizer(config.tokenizer), chunk_size=config.chunk_size, chunk_overlap=config.chunk_overlap
    )


def chunk_documents(documents: Iterable[Document], config: ChunkingConfig) -> list[Chunk]:
    """Returns the chunks of ``documents`` in document order; chunk ids are ``<doc id>#<n>``.

    A document with no text still yields one (empty) chunk so that it stays retrievable by id.
    """
    if config.kind == "none":
        return [Chunk(f"{doc.doc_id}#0", doc.doc_id, doc.full_text) for doc in documents]
    splitter = _splitter(config)
    chunks: list[Chunk] = []
    for doc in documents:
        pieces = splitter.split_text(doc.full_text) or [doc.full_text]
        chunks.extend(Chunk(f"{doc.doc_id}#{n}", doc.doc_id, piece) for n, piece in enumerate(pieces))
    return chunks
