"""Which queries a study tunes on and which it judges the result on: a fixed split, or k folds.

With a named held-out split the corpus decides. With one split only, either a seeded random
fraction of its judged queries is held out (``heldout = "split"``), or every judged query is
held out once, in k seeded folds (``heldout = "kfold"``): each fold's study tunes on the other
folds only. ``heldout = "auto"`` (the default) picks k-fold while the tuning split has fewer than
``KFOLD_BELOW`` judged queries and the study file names neither ``heldout_split`` nor
``heldout_fraction``: below that, a 30% split leaves too few queries for a verdict to mean much.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Literal

from workbench.errors import StudyError
from workbench.retrieval.corpus import Corpus
from workbench.study.config import StudyConfig
from workbench.types import Qrels, QuerySet

KFOLD_BELOW = 300  # judged tuning queries under which "auto" cross-validates instead of splitting
MIN_QUERIES_PER_FOLD = 10  # fewer held-out queries per fold (or in a fixed split) get a warning

HeldoutMode = Literal["split", "kfold"]


@dataclass(frozen=True)
class Fold:
    """Fold ``number`` (1-based): its study tunes on ``tune`` and its choice is judged on ``heldout``."""

    number: int
    tune: QuerySet
    heldout: QuerySet


@dataclass(frozen=True)
class StudySplits:
    """The study's tuning queries, and what judges the result: a held-out split, k folds, or nothing.

    With folds, ``tune`` holds every judged query (the final study, whose best config is exported,
    tunes on all of them) and ``heldout`` is None.
    """

    tune: QuerySet
    heldout: QuerySet | None
    folds: tuple[Fold, ...] = ()

    @property
    def mode(self) -> HeldoutMode:
        return "kfold" if self.folds else "split"

    @property
    def verdict_query_ids(self) -> set[str]:
        """Every query the verdict is judged on: the held-out split, or, with folds, every fold's held-out queries."""
        held = set(self.heldout.queries) if self.heldout is not None else set()
        return held.union(*(fold.heldout.queries for fold in self.folds))

    def warnings(self) -> list[str]:
        """Returns a warning when the verdict would rest on too few judged queries to mean much."""
        if self.folds:
            smallest = min(len(fold.heldout.queries) for fold in self.folds)
            if smallest < MIN_QUERIES_PER_FOLD:
                warning = (
                    f"WARNING: {len(self.tune.queries)} judged queries in {len(self.folds)} folds leave {smallest} "
                    f"held-out queries in the smallest fold (fewer than {MIN_QUERIES_PER_FOLD}): each fold's choice "
                    "is tuned and judged on very few queries, so read the verdict as a hint, not a result; "
                    "judge more queries, or set fewer folds"
                )
                return [warning]
        elif self.heldout is not None and len(self.heldout.queries) < MIN_QUERIES_PER_FOLD:
            warning = (
                f"WARNING: the held-out split '{self.heldout.name}' has {len(self.heldout.queries)} judged queries "
                f"(fewer than {MIN_QUERIES_PER_FOLD}): no verdict on so few queries means much; "
                'use heldout = "kfold" to judge every query once'
            )
            return [warning]
        return []


def heldout_mode(config: StudyConfig, judged_tuning_queries: int) -> HeldoutMode:
    """Returns how the study judges its result: the mode the study file names, or for "auto",
    k-fold when no fixed split is asked for and there are fewer than ``KFOLD_BELOW`` judged tuning queries."""
    if config.heldout != "auto":
        return config.heldout
    if config.heldout_split is not None or "heldout_fraction" in config.model_fields_set:
        return "split"
    return "kfold" if judged_tuning_queries < KFOLD_BELOW else "split"


def query_digest(queries: dict[str, str]) -> str:
    """Returns a short digest of a set of query ids: studies record the queries they were tuned on."""
    return hashlib.sha256("\n".join(sorted(queries)).encode()).hexdigest()[:16]


def _subset(name: str, queries: dict[str, str], qrels: Qrels, keep: set[str]) -> QuerySet:
    return QuerySet(
        name,
        {qid: text for qid, text in queries.items() if qid in keep},
        {qid: judged for qid, judged in qrels.items() if qid in keep},
    )


