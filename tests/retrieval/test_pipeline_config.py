"""Tests of workbench/config.py: validation names the bad key, TOML round-trips, shipped configs load."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.errors import ConfigError
from workbench.retrieval.config import (
    PipelineConfig,
    load_pipeline_config,
    pipeline_config_from_dict,
    save_pipeline_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_defaults_validate():
    config = pipeline_config_from_dict({})
    assert config == PipelineConfig()
    assert [retriever.kind for retriever in config.retrievers] == ["bm25", "dense"]
    assert config.fusion_weights == (0.5, 0.5)
    assert not config.rerank.enabled


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"fusion": {"alpha": 1.5}}, "fusion.alpha"),
        ({"fusion": {"alpha": -0.1}}, "fusion.alpha"),
        ({"fusion": {"wieght": 0.3}}, "fusion.wieght"),
        ({"chunking": {"chunk_overlap": -1}}, "chunking.chunk_overlap"),
        ({"chunking": {"chunk_size": 4}}, "chunking.chunk_size"),
        ({"bm25": {"k1": -1.0}}, "bm25.k1"),
        ({"bm25": {"b": 1.01}}, "bm25.b"),
        ({"bm25": {"method": "okapi"}}, "bm25.method"),
        ({"rerank": {"depth": 0}}, "rerank.depth"),
        ({"rerank": {"weight": 1.5}}, "rerank.weight"),
        ({"first_stage_depth": 0}, "first_stage_depth"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_value_raises_config_error_naming_the_key(data, key):
    with pytest.raises(ConfigError) as raised:
        pipeline_config_from_dict(data, source="my.toml")
    message = str(raised.value)
    assert f"my.toml: {key}:" in message


def test_unknown_key_is_called_unknown():
    with pytest.raises(ConfigError, match=r"fusion\.wieght: unknown key"):
        pipeline_config_from_dict({"fusion": {"wieght": 0.3}})


def test_overlap_not_below_size_is_rejected_naming_both_fields():
    with pytest.raises(ConfigError) as raised:
        pipeline_config_from_dict({"chunking": {"kind": "recursive", "chunk_size": 100, "chunk_overlap": 100}})
    message = str(raised.value)
    assert "chunking" in message and "chunk_overlap" in message and "chunk_size" in message


def test_rank_bm25_backend_needs_robertson():
    with pytest.raises(ConfigError, match="robertson"):
        pipeline_config_from_dict({"bm25": {"backend": "rank_bm25", "method": "lucene"}})
    config = pipeline_config_from_dict({"bm25": {"backend": "rank_bm25", "method": "robertson"}})
    assert config.retrievers[0].backend == "rank_bm25"


def test_every_bad_key_is_reported_at_once():
    with pytest.raises(ConfigError) as raised:
        pipeline_config_from_dict({"fusion": {"alpha": 2.0}, "bm25": {"b": -1.0}})
    assert "fusion.alpha" in str(raised.value) and "bm25.b" in str(raised.value)


def test_configs_are_frozen():
    config = PipelineConfig()
    with pytest.raises(Exception):
        config.fusion.normalization = "zscore"  # type: ignore[misc]


def kinds(data: dict) -> list[str]:
    return [retriever.kind for retriever in pipeline_config_from_dict(data).retrievers]


def test_two_stage_layout_maps_to_the_retrievers_it_runs():
    assert kinds({"fusion": {"method": "convex", "alpha": 0.0}}) == ["bm25"]
    assert kinds({"fusion": {"method": "convex", "alpha": 1.0}}) == ["dense"]
    assert kinds({"fusion": {"method": "bm25"}}) == ["bm25"]
    assert kinds({"fusion": {"method": "dense"}}) == ["dense"]
    assert kinds({"fusion": {"method": "rrf"}}) == ["bm25", "dense"]
    hybrid = pipeline_config_from_dict(
        {"fusion": {"alpha": 0.3}, "bm25": {"k1": 0.9}, "dense": {"model": "m"}, "chunking": {"kind": "token"}}
    )
    assert hybrid.fusion.weights == (0.7, 0.3)  # BM25 weighs 1 - alpha, dense alpha
    assert (hybrid.retrievers[0].k1, hybrid.retrievers[1].model) == (0.9, "m")
    assert hybrid.chunking.tokenizer == "m"  # token chunks are still measured by the dense model's tokenizer


def test_retrievers_list_validation_names_the_entry():
    problems = {
        "retrievers[0].k1": {"retrievers": [{"kind": "bm25", "k1": -1.0}]},
        "retrievers[1].modle": {"retrievers": [{"kind": "bm25"}, {"kind": "dense", "modle": "m"}]},
        "fusion.weights": {"retrievers": [{"kind": "bm25"}, {"kind": "dense"}], "fusion": {"weights": [0.2, 0.2]}},
        "retrievers: names must be unique": {"retrievers": [{"kind": "dense"}, {"kind": "dense", "model": "m"}]},
        "retrievers: at least one": {"retrievers": []},
        "retrievers[0]": {"retrievers": [{"kind": "sparse"}]},
    }
    for expected, data in problems.items():
        with pytest.raises(ConfigError) as raised:
            pipeline_config_from_dict(data, source="my.toml")
        assert f"my.toml: {expected}" in str(raised.value)
    with pytest.raises(ConfigError, match="3 weights for 2 retrievers"):
        pipeline_config_from_dict(
            {"retrievers": [{"kind": "bm25"}, {"kind": "dense"}], "fusion": {"weights": [0.2, 0.3, 0.5]}}
        )


def test_three_first_stages_round_trip(tmp_path: Path):
    data = {
        "retrievers": [
            {"kind": "bm25"},
            {"kind": "dense", "name": "minilm"},
            {"kind": "dense", "name": "tuned", "model": "/models/tuned"},
        ],
        "fusion": {"weights": [0.2, 0.3, 0.5]},
    }
    config = pipeline_config_from_dict(data)
    save_pipeline_config(config, tmp_path / "three.toml")
    assert load_pipeline_config(tmp_path / "three.toml") == config
    assert "[[retrievers]]" in (tmp_path / "three.toml").read_text()


NON_DEFAULT = {
    "name": "round-trip",
    "chunking": {"kind": "recursive", "chunk_size": 300, "chunk_overlap": 50},
    "bm25": {"backend": "bm25s", "method": "bm25+", "k1": 0.9, "b": 0.4, "stemmer": "none", "stopwords": "none"},
    "dense": {"model": "some/model", "index": "hnsw", "hnsw_m": 16, "batch_size": 8},
    "fusion": {"method": "rrf", "alpha": 0.3, "normalization": "zscore", "rrf_k": 10},
    "rerank": {"model": "/models/ce", "depth": 20, "batch_size": 4, "weight": 0.25},
    "first_stage_depth": 200,
    "doc_aggregation": "sum",
    "output_depth": 50,
}


def test_toml_round_trip(tmp_path: Path):
    config = pipeline_config_from_dict(NON_DEFAULT)
    path = tmp_path / "sub" / "pipeline.toml"
    save_pipeline_config(config, path)
    assert load_pipeline_config(path) == config
    assert not list(path.parent.glob("*.tmp")), "the temp file must be renamed away"


def test_provenance_table_is_written_and_ignored_on_load(tmp_path: Path):
    config = pipeline_config_from_dict(NON_DEFAULT)
    path = tmp_path / "best.toml"
    save_pipeline_config(config, path, provenance={"study": "s1", "trial": 7, "nDCG@10": 0.5})
    assert "[provenance]" in path.read_text()
    assert load_pipeline_config(path) == config


def test_load_error_names_the_file(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("[fusion]\nwieght = 0.5\n")
    with pytest.raises(ConfigError) as raised:
        load_pipeline_config(path)
    assert str(path) in str(raised.value) and "fusion.wieght" in str(raised.value)


def test_missing_and_malformed_files_raise_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such file"):
        load_pipeline_config(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[fusion\nalpha = ")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_pipeline_config(broken)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path):
    config = load_pipeline_config(path)
    assert config.name
    # A shipped config saved again reads back the same.
    assert pipeline_config_from_dict(config.to_toml_dict()) == config


def test_there_are_shipped_configs():
    assert {p.name for p in CONFIGS.glob("*.toml")} >= {"bm25.toml", "dense.toml", "hybrid.toml"}
