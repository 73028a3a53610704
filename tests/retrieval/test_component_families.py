"""Re-rankers and chunkers of one's own, found by the same registry as first stages: a chunker and a
re-ranker defined in this file are named by ``module:attribute`` in ``[chunking]`` and ``[rerank]``,
validated at load, tuned in a study, exported, indexed, searched from the saved index and served; two
different components never share cached chunks or scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import Field

from workbench.errors import ConfigError
from workbench.retrieval import components
from workbench.retrieval.cache import Cache, content_address
from workbench.retrieval.chunking import ChunkerBase, Chunker, chunk_documents, chunks_of
from workbench.retrieval.components import CHUNKER, RERANKER, component, component_identity, known_kinds, register
from workbench.retrieval.config import (
    ChunkingConfig,
    RerankConfig,
    load_pipeline_config,
    pipeline_config_from_dict,
    save_pipeline_config,
)
from workbench.retrieval.config_base import ChunkerConfig, RerankerConfig
from workbench.retrieval.corpus import Corpus
from workbench.retrieval.pipeline import Resources
from workbench.retrieval.rerank import CrossEncoderReranker, Reranker, RerankerBase, reranker_for
from workbench.retriever import Retriever
from workbench.types import Document

HERE = Path(__file__).resolve().parent
WINDOWS = f"{__name__}:WordWindows"
TERM_COUNT = f"{__name__}:QueryTermCount"
QUERY = "computer programs for indexing documents"


# --- a chunker and a re-ranker of one's own ------------------------------------------------------


class WordWindowsConfig(ChunkerConfig):
    kind: str = WINDOWS
    words: int = Field(default=30, ge=1)


class WordWindows(ChunkerBase):
    """Consecutive windows of ``words`` words."""

    config_type = WordWindowsConfig

    def chunk(self, documents):
        chunks = []
        for document in documents:
            words = document.full_text.split()
            size = self.config.words
            chunks.extend(chunks_of(document, [" ".join(words[i : i + size]) for i in range(0, len(words), size)]))
        return chunks


class ShoutedWordWindows(WordWindows):
    """The same settings as ``WordWindows``, other chunks: upper-cased."""

    def chunk(self, documents):
        return [type(chunk)(chunk.chunk_id, chunk.doc_id, chunk.text.upper()) for chunk in super().chunk(documents)]


class QueryTermCountConfig(RerankerConfig):
    kind: str = TERM_COUNT
    min_length: int = Field(default=3, ge=1)


def query_term_count(query: str, text: str, min_length: int) -> int:
    """How often the document uses the query's words of at least ``min_length`` characters."""
    wanted = {word for word in query.lower().split() if len(word) >= min_length}
    return sum(word in wanted for word in text.lower().split())


class QueryTermCount(RerankerBase):
    config_type = QueryTermCountConfig

    def score(self, pairs):
        return [query_term_count(query, text, self.config.min_length) for query, text in pairs]


class NegatedQueryTermCount(QueryTermCount):
    """The same settings as ``QueryTermCount``, other scores; it names its own fingerprint."""

    @classmethod
    def fingerprint(cls, config):
        return f"negated-{config.min_length}"

    def score(self, pairs):
        return [-score for score in super().score(pairs)]


# --- the registry and configs ------------------------------------------------------------------------


def test_built_in_chunkers_and_the_cross_encoder_come_through_the_registry():
    assert known_kinds(CHUNKER)[:3] == ["none", "recursive", "token"]
    assert known_kinds(RERANKER)[0] == "cross-encoder"
    assert component("cross-encoder", RERANKER) is CrossEncoderReranker
    assert all(component(kind, CHUNKER).config_type is ChunkingConfig for kind in ("none", "recursive", "token"))
    config = pipeline_config_from_dict({})  # every existing config keeps loading: cross-encoder, switched off
    assert isinstance(config.rerank, RerankConfig) and config.rerank.kind == "cross-encoder"
    assert not config.rerank.enabled and config.chunking.kind == "none"
    assert pipeline_config_from_dict({"rerank": {"model": "m", "depth": 5}}).rerank.model == "m"


