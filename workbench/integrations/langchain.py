"""A workbench ``Retriever`` as a LangChain retriever (``pip install 'workbench[langchain]'``).

    from workbench.integrations.langchain import WorkbenchRetriever

    retriever = WorkbenchRetriever.from_index("index/", k=4)
    documents = retriever.invoke("vitamin D and bone density")   # list of langchain Documents

Each ``Document`` holds the best-matching chunk as ``page_content`` (``content="document"`` puts
the whole document there instead) and ``doc_id``, ``score``, ``rank``, ``title`` and ``chunk_id``
in its metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field

from workbench.retriever import Retriever


class WorkbenchRetriever(BaseRetriever):
    """LangChain's ``BaseRetriever`` over a workbench ``Retriever``; use it through ``invoke``/``batch``."""

    retriever: Any = Field(description="A workbench.Retriever (from Retriever.load or Retriever.from_config).")
    k: int = Field(default=4, ge=1)
    content: Literal["chunk", "document"] = "chunk"
    doc_ids: list[str] | None = None  # keep only these documents

    @classmethod
    def from_index(cls, path: str | Path, **fields: Any) -> WorkbenchRetriever:
        """Loads a saved index (encoding nothing) and wraps it; ``fields`` set ``k``, ``content``, ``doc_ids``."""
        return cls(retriever=Retriever.load(path), **fields)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.retriever.search(query, k=min(self.k, self.retriever.max_k), doc_ids=self.doc_ids)
        return [
            Document(
                page_content=hit.chunk_text if self.content == "chunk" else _full_text(hit.title, hit.text),
                metadata={
                    "doc_id": hit.doc_id,
                    "score": hit.score,
                    "rank": hit.rank,
                    "title": hit.title,
                    "chunk_id": hit.chunk_id,
                },
                id=hit.doc_id,
            )
            for hit in hits
        ]


def _full_text(title: str, text: str) -> str:
    return f"{title}\n\n{text}" if title else text
