"""Filters over generated questions: pure functions, each returning what it kept and what it dropped.

A small generator writes questions that are too short, repeat a prompt example, copy a sentence
of their passage, or repeat one another; the round-trip check (a retriever must find the source
document) drops questions their passage does not answer. Each filter's count goes on the card.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from workbench.types import Run

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Candidate:
    query_id: str
    doc_id: str
    passage: str
    question: str
    example_questions: tuple[str, ...]  # the questions its prompt showed


@dataclass(frozen=True)
class FilterOutcome:
    name: str
    kept: list[Candidate]
    dropped: list[Candidate]


def words(text: str) -> list[str]:
    """Returns the lower-cased word tokens of ``text`` (letters, digits, underscore)."""
    return _WORD.findall(text.lower())


def _split(name: str, candidates: Iterable[Candidate], keep: Callable[[Candidate], bool]) -> FilterOutcome:
    kept, dropped = [], []
    for candidate in candidates:
        (kept if keep(candidate) else dropped).append(candidate)
    return FilterOutcome(name, kept, dropped)


def length_filter(candidates: Iterable[Candidate], min_words: int, max_words: int) -> FilterOutcome:
    """Keeps questions of ``min_words`` to ``max_words`` words (an empty answer has none)."""
    return _split("length", candidates, lambda c: min_words <= len(words(c.question)) <= max_words)


def jaccard(first: Iterable[str], second: Iterable[str]) -> float:
    """Returns |A ∩ B| / |A ∪ B| of two word sets (0 when both are empty)."""
    a, b = set(first), set(second)
    return len(a & b) / len(a | b) if a | b else 0.0


def example_copy_filter(candidates: Iterable[Candidate], max_overlap: float) -> FilterOutcome:
    """Drops questions whose word set overlaps one of their prompt's example questions by more than
    ``max_overlap`` (Jaccard): a small model often repeats an example instead of reading the passage."""

    def keep(candidate: Candidate) -> bool:
        question = words(candidate.question)
        return all(jaccard(question, words(example)) <= max_overlap for example in candidate.example_questions)

    return _split("example copy", candidates, keep)


def longest_shared_run(question: list[str], passage: list[str]) -> int:
    """Returns the length of the longest run of consecutive words that ``question`` and ``passage`` share."""
    best = 0
    previous = [0] * (len(passage) + 1)
    for word in question:
        current = [0] * (len(passage) + 1)
        for index, other in enumerate(passage, start=1):
            if word == other:
                current[index] = previous[index - 1] + 1
                best = max(best, current[index])
        previous = current
    return best


def passage_copy_filter(candidates: Iterable[Candidate], max_shared_words: int) -> FilterOutcome:
    """Drops questions that share a run of more than ``max_shared_words`` consecutive words with their
    passage: copied sentences make lexical retrieval look better than it is."""
    return _split(
        "passage copy",
        candidates,
        lambda c: longest_shared_run(words(c.question), words(c.passage)) <= max_shared_words,
    )


def duplicate_filter(candidates: Iterable[Candidate]) -> FilterOutcome:
    """Keeps the first of questions with the same words in the same order (case and punctuation ignored)."""
    seen: set[tuple[str, ...]] = set()

    def keep(candidate: Candidate) -> bool:
        key = tuple(words(candidate.question))
        if key in seen:
            return False
        seen.add(key)
        return True

    return _split("duplicate", candidates, keep)


def round_trip_filter(candidates: Iterable[Candidate], runs: Iterable[Run], k: int) -> FilterOutcome:
    """Keeps questions whose source document is in the top ``k`` of at least one run (query id → doc → score).

    With one lexical and one dense run, the check favours neither kind of retriever.
    """
    runs = list(runs)

    def found(candidate: Candidate) -> bool:
        for run in runs:
            ranking = sorted(run.get(candidate.query_id, {}).items(), key=lambda item: (-item[1], item[0]))
            if candidate.doc_id in {doc_id for doc_id, _ in ranking[:k]}:
                return True
        return False

    return _split("round trip", candidates, found)
