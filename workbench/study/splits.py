"""Which queries a study tunes on and which it holds out.

With a named held-out split the corpus decides. With one split only, a seeded random
fraction of its judged queries is held out; the ids are recorded so the split is visible
and reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from workbench.errors import StudyError
from workbench.retrieval.corpus import Corpus
from workbench.study.config import StudyConfig
from workbench.types import QuerySet


@dataclass(frozen=True)
class StudySplits:
    tune: QuerySet
    heldout: QuerySet | None


def study_splits(config: StudyConfig, corpus: Corpus) -> StudySplits:
    """Returns the tuning and held-out query sets; raises ``StudyError`` if one would be empty."""
    tune_queries = corpus.judged_queries(config.tune_split)
    tune_qrels = corpus.split_qrels(config.tune_split)
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
