"""Faults and damaged inputs of studies and indexes through the real CLI (issue 22): each is one
``error:`` line, exit code 2 for bad input and 1 for a fault of the environment, and nothing is
left half-written. The table is docs/errors.md."""

from __future__ import annotations

import errno
import json
import socket
from pathlib import Path

import optuna
import pytest
import stores
from stores import linked_state
from typer.testing import CliRunner

from workbench.cli import app

REPO = Path(__file__).resolve().parent.parent
ADI = REPO / "corpora" / "adi"
BM25_CONFIG = REPO / "configs" / "bm25.toml"
WIDE = {"COLUMNS": "400"}
BM25_SPACE = '[space.fusion]\nmethod = "bm25"\n[space.bm25]\nk1 = { low = 0.5, high = 2.0 }\n'


def invoke(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args], env=WIDE, catch_exceptions=False)


def error_line(output: str, exit_code: int, expected_code: int, *needles: str) -> str:
    """Asserts the output ends in one ``error:`` line (the only one) holding every needle, with no traceback."""
    assert exit_code == expected_code, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], output
    for needle in needles:
        assert needle in errors[0], output
    return errors[0]


def closed_port() -> int:
    """Returns a port of 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_study(folder: Path, name: str = "faults", extra: str = "", n_trials: int = 2) -> Path:
    return stores.write_study(folder, name, n_trials, BM25_SPACE, seed=5, extra=extra)


# --- study files ---------------------------------------------------------------------------------


def test_a_study_file_that_is_not_utf8_or_is_a_folder_is_one_line(tmp_path):
    binary = tmp_path / "latin1.toml"
    binary.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    folder = tmp_path / "folder.toml"
    folder.mkdir()

    not_utf8 = invoke("run", binary, "--state-dir", tmp_path / "state")
    a_folder = invoke("run", folder, "--state-dir", tmp_path / "state")

    error_line(not_utf8.output, not_utf8.exit_code, 2, str(binary), "not UTF-8")
    error_line(a_folder.output, a_folder.exit_code, 2, str(folder), "is a folder")


def test_a_300_character_study_name_is_refused_by_key(tmp_path):
    study_file = write_study(tmp_path)
    study_file.write_text(study_file.read_text().replace('name = "faults"', f'name = "{"n" * 300}"'))

    result = invoke("run", study_file, "--state-dir", tmp_path / "state")

    error_line(result.output, result.exit_code, 2, str(study_file), "name: String should have at most 100 characters")
    assert not (tmp_path / "state").exists()


def test_an_inverted_range_says_only_that(tmp_path):
    study_file = tmp_path / "inverted.toml"
    study_file.write_text(
        f'name = "inverted"\ncorpus = "{ADI}"\ntune_split = "test"\n[space.bm25]\nb = {{ low = 2.0, high = 0.6 }}\n'
    )

    result = invoke("run", study_file, "--state-dir", tmp_path / "state")

    line = error_line(result.output, result.exit_code, 2)
    assert line == f"error: {study_file}: space.bm25.b: low (2.0) must not exceed high (0.6)"


# --- storages and tracking servers ---------------------------------------------------------------


def test_a_mysql_storage_is_one_line(tmp_path):
    study_file = write_study(tmp_path, extra=f'storage = "mysql://user:secret@127.0.0.1:{closed_port()}/db"')

    result = invoke("run", study_file, "--state-dir", tmp_path / "state")

    assert result.exit_code in (1, 2), result.output  # 2 without its driver (the usual case), 1 with it
    line = error_line(result.output, result.exit_code, result.exit_code, "storage 'mysql://user:***@127.0.0.1")
    assert "secret" not in line


def test_an_unreachable_postgresql_is_one_line_exit_1(tmp_path):
    pytest.importorskip("psycopg")
    url = f"postgresql://user:secret@127.0.0.1:{closed_port()}/db"
    study_file = write_study(tmp_path, extra=f'storage = "{url}"')

    result = invoke("run", study_file, "--state-dir", tmp_path / "state")

    line = error_line(result.output, result.exit_code, 1, "storage 'postgresql://user:***@127.0.0.1", "cannot connect")
    assert "secret" not in line


def test_a_dead_tracking_server_fails_fast_before_any_trial(tmp_path, state):
    study_file = write_study(tmp_path)
    uri = f"http://127.0.0.1:{closed_port()}"

    result = invoke("run", study_file, "--tracking-uri", uri, "--state-dir", state)

    error_line(result.output, result.exit_code, 1, f"tracking URI {uri}: no MLflow server answers")
    journal = state / "optuna.journal"
    assert not journal.exists() or "faults" not in journal.read_text()  # no study, let alone a trial


# --- damaged journals ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_journal(tmp_path_factory, session_cache, mlflow_template):
    """A state folder holding a finished two-trial study, its journal bytes kept to restore: (study file, state, bytes)."""
    folder = tmp_path_factory.mktemp("journal-study")
    state = linked_state(folder, session_cache, mlflow_template)
    study_file = write_study(folder)
    result = invoke("run", study_file, "--state-dir", state)
    assert result.exit_code == 0, result.output
    return study_file, state, (state / "optuna.journal").read_bytes()


def finished_trials(state: Path, name: str = "faults") -> int:
    from workbench.study.storage import journal_url, open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(journal_url(state / "optuna.journal")))
    return len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))


@pytest.mark.parametrize("tail", [b'{"op_code": 5, "worker_id": "x", "tri', b"garbage appended by hand\n"])
def test_a_torn_or_stray_last_journal_line_is_set_aside_and_said(tail, finished_journal, tmp_path):
    study_file, state, intact = finished_journal
    journal = state / "optuna.journal"
    journal.write_bytes(intact + tail)
    out = tmp_path / "best.toml"

    result = invoke("export", study_file, "--out", out, "--state-dir", state)

    assert result.exit_code == 0, result.output
    assert f"recovered: the last record of the journal {journal}" in result.output
    assert journal.read_bytes() == intact
    (aside,) = state.glob("optuna.journal.torn-*")
    assert aside.read_bytes() == tail
    aside.unlink()
    assert finished_trials(state) == 2


def test_a_journal_damaged_before_its_last_line_is_one_line_and_left_as_it_is(finished_journal, tmp_path):
    study_file, state, intact = finished_journal
    journal = state / "optuna.journal"
    lines = intact.splitlines(keepends=True)
    damaged = b"".join([*lines[:3], b"{not json\n", *lines[3:]])
    journal.write_bytes(damaged)
    try:
        result = invoke("export", study_file, "--out", tmp_path / "best.toml", "--state-dir", state)

        error_line(result.output, result.exit_code, 2, str(journal), "line 4 of", "head -n 3")
        assert journal.read_bytes() == damaged
    finally:
        journal.write_bytes(intact)


def test_a_storage_that_is_not_a_journal_is_one_line(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\nabout the study\n")
    study_file = write_study(tmp_path, extra=f'storage = "journal:///{notes}"')

    result = invoke("run", study_file, "--state-dir", tmp_path / "state")

    error_line(result.output, result.exit_code, 2, str(notes), "not an Optuna journal")
    assert notes.read_text() == "my notes\nabout the study\n"


# --- a full disk after the trials ----------------------------------------------------------------


def test_a_full_disk_while_writing_plots_is_one_line_and_keeps_the_trials(tmp_path, state, monkeypatch):
    from plotly.basedatatypes import BaseFigure

    def write_half_then_fill_the_disk(figure, file, *args, **kwargs):
        Path(file).write_text("<html><head><script>/* half of plotly.js")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(BaseFigure, "write_html", write_half_then_fill_the_disk)
    study_file = write_study(tmp_path)

    result = invoke("run", study_file, "--state-dir", state)

    plots = state / "studies" / "faults" / "plots"
    error_line(result.output, result.exit_code, 1, str(plots), "No space left on device", "2 finished trials are kept")
    assert not plots.exists() or not list(plots.iterdir())  # no half-written plot, no temp file
    assert finished_trials(state) == 2
    assert (state / "studies" / "faults" / "best.toml").is_file()


# --- saved indexes -------------------------------------------------------------------------------


@pytest.fixture
def index(tmp_path) -> tuple[Path, Path]:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("invoices are sent monthly")
    (docs / "b.txt").write_text("refunds reach your card")
    out = tmp_path / "index"
    result = invoke("index", BM25_CONFIG, docs, "--out", out, "--state-dir", tmp_path / "state")
    assert result.exit_code == 0, result.output
    return docs, out


@pytest.mark.parametrize("key", ["files", "models", "corpus"])
def test_a_manifest_without_a_table_is_one_line(key, index, tmp_path):
    from workbench.retrieval.index import current_version

    docs, out = index
    manifest = current_version(out) / "manifest.json"
    data = json.loads(manifest.read_text())
    del data[key]
    manifest.write_text(json.dumps(data))

    result = invoke("index", BM25_CONFIG, docs, "--out", out, "--update", "--state-dir", tmp_path / "state")

    error_line(result.output, result.exit_code, 2, str(manifest), f"no '{key}' table", "rebuild")


def test_index_out_onto_a_plain_file_says_so(tmp_path, index):
    docs, _ = index
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me")

    result = invoke("index", BM25_CONFIG, docs, "--out", plain, "--state-dir", tmp_path / "state")

    line = error_line(result.output, result.exit_code, 2, str(plain), "is a file")
    assert "--update" not in line
    assert plain.read_text() == "keep me"
