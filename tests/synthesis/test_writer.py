"""Tests of workbench/synthesis/writer.py: the synthetic BEIR folder loads back, keeps the real splits,
never overwrites, leaves nothing behind on failure; and the note a study prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.errors import CorpusError, OutputError
from workbench.retrieval.corpus import load_corpus
from workbench.synthesis.writer import (
    CARD_NAME,
    SYNTHETIC_SPLIT,
    SyntheticQuery,
    generated_queries_note,
    read_card,
    write_synthetic_corpus,
)

QUERIES = [
    SyntheticQuery("synthetic-1-1", "1", "What does the IBM center offer?"),
    SyntheticQuery("synthetic-2-1", "2", "How are line patterns matched?"),
]


def card(**extra) -> dict:
    return {"split": SYNTHETIC_SPLIT, "generator": {"model": "tiny.gguf"}, "counts": {"kept": 2}} | extra


def test_written_folder_loads_with_the_same_documents_and_real_splits(adi, tmp_path: Path):
    out = tmp_path / "adi-synthetic"
    write_synthetic_corpus(adi, out, QUERIES, card())
    loaded = load_corpus(out)
    assert loaded.fingerprint == adi.fingerprint
    assert (out / "corpus.jsonl").is_symlink()
    assert loaded.splits() == ["synthetic", "test"]
    assert loaded.split_qrels("test") == adi.split_qrels("test")
    assert loaded.split_qrels("synthetic") == {"synthetic-1-1": {"1": 1}, "synthetic-2-1": {"2": 1}}
    assert loaded.judged_queries("synthetic") == {q.query_id: q.text for q in QUERIES}
    assert {qid: text for qid, text in loaded.queries.items() if qid in adi.queries} == adi.queries
    assert read_card(out) == card()
    assert not list(tmp_path.glob(".*partial"))


def test_copy_corpus_copies_the_documents(adi, tmp_path: Path):
    out = tmp_path / "copy"
    write_synthetic_corpus(adi, out, QUERIES, card(), copy_corpus=True)
    assert not (out / "corpus.jsonl").is_symlink()
    assert load_corpus(out).fingerprint == adi.fingerprint


def test_an_empty_output_folder_is_used_but_a_non_empty_one_is_refused(adi, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    write_synthetic_corpus(adi, empty, QUERIES, card())
    assert (empty / CARD_NAME).is_file()
    before = sorted(p.name for p in empty.iterdir())
    with pytest.raises(OutputError, match="already exists and is not an empty folder"):
        write_synthetic_corpus(adi, empty, QUERIES[:1], card())
    assert sorted(p.name for p in empty.iterdir()) == before
    assert load_corpus(empty).judged_queries("synthetic").keys() == {q.query_id for q in QUERIES}


def test_a_failure_while_writing_leaves_nothing(adi, tmp_path: Path):
    out = tmp_path / "out"
    with pytest.raises(TypeError):
        write_synthetic_corpus(adi, out, QUERIES, card(bad=object()))  # the card cannot be serialised
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_clashing_query_ids_and_an_existing_synthetic_split_are_refused(adi, tmp_path: Path):
    with pytest.raises(CorpusError, match="exist already"):
        write_synthetic_corpus(adi, tmp_path / "a", [SyntheticQuery("1", "1", "clash?")], card())
    write_synthetic_corpus(adi, tmp_path / "first", QUERIES, card())
    with pytest.raises(CorpusError, match="already has a 'synthetic' split"):
        write_synthetic_corpus(load_corpus(tmp_path / "first"), tmp_path / "second", [], card())
    assert not (tmp_path / "a").exists() and not (tmp_path / "second").exists()


def test_note_says_the_tuning_queries_were_generated(adi, tmp_path: Path):
    out = tmp_path / "synth"
    write_synthetic_corpus(adi, out, QUERIES, card(prompt={"example_query_ids": []}))
    corpus = load_corpus(out)
    note = generated_queries_note(corpus, "synthetic", "test")
    assert note.startswith("note: the tuning queries were generated (2 questions by tiny.gguf")
    assert "real held-out queries ('test') is the one that counts" in note
    assert generated_queries_note(corpus, "test", None) is None  # real tuning queries: nothing to say
    assert generated_queries_note(adi, "test", None) is None  # no card at all


def test_note_warns_without_real_heldout_queries_or_when_examples_leak(adi, tmp_path: Path):
    out = tmp_path / "synth"
    write_synthetic_corpus(adi, out, QUERIES, card(prompt={"example_query_ids": ["1", "2"]}))
    corpus = load_corpus(out)
    assert generated_queries_note(corpus, "synthetic", None).startswith("WARNING: the tuning queries were generated")
    leak = generated_queries_note(corpus, "synthetic", "test")
    assert leak.startswith("WARNING") and "2 held-out queries were shown to the generator" in leak


def test_read_card_of_an_unreadable_card_is_none(tmp_path: Path):
    (tmp_path / CARD_NAME).write_text("{not json")
    assert read_card(tmp_path) is None


def text_folder(root: Path) -> Path:
    (root / "faq").mkdir(parents=True)
    (root / "setup.md").write_text("# Setup\nRun the installer, then sign in with your account.\n")
    (root / "faq" / "billing.txt").write_text("Invoices go out on the first working day of each month.\n")
    return root


@pytest.mark.parametrize("copy_corpus", [False, True])
def test_documents_alone_become_a_judged_folder_with_only_the_synthetic_split(tmp_path: Path, copy_corpus: bool):
    from workbench.retrieval.corpus import load_documents

    source = load_documents(text_folder(tmp_path / "kb"))
    queries = [SyntheticQuery("synthetic-faq/billing.txt-1", "faq/billing.txt", "When are invoices sent?")]
    out = tmp_path / "kb-synthetic"
    write_synthetic_corpus(source, out, queries, card(), copy_corpus=copy_corpus)
    assert (out / "docs").is_symlink() is not copy_corpus
    loaded = load_corpus(out)
    assert loaded.fingerprint == source.fingerprint and list(loaded.documents) == ["faq/billing.txt", "setup.md"]
    assert loaded.splits() == ["synthetic"] and loaded.queries == {queries[0].query_id: queries[0].text}
    assert loaded.split_qrels("synthetic") == {queries[0].query_id: {"faq/billing.txt": 1}}


def test_a_corpus_jsonl_file_alone_is_linked_as_the_corpus(adi, tmp_path: Path):
    from workbench.retrieval.corpus import load_documents

    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "my-docs.jsonl").write_bytes((adi.path / "corpus.jsonl").read_bytes())
    source = load_documents(tmp_path / "kb" / "my-docs.jsonl")
    write_synthetic_corpus(source, tmp_path / "out", QUERIES, card())
    assert (tmp_path / "out" / "corpus.jsonl").resolve() == (tmp_path / "kb" / "my-docs.jsonl").resolve()
    assert load_corpus(tmp_path / "out").fingerprint == adi.fingerprint


def test_an_output_inside_the_documents_folder_is_refused(tmp_path: Path):
    from workbench.retrieval.corpus import load_documents

    source = load_documents(text_folder(tmp_path / "kb"))
    with pytest.raises(CorpusError, match="lies inside the documents folder"):
        write_synthetic_corpus(source, tmp_path / "kb" / "synthetic", QUERIES[:0], card())
    assert not (tmp_path / "kb" / "synthetic").exists()
