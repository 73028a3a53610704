"""Training examples mined from a corpus: a split's judged queries, each relevant document with the
query's hard negatives (top BM25 and dense documents that are not judged), and a validation slice.

Shared by the re-ranker and encoder trainers, so both learn from the same pairs.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench.errors import StudyError
from workbench.progress import ProgressCallback
from workbench.retrieval.cache import Cache
from workbench.retrieval.corpus import Corpus
from workbench.retrieval.fusion import ranked
from workbench.retrieval.pipeline import bm25_and_dense_runs

if TYPE_CHECKING:
    from workbench.training.settings import TrainingSettings

VALIDATION_CANDIDATES = 20  # mined documents ranked per validation query: the depth a study would re-rank


@dataclass(frozen=True)
class TrainingExamples:
    """One group per (query, relevant document): that document and the query's hard negatives."""

    query_ids: list[str]  # queries whose groups are trained on
    validation_query_ids: list[str]
    groups: list[tuple[str, str, list[str]]]  # (query id, relevant doc id, hard negative doc ids)
    candidates: dict[str, list[str]]  # query id → mined candidate doc ids (for validation ranking)
    short_of_negatives: int  # training queries left out for having too few unjudged candidates

    @property
    def positive_pairs(self) -> int:
        """(query, relevant document) pairs: one per group."""
        return len(self.groups)

    @property
    def negative_pairs(self) -> int:
        """(query, hard negative) pairs over all groups."""
        return sum(len(negatives) for _, _, negatives in self.groups)


def mined_candidates(
    corpus: Corpus, queries: dict[str, str], depth: int, cache: Cache | None, progress: ProgressCallback | None = None
) -> dict[str, list[str]]:
    """Returns, per query, BM25's and dense retrieval's top documents interleaved, best first."""
    runs = bm25_and_dense_runs(corpus, queries, depth, cache, progress)
    candidates: dict[str, list[str]] = {}
    for query_id in queries:
        rankings = [ranked(run.get(query_id, {})) for run in runs]
        merged: list[str] = []
        for rank in range(depth):
            for ranking in rankings:
                if rank < len(ranking) and ranking[rank][0] not in merged:
                    merged.append(ranking[rank][0])
        candidates[query_id] = merged
    return candidates


def build_training_examples(
    corpus: Corpus,
    split: str,
    excluded_query_ids: Collection[str] = (),
    negatives_per_query: int = 3,
    mine_depth: int = 30,
    validation_fraction: float = 0.1,
    max_pairs: int | None = None,
    seed: int = 42,
    cache: Cache | None = None,
    progress: ProgressCallback | None = None,
) -> TrainingExamples:
    """Returns a group per relevant document of ``split``'s qrels, with the query's hard negatives:
    its top-mined documents that are not judged.

    Queries in ``excluded_query_ids`` never appear; nor do queries with fewer than
    ``negatives_per_query`` unjudged candidates (every group must be the same size).
    ``max_pairs`` caps the (query, document) pairs by dropping whole queries (seeded).
    Raises ``StudyError`` when too few queries remain.
    """
    qrels = corpus.split_qrels(split)
    queries = {qid: text for qid, text in corpus.judged_queries(split).items() if qid not in set(excluded_query_ids)}
    if len(queries) < 2:
        raise StudyError(f"split '{split}' has {len(queries)} usable judged queries: need at least 2 to train")
    order = sorted(queries)
    random.Random(seed).shuffle(order)
    validation_count = max(1, round(len(order) * validation_fraction))
    validation_ids, train_ids = order[:validation_count], order[validation_count:]
    candidates = mined_candidates(corpus, queries, mine_depth, cache, progress)
    groups: list[tuple[str, str, list[str]]] = []
    used: list[str] = []
    short = 0
    for query_id in train_ids:
        negatives = [doc_id for doc_id in candidates[query_id] if doc_id not in qrels[query_id]][:negatives_per_query]
        if len(negatives) < negatives_per_query:
            short += 1
            continue
        relevant = [doc_id for doc_id, grade in qrels[query_id].items() if grade > 0]
        if max_pairs is not None and (len(groups) + len(relevant)) * (1 + negatives_per_query) > max_pairs:
            break
        groups.extend((query_id, doc_id, negatives) for doc_id in relevant)
        used.append(query_id)
    if not groups:
        raise StudyError(
            f"no training pairs from split '{split}': a query's group takes {1 + negatives_per_query} pairs "
            f"per relevant document (max_pairs {max_pairs})"
        )
    return TrainingExamples(used, validation_ids, groups, candidates, short)


def trainer_arguments(
    arguments_class,
    checkpoints: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    metric: str,
    batch_sampler: str,
):
    """Returns sentence-transformers training arguments (``arguments_class``) shared by both trainers: CPU,
    one evaluation and checkpoint per epoch, and the epoch best on ``metric`` loaded at the end."""
    return arguments_class(
        output_dir=checkpoints,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=0.1,  # a float is a fraction of the training steps
        seed=seed,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model=f"eval_{metric}",
        logging_steps=10,
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        batch_sampler=batch_sampler,
    )


def mine_examples(
    corpus: Corpus,
    split: str,
    settings: TrainingSettings,
    cache: Cache | None = None,
    progress: ProgressCallback | None = None,
) -> TrainingExamples:
    """``build_training_examples`` with what a trainer's settings say: the queries to leave out, the
    number of pairs and the seed. Raises as ``build_training_examples`` does."""
    return build_training_examples(
        corpus,
        split,
        settings.excluded_query_ids,
        max_pairs=settings.max_pairs,
        seed=settings.seed,
        cache=cache,
        progress=progress,
    )


def card_basis(corpus: Corpus, split: str, examples: TrainingExamples, settings: TrainingSettings) -> dict:
    """The fields every trained model's card shares: base model, corpus, split, queries and settings."""
    from workbench.retrieval.models import model_fingerprint

    return {
        "base_model": settings.base_model,
        "base_model_fingerprint": model_fingerprint(settings.base_model),
        "corpus": str(corpus.path),
        "corpus_fingerprint": corpus.fingerprint,
        "split": split,
        "training_queries": len(examples.query_ids),
        "validation_queries": len(examples.validation_query_ids),
        "excluded_queries": len(settings.excluded_query_ids),
        "queries_short_of_negatives": examples.short_of_negatives,
        "max_pairs": settings.max_pairs,
        "batch_size": settings.batch_size,
        "epochs": settings.epochs,
        "learning_rate": settings.learning_rate,
        "max_length": settings.max_length,
        "seed": settings.seed,
        "validation_candidates": VALIDATION_CANDIDATES,
        "training_query_ids": examples.query_ids,
        "validation_query_ids": examples.validation_query_ids,
    }
