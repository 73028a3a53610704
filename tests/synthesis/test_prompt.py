"""Tests of workbench/synthesis/prompt.py: passages, example pools, rendering and reading answers back."""

from __future__ import annotations

import pytest

from workbench.errors import CorpusError
from workbench.synthesis.prompt import (
    BUILT_IN_EXAMPLES,
    CHAT_INSTRUCTION,
    Example,
    Prompt,
    built_in_examples,
    cut_passage,
    examples_for,
    read_question,
    real_examples,
)


def test_cut_passage_flattens_whitespace_and_cuts_at_a_word_boundary():
    assert cut_passage("a  b\n\nc", 100) == "a b c"
    assert cut_passage("alpha beta gamma delta", 12) == "alpha beta"
    assert cut_passage("alpha beta gamma", 10) == "alpha beta"
    assert cut_passage("abcdefghij", 4) == "abcd"  # one long word: cut inside it rather than return nothing


def test_prompt_as_text_ends_with_an_open_question():
    prompt = Prompt((Example("P one.", "Q one?", "built-in"), Example("P two.", "Q two?", "built-in")), "The passage.")
    assert prompt.as_text() == (
        "Passage: P one.\nQuestion: Q one?\n\nPassage: P two.\nQuestion: Q two?\n\nPassage: The passage.\nQuestion:"
    )


def test_prompt_as_messages_alternates_examples_and_ends_with_the_passage():
    prompt = Prompt((Example("P one.", "Q one?", "built-in"),), "The passage.")
    assert prompt.as_messages() == [
        {"role": "system", "content": CHAT_INSTRUCTION},
        {"role": "user", "content": "Passage: P one."},
        {"role": "assistant", "content": "Q one?"},
        {"role": "user", "content": "Passage: The passage."},
    ]


def test_examples_for_rotates_through_the_pool_by_variant():
    pool = built_in_examples()
    assert len(pool) == len(BUILT_IN_EXAMPLES)
    assert examples_for(pool, 2, 0) == (pool[0], pool[1])
    assert examples_for(pool, 2, 1) == (pool[2], pool[3])
    assert examples_for(pool, 2, 3) == (pool[0], pool[1])  # 6 examples, 2 a prompt: the fourth variant wraps
    assert examples_for([], 2, 0) == ()


@pytest.mark.parametrize(
    ("raw", "question"),
    [
        (" What is BM25?\nPassage: next", "What is BM25?"),
        ("\n\nQuestion: Why now?", "Why now?"),
        ('"Quoted question?"', "Quoted question?"),
        ("Passage: the model wrote a passage instead", ""),
        ("   ", ""),
    ],
)
def test_read_question_takes_the_first_line_without_labels(raw, question):
    assert read_question(raw) == question


def test_real_examples_come_from_the_named_split_with_a_relevant_passage(adi):
    pool = real_examples(adi, "test", seed=1, max_chars=200)
    assert len(pool) == len(BUILT_IN_EXAMPLES)
    qrels = adi.split_qrels("test")
    for example in pool:
        assert example.question == " ".join(adi.queries[example.source].split())
        relevant = sorted(doc for doc, grade in qrels[example.source].items() if grade > 0)
        assert example.passage == cut_passage(adi.documents[relevant[0]].full_text, 200)
    assert pool == real_examples(adi, "test", seed=1, max_chars=200)  # seeded
    assert [e.source for e in pool] != [e.source for e in real_examples(adi, "test", seed=2, max_chars=200)]


def test_real_examples_of_a_missing_split_name_the_split(adi):
    with pytest.raises(CorpusError, match="no split 'train'"):
        real_examples(adi, "train", seed=1, max_chars=200)
