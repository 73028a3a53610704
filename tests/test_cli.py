"""Tests of workbench/cli.py through Typer's CliRunner: exit codes, files written, numbers match the library."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.evaluation.metrics import evaluate as evaluate_run
from workbench.evaluation.metrics import read_trec_run
from workbench.retrieval.cache import Cache
from workbench.retrieval.config import load_pipeline_config
from workbench.retrieval.corpus import load_corpus
from workbench.retrieval.pipeline import Pipeline

REPO = Path(__file__).resolve().parent.parent
ADI = REPO / "corpora" / "adi"
BM25_CONFIG = REPO / "configs" / "bm25.toml"
# Wide enough that rich never wraps a line (paths in tmp folders are long).
WIDE = {"COLUMNS": "400"}

RANKED_LINE = re.compile(r"^\s*(\d+)\.\s+(-?\d+\.\d{4})\s+(\S+)\s")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, args: list[str]):
    return runner.invoke(app, [str(arg) for arg in args], env=WIDE, catch_exceptions=False)


def test_validate_good_corpus(runner):
    result = invoke(runner, ["validate", ADI])
    assert result.exit_code == 0, result.output
    assert "82 documents" in result.output and "35 queries" in result.output
    assert "split test: 35 judged queries" in result.output


def test_validate_broken_corpus_exits_2_naming_the_file(runner, tmp_path: Path):
    broken = tmp_path / "broken"
    (broken / "qrels").mkdir(parents=True)
    (broken / "corpus.jsonl").write_text('{"_id": "d1", "text": "fine"}\n{"_id": "d2", "text": \n')
    (broken / "queries.jsonl").write_text('{"_id": "q1", "text": "fine"}\n')
    (broken / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    result = invoke(runner, ["validate", broken])
    assert result.exit_code == 2, result.output
    assert "error" in result.output
    assert "corpus.jsonl:2" in result.output


def test_validate_missing_folder_exits_2(runner, tmp_path: Path):
    result = invoke(runner, ["validate", tmp_path / "nowhere"])
    assert result.exit_code == 2
    assert "nowhere" in result.output


def test_evaluate_writes_json_and_run_matching_the_library(runner, tmp_path: Path):
    json_out, run_out = tmp_path / "out.json", tmp_path / "run.trec"
    result = invoke(
        runner,
        [
            "evaluate",
            BM25_CONFIG,
            "--corpus",
            ADI,
            "--split",
            "test",
            "--json",
            json_out,
            "--run-out",
            run_out,
            "--latency-sample",
            "3",
            "--state-dir",
            tmp_path / "state",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(json_out.read_text())
    assert payload["num_queries"] == 35 and payload["split"] == "test"
    assert payload["latency"]["latency_p50_ms"] <= payload["latency"]["latency_p95_ms"]

    corpus = load_corpus(ADI)
    queries = corpus.judged_queries("test")
    pipeline = Pipeline.build(load_pipeline_config(BM25_CONFIG), corpus, Cache(tmp_path / "in-process"))
    run = pipeline.search(queries).run
    expected = evaluate_run(run, corpus.split_qrels("test"))
    assert payload["metrics"]["nDCG@10"] == pytest.approx(expected.means["nDCG@10"], abs=1e-12)
    assert payload["metrics"].keys() == expected.means.keys()
    # a query with an empty ranking has no line in a TREC file
    assert read_trec_run(run_out) == {query_id: ranking for query_id, ranking in run.items() if ranking}


def test_search_prints_k_ranked_lines(runner, tmp_path: Path):
    query = "automatic indexing of documents"
    result = invoke(
        runner, ["search", BM25_CONFIG, query, "--corpus", ADI, "-k", "3", "--state-dir", tmp_path / "state"]
    )
    assert result.exit_code == 0, result.output
    matches = [m for line in result.output.splitlines() if (m := RANKED_LINE.match(line))]
    assert [int(m.group(1)) for m in matches] == [1, 2, 3]

    corpus = load_corpus(ADI)
    run = Pipeline.build(load_pipeline_config(BM25_CONFIG), corpus).search({"q": query}).run["q"]
    best = sorted(run, key=lambda d: (-run[d], d))[:3]
    assert [m.group(3) for m in matches] == best
    assert [float(m.group(2)) for m in matches] == pytest.approx([run[d] for d in best], abs=1e-4)


def test_search_with_no_match_says_so(runner, tmp_path: Path):
    result = invoke(runner, ["search", BM25_CONFIG, "the of and", "--corpus", ADI, "--state-dir", tmp_path / "state"])
    assert result.exit_code == 0, result.output
    assert "no document matches" in result.output


def test_bad_config_exits_2_naming_the_key(runner, tmp_path: Path):
    config = tmp_path / "bad.toml"
    config.write_text('name = "bad"\n[fusion]\nmethod = "bm25"\nwieght = 0.5\n')
    for command in (["evaluate", config, "--corpus", ADI], ["search", config, "query", "--corpus", ADI]):
        result = invoke(runner, [*command, "--state-dir", tmp_path / "state"])
        assert result.exit_code == 2, result.output
        assert "fusion.wieght" in result.output and "unknown key" in result.output
        assert "Traceback" not in result.output


def test_unknown_split_exits_2_listing_the_splits(runner, tmp_path: Path):
    result = invoke(
        runner, ["evaluate", BM25_CONFIG, "--corpus", ADI, "--split", "dev", "--state-dir", tmp_path / "state"]
    )
    assert result.exit_code == 2
    assert "dev" in result.output and "test" in result.output


def test_cache_info_and_clear(runner, tmp_path: Path):
    state = tmp_path / "state"
    cache = Cache(state / "cache")
    cache.embeddings("model", "document").get_or_encode(["a", "b"], lambda texts: [[1.0, 0.0]] * len(texts))
    files, size = cache.size_by_kind()["embeddings"]

    info = invoke(runner, ["cache", "info", "--state-dir", state])
    assert info.exit_code == 0, info.output
    assert f"embeddings: {files} files" in info.output

    cleared = invoke(runner, ["cache", "clear", "--state-dir", state])
    assert cleared.exit_code == 0, cleared.output
    assert f"freed {size / 1e6:.1f} MB" in cleared.output
    assert not (state / "cache").exists()
    assert "empty" in invoke(runner, ["cache", "info", "--state-dir", state]).output


@pytest.mark.slow
@pytest.mark.extra("mpnet")
def test_the_shipped_three_stage_config_evaluates_end_to_end(runner, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MODEL_DIR", str(tmp_path / "models"))  # mpnet is assembled here from its packages
    json_out = tmp_path / "out.json"
    result = invoke(
        runner,
        [
            "evaluate",
            REPO / "configs" / "three-stages.toml",
            "--corpus",
            ADI,
            "--json",
            json_out,
            "--latency-sample",
            "2",
            "--state-dir",
            tmp_path / "state",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(json_out.read_text())
    assert payload["num_queries"] == 35 and payload["metrics"]["nDCG@10"] > 0.3
    assert (tmp_path / "models" / "all-mpnet-base-v2").is_dir()
