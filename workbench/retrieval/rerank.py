"""Re-ranking the head of a run: the ``Reranker`` protocol the pipeline calls, ``RerankerBase``
(everything but the scores, for a re-ranker that scores (query, document) pairs), and the
sentence-transformers CrossEncoder built on it.

``[rerank] kind`` names a re-ranker through the component registry (``components.py``), as
``retrievers`` name first stages: ``cross-encoder`` (the default), a registered name, an entry
point or ``module:attribute``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from workbench.retrieval.cache import Cache, content_address, text_key
from workbench.retrieval.components import ComponentBase, component_identity, component_of
from workbench.retrieval.config import RerankConfig
from workbench.retrieval.config_base import RerankerConfig
from workbench.retrieval.fusion import normalize_minmax, ranked
from workbench.retrieval.models import load_cross_encoder, model_fingerprint
from workbench.types import Run

PAIR_SEPARATOR = "\x1f"  # joins query and document into one cache key; never occurs in normal text


@runtime_checkable
class Reranker(Protocol):
    """A re-ranker: reorders the head of a run by its own relevance scores. Built as
    ``cls(config, cache)``, ``config`` being a ``config_type`` and ``cache`` the disk cache or None.

    ``config_type`` is its pydantic config (a ``RerankerConfig``: ``kind``, ``depth``, ``weight`` and
    the re-ranker's own settings); ``version`` names the code, bumped when its scores change (cached
    scores are addressed by it). ``RerankerBase`` supplies all but the scores.
    """

    config_type: ClassVar[type[RerankerConfig]]
    version: ClassVar[str]

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
        ``RerankerBase.rerank`` for ``weight``); documents below the depth keep their order
        below every re-ranked one. With ``use_cache`` False, scores as a first-time query would be."""
        ...

    @classmethod
    def models(cls, config: Any) -> dict[str, str]:
        """Returns role → model id (or folder) of every model whose weights decide the scores: an
        index manifest records their fingerprints. Role ``"model"`` is the re-ranker's own model."""
        ...

    @classmethod
    def load_models(cls, config: Any) -> None:
        """Loads the models ``config`` names now; raises ``ModelError`` for one that cannot load."""
        ...


def reranker_for(config: RerankerConfig, cache: Cache | None = None) -> Reranker:
    """Returns the re-ranker ``config`` describes (the class its ``kind`` names, built from it)."""
    return component_of(config)(config, cache)


class RerankerBase(ComponentBase):
    """A re-ranker that scores (query text, document text) pairs: a subclass sets ``config_type`` and
    defines ``score(pairs)``; this class re-ranks the head of a run with those scores and remembers
    them, in memory and in the disk cache, under the re-ranker's identity (its class, ``version``,
    and ``fingerprint(config)`` when it defines one, else its own settings).
    """

    def __init__(self, config: Any, cache: Cache | None = None):
        self.config = config
        self.identity = component_identity(config)
        self._store = cache.embeddings(content_address(self.identity), "rerank-score") if cache is not None else None
        self._scores: dict[bytes, float] = {}

    def score(self, pairs: Sequence[tuple[str, str]]) -> Sequence[float]:
        """Returns one relevance score per (query text, document text) pair, higher is better."""
        raise NotImplementedError(f"{type(self).__name__} defines no score(pairs)")

    def _scored(self, joined_pairs: list[str]) -> np.ndarray:
        pairs = [tuple(joined.split(PAIR_SEPARATOR, 1)) for joined in joined_pairs]
        return np.asarray(self.score(pairs), dtype=np.float32).reshape(len(pairs), 1)

    def score_pairs(self, pairs: list[tuple[str, str]], use_cache: bool = True) -> list[float]:
        """Returns ``score(pairs)``, the pairs scored before read from memory or the disk cache
        (with ``use_cache`` False: all scored afresh, nothing kept)."""
        joined = [f"{query}{PAIR_SEPARATOR}{doc}" for query, doc in pairs]
        if not joined:
            return []
        if not use_cache:
            return self._scored(joined)[:, 0].tolist()
        if self._store is not None:
            return self._store.get_or_encode(joined, self._scored)[:, 0].tolist()
        keys = [text_key(pair) for pair in joined]
        todo = {key: pair for key, pair in zip(keys, joined) if key not in self._scores}
        if todo:
            for key, score in zip(todo, self._scored(list(todo.values()))[:, 0].tolist()):
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
        """Returns the run with each query's top ``depth`` documents reordered by ``score``.

        With ``weight`` below 1 the head is ordered by ``weight`` times the min-max normalised
        re-ranker score plus the rest times the normalised score the run gave; at 0 nothing is
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


class CrossEncoderReranker(RerankerBase):
    """``kind = "cross-encoder"``: scores pairs with a sentence-transformers CrossEncoder, ``model``."""

    config_type = RerankConfig
    version = "cross-encoder-1"

    @classmethod
    def fingerprint(cls, config: RerankConfig) -> str:
        """The model's fingerprint: batch size and device do not change the scores."""
        return model_fingerprint(config.model)

    @classmethod
    def models(cls, config: RerankConfig) -> dict[str, str]:
        return {"model": config.model} if config.enabled else {}

    @classmethod
    def load_models(cls, config: RerankConfig) -> None:
        if config.enabled:
            load_cross_encoder(config.model, config.device)

    def score(self, pairs: Sequence[tuple[str, str]]) -> Sequence[float]:
        model = load_cross_encoder(self.config.model, self.config.device)
        return model.predict(list(pairs), batch_size=self.config.batch_size, show_progress_bar=False)


def _interpolate(
    reranker_scores: dict[str, float], first_stage_scores: dict[str, float], weight: float
) -> dict[str, float]:
    """Returns ``weight`` × reranker + (1 − ``weight``) × first stage, each min-max normalised."""
    reranker_norm = normalize_minmax({"": reranker_scores})[""]
    first_stage_norm = normalize_minmax({"": first_stage_scores})[""]
    return {
        doc_id: weight * reranker_norm[doc_id] + (1.0 - weight) * first_stage_norm[doc_id] for doc_id in reranker_scores
    }
