"""From a folder of .txt files to a served answer, through the CLI: `workbench synthesize` writes
judged questions with the bundled Gemma 3 270M, a study tunes on them, the guard judges its choice,
and the export indexes and searches the same documents. Studies and evaluation still refuse the
documents alone."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest
from stores import link_test_stores
from typer.testing import CliRunner

from workbench.cli import app
from workbench.retrieval.corpus import load_corpus
from workbench.synthesis.writer import CARD_NAME

pytestmark = [pytest.mark.slow, pytest.mark.extra("synth")]

DOCS_DEMO = Path(__file__).resolve().parents[2] / "corpora" / "docs-demo"
WIDE = {"COLUMNS": "400"}


def invoke(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args], env=WIDE, catch_exceptions=False)


def test_text_files_to_synthesize_run_export_index_search(tmp_path, session_cache, mlflow_template):
    documents = tmp_path / "notes"
    documents.mkdir()
    for path in sorted(DOCS_DEMO.glob("*.txt"))[:10]:
        shutil.copy(path, documents / path.name)
    state = tmp_path / "state"
    state.mkdir()
    link_test_stores(state, session_cache, mlflow_template)

    study = tmp_path / "notes.toml"
    study.write_text(
        'name = "notes"\ncorpus = "notes-synthetic"\ntune_split = "synthetic"\nheldout = "kfold"\nfolds = 2\n'
        'n_trials = 3\nsampler = "random"\nseed = 3\nlatency_sample = 2\n'
        '[space.fusion]\nmethod = ["bm25", "dense", "rrf"]\n[space.bm25]\nk1 = [0.9, 1.5]\n'
    )
    # The documents alone judge nothing: a study on them is refused in one line.
    (tmp_path / "refused.toml").write_text(study.read_text().replace('"notes-synthetic"', '"notes"'))
    refused = invoke("run", tmp_path / "refused.toml", "--state-dir", state)
    assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1, refused.output
    assert "no queries file and no qrels/ folder" in refused.output and "workbench synthesize" in refused.output

    out = tmp_path / "notes-synthetic"
    made = invoke("synthesize", documents, "--out", out, "--documents", "6", "--seed", "1", "--state-dir", state)
    assert made.exit_code == 0, made.output
    card = json.loads((out / CARD_NAME).read_text())
    assert card["prompt"]["examples_from"] == "built-in" and card["counts"]["documents_sampled"] == 6
    corpus = load_corpus(out)
    assert corpus.splits() == ["synthetic"] and len(corpus.documents) == 10
    generated = corpus.judged_queries("synthetic")
    assert len(generated) == card["counts"]["kept"] >= 2
    assert all(next(iter(corpus.split_qrels("synthetic")[q])) in corpus.documents for q in generated)

    ran = invoke("run", study, "--state-dir", state, "--out", tmp_path / "best.toml")
    assert ran.exit_code == 0, ran.output
    assert "WARNING: the tuning queries were generated" in ran.output  # and so are the held-out ones
    best = tomllib.loads((tmp_path / "best.toml").read_text())
    provenance = best["provenance"]
    guard = provenance["guard"]
    assert guard["queries"] == len(generated) and 0.0 <= guard["p_beats_robust_default"] <= 1.0
    assert provenance["exported"] == ("tuned" if guard["keeps_choice"] else "robust-default")
    assert provenance["export_reason"][:80] in ran.output  # which config, and why, on the terminal too

    exported = invoke("export", study, "--out", tmp_path / "again.toml", "--state-dir", state)
    assert exported.exit_code == 0, exported.output
    again = tomllib.loads((tmp_path / "again.toml").read_text())
    assert again["provenance"]["exported"] == provenance["exported"]
    assert {k: v for k, v in again.items() if k not in ("provenance", "name")} == {
        k: v for k, v in best.items() if k not in ("provenance", "name")
    }

    indexed = invoke("index", tmp_path / "best.toml", documents, "--out", tmp_path / "index", "--state-dir", state)
    assert indexed.exit_code == 0, indexed.output
    assert "indexed 10 documents" in indexed.output
    question = next(iter(generated.values()))
    found = invoke("search", tmp_path / "best.toml", question, "--corpus", documents, "-k", "3", "--state-dir", state)
    assert found.exit_code == 0, found.output
    hits = [line.split()[2] for line in found.output.splitlines() if line.strip()[:2] in ("1.", "2.", "3.")]
    assert len(hits) == 3 and set(hits) <= set(corpus.documents)
