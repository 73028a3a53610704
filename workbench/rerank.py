"""Re-ranking the head of a run with a sentence-transformers CrossEncoder."""

from __future__ import annotations

from collections.abc import Mapping

from workbench.cache import text_key
from workbench.models import load_cross_encoder, model_fingerprint
from workbench.types import Run


class Reranker:
    """Scores (query, document) pairs with a cross-encoder, remembering scores it has computed."""

    def __init__(self, model: str, batch_size: int = 32):
        self.model = model
        self.batch_size = batch_size
        self.model_fingerprint = model_fingerprint(model)
        self._scores: dict[tuple[bytes, bytes], float] = {}

    def score_pairs(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Returns one relevance score per (query text, document text) pair."""
        keys = [(text_key(query), text_key(doc)) for query, doc in pairs]
        todo = [i for i, key in enumerate(keys) if key not in self._scores]
        if todo:
            model = load_cross_encoder(self.model)
            scores = model.predict(
                [pairs[i] for i in todo], batch_size=self.batch_size, show_progress_bar=False
            )
            for i, score in zip(todo, scores):
                self._scores[keys[i]] = float(score)
        return [self._scores[key] for key in keys]

    def rerank(self, run: Run, query_texts: Mapping[str, str], doc_texts: Mapping[str, str], depth: int) -> Run:
        """Returns the run with each query's top ``depth`` documents reordered by the cross-encoder.

        Documents below the depth keep their order and stay below every re-ranked one.
        """
        heads: dict[str, list[str]] = {}
        pairs: list[tuple[str, str]] = []
        for query_id, doc_scores in run.items():
            ranked = sorted(doc_scores, key=lambda doc_id: (-doc_scores[doc_id], doc_id))
            heads[query_id] = ranked[:depth]
            pairs.extend((query_texts[query_id], doc_texts[doc_id]) for doc_id in heads[query_id])
        scores = iter(self.score_pairs(pairs))
        reranked: Run = {}
        for query_id, doc_scores in run.items():
            head_scores = {doc_id: next(scores) for doc_id in heads[query_id]}
            tail = [doc_id for doc_id in doc_scores if doc_id not in head_scores]
            floor = min(head_scores.values(), default=0.0)
            tail_ranked = sorted(tail, key=lambda doc_id: (-doc_scores[doc_id], doc_id))
            reranked[query_id] = head_scores | {
                doc_id: floor - 1.0 - position for position, doc_id in enumerate(tail_ranked)
            }
        return reranked
