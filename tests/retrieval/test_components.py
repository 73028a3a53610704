"""The first-stage registry and protocol: kinds resolve from built-ins, entry points and
``module:attribute`` names; a user's own stage (the one docs/components.md shows) goes through a
pipeline config, a saved index, ``Retriever.load``, ``workbench serve`` and LangChain like a built-in;
TF-IDF matches scikit-learn."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from workbench.errors import ConfigError
from workbench.retrieval import components
from workbench.retrieval.components import BuildContext, FirstStage, component, known_kinds, register
from workbench.retrieval.config import load_pipeline_config, pipeline_config_from_dict, save_pipeline_config
from workbench.retrieval.corpus import Corpus
from workbench.retrieval.index import build_index, load_index, save_index
from workbench.retrieval.retrievers.tfidf import TfidfConfig, TfidfIndex
from workbench.retriever import Retriever
from workbench.types import Chunk

REPO = Path(__file__).resolve().parents[2]
DOCS_PAGE = REPO / "docs" / "components.md"


def docs_example(file_name: str = "my_stages.py") -> str:
    """The ```python block of docs/components.md that is ``file_name`` (its docstring starts with the name)."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS_PAGE.read_text(), flags=re.S)
    found = [block for block in blocks if block.startswith(f'"""{file_name}:')]
    assert len(found) == 1
    return found[0]


def saved_docs_example(module: str, folder: Path, monkeypatch: pytest.MonkeyPatch):
    """The docs' example ``module`` saved in ``folder`` on sys.path, as a user would keep it, and imported."""
    folder.mkdir(exist_ok=True)
    (folder / f"{module}.py").write_text(docs_example(f"{module}.py"))
    monkeypatch.syspath_prepend(str(folder))
    return __import__(module)


def forget_module(module: str) -> None:
    sys.modules.pop(module, None)
    for kind in [kind for kind in components._resolved if kind.startswith(f"{module}:")]:
        del components._resolved[kind]


@pytest.fixture
def my_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    yield saved_docs_example("my_stages", tmp_path / "user-code", monkeypatch)
    forget_module("my_stages")


@pytest.fixture
def my_components(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    yield saved_docs_example("my_components", tmp_path / "user-code", monkeypatch)
    forget_module("my_components")


def test_built_ins_implement_the_protocol():
    for kind in ("bm25", "dense", "tfidf"):
        stage = component(kind)
        assert isinstance(stage.config_type.model_validate({"kind": kind}).kind, str)
        assert all(hasattr(stage, name) for name in ("build", "search", "save", "load", "updated", "models"))
    assert {"bm25", "dense", "tfidf"} <= set(known_kinds())


def test_an_unknown_kind_is_one_line_naming_the_key_and_the_known_kinds():
    with pytest.raises(ConfigError) as raised:
        pipeline_config_from_dict({"retrievers": [{"kind": "bm25"}, {"kind": "splade"}]}, "best.toml")
    assert str(raised.value) == (
        "best.toml: retrievers[1].kind: unknown kind 'splade'; known kinds: bm25, dense, tfidf, "
        "or name a first-stage class as 'module:attribute'"
    )
    with pytest.raises(ConfigError, match=r"^x: retrievers\[0\]\.kind: kind 'nowhere:Stage': cannot import"):
        pipeline_config_from_dict({"retrievers": [{"kind": "nowhere:Stage"}]}, "x")
    with pytest.raises(ConfigError, match=r"^x: retrievers\[0\]\.kind: .* no attribute 'Nothing'"):
        pipeline_config_from_dict({"retrievers": [{"kind": "workbench.retrieval.components:Nothing"}]}, "x")


def test_a_class_that_is_not_a_first_stage_is_refused():
    with pytest.raises(ConfigError, match=r"retrievers\[0\]\.kind: .*not a first stage: it has no config_type, version, build"):
        pipeline_config_from_dict({"retrievers": [{"kind": "pathlib:Path"}]}, "x")
    with pytest.raises(ValueError, match="built-in"):
        register("bm25", TfidfIndex)


def test_a_users_stage_validates_its_own_keys_by_module_attribute(my_stages):
    config = pipeline_config_from_dict(
        {"retrievers": [{"kind": "bm25"}, {"kind": "my_stages:WordOverlap", "min_length": 4}]}
    )
    overlap = config.retrievers[1]
    assert (type(overlap).__name__, overlap.name, overlap.min_length) == ("WordOverlapConfig", "overlap", 4)
    written = {"kind": "my_stages:WordOverlap", "name": "overlap", "min_length": 4}
    assert config.to_toml_dict()["retrievers"][1] == written
    with pytest.raises(ConfigError, match=r"^x: retrievers\[1\]\.min_length: Input should be greater than or equal"):
        pipeline_config_from_dict({"retrievers": [{"kind": "bm25"}, written | {"min_length": 0}]}, "x")
    with pytest.raises(ConfigError, match=r"^x: retrievers\[0\]\.colour: unknown key"):
        pipeline_config_from_dict({"retrievers": [{"kind": "my_stages:WordOverlap", "colour": 1}]}, "x")


def test_the_docs_example_indexes_saves_loads_and_searches_like_a_built_in(my_stages, adi: Corpus, tmp_path: Path):
    path = tmp_path / "pipeline.toml"
    save_pipeline_config(
        pipeline_config_from_dict({"retrievers": [{"kind": "bm25"}, {"kind": "my_stages:WordOverlap"}]}), path
    )
    config = load_pipeline_config(path)
    assert isinstance(component(config.retrievers[1].kind).build(config.retrievers[1], BuildContext([])), FirstStage)
    built = build_index(config, adi)
    folder = save_index(built, tmp_path / "index")
    assert (folder / "retrievers" / "overlap" / "words.json").is_file()
    assert load_index(tmp_path / "index").manifest["first_stages"]["overlap"]["kind"] == "my_stages:WordOverlap"

    query = "computer programs for indexing documents"
    loaded = Retriever.load(tmp_path / "index").search(query, k=5)
    fresh = Retriever.from_config(path, adi).search(query, k=5)
    assert [(hit.doc_id, hit.score) for hit in loaded] == [(hit.doc_id, hit.score) for hit in fresh]
    alone = Retriever.from_config(
        pipeline_config_from_dict({"retrievers": [{"kind": "my_stages:WordOverlap"}]}), adi
    ).search(query, k=3)
    words = {word for word in query.lower().split() if len(word) >= 3}
    best = max(len(words & set(doc.full_text.lower().split())) for doc in adi.documents.values())
    assert alone[0].score == best  # oracle: the most query words any document holds


def test_an_entry_point_names_a_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # A throwaway installed distribution: importlib.metadata reads any *.dist-info on sys.path.
    site = tmp_path / "site"
    (site / "plugin_overlap-1.0.dist-info").mkdir(parents=True)
    dist_info = site / "plugin_overlap-1.0.dist-info"
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-overlap\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[workbench.components]\noverlap = plugin_overlap:WordOverlap\n")
    (site / "plugin_overlap.py").write_text(docs_example().replace('"my_stages:WordOverlap"', '"overlap"'))
    monkeypatch.syspath_prepend(str(site))
    components.forget_discovered()
    try:
        assert "overlap" in known_kinds()
        config = pipeline_config_from_dict({"retrievers": [{"kind": "overlap", "min_length": 5}]})
        assert type(config.retrievers[0]).__module__ == "plugin_overlap" and config.retrievers[0].min_length == 5
    finally:
        monkeypatch.undo()
        components.forget_discovered()
        sys.modules.pop("plugin_overlap", None)
    assert "overlap" not in known_kinds()


@pytest.mark.parametrize(
    "config", [TfidfConfig(), TfidfConfig(ngram_max=2, min_df=2, sublinear_tf=True)], ids=["default", "bigrams"]
)
def test_tfidf_scores_as_scikit_learn_does(adi: Corpus, config: TfidfConfig):
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [document.full_text for document in adi.documents.values()]
    queries = list(adi.queries.values())[:12]
    index = TfidfIndex.build(config, BuildContext([Chunk(str(i), str(i), text) for i, text in enumerate(texts)]))
    reference = TfidfVectorizer(
        ngram_range=(1, config.ngram_max), min_df=config.min_df, sublinear_tf=config.sublinear_tf
    )
    expected = (reference.fit(texts).transform(queries) @ reference.transform(texts).T).toarray()
    hits = index.search(queries, k=len(texts))
    for row, (indices, scores) in enumerate(zip(hits.indices, hits.scores)):
        found = np.zeros(len(texts))
        found[indices] = scores
        np.testing.assert_allclose(found, expected[row], atol=1e-5)
        assert list(scores) == sorted(scores, reverse=True)


def test_tfidf_round_trips_through_a_saved_index_and_updates(adi: Corpus, tmp_path: Path):
    config = pipeline_config_from_dict({"retrievers": [{"kind": "tfidf", "sublinear_tf": True}]})
    save_index(build_index(config, adi), tmp_path / "index")
    query = "automatic abstracting of documents"
    loaded = Retriever.load(tmp_path / "index").search(query, k=10)
    assert [h.doc_id for h in loaded] == [h.doc_id for h in Retriever.from_config(config, adi).search(query, k=10)]


def test_a_users_stage_is_tuned_exported_indexed_and_searched(
    my_stages, tmp_path: Path, session_cache, mlflow_template
):
    from stores import ADI, invoke_ok, linked_state, write_study

    state = linked_state(tmp_path, session_cache, mlflow_template)
    space = (
        '[space]\ncombinations = [["overlap"], ["bm25", "overlap"]]\n'
        '[[space.retrievers]]\nkind = "bm25"\n'
        '[[space.retrievers]]\nkind = "my_stages:WordOverlap"\nmin_length = [2, 4]\n'
    )
    study = write_study(tmp_path, "own-stage", 3, space)

    invoke_ok("run", study, "--state-dir", state)
    # Trials 0 and 1 are the BM25 and dense baselines; trial 2 is sampled, and every combination uses the stage.
    invoke_ok("export", study, "--trial", 2, "--out", tmp_path / "best.toml", "--state-dir", state)
    best = load_pipeline_config(tmp_path / "best.toml")
    overlap = next(r for r in best.retrievers if r.kind == "my_stages:WordOverlap")
    assert overlap.name == "overlap" and overlap.min_length in (2, 4)
    invoke_ok("index", tmp_path / "best.toml", ADI, "--out", tmp_path / "index", "--state-dir", state)
    hits = Retriever.load(tmp_path / "index").search("computer programs for indexing documents", k=5)
    assert len(hits) == 5


def user_stage_index(tmp_path: Path) -> Path:
    """`workbench index` over ADI with BM25 and the docs' WordOverlap (``my_stages`` importable); returns the folder."""
    from typer.testing import CliRunner

    from workbench.cli import app

    config, index = tmp_path / "pipeline.toml", tmp_path / "index"
    save_pipeline_config(
        pipeline_config_from_dict({"retrievers": [{"kind": "bm25"}, {"kind": "my_stages:WordOverlap"}]}), config
    )
    args = ["index", config, REPO / "corpora" / "adi", "--out", index, "--state-dir", tmp_path / "state"]
    result = CliRunner().invoke(app, [str(arg) for arg in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return index


@pytest.mark.slow  # starts a uvicorn server process
def test_workbench_serve_answers_with_a_users_stage(my_stages, tmp_path: Path):
    from serving.served import ask_served

    index = user_stage_index(tmp_path)
    query = "computer programs for indexing documents"
    expected = Retriever.load(index).search(query, k=5)
    # The server is another process: it finds my_stages where the user keeps it, on PYTHONPATH.
    (status, body), (info_status, info) = ask_served(index, Path(my_stages.__file__).parent, query, 5)
    assert status == 200, body
    assert [hit["doc_id"] for hit in body["hits"]] == [hit.doc_id for hit in expected]
    assert [hit["score"] for hit in body["hits"]] == pytest.approx([hit.score for hit in expected], abs=1e-5)
    assert info_status == 200 and "my_stages:WordOverlap" in json.dumps(info)


def test_langchain_retrieves_through_a_users_stage(my_stages, tmp_path: Path):
    from workbench.integrations.langchain import WorkbenchRetriever

    index = user_stage_index(tmp_path)
    query = "computer programs for indexing documents"
    documents = WorkbenchRetriever.from_index(index, k=4).invoke(query)
    expected = Retriever.load(index).search(query, k=4)
    assert [document.metadata["doc_id"] for document in documents] == [hit.doc_id for hit in expected]
    assert [document.page_content for document in documents] == [hit.chunk_text for hit in expected]


def test_the_docs_chunker_and_reranker_cut_sentences_and_rerank_by_shared_words(my_components, adi: Corpus):
    config = pipeline_config_from_dict(
        {
            "retrievers": [{"kind": "bm25"}],
            "chunking": {"kind": "my_components:Sentences", "sentences": 2},
            "rerank": {"kind": "my_components:SharedWords", "min_length": 4, "depth": 10},
        }
    )
    retriever = Retriever.from_config(config, adi)
    query = "computer programs for indexing documents"
    hits = retriever.search(query, k=10)
    words = {word for word in query.lower().split() if len(word) >= 4}
    shared = [len(words & set(adi.documents[hit.doc_id].full_text.lower().split())) for hit in hits]
    assert shared == sorted(shared, reverse=True) and shared[0] > 0  # oracle: ordered by shared words
    document = next(iter(adi.documents.values()))
    pieces = [chunk.text for chunk in my_components.Sentences(config.chunking).chunk([document])]
    assert " ".join(pieces).split() == document.full_text.split() and len(pieces) > 1
