"""Training a real (tiny) cross-encoder on ADI: it loads, ranks, and never saw held-out queries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.errors import StudyError
from workbench.retrieval.config import PipelineConfig, RerankConfig
from workbench.retrieval.models import load_cross_encoder
from workbench.retrieval.pipeline import Pipeline, Resources
from workbench.study.config import load_study_config
from workbench.study.isolation import check_trained_models_against_splits
from workbench.study.splits import study_splits
from workbench.training.examples import build_training_examples
from workbench.training.reranker import CARD_NAME, train_reranker
from workbench.training.settings import RerankerSettings

pytestmark = pytest.mark.slow  # trains a cross-encoder

REPO = Path(__file__).resolve().parents[2]

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
    assert not ({q for q, _, _ in examples.groups} | set(examples.validation_query_ids)) & heldout_ids
    assert not set(examples.query_ids) & set(examples.validation_query_ids)
    assert {q for q, _, _ in examples.groups} == set(examples.query_ids)
    for query_id, relevant, negatives in examples.groups:
        assert qrels[query_id][relevant] > 0
        assert len(negatives) == 3 and not set(negatives) & set(qrels[query_id])
        assert negatives == [d for d in examples.candidates[query_id] if d not in qrels[query_id]][:3]
    relevant_count = sum(sum(1 for g in qrels[q].values() if g > 0) for q in examples.query_ids)
    assert examples.positive_pairs == relevant_count and examples.negative_pairs == 3 * relevant_count


@pytest.fixture(scope="module")
def trained(adi, heldout_ids, session_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reranker")
    settings = RerankerSettings(excluded_query_ids=heldout_ids, epochs=1, max_pairs=48)
    train_reranker(adi, "test", out, settings, cache=session_cache)
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


def test_cli_trains_saves_a_card_and_leaves_out_the_studys_heldout_queries(tmp_path, heldout_ids, adi):
    study = tmp_path / "study.toml"
    study.write_text(STUDY)
    out = tmp_path / "reranker"
    arguments = ["train-reranker", str(REPO / "corpora" / "adi"), "--split", "test", "--study", str(study)]
    arguments += ["--out", str(out), "--epochs", "1", "--max-pairs", "24", "--max-length", "64"]
    result = CliRunner().invoke(app, arguments + ["--state-dir", str(tmp_path / "state")])

    assert result.exit_code == 0, result.output
    assert "validation nDCG@10" in result.output and str(out.resolve()) in result.output
    assert "encoding with" in result.output, "mining shows its progress (the corpus is encoded first)"
    card = json.loads((out / CARD_NAME).read_text())
    assert card["max_length"] == 64 and card["epochs"] == 1 and card["pairs"] <= 24
    assert card["excluded_queries"] == len(heldout_ids)
    assert not set(card["training_query_ids"] + card["validation_query_ids"]) & heldout_ids
    assert set(card["training_query_ids"] + card["validation_query_ids"]) <= set(adi.judged_queries("test"))


def test_a_study_refuses_a_reranker_trained_on_its_heldout_queries_and_warns_on_tuning_ones(trained, adi, tmp_path):
    def splits_of(seed: int):
        path = tmp_path / f"study-{seed}.toml"
        path.write_text(STUDY + f"seed = {seed}\n")
        return study_splits(load_study_config(path), adi)

    card = json.loads((trained / CARD_NAME).read_text())
    same = splits_of(42)  # the split the re-ranker was trained for
    warnings = check_trained_models_against_splits(["none", str(trained)], adi, same)
    overlap = set(card["training_query_ids"]) & set(same.tune.queries)
    assert len(warnings) == 1 and "optimistic" in warnings[0]
    assert f"trained on {len(overlap)} of the {len(same.tune.queries)} tuning queries" in warnings[0]

    other = next(s for s in map(splits_of, range(1, 50)) if set(card["training_query_ids"]) & set(s.heldout.queries))
    with pytest.raises(StudyError, match="held-out queries"):
        check_trained_models_against_splits([str(trained)], adi, other)


def test_workbench_run_refuses_a_leaked_reranker_before_opening_any_store(trained, adi, tmp_path):
    card = json.loads((trained / CARD_NAME).read_text())
    seen = set(card["training_query_ids"])
    seed = next(
        seed
        for seed in range(1, 50)
        if seen & set(study_splits(load_study_config(write_rerank_study(tmp_path, trained, seed)), adi).heldout.queries)
    )
    state = tmp_path / "state"
    result = CliRunner().invoke(
        app, ["run", str(write_rerank_study(tmp_path, trained, seed)), "--state-dir", str(state), "--trials", "2"]
    )

    assert result.exit_code == 2, result.output
    assert "held-out queries" in result.output and "--study" in result.output
    assert not (state / "optuna.journal").exists() and not (state / "mlflow.db").exists()


def test_the_cross_encoder_is_loaded_once_per_process(trained):
    assert load_cross_encoder(str(trained)) is load_cross_encoder(str(trained))


def write_rerank_study(folder: Path, reranker: Path, seed: int) -> Path:
    path = folder / f"rerank-{seed}.toml"
    path.write_text(STUDY + f'seed = {seed}\n[space.rerank]\nmodel = ["none", "{reranker}"]\n')
    return path
