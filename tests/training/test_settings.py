"""Trainer settings and cards: one typed model each, cards written with the keys they always had."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from workbench.training.settings import EncoderCard, EncoderSettings, RerankerCard, RerankerSettings

SHARED = {
    "base_model": "sentence-transformers/all-MiniLM-L6-v2",
    "base_model_fingerprint": "abc",
    "corpus": "corpora/adi",
    "corpus_fingerprint": "f00",
    "split": "test",
    "training_queries": 20,
    "validation_queries": 4,
    "excluded_queries": 10,
    "hard_negatives_per_group": 3,
    "queries_short_of_negatives": 0,
    "max_pairs": 48,
    "batch_size": 8,
    "epochs": 1,
    "learning_rate": 1e-4,
    "max_length": 256,
    "seed": 42,
    "validation_candidates": 20,
    "validation_ndcg_at_10": 0.5,
    "training_seconds": 12.5,
    "training_query_ids": ["1", "2"],
    "validation_query_ids": ["3"],
}
RERANKER_CARD = SHARED | {
    "pairs": 48,
    "positive_pairs": 12,
    "negative_pairs": 36,
    "loss": "MultipleNegativesRankingLoss",
    "in_batch_negatives": 2,
    "candidate_order_ndcg_at_10": 0.4,
}
ENCODER_CARD = SHARED | {
    "method": "fine-tuning",
    "loss": "MarginMSELoss",
    "teacher": "reranker",
    "teacher_fingerprint": "t",
    "groups": 12,
    "validation_ndcg_at_10_before": 0.45,
    "validation_ndcg_at_10_best_epoch": 0.5,
    "kept_base_weights": False,
}


@pytest.mark.parametrize(("card_class", "written"), [(RerankerCard, RERANKER_CARD), (EncoderCard, ENCODER_CARD)])
def test_a_card_as_written_before_reads_and_writes_the_same_keys(card_class, written):
    card = card_class.model_validate(written)

    assert card.model_dump() == written
    assert card.training_query_ids == ["1", "2"]


def test_settings_share_their_fields_and_keep_each_trainer_s_defaults():
    assert (RerankerSettings().epochs, RerankerSettings().batch_size, RerankerSettings().learning_rate) == (2, 8, 1e-4)
    assert (EncoderSettings().epochs, EncoderSettings().batch_size, EncoderSettings().learning_rate) == (1, 16, 2e-5)
    assert EncoderSettings(excluded_query_ids=["q1", "q1"]).excluded_query_ids == frozenset({"q1"})
    with pytest.raises(ValidationError):
        RerankerSettings(loss="mnrl")  # an encoder's setting
    with pytest.raises(ValidationError):
        EncoderSettings(epochs=0)
