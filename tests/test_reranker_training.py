"""Training a real (tiny) cross-encoder on ADI: it loads, ranks, and never saw held-out queries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.config import PipelineConfig, RerankConfig
from workbench.pipeline import Pipeline, Resources
from workbench.reranker_training import CARD_NAME, build_training_examples, train_reranker
from workbench.splits import study_splits
from workbench.study_config import load_study_config

REPO = Path(__file__).resolve().parent.parent

STUDY = f"""
name = "rerank-training"
corpus = "{REPO / "corpora" / "adi"}"
tune_split = "test"
heldout_fraction = 0.3
"""


@pytest.fixture(scope="module")
def heldout_ids(adi, tmp_path_factory) -> set[str]:
    path = tmp_path_factory.mktemp("study") / "study.toml"
    path.write_text(STUDY)
    return set(study_splits(load_study_config(path), adi).heldout.queries)


def test_examples_exclude_heldout_queries_and_judged_negatives(adi, heldout_ids, session_cache):
    examples = build_training_examples(adi, "test", heldout_ids, negatives_per_query=3, cache=session_cache)
    qrels = adi.split_qrels("test")
    assert not ({q for q, _, _ in examples.pairs} | set(examples.validation_query_ids)) & heldout_ids
    assert not set(examples.query_ids) & set(examples.validation_query_ids)
    for query_id, doc_id, label in examples.pairs:
        if label == 1.0:
            assert qrels[query_id][doc_id] > 0
        else:
            assert doc_id not in qrels[query_id]
    assert sum(1 for *_, label in examples.pairs if label == 0.0) <= 3 * len(examples.query_ids)


@pytest.fixture(scope="module")
def trained(adi, heldout_ids, session_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reranker")
    train_reranker(adi, "test", out, excluded_query_ids=heldout_ids, epochs=1, max_pairs=48, cache=session_cache)
    return out


def test_trained_model_loads_ranks_and_records_its_training(trained, adi, heldout_ids, session_cache):
    card = json.loads((trained / CARD_NAME).read_text())
    assert card["corpus_fingerprint"] == adi.fingerprint and card["split"] == "test"
    assert 0 < card["pairs"] <= 48 and card["positive_pairs"] + card["negative_pairs"] == card["pairs"]
    assert 0 <= card["validation_ndcg_at_10"] <= 1 and 0 < card["candidate_order_ndcg_at_10"] <= 1
    assert not set(card["training_query_ids"]) & heldout_ids
    assert not set(card["validation_query_ids"]) & heldout_ids
    config = PipelineConfig(rerank=RerankConfig(model=str(trained), depth=5)).model_copy(
        update={"fusion": PipelineConfig().fusion.model_copy(update={"method": "bm25"})}
    )
    queries = {q: adi.queries[q] for q in sorted(heldout_ids)[:3]}
    run = Pipeline(config, Resources(adi, session_cache)).search(queries).run
    for doc_scores in run.values():
        ranked = sorted(doc_scores.values(), reverse=True)
        assert len(ranked) > 5 and ranked[4] > ranked[5]  # the re-ranked head sits above the rest


def test_cli_refuses_the_studys_heldout_split(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text(
        STUDY.replace("heldout_fraction = 0.3", 'heldout_split = "test"').replace(
            'tune_split = "test"', 'tune_split = "train"'
        )
    )
    result = CliRunner().invoke(
        app,
        [
            "train-reranker",
            str(REPO / "corpora" / "adi"),
            "--split",
            "test",
            "--study",
            str(study),
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert result.exit_code == 2
    assert "held-out split" in result.output
    assert not (tmp_path / "m").exists()
