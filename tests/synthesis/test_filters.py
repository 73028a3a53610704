"""Tests of workbench/synthesis/filters.py: each filter drops what it names and keeps the rest, in order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workbench.synthesis.filters import (
    Candidate,
    duplicate_filter,
    example_copy_filter,
    jaccard,
    length_filter,
    longest_shared_run,
    passage_copy_filter,
    round_trip_filter,
    words,
)

PASSAGE = (
    "the ibm data systems division technical information center provides an operating developmental system "
    "for integrated and compatible mechanized processing of technical information"
)
EXAMPLES = (
    "How does a database recover committed transactions after a crash?",
    "What sea temperatures make corals bleach?",
)


def candidate(question: str, query_id: str = "q", doc_id: str = "d1", passage: str = PASSAGE) -> Candidate:
    return Candidate(query_id, doc_id, passage, question, EXAMPLES)


def test_words_lowercases_and_drops_punctuation():
    assert words("What's IBM's  tech-center?") == ["what", "s", "ibm", "s", "tech", "center"]


def test_length_filter_keeps_the_range_inclusive():
    kept_texts = ["one two three four", " ".join(["w"] * 6)]
    dropped_texts = ["", "too short here", " ".join(["w"] * 7)]
    outcome = length_filter([candidate(t, str(i)) for i, t in enumerate(dropped_texts + kept_texts)], 4, 6)
    assert [c.question for c in outcome.kept] == kept_texts
    assert [c.question for c in outcome.dropped] == dropped_texts
    assert outcome.name == "length"


def test_example_copy_filter_drops_a_repeated_example_and_keeps_a_new_question():
    copied = candidate("How does a database recover committed transactions after a crash?", "copy")
    reworded = candidate("how does the database recover committed transactions after crash", "near")
    fresh = candidate("What does the IBM technical information center process?", "fresh")
    outcome = example_copy_filter([copied, reworded, fresh], max_overlap=0.6)
    assert [c.query_id for c in outcome.dropped] == ["copy", "near"]
    assert [c.query_id for c in outcome.kept] == ["fresh"]


def test_example_copy_threshold_is_strict_above():
    question = "a b c d"
    example = Candidate("q", "d", "p", question, ("a b c d e f g h",))  # Jaccard 4/8 = 0.5
    assert example_copy_filter([example], 0.5).kept == [example]
    assert example_copy_filter([example], 0.49).dropped == [example]


def test_longest_shared_run_counts_consecutive_words():
    assert longest_shared_run(["a", "b", "c", "x"], ["z", "a", "b", "c", "d"]) == 3
    assert longest_shared_run(["a", "x", "b"], ["a", "b"]) == 1
    assert longest_shared_run([], ["a"]) == 0


@given(st.lists(st.sampled_from("abcd"), max_size=8), st.lists(st.sampled_from("abcd"), max_size=8))
def test_longest_shared_run_matches_brute_force(question, passage):
    brute = max(
        (
            length
            for length in range(len(question) + 1)
            for start in range(len(question) - length + 1)
            if any(
                question[start : start + length] == passage[i : i + length] for i in range(len(passage) - length + 1)
            )
        ),
        default=0,
    )
    assert longest_shared_run(question, passage) == brute


def test_passage_copy_filter_drops_a_copied_sentence_only():
    copied = candidate(
        "the IBM data systems division technical information center provides an operating system?", "copy"
    )
    asked = candidate("What does the technical information center of IBM's data systems division provide?", "asked")
    outcome = passage_copy_filter([copied, asked], max_shared_words=8)
    assert [c.query_id for c in outcome.dropped] == ["copy"]
    assert [c.query_id for c in outcome.kept] == ["asked"]


def test_duplicate_filter_keeps_the_first_ignoring_case_and_punctuation():
    first = candidate("What is a technical information center?", "first", "d1")
    again = candidate("what is a technical information center", "again", "d2")
    other = candidate("What is an information center?", "other", "d3")
    outcome = duplicate_filter([first, again, other])
    assert [c.query_id for c in outcome.kept] == ["first", "other"]
    assert [c.query_id for c in outcome.dropped] == ["again"]


def test_round_trip_keeps_a_question_found_by_either_run_within_k():
    lexical = {
        "both": {"d1": 3.0, "x": 1.0},
        "lexical": {"d1": 2.0},
        "dense": {"x": 1.0, "d1": 0.5},
        "none": {"x": 1.0},
    }
    dense = {"both": {"d1": 0.9}, "lexical": {"x": 0.9, "y": 0.8, "d1": 0.1}, "dense": {"d1": 0.9}, "none": {"y": 0.5}}
    candidates = [candidate("q", name) for name in ("both", "lexical", "dense", "none")]
    outcome = round_trip_filter(candidates, [lexical, dense], k=1)
    assert [c.query_id for c in outcome.kept] == ["both", "lexical", "dense"]
    assert [c.query_id for c in outcome.dropped] == ["none"]
    # The dense run alone, at k = 2: "lexical" ranks d1 third there, so only that run's finds are kept.
    assert [c.query_id for c in round_trip_filter(candidates, [dense], k=2).kept] == ["both", "dense"]


def test_round_trip_breaks_score_ties_by_doc_id():
    tied = {"q": {"b": 1.0, "a": 1.0}}
    assert round_trip_filter([candidate("q", "q", doc_id="a")], [tied], k=1).kept
    assert not round_trip_filter([candidate("q", "q", doc_id="b")], [tied], k=1).kept


def test_jaccard_of_empty_sets_is_zero():
    assert jaccard([], []) == 0.0
    assert jaccard(["a"], ["a"]) == 1.0
