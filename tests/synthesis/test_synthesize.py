"""Tests of workbench/synthesis/synthesize.py and `workbench synthesize`: the real bundled GGUF on a
handful of ADI documents, answers cached and reused after an interruption, the round-trip check
through real BM25 and dense pipelines, errors before any work, and a study tuned on the result."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
from extras import require_extra
from llama_server import API_KEY, SERVED_NAME
from typer.testing import CliRunner

from workbench.cli import app
from workbench.errors import ConfigError, CorpusError
from workbench.retrieval.cache import Cache
from workbench.retrieval.corpus import load_corpus
from workbench.synthesis.filters import Candidate
from workbench.synthesis.generators import GeneratorSpec
from workbench.synthesis.prompt import built_in_examples, real_examples
from workbench.synthesis.synthesize import (
    apply_filters,
    example_pool,
    generate_candidates,
    sample_passages,
    synthesis_settings,
    synthesize,
)
from workbench.synthesis.writer import CARD_NAME

ADI = Path(__file__).resolve().parents[2] / "corpora" / "adi"
WIDE = {"COLUMNS": "400"}


def test_sampling_is_seeded_and_cuts_passages(adi):
    first = sample_passages(adi, 5, seed=3, max_chars=120)
    assert first == sample_passages(adi, 5, seed=3, max_chars=120)
    assert [p.doc_id for p in first] != [p.doc_id for p in sample_passages(adi, 5, seed=4, max_chars=120)]
    assert all(len(p.text) <= 120 and p.doc_id in adi.documents for p in first)
    assert len({p.doc_id for p in sample_passages(adi, 1000, seed=3, max_chars=120)}) == len(adi.documents)
    assert sample_passages(adi, 9, seed=3, max_chars=120)[:5] == first  # more documents keep the first ones


def test_examples_default_to_train_else_built_in(adi):
    pool, source = example_pool(adi, synthesis_settings())
    assert (pool, source) == (built_in_examples(), "built-in")  # ADI has no train split
    pool, source = example_pool(adi, synthesis_settings(examples_split="test", seed=7))
    assert source == "split test" and pool == real_examples(adi, "test", 7, 600)
    with pytest.raises(CorpusError, match="no split 'dev'"):
        example_pool(adi, synthesis_settings(examples_split="dev"))


def test_bad_settings_name_the_option():
    with pytest.raises(ConfigError, match="min_words"):
        synthesis_settings(min_words=10, max_words=5)


class Interrupting:
    """The real generator, interrupted (as by Ctrl-C) when it is asked its ``stop_at``-th question."""

    def __init__(self, generator, stop_at: int):
        self.generator, self.stop_at, self.asked = generator, stop_at, 0
        self.fingerprint, self.description = generator.fingerprint, generator.description

    def request(self, prompt):
        return self.generator.request(prompt)

    def complete(self, request):
        self.asked += 1
        if self.asked == self.stop_at:
            raise KeyboardInterrupt
        return self.generator.complete(request)


def test_generation_resumes_after_an_interruption_from_the_cache(adi, llama_generator, tmp_path):
    settings = synthesis_settings(documents=4, seed=11)
    passages = sample_passages(adi, 4, 11, settings.passage_chars)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        generate_candidates(passages, built_in_examples(), settings, Interrupting(llama_generator, 3), cache)
    candidates, stats = generate_candidates(passages, built_in_examples(), settings, llama_generator, cache)
    assert (stats.cached, stats.fresh) == (2, 2)  # the two answers before the interruption were kept
    assert [c.doc_id for c in candidates] == [p.doc_id for p in passages]
    again, stats = generate_candidates(passages, built_in_examples(), settings, llama_generator, cache)
    assert (stats.cached, stats.fresh) == (4, 0) and again == candidates


def test_two_questions_per_passage_use_different_examples(adi, llama_generator, tmp_path):
    settings = synthesis_settings(documents=1, per_document=2, seed=5)
    passages = sample_passages(adi, 1, 5, settings.passage_chars)
    candidates, _ = generate_candidates(passages, built_in_examples(), settings, llama_generator, Cache(tmp_path))
    assert [c.query_id for c in candidates] == [
        f"synthetic-{passages[0].doc_id}-1",
        f"synthetic-{passages[0].doc_id}-2",
    ]
    assert candidates[0].example_questions != candidates[1].example_questions


def test_round_trip_runs_real_bm25_and_dense_pipelines(adi, session_cache):
    doc = adi.documents["2"]
    found = Candidate("found", "2", doc.text, doc.title, ())  # the document's own title
    lost = Candidate("lost", "2", doc.text, "seasonal rainfall over tropical rainforest canopies", ())
    settings = synthesis_settings(round_trip_k=5, max_copied_words=1000)
    kept, outcomes = apply_filters([found, lost], settings, adi, session_cache)
    assert [c.query_id for c in kept] == ["found"]
    assert [outcome.name for outcome in outcomes] == [
        "length",
        "example copy",
        "passage copy",
        "duplicate",
        "round trip",
    ]
    assert [c.query_id for c in outcomes[-1].dropped] == ["lost"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """ADI synthesised with the bundled model: 5 documents, round trip on, into a fresh state folder."""
    require_extra("synth")
    folder = tmp_path_factory.mktemp("synthesized")
    cache = Cache(folder / "state" / "cache")
    settings = synthesis_settings(documents=5, seed=2, round_trip_k=20)
    card = synthesize(ADI, folder / "adi-synthetic", GeneratorSpec(), settings, cache)
    return folder, card, cache, settings


def test_the_card_counts_every_filter_and_the_folder_matches_it(written, adi):
    folder, card, _, _ = written
    out = folder / "adi-synthetic"
    assert json.loads((out / CARD_NAME).read_text()) == card
    loaded = load_corpus(out)
    synthetic = loaded.judged_queries("synthetic")
    assert len(synthetic) == card["counts"]["kept"] >= 1
    assert card["counts"]["generated"] == card["counts"]["documents_sampled"] == 5
    steps = card["filters"]
    assert [s["name"] for s in steps] == ["length", "example copy", "passage copy", "duplicate", "round trip"]
    assert steps[0]["before"] == 5 and steps[-1]["after"] == card["counts"]["kept"]
    assert all(a["after"] == b["before"] for a, b in pairwise(steps))
    assert all(s["before"] - s["dropped"] == s["after"] for s in steps)
    sampled = {p.doc_id for p in sample_passages(adi, 5, 2, 1000)}
    for query_id, grades in loaded.split_qrels("synthetic").items():
        assert list(grades.values()) == [1] and set(grades) <= sampled and query_id in synthetic
    assert loaded.split_qrels("test") == adi.split_qrels("test")
    assert card["generator"]["kind"] == "llama-cpp" and card["prompt"]["examples_from"] == "built-in"
    assert card["generation"]["asked_now"] == 5 and card["generation"]["from_cache"] == 0
    assert card["corpus_fingerprint"] == adi.fingerprint == loaded.fingerprint


def test_the_same_command_again_takes_every_answer_from_the_cache(written):
    folder, _, cache, settings = written
    again = synthesize(ADI, folder / "again", GeneratorSpec(), settings, cache)
    assert again["generation"]["asked_now"] == 0 and again["generation"]["from_cache"] == 5
    assert load_corpus(folder / "again").judged_queries("synthetic") == load_corpus(
        folder / "adi-synthetic"
    ).judged_queries("synthetic")


def invoke(args: list, env: dict | None = None):
    return CliRunner().invoke(app, [str(arg) for arg in args], env=WIDE | (env or {}), catch_exceptions=False)


@pytest.mark.extra("synth")
def test_cli_writes_the_folder_and_refuses_to_overwrite_it(tmp_path):
    state, out = tmp_path / "state", tmp_path / "out"
    result = invoke(["synthesize", ADI, "--out", out, "--documents", "3", "--seed", "9", "--state-dir", state])
    assert result.exit_code == 0, result.output
    assert "3 questions from 3 documents (3 asked" in result.output
    assert "length: dropped" in result.output and "duplicate: dropped" in result.output
    assert f"judged queries in split 'synthetic' of {out}" in result.output
    kept = len(load_corpus(out).judged_queries("synthetic"))
    assert f"{kept} judged queries" in result.output
    card_before = (out / CARD_NAME).read_bytes()
    result = invoke(["synthesize", ADI, "--out", out, "--documents", "3", "--state-dir", state])
    assert result.exit_code == 2 and "already exists and is not an empty folder" in result.output
    assert (out / CARD_NAME).read_bytes() == card_before


@pytest.mark.extra("synth")
def test_cli_bad_model_or_endpoint_fails_in_one_line_before_any_work(tmp_path):
    state, out = tmp_path / "state", tmp_path / "out"
    for extra, message in [
        (["--model", tmp_path / "none.gguf"], "no such model file"),
        (["--endpoint", "http://127.0.0.1:9/v1", "--model", "m"], "cannot reach http://127.0.0.1:9/v1/models"),
        (["--examples-split", "dev"], "no split 'dev'"),
        (["--api", "chat"], "--api chat needs --endpoint"),
    ]:
        result = invoke(["synthesize", ADI, "--out", out, "--state-dir", state, *extra])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists() and not (state / "cache" / "generations").exists()


def test_cli_through_an_openai_compatible_endpoint(server, tmp_path):
    out = tmp_path / "out"
    args = ["synthesize", ADI, "--out", out, "--documents", "2", "--state-dir", tmp_path / "state"]
    args += ["--endpoint", server.url, "--model", SERVED_NAME, "--api-key-env", "WORKBENCH_TEST_KEY"]
    result = invoke(args, env={"WORKBENCH_TEST_KEY": API_KEY})
    assert result.exit_code == 0, result.output
    card = json.loads((out / CARD_NAME).read_text())
    assert card["generator"] | {"endpoint": None} == {
        "kind": "openai-compatible",
        "endpoint": None,
        "model": SERVED_NAME,
        "api": "completions",
        "api_key_env": "WORKBENCH_TEST_KEY",
        "api_key_set": True,
    }
    assert card["generation"]["asked_now"] == 2 and API_KEY not in (out / CARD_NAME).read_text()


def test_a_study_tuned_on_generated_queries_says_so(written, tmp_path, mlflow_template):
    from stores import link_test_stores

    folder, _, cache, _ = written
    study = tmp_path / "synthetic.toml"
    study.write_text(
        f'name = "on-generated"\ncorpus = "{folder / "adi-synthetic"}"\ntune_split = "synthetic"\n'
        'heldout_split = "test"\nn_trials = 3\nsampler = "random"\nlatency_sample = 2\n'
        '[space.fusion]\nmethod = "bm25"\n[space.bm25]\nk1 = { low = 0.5, high = 2.0 }\n'
    )
    state = tmp_path / "state"
    state.mkdir()
    link_test_stores(state, cache, mlflow_template)
    result = invoke(["run", study, "--state-dir", state])
    assert result.exit_code == 0, result.output
    assert "note: the tuning queries were generated" in result.output
    assert "the verdict on the real held-out queries ('test') is the one that counts" in result.output


def test_the_reranker_trainer_takes_the_synthetic_split(written, session_cache):
    from workbench.training.examples import build_training_examples

    folder, _, _, _ = written
    corpus = load_corpus(folder / "adi-synthetic")
    heldout = set(corpus.judged_queries("test"))
    examples = build_training_examples(
        corpus, "synthetic", heldout, negatives_per_query=2, validation_fraction=0.2, cache=session_cache
    )
    used = set(examples.query_ids) | set(examples.validation_query_ids)
    assert used <= set(corpus.judged_queries("synthetic")) and not used & heldout


@pytest.mark.slow
def test_both_trainers_learn_from_the_generated_questions(written, tmp_path, session_cache):
    """One tiny epoch each, real models: the cards say they learnt from the synthetic split only."""
    folder, _, _, _ = written
    corpus_dir = folder / "adi-synthetic"
    generated = set(load_corpus(corpus_dir).judged_queries("synthetic"))
    study = tmp_path / "study.toml"
    study.write_text(f'name = "s"\ncorpus = "{corpus_dir}"\ntune_split = "synthetic"\nheldout_split = "test"\n')
    state = tmp_path / "state"
    state.mkdir()
    (state / "cache").symlink_to(session_cache.root, target_is_directory=True)
    for command, card_name in (("train-reranker", "workbench-reranker.json"), ("train-encoder", "workbench-encoder.json")):
        out = tmp_path / command
        args = [command, corpus_dir, "--split", "synthetic", "--out", out, "--epochs", "1", "--max-length", "64"]
        result = invoke([*args, "--study", study, "--state-dir", state])
        assert result.exit_code == 0, result.output
        card = json.loads((out / card_name).read_text())
        assert card["split"] == "synthetic" and card["epochs"] == 1
        seen = set(card["training_query_ids"]) | set(card["validation_query_ids"])
        assert card["training_queries"] >= 1 and seen <= generated
