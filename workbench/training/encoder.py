"""Fine-tuning the bi-encoder of dense retrieval on a corpus' training queries.

The pairs are the re-ranker's (``training.examples``): each relevant document with its query's hard
negatives from BM25 and dense, minus the queries the caller holds out, and a seeded validation
slice. Two losses:

- ``mnrl``: ``MultipleNegativesRankingLoss``; the relevant document must outscore the query's hard
  negatives and every other document in the batch.
- ``margin-mse``: distillation (``MarginMSELoss``); the encoder learns a teacher cross-encoder's
  margins between the relevant document and each hard negative.

The result is a sentence-transformers folder that any config or study space can name, and a card
(``workbench-encoder.json``) with the validation nDCG@10 before and after.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError
from workbench.progress import ProgressCallback
from workbench.retrieval.cache import Cache
from workbench.retrieval.corpus import Corpus
from workbench.retrieval.models import load_cross_encoder, model_fingerprint, new_encoder
from workbench.training.examples import (
    VALIDATION_CANDIDATES,
    TrainingExamples,
    card_basis,
    mine_examples,
    trainer_arguments,
)
from workbench.training.settings import EncoderCard, EncoderSettings

CARD_NAME = "workbench-encoder.json"
LOSS_NAMES = {"mnrl": "MultipleNegativesRankingLoss", "margin-mse": "MarginMSELoss"}
VALIDATION_METRIC = "validation_ndcg@10"


def teacher_margins(
    teacher: str, corpus: Corpus, examples: TrainingExamples, batch_size: int = 32
) -> list[list[float]]:
    """Returns, per group, the teacher's score of the relevant document minus its score of each hard negative."""
    model = load_cross_encoder(teacher)
    texts = {doc_id: doc.full_text for doc_id, doc in corpus.documents.items()}
    pairs = [
        (corpus.queries[query_id], texts[doc_id])
        for query_id, relevant, negatives in examples.groups
        for doc_id in (relevant, *negatives)
    ]
    scores = [float(score) for score in model.predict(pairs, batch_size=batch_size, show_progress_bar=False)]
    width = 1 + len(examples.groups[0][2])
    return [
        [scores[start] - negative for negative in scores[start + 1 : start + width]]
        for start in range(0, len(scores), width)
    ]


def _training_dataset(corpus: Corpus, examples: TrainingExamples, margins: list[list[float]] | None):
    from datasets import Dataset

    texts = {doc_id: doc.full_text for doc_id, doc in corpus.documents.items()}
    columns: dict[str, list[Any]] = {
        "query": [corpus.queries[q] for q, _, _ in examples.groups],
        "positive": [texts[d] for _, d, _ in examples.groups],
    }
    for rank in range(len(examples.groups[0][2])):
        columns[f"negative_{rank}"] = [texts[negatives[rank]] for _, _, negatives in examples.groups]
    if margins is not None:
        columns["label"] = margins  # the trainer hands the last column, "label", to the loss
    return Dataset.from_dict(columns)


def _validation_evaluator(corpus: Corpus, split: str, examples: TrainingExamples):
    """Ranks, per validation query, its relevant documents among the top mined candidates."""
    from sentence_transformers.sentence_transformer.evaluation import RerankingEvaluator

    qrels = corpus.split_qrels(split)
    texts = {doc_id: doc.full_text for doc_id, doc in corpus.documents.items()}
    samples = []
    for query_id in examples.validation_query_ids:
        relevant = [doc_id for doc_id, grade in qrels[query_id].items() if grade > 0]
        candidates = examples.candidates[query_id][:VALIDATION_CANDIDATES]
        samples.append(
            {
                "query": corpus.queries[query_id],
                "positive": [texts[d] for d in relevant],
                "negative": [texts[d] for d in candidates if d not in qrels[query_id]],
            }
        )
    return RerankingEvaluator(samples=samples, at_k=10, name="validation", write_csv=False)


def train_encoder(
    corpus: Corpus,
    split: str,
    out_dir: Path,
    settings: EncoderSettings = EncoderSettings(),
    cache: Cache | None = None,
    progress: ProgressCallback | None = None,
) -> EncoderCard:
    """Fine-tunes a SentenceTransformer from ``settings.base_model`` and saves it with its card as ``out_dir``.

    ``settings.batch_size`` counts groups (a query, its relevant document and its hard negatives). The best
    epoch on the validation slice is saved, or the base model's weights when no epoch beat them (the
    card says which). ``out_dir`` is written whole or not at all. Returns the card. Raises
    ``ConfigError`` (``margin-mse`` without a teacher), ``StudyError`` or ``ModelError``.
    """
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss, MultipleNegativesRankingLoss

    loss, teacher = settings.loss, settings.teacher
    if loss == "margin-mse" and teacher is None:
        raise ConfigError("loss 'margin-mse' distils a cross-encoder: give --teacher (e.g. a train-reranker folder)")
    started = time.perf_counter()
    examples = mine_examples(corpus, split, settings, cache, progress)
    margins = teacher_margins(teacher, corpus, examples) if teacher is not None and loss == "margin-mse" else None
    torch.manual_seed(settings.seed)
    model = new_encoder(settings.base_model, "cpu")  # the trainer runs on the CPU (use_cpu)
    model.max_seq_length = settings.max_length
    evaluator = _validation_evaluator(corpus, split, examples)
    before = float(evaluator(model)[VALIDATION_METRIC])
    with tempfile.TemporaryDirectory(prefix="workbench-encoder-") as checkpoints:
        # With in-batch negatives, two groups of one query must not share a batch: one's relevant
        # document would be the other's negative.
        arguments = trainer_arguments(
            SentenceTransformerTrainingArguments,
            checkpoints,
            settings.epochs,
            settings.batch_size,
            settings.learning_rate,
            settings.seed,
            VALIDATION_METRIC,
            "no_duplicates" if loss == "mnrl" else "batch_sampler",
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=arguments,
            train_dataset=_training_dataset(corpus, examples, margins),
            loss=MultipleNegativesRankingLoss(model) if loss == "mnrl" else MarginMSELoss(model),
            evaluator=evaluator,
        )
        trainer.train()
        after = float(trainer.state.best_metric)
    kept_base = after <= before
    if kept_base:
        model = new_encoder(settings.base_model, "cpu")  # the trainer runs on the CPU (use_cpu)
        model.max_seq_length = settings.max_length
    card = EncoderCard(
        **card_basis(corpus, split, examples, settings),
        method="fine-tuning",
        loss=LOSS_NAMES[loss],
        teacher=teacher,
        teacher_fingerprint=model_fingerprint(teacher) if teacher else None,
        groups=len(examples.groups),
        hard_negatives_per_group=len(examples.groups[0][2]),
        validation_ndcg_at_10_before=before,
        validation_ndcg_at_10=max(after, before),
        validation_ndcg_at_10_best_epoch=after,
        kept_base_weights=kept_base,
        training_seconds=round(time.perf_counter() - started, 1),
    )
    card.write_with(model, out_dir, CARD_NAME)
    return card