def test_an_unknown_kind_or_a_component_of_another_family_is_one_line_naming_the_key():
    with pytest.raises(ConfigError) as raised:
        pipeline_config_from_dict({"rerank": {"kind": "colbert"}}, "best.toml")
    assert str(raised.value) == (
        "best.toml: rerank.kind: unknown kind 'colbert'; known kinds: cross-encoder, "
        "or name a re-ranker class as 'module:attribute'"
    )
    with pytest.raises(ConfigError, match=r"^x: chunking\.kind: unknown kind 'sentences'; known kinds: none, recursive"):
        pipeline_config_from_dict({"chunking": {"kind": "sentences"}}, "x")
    with pytest.raises(ConfigError, match=rf"^x: chunking\.kind: '{TERM_COUNT}' names .* not a chunker: it has no chunk$"):
        pipeline_config_from_dict({"chunking": {"kind": TERM_COUNT}}, "x")
    with pytest.raises(ConfigError, match=r"^x: rerank\.kind: 'bm25' names .* not a re-ranker: it has no rerank$"):
        pipeline_config_from_dict({"rerank": {"kind": "bm25"}}, "x")
    with pytest.raises(ConfigError, match=r"^x: retrievers\[0\]\.kind: 'token' names .* not a first stage"):
        pipeline_config_from_dict({"retrievers": [{"kind": "token"}]}, "x")
    with pytest.raises(ValueError, match="built-in"):
        register("cross-encoder", QueryTermCount)
    with pytest.raises(ValueError, match="not a component"):
        register("plain", Document)


def test_own_components_validate_their_own_keys_and_round_trip_through_toml(tmp_path: Path):
    config = pipeline_config_from_dict(
        {
            "retrievers": [{"kind": "bm25"}],
            "chunking": {"kind": WINDOWS, "words": 12},
            "rerank": {"kind": TERM_COUNT, "min_length": 4, "depth": 7},
        }
    )
    assert (type(config.chunking), config.chunking.words) == (WordWindowsConfig, 12)
    assert (type(config.rerank), config.rerank.min_length, config.rerank.depth) == (QueryTermCountConfig, 4, 7)
    assert config.rerank.enabled
    save_pipeline_config(config, tmp_path / "pipeline.toml")
    assert load_pipeline_config(tmp_path / "pipeline.toml") == config
    written = config.to_toml_dict()
    assert written["chunking"] == {"kind": WINDOWS, "words": 12}
    assert written["rerank"] == {"kind": TERM_COUNT, "depth": 7, "weight": 1.0, "min_length": 4}
    with pytest.raises(ConfigError, match=r"^x: chunking\.words: Input should be greater than or equal to 1"):
        pipeline_config_from_dict({"chunking": {"kind": WINDOWS, "words": 0}}, "x")
    with pytest.raises(ConfigError, match=r"^x: rerank\.model: unknown key$"):
        pipeline_config_from_dict({"rerank": {"kind": TERM_COUNT, "model": "m"}}, "x")


def test_a_registered_name_finds_a_chunker_or_a_reranker():
    register("word-windows", WordWindows)
    register("term-count", QueryTermCount)
    try:
        assert "word-windows" in known_kinds(CHUNKER) and "word-windows" not in known_kinds(RERANKER)
        assert "term-count" in known_kinds(RERANKER) and "term-count" not in known_kinds()
        config = pipeline_config_from_dict(
            {"chunking": {"kind": "word-windows", "words": 5}, "rerank": {"kind": "term-count"}}
        )
        assert isinstance(config.chunking, WordWindowsConfig) and isinstance(config.rerank, QueryTermCountConfig)
    finally:
        components._registered.pop("word-windows")
        components._registered.pop("term-count")


# --- what they do, and what the caches know of them -------------------------------------------------


def test_the_chunker_and_reranker_do_what_they_say(adi: Corpus):
    documents = list(adi.documents.values())[:5]
    chunker = components.component_of(WordWindowsConfig(words=7))(WordWindowsConfig(words=7))
    assert isinstance(chunker, Chunker)
    chunks = chunk_documents(documents, WordWindowsConfig(words=7))
    for document in documents:
        texts = [chunk.text for chunk in chunks if chunk.doc_id == document.doc_id]
        assert " ".join(texts).split() == document.full_text.split()  # oracle: the words, in order
        assert all(len(text.split()) <= 7 for text in texts)

    config = QueryTermCountConfig(depth=20)
    reranker = reranker_for(config)
    assert isinstance(reranker, Reranker)
    run = {"q": {doc.doc_id: 1.0 / (rank + 1) for rank, doc in enumerate(adi.documents.values())}}
    texts = {doc.doc_id: doc.full_text for doc in adi.documents.values()}
    reranked = reranker.rerank(run, {"q": QUERY}, texts, depth=20)
    head = sorted(reranked["q"], key=reranked["q"].get, reverse=True)[:20]
    counts = [query_term_count(QUERY, texts[doc_id], 3) for doc_id in head]
    assert counts == sorted(counts, reverse=True)  # oracle: the head ordered by the count
    assert set(head) == set(list(run["q"])[:20])


