"""Cutting documents into chunks. Every chunk keeps its document id.

A chunker is a class with ``chunk(documents) -> chunks`` (the ``Chunker`` protocol), built from
its config as ``cls(config)``; the pipeline and a saved index call only that. ``[chunking] kind``
names it through the component registry (``components.py``), as ``retrievers`` name first stages:
the built-ins ``none`` (whole documents), ``recursive`` (characters) and ``token`` (a model's
tokens, by langchain-text-splitters), a registered name, an entry point or ``module:attribute``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Protocol, runtime_checkable

from workbench.retrieval.components import ComponentBase, component_of
from workbench.retrieval.config import ChunkingConfig
from workbench.retrieval.config_base import ChunkerConfig
from workbench.retrieval.models import load_tokenizer
from workbench.types import Chunk, Document


@runtime_checkable
class Chunker(Protocol):
    """Cuts documents into chunks. Built as ``cls(config)``, ``config`` being a ``config_type``.

    ``config_type`` is its pydantic config (a ``ChunkerConfig``: a ``kind`` and the chunker's own
    settings); ``version`` names the code, bumped when the chunks it cuts change (cached chunk lists
    are addressed by it). ``ChunkerBase`` supplies the optional parts.
    """

    config_type: ClassVar[type[ChunkerConfig]]
    version: ClassVar[str]

    def chunk(self, documents: Iterable[Document]) -> list[Chunk]:
        """Returns the chunks of ``documents`` in document order; chunk ids are ``<doc id>#<n>``.
        A document with no text still yields one (empty) chunk, so that it stays retrievable by id."""
        ...

    @classmethod
    def models(cls, config: Any) -> dict[str, str]:
        """Returns role → model id (or folder) of every model whose weights decide the chunks."""
        ...

    @classmethod
    def load_models(cls, config: Any) -> None:
        """Loads the models ``config`` names now; raises ``ModelError`` for one that cannot load."""
        ...


class ChunkerBase(ComponentBase):
    """Defaults for the optional parts of ``Chunker``: keeps the config, no models. Define
    ``fingerprint(config)`` (classmethod) when the chunks depend on more than the config's settings
    (a model's files); the chunk cache is addressed by it instead of the settings."""

    def __init__(self, config: Any):
        self.config = config


def chunks_of(document: Document, pieces: list[str]) -> list[Chunk]:
    """Returns ``pieces`` as the chunks of ``document`` (ids ``<doc id>#<n>``); one empty chunk for a
    document cut into nothing, so that it stays retrievable by id."""
    return [Chunk(f"{document.doc_id}#{n}", document.doc_id, piece) for n, piece in enumerate(pieces or [""])]


class WholeDocuments(ChunkerBase):
    """``kind = "none"``: one chunk per document, its whole text."""

    config_type = ChunkingConfig

    def chunk(self, documents: Iterable[Document]) -> list[Chunk]:
        return [Chunk(f"{doc.doc_id}#0", doc.doc_id, doc.full_text) for doc in documents]


class TextSplitterChunker(ChunkerBase):
    """Chunks cut by a langchain text splitter (anything with ``split_text``), made by ``splitter()``."""

    config_type = ChunkingConfig

    def splitter(self) -> Any:
        raise NotImplementedError

    def chunk(self, documents: Iterable[Document]) -> list[Chunk]:
        splitter = self.splitter()
        chunks: list[Chunk] = []
        for doc in documents:
            chunks.extend(chunks_of(doc, splitter.split_text(doc.full_text) or [doc.full_text]))
        return chunks


class CharacterChunker(TextSplitterChunker):
    """``kind = "recursive"``: ``chunk_size`` characters, ``chunk_overlap`` shared between neighbours."""

    def splitter(self) -> Any:
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        return RecursiveCharacterTextSplitter(
            chunk_size=self.config.chunk_size, chunk_overlap=self.config.chunk_overlap
        )


class TokenChunker(TextSplitterChunker):
    """``kind = "token"``: ``chunk_size`` tokens of ``tokenizer``'s tokenizer."""

    def splitter(self) -> Any:
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        return RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            load_tokenizer(self.config.tokenizer),
            chunk_size=self.config.chunk_size,
            chunk_overlap=self.config.chunk_overlap,
        )

    @classmethod
    def models(cls, config: Any) -> dict[str, str]:
        return {"tokenizer": config.tokenizer}

    @classmethod
    def load_models(cls, config: Any) -> None:
        load_tokenizer(config.tokenizer)

    @classmethod
    def fingerprint(cls, config: Any) -> dict[str, Any]:
        """The settings, and the tokenizer's fingerprint in place of its name."""
        from workbench.retrieval.models import model_fingerprint

        return config.model_dump(mode="json", exclude={"kind", "tokenizer"}) | {
            "tokenizer": model_fingerprint(config.tokenizer)
        }


def chunker_for(config: ChunkerConfig) -> Chunker:
    """Returns the chunker ``config`` describes (the class its ``kind`` names, built from it)."""
    return component_of(config)(config)


def chunk_documents(documents: Iterable[Document], config: ChunkerConfig) -> list[Chunk]:
    """Returns the chunks of ``documents`` cut as ``config`` says, in document order; chunk ids are
    ``<doc id>#<n>``. A document with no text still yields one (empty) chunk."""
    return chunker_for(config).chunk(documents)
