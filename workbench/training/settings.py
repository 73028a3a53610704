"""What a trainer is asked to do (settings) and what it says it did (the card beside the model).

Both trainers (``training.reranker``, ``training.encoder``) take one frozen settings object: the
fields they share, plus their own (``RerankerSettings``, ``EncoderSettings``). Each writes a typed
card as JSON beside the model it saves (``workbench-reranker.json``, ``workbench-encoder.json``);
the JSON keeps the keys cards have always had, so folders trained before still read the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workbench.files import atomic_write_bytes, building_folder
from workbench.retrieval.config import DEFAULT_MODEL

EncoderLoss = Literal["mnrl", "margin-mse"]


class TrainingSettings(BaseModel):
    """The settings both trainers share. ``excluded_query_ids``: queries never to train or validate
    on (a study's held-out queries); ``max_pairs``: at most this many (query, document) pairs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str = DEFAULT_MODEL
    excluded_query_ids: frozenset[str] = frozenset()
    epochs: int = Field(ge=1)
    max_pairs: int | None = Field(default=None, ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    max_length: int = Field(default=256, ge=1)
    seed: int = 42


class RerankerSettings(TrainingSettings):
    """A cross-encoder's settings: ``batch_size`` counts groups; each relevant document must also
    outscore ``in_batch_negatives`` other groups' documents."""

    epochs: int = Field(default=2, ge=1)
    batch_size: int = Field(default=8, ge=1)
    learning_rate: float = Field(default=1e-4, gt=0)
    in_batch_negatives: int = Field(default=2, ge=0)


class EncoderSettings(TrainingSettings):
    """A bi-encoder's settings: ``loss`` ``mnrl`` (in-batch and hard negatives) or ``margin-mse``
    (distils ``teacher``, a cross-encoder, which that loss needs)."""

    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=16, ge=1)
    learning_rate: float = Field(default=2e-5, gt=0)
    loss: EncoderLoss = "mnrl"
    teacher: str | None = None


class TrainingCard(BaseModel):
    """What both trainers record beside a model: its base, the corpus and split it learnt from,
    the queries it saw (so a study can refuse a model that saw its held-out queries), the settings
    and the validation nDCG@10 of the saved epoch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str
    base_model_fingerprint: str
    loss: str
    corpus: str
    corpus_fingerprint: str
    split: str
    training_queries: int
    validation_queries: int
    excluded_queries: int
    hard_negatives_per_group: int
    queries_short_of_negatives: int
    max_pairs: int | None
    batch_size: int
    epochs: int
    learning_rate: float
    max_length: int
    seed: int
    validation_candidates: int
    validation_ndcg_at_10: float
    training_seconds: float
    training_query_ids: list[str]
    validation_query_ids: list[str]

    def write_with(self, model, out_dir: Path, card_name: str) -> None:
        """Saves ``model`` (sentence-transformers) and this card as ``card_name`` into ``out_dir``,
        written whole or not at all. Raises ``OutputError`` or ``OSError``."""
        with building_folder(out_dir) as building:
            model.save(str(building))
            atomic_write_bytes(building / card_name, json.dumps(self.model_dump(), indent=2).encode())


class RerankerCard(TrainingCard):
    """A re-ranker's card: its pairs, and the bar it must clear (the candidates' nDCG@10 in the
    order BM25 and dense retrieval gave them)."""

    pairs: int
    positive_pairs: int
    negative_pairs: int
    in_batch_negatives: int
    candidate_order_ndcg_at_10: float


class EncoderCard(TrainingCard):
    """An encoder's card: the teacher it distilled (if any), the validation nDCG@10 of the base
    model and of the best epoch, and whether the base weights were kept (no epoch beat them)."""

    method: str = "fine-tuning"
    teacher: str | None
    teacher_fingerprint: str | None
    groups: int
    validation_ndcg_at_10_before: float
    validation_ndcg_at_10_best_epoch: float
    kept_base_weights: bool


class DistilledEncoderCard(BaseModel):
    """The card of a static encoder distilled from a model's vocabulary (``training.distill``):
    no corpus and no queries, so no study has anything to check it against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    base_model: str
    base_model_fingerprint: str
    pca_dims: int | None
    dimensions: int
    vocabulary_size: int
    training_data: str
    seconds: float
    versions: dict[str, str | None]
