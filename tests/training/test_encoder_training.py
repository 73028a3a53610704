"""Training a real (tiny) bi-encoder on ADI with each loss: it loads, ranks, and never saw held-out queries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.errors import ConfigError, StudyError
from workbench.evaluation.metrics import evaluate
from workbench.retrieval.config import DEFAULT_MODEL, DenseConfig, PipelineConfig
from workbench.retrieval.models import load_cross_encoder, resolve_model
from workbench.retrieval.pipeline import Pipeline, Resources
from workbench.study.config import load_study_config
from workbench.study.isolation import check_trained_models_against_splits
from workbench.study.splits import study_splits
from workbench.training.encoder import CARD_NAME, teacher_margins, train_encoder
from workbench.training.settings import EncoderSettings
from workbench.training.examples import build_training_examples

pytestmark = pytest.mark.slow  # trains a bi-encoder

REPO = Path(__file__).resolve().parents[2]
ADI = REPO / "corpora" / "adi"

STUDY = f"""
name = "encoder-training"
corpus = "{ADI}"
tune_split = "test"
heldout_fraction = 0.3
"""

TINY = {"epochs": 1, "max_pairs": 40, "max_length": 64, "batch_size": 4, "learning_rate": 1e-4}


@pytest.fixture(scope="module")
def heldout_ids(adi, tmp_path_factory) -> set[str]:
    path = tmp_path_factory.mktemp("study") / "study.toml"
    path.write_text(STUDY)
    return set(study_splits(load_study_config(path), adi).heldout.queries)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A cross-encoder made from the bundled MiniLM weights (a seeded new head): a teacher to distil."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("teacher") / "cross-encoder"
    CrossEncoder(str(resolve_model(DEFAULT_MODEL)), num_labels=1, device="cpu").save(str(folder))
    return folder


@pytest.fixture(scope="module")
def trained(adi, heldout_ids, session_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("encoders") / "mnrl"
    train_encoder(adi, "test", out, EncoderSettings(excluded_query_ids=heldout_ids, **TINY), cache=session_cache)
    return out


def test_the_encoder_loads_ranks_and_never_saw_heldout_queries(trained, adi, heldout_ids, session_cache):
    card = json.loads((trained / CARD_NAME).read_text())
    assert card["loss"] == "MultipleNegativesRankingLoss" and card["corpus_fingerprint"] == adi.fingerprint
    assert 0 < card["groups"] and card["groups"] * (1 + card["hard_negatives_per_group"]) <= TINY["max_pairs"]
    assert 0 <= card["validation_ndcg_at_10_before"] <= card["validation_ndcg_at_10"] <= 1
    assert card["kept_base_weights"] == (
        card["validation_ndcg_at_10_best_epoch"] <= card["validation_ndcg_at_10_before"]
    )
    assert not set(card["training_query_ids"] + card["validation_query_ids"]) & heldout_ids
    assert card["excluded_queries"] == len(heldout_ids)

    config = PipelineConfig(name="tuned-encoder", retrievers=(DenseConfig(model=str(trained)),))
    queries = {query_id: adi.queries[query_id] for query_id in sorted(heldout_ids)}
    run = Pipeline(config, Resources(adi, session_cache)).search(queries).run
    qrels = {query_id: adi.split_qrels("test")[query_id] for query_id in queries}
    tuned = evaluate(run, qrels, ["ndcg@10"]).means["nDCG@10"]
    shuffled = {  # the same documents in an order unrelated to the queries
        query_id: {doc_id: float(rank) for rank, doc_id in enumerate(sorted(adi.documents))} for query_id in queries
    }
    assert tuned > evaluate(shuffled, qrels, ["ndcg@10"]).means["nDCG@10"] + 0.1


def test_margin_mse_learns_the_teachers_margins(adi, heldout_ids, teacher, session_cache, tmp_path):
    examples = build_training_examples(adi, "test", heldout_ids, max_pairs=TINY["max_pairs"], cache=session_cache)
    margins = teacher_margins(str(teacher), adi, examples)
    query_id, relevant, negatives = examples.groups[0]
    scores = load_cross_encoder(str(teacher)).predict(
        [(adi.queries[query_id], adi.documents[doc_id].full_text) for doc_id in (relevant, *negatives)]
    )
    assert margins[0] == pytest.approx([scores[0] - score for score in scores[1:]], abs=1e-4)
    assert len(margins) == len(examples.groups)

    settings = EncoderSettings(excluded_query_ids=heldout_ids, loss="margin-mse", teacher=str(teacher), **TINY)
    card = train_encoder(adi, "test", tmp_path / "distilled", settings, cache=session_cache)
    assert card.loss == "MarginMSELoss" and card.teacher == str(teacher)
    assert json.loads((tmp_path / "distilled" / CARD_NAME).read_text()) == card.model_dump()
    assert (tmp_path / "distilled" / "config_sentence_transformers.json").is_file()


def test_margin_mse_needs_a_teacher(adi, tmp_path):
    with pytest.raises(ConfigError, match="--teacher"):
        train_encoder(adi, "test", tmp_path / "m", EncoderSettings(loss="margin-mse"))
    assert not (tmp_path / "m").exists()


def test_a_study_refuses_an_encoder_trained_on_its_heldout_queries(trained, adi, tmp_path):
    card = json.loads((trained / CARD_NAME).read_text())
    seen = set(card["training_query_ids"])

    def splits_of(seed: int):
        path = tmp_path / f"study-{seed}.toml"
        path.write_text(STUDY + f"seed = {seed}\n")
        return study_splits(load_study_config(path), adi)

    leaking = next(s for s in map(splits_of, range(1, 50)) if seen & set(s.heldout.queries))
    with pytest.raises(StudyError, match=r"encoder .* held-out queries.*train-encoder"):
        check_trained_models_against_splits([DEFAULT_MODEL, str(trained)], adi, leaking)
    warnings = check_trained_models_against_splits([str(trained)], adi, splits_of(42))
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: encoder {trained}")


def test_cli_refuses_bad_requests_before_any_work(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    study = tmp_path / "study.toml"
    study.write_text(STUDY.replace("heldout_fraction = 0.3", 'heldout_split = "test"').replace('"test"', '"train"', 1))
    cases = {
        "not an empty folder": ["--out", str(taken)],
        "--teacher": ["--out", str(tmp_path / "a"), "--loss", "margin-mse"],
        "is not one of": ["--out", str(tmp_path / "b"), "--loss", "triplet"],
        "held-out split": ["--out", str(tmp_path / "c"), "--study", str(study)],
    }
    for message, arguments in cases.items():
        result = CliRunner().invoke(app, ["train-encoder", str(ADI), "--split", "test", *arguments])
        assert result.exit_code == 2, (message, result.output)
        assert message in result.output and "Traceback" not in result.output
    assert (taken / "keep.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "study.toml",
        "taken",
    ]


def test_cli_trains_and_says_where_the_model_is(tmp_path, heldout_ids):
    study = tmp_path / "study.toml"
    study.write_text(STUDY)
    out = tmp_path / "encoder"
    arguments = ["train-encoder", str(ADI), "--split", "test", "--study", str(study), "--out", str(out)]
    arguments += ["--max-pairs", "20", "--max-length", "48", "--batch-size", "4", "--state-dir", str(tmp_path / "s")]
    result = CliRunner().invoke(app, arguments)

    assert result.exit_code == 0, result.output
    assert "validation nDCG@10" in result.output and str(out.resolve()) in result.output
    card = json.loads((out / CARD_NAME).read_text())
    assert card["max_length"] == 48 and not set(card["training_query_ids"]) & heldout_ids
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
