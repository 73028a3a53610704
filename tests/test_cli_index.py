"""Tests of `workbench index` (build, update in place) and of the CLI's refusals (exit 2) around
saved indexes and documents-only folders, through Typer's CliRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from workbench.cli import app
from workbench.retrieval.config import DEFAULT_MODEL, pipeline_config_from_dict, save_pipeline_config
from workbench.retrieval.index import current_version
from workbench.retrieval.models import resolve_model
from workbench.retriever import Retriever

REPO = Path(__file__).resolve().parent.parent
BM25_CONFIG = REPO / "configs" / "bm25.toml"
WIDE = {"COLUMNS": "400"}
DOCS = {
    "billing.txt": "Invoices are sent on the first day of every month by email.",
    "refunds.md": "# Refunds\nA refund reaches your card within ten working days.",
    "faq/password.txt": "Reset your password from the login page with the link we email you.",
    "faq/shipping.txt": "Parcels ship within two days; tracking numbers arrive by email.",
}
QUERIES = ["when do invoices arrive", "refund to my card", "reset password email", "parcel tracking"]


def invoke(*args) -> object:
    return CliRunner().invoke(app, [str(arg) for arg in args], env=WIDE, catch_exceptions=False)


def write_docs(folder: Path, docs: dict[str, str]) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    for name, text in docs.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def hits(retriever: Retriever) -> list[list[tuple[str, float]]]:
    return [[(hit.doc_id, round(hit.score, 5)) for hit in retriever.search(query, k=4)] for query in QUERIES]


def test_index_builds_a_folder_that_loads_and_refuses_to_overwrite_it(tmp_path: Path):
    docs = write_docs(tmp_path / "kb", DOCS)
    out = tmp_path / "index"
    result = invoke("index", BM25_CONFIG, docs, "--out", out, "--state-dir", tmp_path / "state")
    assert result.exit_code == 0, result.output
    assert "indexed 4 documents" in result.output and f"workbench serve {out}" in result.output
    assert Retriever.load(out).search("refund to my card", k=1)[0].doc_id == "refunds.md"

    version = current_version(out)
    again = invoke("index", BM25_CONFIG, docs, "--out", out, "--state-dir", tmp_path / "state")
    assert again.exit_code == 2 and "already exists; pass --update" in again.output
    assert current_version(out) == version


def test_index_update_reindexes_only_what_changed_and_equals_a_rebuild(tmp_path: Path):
    out = tmp_path / "index"
    assert invoke("index", BM25_CONFIG, write_docs(tmp_path / "kb", DOCS), "--out", out).exit_code == 0

    edited = dict(DOCS)
    del edited["faq/shipping.txt"]
    edited["billing.txt"] = "Invoices are sent on the fifteenth of every month by post."
    edited["faq/cancel.txt"] = "Cancel your subscription any time from the account page."
    docs = write_docs(tmp_path / "kb", edited)
    result = invoke("index", BM25_CONFIG, docs, "--out", out, "--update")
    assert result.exit_code == 0, result.output
    assert "1 added, 1 changed, 1 removed, 2 unchanged; 2 chunks indexed" in result.output

    assert hits(Retriever.load(out)) == hits(Retriever.from_config(BM25_CONFIG, docs))


def test_index_update_refuses_another_config_and_a_folder_that_is_not_an_index(tmp_path: Path):
    docs = write_docs(tmp_path / "kb", DOCS)
    out = tmp_path / "index"
    assert invoke("index", BM25_CONFIG, docs, "--out", out).exit_code == 0
    other = tmp_path / "other.toml"
    save_pipeline_config(pipeline_config_from_dict({"retrievers": [{"kind": "bm25", "k1": 0.9}]}), other)
    result = invoke("index", other, docs, "--out", out, "--update")
    assert result.exit_code == 2 and "differs from the config the index" in result.output

    result = invoke("index", BM25_CONFIG, docs, "--out", tmp_path / "empty", "--update")
    assert result.exit_code == 2 and "not a workbench index" in result.output


def test_commands_refuse_an_index_whose_model_changed(tmp_path: Path):
    model = Path(shutil.copytree(resolve_model(DEFAULT_MODEL), tmp_path / "minilm"))
    config = tmp_path / "dense.toml"
    save_pipeline_config(pipeline_config_from_dict({"retrievers": [{"kind": "dense", "model": str(model)}]}), config)
    docs = write_docs(tmp_path / "kb", DOCS)
    out = tmp_path / "index"
    assert invoke("index", config, docs, "--out", out, "--state-dir", tmp_path / "state").exit_code == 0

    tokenizer_config = model / "tokenizer_config.json"
    tokenizer_config.write_text(json.dumps(json.loads(tokenizer_config.read_text()), indent=8))
    for args in (["serve", out], ["index", config, docs, "--out", out, "--update"]):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert "has fingerprint" in result.output and "rebuild the index" in result.output


def test_search_takes_documents_alone_and_evaluate_says_it_needs_judgements(tmp_path: Path):
    docs = write_docs(tmp_path / "kb", DOCS)
    searched = invoke("search", BM25_CONFIG, "refund to my card", "--corpus", docs, "--state-dir", tmp_path / "state")
    assert searched.exit_code == 0, searched.output
    assert "  1. " in searched.output and "refunds.md" in searched.output.splitlines()[0]

    result = invoke("evaluate", BM25_CONFIG, "--corpus", docs, "--state-dir", tmp_path / "state")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "no queries file and no qrels/ folder" in lines[0] and "workbench index" in lines[0]
