"""Fine-tuning a cross-encoder on a corpus' training queries, with hard negatives from BM25 and dense.

Only queries of the training split take part, minus any the caller holds out; a seeded slice of
them is kept back for early stopping. The result is a normal sentence-transformers folder plus a
card (``workbench-reranker.json``) saying how it was made.
"""

from __future__ import annotations

import time
from pathlib import Path

from workbench.progress import ProgressCallback
from workbench.retrieval.cache import Cache
from workbench.retrieval.corpus import Corpus
from workbench.retrieval.models import resolve_model
from workbench.training.examples import VALIDATION_CANDIDATES, card_basis, mine_examples, trainer_arguments
from workbench.training.settings import RerankerCard, RerankerSettings

CARD_NAME = "workbench-reranker.json"


def train_reranker(
    corpus: Corpus,
    split: str,
    out_dir: Path,
    settings: RerankerSettings = RerankerSettings(),
    cache: Cache | None = None,
    progress: ProgressCallback | None = None,
) -> RerankerCard:
    """Fine-tunes a CrossEncoder from ``settings.base_model`` and saves it with its card as ``out_dir``
    (written whole or not at all; an existing non-empty folder is refused).

    The loss is listwise (``MultipleNegativesRankingLoss``): each relevant document must outscore
    its query's hard negatives and ``settings.in_batch_negatives`` other groups' documents;
    ``settings.batch_size`` counts groups. Returns the card. The best epoch on the validation slice
    (nDCG@10 of re-ranking the mined candidates) is the one saved; the card also holds the nDCG@10
    of those candidates in the order retrieval gave them, the bar a useful re-ranker must clear.
    Raises ``StudyError`` or ``ModelError``.
    """
    import tempfile

    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss

    started = time.perf_counter()
    examples = mine_examples(corpus, split, settings, cache, progress)
    texts = {doc_id: doc.full_text for doc_id, doc in corpus.documents.items()}
    torch.manual_seed(settings.seed)
    model = CrossEncoder(
        str(resolve_model(settings.base_model)),
        num_labels=1,
        max_length=settings.max_length,
        device="cpu",
        trust_remote_code=False,
    )
    negatives_per_group = len(examples.groups[0][2])
    train_dataset = Dataset.from_dict(
        {
            "query": [corpus.queries[q] for q, _, _ in examples.groups],
            "positive": [texts[d] for _, d, _ in examples.groups],
        }
        | {
            f"negative_{rank}": [texts[negatives[rank]] for _, _, negatives in examples.groups]
            for rank in range(negatives_per_group)
        }
    )
    qrels = corpus.split_qrels(split)
    samples = [
        {
            "query": corpus.queries[q],
            "positive": [texts[d] for d, grade in qrels[q].items() if grade > 0],
            "documents": [texts[d] for d in examples.candidates[q][:VALIDATION_CANDIDATES]],
        }
        for q in examples.validation_query_ids
    ]
    evaluator = CrossEncoderRerankingEvaluator(
        samples=samples, at_k=10, name="validation", always_rerank_positives=False, write_csv=False
    )
    with tempfile.TemporaryDirectory(prefix="workbench-reranker-") as checkpoints:
        # Two groups of one query never share a batch, where one's relevant document would be
        # an in-batch negative of the other.
        arguments = trainer_arguments(
            CrossEncoderTrainingArguments,
            checkpoints,
            settings.epochs,
            settings.batch_size,
            settings.learning_rate,
            settings.seed,
            "validation_ndcg@10",
            "no_duplicates",
        )
        trainer = CrossEncoderTrainer(
            model=model,
            args=arguments,
            train_dataset=train_dataset,
            loss=MultipleNegativesRankingLoss(model, num_negatives=settings.in_batch_negatives),
            evaluator=evaluator,
        )
        trainer.train()
        validation = trainer.state.best_metric
        candidate_order = next(
            entry["eval_validation_base_ndcg@10"]
            for entry in reversed(trainer.state.log_history)
            if "eval_validation_base_ndcg@10" in entry
        )
    card = RerankerCard(
        **card_basis(corpus, split, examples, settings),
        pairs=examples.positive_pairs + examples.negative_pairs,
        positive_pairs=examples.positive_pairs,
        negative_pairs=examples.negative_pairs,
        loss="MultipleNegativesRankingLoss",
        hard_negatives_per_group=negatives_per_group,
        in_batch_negatives=settings.in_batch_negatives,
        training_seconds=round(time.perf_counter() - started, 1),
        validation_ndcg_at_10=validation,
        candidate_order_ndcg_at_10=candidate_order,  # the same candidates as BM25 and dense ranked them
    )
    card.write_with(model, out_dir, CARD_NAME)
    return card