def assign_folds(qrels: Qrels, query_ids: list[str], folds: int, seed: int) -> dict[str, int]:
    """Returns query id → fold (1..``folds``), seeded and stratified by the number of relevant documents.

    Queries are ordered by how many relevant documents they have (ties in seeded random order)
    and dealt out in blocks of ``folds``, each block to the folds in a seeded random order. So
    every fold gets ⌊n/k⌋ or ⌈n/k⌉ queries, and easy and hard queries alike are spread over the folds.
    Raises ``StudyError`` when there are fewer queries than folds.
    """
    if len(query_ids) < folds:
        raise StudyError(
            f"{len(query_ids)} judged queries cannot fill {folds} folds; set folds to at most {len(query_ids)}"
        )
    rng = random.Random(seed)
    shuffled = sorted(query_ids)
    rng.shuffle(shuffled)
    ordered = sorted(shuffled, key=lambda qid: sum(1 for grade in qrels[qid].values() if grade > 0))
    assignment: dict[str, int] = {}
    for start in range(0, len(ordered), folds):
        order = list(range(1, folds + 1))
        rng.shuffle(order)
        for query_id, fold in zip(ordered[start : start + folds], order):
            assignment[query_id] = fold
    return assignment


def _kfold_splits(config: StudyConfig, queries: dict[str, str], qrels: Qrels) -> StudySplits:
    assignment = assign_folds(qrels, list(queries), config.folds, config.seed)
    folds = []
    for number in range(1, config.folds + 1):
        held = {qid for qid, fold in assignment.items() if fold == number}
        folds.append(
            Fold(
                number,
                _subset(f"{config.tune_split}-fold-{number}-tune", queries, qrels, set(queries) - held),
                _subset(f"{config.tune_split}-fold-{number}", queries, qrels, held),
            )
        )
    return StudySplits(_subset(config.tune_split, queries, qrels, set(queries)), None, tuple(folds))


def study_splits(config: StudyConfig, corpus: Corpus) -> StudySplits:
    """Returns the tuning queries and the held-out split or folds; raises ``StudyError`` if a part would be empty."""
    tune_queries = corpus.judged_queries(config.tune_split)
    tune_qrels = corpus.split_qrels(config.tune_split)
    if heldout_mode(config, len(tune_queries)) == "kfold":
        return _kfold_splits(config, tune_queries, tune_qrels)
    if config.heldout_split is not None:
        heldout_queries = corpus.judged_queries(config.heldout_split)
        overlap = tune_queries.keys() & heldout_queries.keys()
        if overlap:
            raise StudyError(
                f"splits '{config.tune_split}' and '{config.heldout_split}' share {len(overlap)} queries "
                f"(e.g. {sorted(overlap)[:3]}): held-out queries must never be tuned on"
            )
        return StudySplits(
            QuerySet(config.tune_split, tune_queries, tune_qrels),
            QuerySet(config.heldout_split, heldout_queries, corpus.split_qrels(config.heldout_split)),
        )
    if config.heldout_fraction == 0:
        return StudySplits(QuerySet(config.tune_split, tune_queries, tune_qrels), None)
    ordered = sorted(tune_queries)
    held = set(random.Random(config.seed).sample(ordered, round(len(ordered) * config.heldout_fraction)))
    if not held or len(held) == len(ordered):
        raise StudyError(
            f"split '{config.tune_split}' has {len(ordered)} judged queries: too few to hold out "
            f"{config.heldout_fraction:.0%} and still tune; set heldout_split or heldout_fraction"
        )
    name = f"{config.tune_split}-heldout"
    return StudySplits(
        QuerySet(
            f"{config.tune_split}-tune",
            {qid: text for qid, text in tune_queries.items() if qid not in held},
            {qid: judged for qid, judged in tune_qrels.items() if qid not in held},
        ),
        QuerySet(
            name,
            {qid: text for qid, text in tune_queries.items() if qid in held},
            {qid: judged for qid, judged in tune_qrels.items() if qid in held},
        ),
    )
