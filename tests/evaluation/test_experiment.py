"""Tests of workbench/evaluation/experiment.py: ``workbench.evaluate`` as a notebook calls it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytrec_eval
from typer.testing import CliRunner

import workbench
from workbench.cli import app
from workbench.errors import ConfigError, CorpusError
from workbench.retrieval.corpus import load_corpus

REPO = Path(__file__).resolve().parents[2]
ADI = REPO / "corpora" / "adi"
BM25_CONFIG = REPO / "configs" / "bm25.toml"


@pytest.fixture(scope="module")
def bm25_result():
    return workbench.evaluate(BM25_CONFIG, ADI, split="test", metrics=("nDCG@10", "MAP"), latency_sample=3)


def test_scores_match_pytrec_eval_per_query(bm25_result):
    qrels = load_corpus(ADI).split_qrels("test")
    judged = {query_id: grades for query_id, grades in qrels.items() if any(grade > 0 for grade in grades.values())}
    run = {query_id: ranking for query_id, ranking in bm25_result.run.items() if ranking}
    reference = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "map"}).evaluate(run)

    assert bm25_result.pipeline == "bm25" and bm25_result.split == "test"
    assert bm25_result.num_queries == len(judged) == 35
    assert list(bm25_result.means) == ["nDCG@10", "MAP"]
    for query_id in judged:
        expected = reference.get(query_id, {"ndcg_cut_10": 0.0, "map": 0.0})
        assert bm25_result.per_query["nDCG@10"][query_id] == pytest.approx(expected["ndcg_cut_10"], abs=1e-12)
        assert bm25_result.per_query["MAP"][query_id] == pytest.approx(expected["map"], abs=1e-12)
    assert bm25_result.means["nDCG@10"] == pytest.approx(sum(bm25_result.per_query["nDCG@10"].values()) / 35, abs=1e-12)
    assert 0 < bm25_result.latency.p50_ms <= bm25_result.latency.p95_ms
    assert bm25_result.index_build_seconds > 0


def test_the_cli_writes_what_the_library_returns(bm25_result, tmp_path: Path):
    json_out = tmp_path / "out.json"
    args = ["evaluate", BM25_CONFIG, "--corpus", ADI, "-m", "nDCG@10", "-m", "map", "--json", json_out]
    args += ["--latency-sample", "3", "--state-dir", tmp_path / "state"]
    result = CliRunner().invoke(app, [str(arg) for arg in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload = json.loads(json_out.read_text())
    assert list(payload) == ["config", "corpus", "split", "num_queries", "metrics", "latency", "index_build_seconds"]
    assert payload["metrics"] == bm25_result.means  # the same numbers, bit for bit
    assert payload["num_queries"] == bm25_result.num_queries
    assert payload["latency"].keys() == bm25_result.latency.to_dict().keys()


def test_a_retriever_scores_as_its_config_does(bm25_result):
    corpus = load_corpus(ADI)
    retriever = workbench.Retriever.from_config(BM25_CONFIG, corpus)
    result = workbench.evaluate(retriever, corpus, metrics=("nDCG@10", "MAP"), latency_sample=2)
    assert result.means == pytest.approx(bm25_result.means, abs=1e-12)
    assert result.index_build_seconds == 0.0


def test_bad_inputs_fail_before_anything_is_built(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown metric 'nDCG@ten'"):
        workbench.evaluate(BM25_CONFIG, ADI, metrics=["nDCG@ten"])
    with pytest.raises(CorpusError, match="dev"):
        workbench.evaluate(BM25_CONFIG, ADI, split="dev")
