"""Re-ranking the head of a run: the ``Reranker`` protocol the pipeline calls, and its
sentence-transformers CrossEncoder implementation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from workbench.retrieval.cache import Cache, text_key
from workbench.retrieval.config import RerankConfig
from workbench.retrieval.fusion import normalize_minmax, ranked
from workbench.retrieval.models import load_cross_encoder, model_fingerprint
from workbench.types import Run

PAIR_SEPARATOR = "\x1f"  # joins query and document into one cache key; never occurs in normal text


@runtime_checkable
class Reranker(Protocol):
    """A re-ranker: reorders the head of a run by its own relevance scores."""

    def rerank(
        self,
        run: Run,
        query_texts: Mapping[str, str],
        doc_texts: Mapping[str, str],
        depth: int,
        use_cache: bool = True,
        weight: float = 1.0,
    ) -> Run:
        """Returns the run with each query's top ``depth`` documents reordered (see
        ``CrossEncoderReranker.rerank`` for ``weight``); documents below the depth keep their order
        below every re-ranked one. With ``use_cache`` False, scores as a first-time query would be."""
        ...


def reranker_for(config: RerankConfig, cache: Cache | None = None) -> Reranker:
    """Returns the re-ranker ``config`` describes (a cross-encoder)."""
    return CrossEncoderReranker(config.model, config.batch_size, cache, config.device)


class CrossEncoderReranker:
    """Scores (query, document) pairs with a cross-encoder; scores are cached by the pair's content."""

    def __init__(self, model: str, batch_size: int = 32, cache: Cache | None = None, device: str = "auto"):
        self.model = model
        self.batch_size = batch_size
        self.device = device  # where the model runs; not part of the score cache's key
        self.model_fingerprint = model_fingerprint(model)
        self._store = cache.embeddings(self.model_fingerprint, "rerank-score") if cache is not None else None
        self._scores: dict[bytes, float] = {}

    def _predict(self, joined_pairs: list[str]) -> np.ndarray:
        model = load_cross_encoder(self.model, self.device)
        pairs = [tuple(joined.split(PAIR_SEPARATOR, 1)) for joined in joined_pairs]
        scores = model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        return np.asarray(scores, dtype=np.float32).reshape(len(pairs), 1)

    def score_pairs(self, pairs: list[tuple[str, str]], use_cache: bool = True) -> list[float]:
        """Returns one relevance score per (query text, document text) pair."""
        joined = [f"{query}{PAIR_SEPARATOR}{doc}" for query, doc in pairs]
        if not use_cache:
            return self._predict(joined)[:, 0].tolist() if joined else []
        if self._store is not None:
            return self._store.get_or_encode(joined, self._predict)[:, 0].tolist() if joined else []
        keys = [text_key(pair) for pair in joined]
        todo = {key: pair for key, pair in zip(keys, joined) if key not in self._scores}
        if todo:
            for key, score in zip(todo, self._predict(list(todo.values()))[:, 0].tolist()):
                self._scores[key] = score
        return [self._scores[key] for key in keys]

    def rerank(
        self,
        run: Run,
        query_texts: Mapping[str, str],
        doc_texts: Mapping[str, str],
        depth: int,
        use_cache: bool = True,
        weight: float = 1.0,
    ) -> Run:
        """Returns the run with each query's top ``depth`` documents reordered by the cross-encoder.

        With ``weight`` below 1 the head is ordered by ``weight`` times the min-max normalised
        cross-encoder score plus the rest times the normalised score the run gave; at 0 nothing is
        scored. Documents below the depth keep their order and stay below every re-ranked one.
        """
        if weight == 0.0:
            return run  # the first stage's order, and no pair worth scoring
        heads: dict[str, list[str]] = {}
        pairs: list[tuple[str, str]] = []
        for query_id, doc_scores in run.items():
            heads[query_id] = [doc_id for doc_id, _ in ranked(doc_scores)[:depth]]
            pairs.extend((query_texts[query_id], doc_texts[doc_id]) for doc_id in heads[query_id])
        scores = iter(self.score_pairs(pairs, use_cache))
        reranked: Run = {}
        for query_id, doc_scores in run.items():
            head_scores = {doc_id: next(scores) for doc_id in heads[query_id]}
            if weight < 1.0:
                head_scores = _interpolate(head_scores, {doc_id: doc_scores[doc_id] for doc_id in head_scores}, weight)
            tail = [doc_id for doc_id in doc_scores if doc_id not in head_scores]
            floor = min(head_scores.values(), default=0.0)
            tail_ranked = [doc_id for doc_id, _ in ranked({doc_id: doc_scores[doc_id] for doc_id in tail})]
            reranked[query_id] = head_scores | {
                doc_id: floor - 1.0 - position for position, doc_id in enumerate(tail_ranked)
            }
        return reranked


def _interpolate(
    reranker_scores: dict[str, float], first_stage_scores: dict[str, float], weight: float
) -> dict[str, float]:
    """Returns ``weight`` × reranker + (1 − ``weight``) × first stage, each min-max normalised."""
    reranker_norm = normalize_minmax({"": reranker_scores})[""]
    first_stage_norm = normalize_minmax({"": first_stage_scores})[""]
    return {
        doc_id: weight * reranker_norm[doc_id] + (1.0 - weight) * first_stage_norm[doc_id] for doc_id in reranker_scores
    }