def test_two_chunkers_or_rerankers_never_share_cached_chunks_or_scores(adi: Corpus, cache: Cache):
    windows, shouted = WordWindowsConfig(words=9), WordWindowsConfig(kind=f"{__name__}:ShoutedWordWindows", words=9)
    assert component_identity(windows)["class"] == f"{__name__}:WordWindows"
    assert component_identity(windows)["fingerprint"] == {"words": 9}  # no fingerprint defined: the settings
    plain = Resources(adi, cache).chunk_set(windows).chunks
    loud = Resources(adi, cache).chunk_set(shouted).chunks
    assert len(list((cache.root / "chunks").glob("*.blob"))) == 2
    assert [chunk.text.upper() for chunk in plain] == [chunk.text for chunk in loud] != [c.text for c in plain]
    assert Resources(adi, cache).chunk_set(windows).chunks == plain  # read back from its own entry

    counting = QueryTermCountConfig()
    negated = QueryTermCountConfig(kind=f"{__name__}:NegatedQueryTermCount")
    assert component_identity(negated)["fingerprint"] == "negated-3"
    pairs = [(QUERY, text) for text in list(adi.documents.values())[0].full_text.split(".")[:3]]
    counts = reranker_for(counting, cache).score_pairs(pairs)
    assert reranker_for(negated, cache).score_pairs(pairs) == [-count for count in counts]
    for config in (counting, negated):
        store = cache.embeddings(content_address(component_identity(config)), "rerank-score")
        assert store.missing([f"{query}\x1f{text}" for query, text in pairs]) == []
    # depth and weight decide how scores are used, not the scores: one memory across them
    resources = Resources(adi, cache)
    assert resources.reranker(counting) is resources.reranker(counting.model_copy(update={"depth": 3, "weight": 0.5}))
    assert resources.reranker(counting) is not resources.reranker(QueryTermCountConfig(min_length=4))


# --- a study, an export, a saved index, a served query ---------------------------------------------


def test_own_chunker_and_reranker_are_tuned_exported_indexed_and_searched(
    tmp_path: Path, session_cache, mlflow_template, adi: Corpus
):
    from stores import ADI, invoke_ok, linked_state, write_study

    from workbench.retrieval.index import load_index

    state = linked_state(tmp_path, session_cache, mlflow_template)
    space = (
        '[space]\ncombinations = [["bm25"]]\n[[space.retrievers]]\nkind = "bm25"\n'
        f'[space.chunking]\nkind = ["{WINDOWS}"]\nwords = [20, 40]\n'
        f'[space.rerank]\nkind = "{TERM_COUNT}"\nmin_length = [3, 4]\ndepth = [5, 10]\n'
    )
    study = write_study(tmp_path, "own-chunker-reranker", 3, space)

    invoke_ok("run", study, "--state-dir", state)
    # Trials 0 and 1 are the BM25 and dense baselines; trial 2 is sampled from the space.
    invoke_ok("export", study, "--trial", 2, "--out", tmp_path / "best.toml", "--state-dir", state)
    best = load_pipeline_config(tmp_path / "best.toml")
    assert isinstance(best.chunking, WordWindowsConfig) and best.chunking.words in (20, 40)
    assert isinstance(best.rerank, QueryTermCountConfig) and best.rerank.min_length in (3, 4)
    assert best.rerank.depth in (5, 10)

    invoke_ok("index", tmp_path / "best.toml", ADI, "--out", tmp_path / "index", "--state-dir", state)
    saved = load_index(tmp_path / "index")
    assert saved.manifest["chunker"] == component_identity(best.chunking)
    assert saved.manifest["reranker"]["class"] == f"{__name__}:QueryTermCount"
    assert all(len(chunk.text.split()) <= best.chunking.words for chunk in saved.chunks)
    hits = Retriever.load(tmp_path / "index").search(QUERY, k=5)
    fresh = Retriever.from_config(tmp_path / "best.toml", adi).search(QUERY, k=5)
    assert [(hit.doc_id, hit.score) for hit in hits] == [(hit.doc_id, hit.score) for hit in fresh]
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    top = [query_term_count(QUERY, adi.documents[hit.doc_id].full_text, best.rerank.min_length) for hit in hits]
    assert top == sorted(top, reverse=True)  # the re-ranker ordered the head


@pytest.mark.slow  # starts a uvicorn server process
def test_workbench_serve_answers_through_own_chunker_and_reranker(tmp_path: Path, adi: Corpus):
    from serving.served import ask_served

    config = pipeline_config_from_dict(
        {
            "retrievers": [{"kind": "bm25"}],
            "chunking": {"kind": WINDOWS, "words": 25},
            "rerank": {"kind": TERM_COUNT, "depth": 10},
        }
    )
    index = tmp_path / "index"
    Retriever.from_config(config, adi).save(index)
    expected = Retriever.load(index).search(QUERY, k=5)
    # The server is another process: it imports this file's components from where it lies.
    (status, body), (info_status, info) = ask_served(index, HERE, QUERY, 5)
    assert status == 200, body
    assert [hit["doc_id"] for hit in body["hits"]] == [hit.doc_id for hit in expected]
    assert info_status == 200 and TERM_COUNT in json.dumps(info) and WINDOWS in json.dumps(info)
