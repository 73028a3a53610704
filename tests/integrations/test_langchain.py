"""Tests of workbench/integrations/langchain.py through langchain-core's own Runnable interface."""

from __future__ import annotations

from pathlib import Path

from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from workbench.integrations.langchain import WorkbenchRetriever
from workbench.retriever import Retriever

QUERY = "information retrieval by computer"


def test_invoke_returns_documents_with_doc_id_and_score(adi_index_dir: Path):
    retriever = WorkbenchRetriever.from_index(adi_index_dir, k=3)
    assert isinstance(retriever, BaseRetriever)
    documents = retriever.invoke(QUERY)
    expected = Retriever.load(adi_index_dir).search(QUERY, k=3)
    assert all(isinstance(document, Document) for document in documents)
    assert [d.metadata["doc_id"] for d in documents] == [hit.doc_id for hit in expected]
    assert [d.metadata["score"] for d in documents] == [hit.score for hit in expected]
    assert [d.metadata["rank"] for d in documents] == [1, 2, 3]
    assert [d.page_content for d in documents] == [hit.chunk_text for hit in expected]
    assert [d.id for d in documents] == [hit.doc_id for hit in expected]


def test_batch_content_choice_and_filter(adi_retriever: Retriever):
    whole = WorkbenchRetriever(retriever=adi_retriever, k=2, content="document")
    first, second = whole.batch([QUERY, "automatic abstracting"])
    assert len(first) == len(second) == 2
    hit = adi_retriever.search(QUERY, k=1)[0]
    assert first[0].page_content == f"{hit.title}\n\n{hit.text}" if hit.title else hit.text
    allowed = [hit.doc_id for hit in adi_retriever.search(QUERY, k=10)[5:7]]
    filtered = WorkbenchRetriever(retriever=adi_retriever, k=5, doc_ids=allowed).invoke(QUERY)
    assert [d.metadata["doc_id"] for d in filtered] == allowed


def test_k_beyond_the_index_depth_returns_what_the_pipeline_ranks(adi_retriever: Retriever):
    documents = WorkbenchRetriever(retriever=adi_retriever, k=500).invoke(QUERY)
    assert len(documents) == adi_retriever.max_k
