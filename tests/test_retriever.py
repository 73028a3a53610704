"""Tests of workbench/retriever.py, the public API: what a hit holds, which chunk it shows, batches,
filters and bad requests; and that ``workbench`` exports only its public names."""

from __future__ import annotations

import subprocess
import sys

import pytest
from rankings import assert_same_rankings

import workbench
from workbench.errors import CorpusError, SearchError
from workbench.evaluation import experiment
from workbench.retrieval.config import pipeline_config_from_dict
from workbench.retrieval.corpus import Corpus
from workbench.retriever import MAX_QUERY_CHARS, Retriever

QUERY = "computerized retrieval of technical documents"


def test_the_package_exports_its_public_names_only():
    from workbench import Hit, WorkbenchError  # noqa: F401
    from workbench import Retriever as Exported

    assert Exported is Retriever
    assert workbench.evaluate is experiment.evaluate
    assert sorted(workbench.__all__) == ["Hit", "Retriever", "WorkbenchError", "__version__", "evaluate"]
    with pytest.raises(AttributeError):
        workbench.Pipeline  # noqa: B018
    # Importing the package (as `workbench --help` does) loads neither the retrieval stack nor torch.
    code = (
        "import sys, workbench; print(sorted(m for m in ('torch', 'numpy', 'workbench.retriever') if m in sys.modules))"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )


def test_hits_carry_document_and_best_chunk(adi: Corpus, adi_retriever: Retriever):
    hits = adi_retriever.search(QUERY, k=5)
    assert [hit.rank for hit in hits] == [1, 2, 3, 4, 5]
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    for hit in hits:
        document = adi.documents[hit.doc_id]
        assert (hit.title, hit.text) == (document.title, document.text)
        assert hit.chunk_id.startswith(f"{hit.doc_id}#") and hit.chunk_text in document.full_text


def test_best_chunk_is_the_highest_ranked_chunk_of_the_document_in_any_first_stage(adi_retriever: Retriever):
    # Oracle: rank every chunk in each first stage separately, take each document's best-ranked chunk.
    pipeline = adi_retriever._index.pipeline()
    chunks = pipeline.chunk_set.chunks
    depth = len(chunks)
    best: dict[str, tuple[int, int, str]] = {}
    for order, stage in enumerate(pipeline.first_stages):
        hits = stage.search([QUERY], depth)
        for chunk_rank, position in enumerate(hits.indices[0].tolist()):
            chunk = chunks[position]
            best[chunk.doc_id] = min(best.get(chunk.doc_id, (depth, order, "")), (chunk_rank, order, chunk.chunk_id))
    hits = adi_retriever.search(QUERY, k=adi_retriever.max_k)
    assert {hit.doc_id: hit.chunk_id for hit in hits} == {hit.doc_id: best[hit.doc_id][2] for hit in hits}
    assert any(hit.chunk_id != f"{hit.doc_id}#0" for hit in hits), "some document's best chunk is not its first"


def test_search_many_answers_as_search_one_by_one(adi: Corpus, adi_retriever: Retriever):
    queries = list(adi.judged_queries("test").values())[:6]
    batch = adi_retriever.search_many(queries, k=7)
    one_by_one = [adi_retriever.search(query, k=7) for query in queries]
    # Encoding in a batch pads queries to a common length: vectors agree to float precision, not bit for bit.
    assert_same_rankings(
        [[(h.doc_id, h.score) for h in hits] for hits in batch],
        [[(h.doc_id, h.score) for h in hits] for hits in one_by_one],
    )
    for batch_hits, single_hits in zip(batch, one_by_one, strict=True):
        chunk_of = {h.doc_id: h.chunk_id for h in single_hits}
        assert all(h.chunk_id == chunk_of.get(h.doc_id, h.chunk_id) for h in batch_hits)


def test_doc_id_filter_keeps_the_ranking_of_the_allowed_documents(adi_retriever: Retriever):
    full = adi_retriever.search(QUERY, k=adi_retriever.max_k)
    allowed = {full[1].doc_id, full[4].doc_id, full[9].doc_id, "not-an-id"}
    filtered = adi_retriever.search(QUERY, k=10, doc_ids=allowed)
    assert [(h.doc_id, h.score) for h in filtered] == [(h.doc_id, h.score) for h in full if h.doc_id in allowed]
    assert [h.rank for h in filtered] == [1, 2, 3]


@pytest.mark.parametrize(
    ("query", "k", "message"),
    [
        ("", 5, "non-empty string"),
        ("   ", 5, "non-empty string"),
        ("x" * (MAX_QUERY_CHARS + 1), 5, "at most"),
        (QUERY, 0, "k must be an integer from 1 to 30"),
        (QUERY, 31, "k must be an integer from 1 to 30"),
    ],
)
def test_bad_searches_say_what_to_change(adi_retriever: Retriever, query, k, message):
    with pytest.raises(SearchError, match=message):
        adi_retriever.search(query, k=k)


def test_search_many_wants_a_list(adi_retriever: Retriever):
    with pytest.raises(SearchError, match="list of queries"):
        adi_retriever.search_many(QUERY)


def test_from_config_takes_documents_as_dicts_and_refuses_malformed_ones():
    config = pipeline_config_from_dict({"retrievers": [{"kind": "bm25"}]})
    documents = [{"_id": "a", "title": "Cats", "text": "Cats purr."}, {"id": "b", "text": "Dogs bark loudly."}]
    retriever = Retriever.from_config(config, documents)
    assert [hit.doc_id for hit in retriever.search("dogs barking", k=2)] == ["b"]
    with pytest.raises(CorpusError, match="document 1: needs a string '_id'"):
        Retriever.from_config(config, [{"_id": "a", "text": "x"}, {"text": "no id"}])
    with pytest.raises(CorpusError, match="appears twice"):
        Retriever.from_config(config, [{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}])


def test_info_describes_the_index(adi_retriever: Retriever, adi_index_dir):
    info = Retriever.load(adi_index_dir).info()
    assert info["config"]["name"] == "adi-hybrid"
    assert info["provenance"]["heldout"]["verdict"] == "beats every baseline"
    assert info["manifest"]["models"]["retrievers.dense"]["fingerprint"]
    assert info["documents"] == 82 and info["corpus_fingerprint"] == adi_retriever.info()["corpus_fingerprint"]


def test_default_k_is_ten_or_the_output_depth(adi: Corpus):
    shallow = Retriever.from_config(
        pipeline_config_from_dict({"retrievers": [{"kind": "bm25"}], "output_depth": 4}), adi
    )
    assert len(shallow.search("computer retrieval")) == 4
    deep = Retriever.from_config(pipeline_config_from_dict({"retrievers": [{"kind": "bm25"}]}), adi)
    assert len(deep.search("computer retrieval")) == 10
