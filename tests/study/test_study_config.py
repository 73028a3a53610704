"""Study files: every mistake is a ``ConfigError`` naming the file and the key; the shipped studies load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workbench.errors import ConfigError
from workbench.study.config import load_study_config
from workbench.study.search_space import FloatRange, IntRange

REPO = Path(__file__).resolve().parents[2]
STUDIES = REPO / "studies"

HEADER = 'name = "s"\ncorpus = "corpus"\ntune_split = "test"\n'


def study_text(folder: Path, body: str, header: str = HEADER) -> Path:
    path = folder / "study.toml"
    path.write_text(header + body)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_study_config(path)
    return str(caught.value)


def test_a_minimal_study_loads_with_defaults(tmp_path):
    config = load_study_config(study_text(tmp_path, ""))

    assert config.name == "s"
    assert config.tune_split == "test"
    assert config.metric == "nDCG@10"
    assert config.heldout_split is None
    # the two-stage defaults, translated: BM25 and dense, alone or fused by either method
    assert [candidate.kind for candidate in config.space.retrievers] == ["bm25", "dense"]
    assert config.space.combinations == [["bm25", "dense"], ["bm25"], ["dense"]]
    assert config.space.fusion.method == ["convex", "rrf"]
    assert config.space.rerank.model == "none"


def test_ranges_and_choices_parse_to_their_types(tmp_path):
    body = (
        'metric = "ndcg@10"\n'
        "[space]\nfirst_stage_depth = [50, 100]\n"
        "[space.fusion]\nrrf_k = { low = 5, high = 100, step = 5 }\n"
        "[space.bm25]\nk1 = { low = 0.5, high = 2.0, log = true }\nb = 0.6\n"
    )
    config = load_study_config(study_text(tmp_path, body))

    assert config.metric == "nDCG@10"  # canonical spelling
    assert config.space.first_stage_depth == [50, 100]
    assert config.space.fusion.rrf_k == IntRange(low=5, high=100, step=5)
    bm25 = config.space.retrievers[0]  # [space.bm25], translated
    assert bm25.k1 == FloatRange(low=0.5, high=2.0, log=True)
    assert bm25.b == 0.6


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [
        ("[space.fusion]\nwieght = 0.5\n", "space.fusion.wieght", "unknown key"),
        ("colour = 'blue'\n", "colour", "unknown key"),
        ("[space.fusion]\nalpha = { low = -0.1, high = 1.0 }\n", "space.fusion.alpha", "[0, 1]"),
        ("[space.fusion]\nalpha = { low = 0.0, high = 1.5 }\n", "space.fusion.alpha", "[0, 1]"),
        ("[space.fusion]\nalpha = [0.5, 1.2]\n", "space.fusion.alpha", "[0, 1]"),
        ("[space.fusion]\nalpha = -0.5\n", "space.fusion.alpha", "[0, 1]"),
        ("[space.fusion]\nalpha = { low = 0.9, high = 0.1 }\n", "space.fusion.alpha", "must not exceed"),
        ('heldout_split = "test"\n', "heldout_split", "must differ"),
        ('metric = "nDCG@ten"\n', "metric", "unknown metric"),
        ('metric = "bleu"\n', "metric", "unknown metric"),
        ("[space.fusion]\nmethod = []\n", "space.fusion.method", "must not be empty"),
        ('[space.fusion]\nmethod = ["bm25", "splade"]\n', "space.fusion.method", ""),
        ("[space.dense]\nmodel = []\n", "space.dense.model", "must not be empty"),
        ("[space.chunking]\nkind = []\n", "space.chunking.kind", "must not be empty"),
        ("[space.chunking]\nchunk_size = []\n", "space.chunking.chunk_size", "must not be empty"),
        ("[space.rerank]\ndepth = []\n", "space.rerank.depth", "must not be empty"),
        ("[space.rerank]\nweight = { low = 0.5, high = 1.2 }\n", "space.rerank.weight", "[0, 1]"),
        ("[space.bm25]\nk1 = []\n", "space.bm25.k1", "must not be empty"),
        ("[space.bm25]\nb = []\n", "space.bm25.b", "must not be empty"),
        ("[space]\nfirst_stage_depth = []\n", "space.first_stage_depth", "must not be empty"),
        ("[space.chunking]\nchunk_overlap_fraction = 1.0\n", "space.chunking.chunk_overlap_fraction", "[0, 1)"),
        ("[space.chunking]\nchunk_overlap_fraction = [0.0, 1.0]\n", "space.chunking.chunk_overlap_fraction", "[0, 1)"),
        (
            "[space.chunking]\nchunk_overlap_fraction = { low = 0.5, high = 1.5 }\n",
            "space.chunking.chunk_overlap_fraction",
            "[0, 1)",
        ),
        ("n_trials = 0\n", "n_trials", ""),
        ("heldout_fraction = 1.0\n", "heldout_fraction", ""),
        ('sampler = "grid"\n', "sampler", ""),
        ('storage = "redis://host"\n', "storage", "expected journal:///path, postgresql://"),
        ("heartbeat_s = 0\n", "heartbeat_s", ""),
    ],
)
def test_a_bad_study_file_names_the_file_and_the_key(tmp_path, body, key, reason):
    path = study_text(tmp_path, body)

    message = load_error(path)

    assert str(path) in message
    assert key in message
    assert reason in message


def test_every_bad_key_is_reported_at_once(tmp_path):
    path = study_text(tmp_path, 'metric = "bleu"\n[space.fusion]\nwieght = 1\n')

    message = load_error(path)

    assert "metric" in message
    assert "space.fusion.wieght" in message


def test_a_study_without_name_or_corpus_is_rejected(tmp_path):
    message = load_error(study_text(tmp_path, "", header='tune_split = "test"\n'))

    assert "name" in message and "corpus" in message


@pytest.mark.parametrize("text", ["name = \n", "name = 's'\n[space\n", "name = 's'\nname = 't'\n"])
def test_invalid_toml_names_the_file(tmp_path, text):
    path = tmp_path / "broken.toml"
    path.write_text(text)

    message = load_error(path)

    assert str(path) in message
    assert "invalid TOML" in message


def test_a_missing_study_file_is_a_config_error(tmp_path):
    message = load_error(tmp_path / "nowhere.toml")

    assert "nowhere.toml" in message


def test_the_corpus_path_is_resolved_against_the_study_files_folder(tmp_path, monkeypatch):
    studies = tmp_path / "project" / "studies"
    studies.mkdir(parents=True)
    adi = REPO / "corpora" / "adi"
    relative = os.path.relpath(adi, studies)
    path = study_text(studies, "", header=f'name = "s"\ncorpus = "{relative}"\ntune_split = "test"\n')
    monkeypatch.chdir(tmp_path)  # the working folder must not matter

    config = load_study_config(path)

    assert config.corpus.is_absolute()
    assert config.corpus == adi.resolve()


def test_an_absolute_corpus_path_is_kept(tmp_path):
    corpus = (tmp_path / "elsewhere" / "corpus").resolve()
    path = study_text(tmp_path, "", header=f'name = "s"\ncorpus = "{corpus}"\n')

    assert load_study_config(path).corpus == corpus


@pytest.mark.parametrize("name", ["demo.toml", "scifact.toml"])
def test_the_shipped_studies_load(name):
    path = STUDIES / name
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")

    config = load_study_config(path)

    assert config.corpus.is_absolute()
    if config.corpus.is_relative_to(REPO):  # a corpus shipped in the repository must be there
        assert config.corpus.is_dir(), f"{name}: corpus {config.corpus} does not exist"
    assert config.n_trials >= 1
    assert config.heldout_split != config.tune_split
