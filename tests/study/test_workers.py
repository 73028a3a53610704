"""Several workers, one study: exact trial counts, nothing lost when a worker is killed mid-trial.

Real worker processes (`workbench run --workers 2`), a real Optuna journal file, a real MLflow
store; the database test starts a throwaway PostgreSQL cluster and an `mlflow server`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import stores
from gates import TrialGate
from stores import ADI, BM25_OR_HYBRID, link_test_stores, mlflow_runs

from workbench.retrieval.cache import EmbeddingStore, blob_payload
from workbench.study.attributes import BASELINE_ATTR, FAIL_ATTR, METRICS_ATTR, WORKER_ATTR
from workbench.study.config import load_study_config
from workbench.study.optuna_study import load_optuna_study, study_locations
from workbench.study.workers import worker_label

pytestmark = pytest.mark.slow  # worker processes, a killed worker, PostgreSQL and an MLflow server

COMPLETE = optuna.trial.TrialState.COMPLETE
FAIL = optuna.trial.TrialState.FAIL


write_study = functools.partial(stores.write_study, space=BM25_OR_HYBRID, seed=3)


def run_command(study_file: Path, state: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", "run", str(study_file), "--state-dir", str(state), *flags]


@contextlib.contextmanager
def running(command: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None):
    """Starts ``command`` in its own process group, output to ``log``; kills the group if it outlives the block."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True, env=env
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # the run and its workers
                process.wait()


def run_two_workers(study_file: Path, state: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Runs `workbench run --workers 2` to its end; returns the finished process with its output."""
    return subprocess.run(
        run_command(study_file, state, "--workers", "2"),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        check=False,
    )


def is_surplus(trial) -> bool:
    return trial.state == FAIL and trial.user_attrs.get(FAIL_ATTR, "").startswith("surplus")


def check_one_run_per_trial(study, tracking_uri: str, name: str) -> dict:
    """Every trial that got past the start has exactly one MLflow child run; returns them by trial number."""
    _, _, children = mlflow_runs(tracking_uri, name)
    started = sorted(trial.number for trial in study.trials if not is_surplus(trial))
    assert sorted(children) == started
    for trial in study.trials:
        if trial.state == COMPLETE:
            assert children[trial.number].info.status == "FINISHED"
    return children


def test_two_local_workers_share_one_study(tmp_path, session_cache, mlflow_template):
    state = tmp_path / "state"
    state.mkdir()
    link_test_stores(state, session_cache, mlflow_template)
    path = write_study(tmp_path, "pair", n_trials=8)
    log = tmp_path / "run.log"
    gate = TrialGate(tmp_path / "gate", trials=[0, 1])  # a worker held in trial 0 leaves trial 1 to the other

    with running(run_command(path, state, "--workers", "2"), log, tmp_path, gate.environment()) as process:
        first, second = (gate.wait_until_inside(number, process, log) for number in (0, 1))
        gate.release(0)
        gate.release(1)
        returncode = process.wait(timeout=600)

    output = log.read_text()
    assert returncode == 0, output
    assert "2 workers started" in output
    assert first != second, "trials 0 and 1 ran in different worker processes"
    config = load_study_config(path)
    locations = study_locations(config, state)
    study = load_optuna_study(config, locations)
    complete = [trial for trial in study.trials if trial.state == COMPLETE]
    assert len(complete) == 8, "exactly the requested number of finished trials"
    numbers = [trial.number for trial in study.trials]
    assert len(set(numbers)) == len(numbers)
    assert len({trial.user_attrs[WORKER_ATTR] for trial in complete}) == 2, "both workers ran trials"
    sampled = [tuple(sorted(trial.params.items())) for trial in complete if BASELINE_ATTR not in trial.user_attrs]
    assert len(set(sampled)) == len(sampled), "the workers proposed different points"
    check_one_run_per_trial(study, locations.tracking_uri, config.name)
    assert (locations.output_dir / "best.toml").is_file()


def test_workers_run_the_fold_studies_too(tmp_path, session_cache, mlflow_template):
    state = tmp_path / "state"
    state.mkdir()
    link_test_stores(state, session_cache, mlflow_template)
    path = write_study(tmp_path, "folds", n_trials=4, heldout="kfold", extra="folds = 3")
    log = tmp_path / "run.log"

    with running(run_command(path, state, "--workers", "2"), log, tmp_path) as process:
        returncode = process.wait(timeout=600)

    output = log.read_text()
    assert returncode == 0, output
    assert "3-fold cross-validation" in output
    config = load_study_config(path)
    locations = study_locations(config, state)
    for fold in (1, 2, 3):
        study = load_optuna_study(config.model_copy(update={"name": f"folds-fold-{fold}"}), locations)
        complete = [trial for trial in study.trials if trial.state == COMPLETE]
        assert len(complete) == 4, f"fold {fold}: exactly the requested number of finished trials"
        runners = {trial.user_attrs[WORKER_ATTR] for trial in complete}
        assert worker_label(process.pid) not in runners, f"fold {fold}: the workers ran its trials, not `workbench run`"
        sampled = [tuple(sorted(trial.params.items())) for trial in complete if BASELINE_ATTR not in trial.user_attrs]
        assert len(set(sampled)) == len(sampled), f"fold {fold}: the workers proposed different points"


def kill_a_worker_inside(gate: TrialGate, number: int, process: subprocess.Popen, log: Path) -> None:
    """SIGKILLs the worker once it is blocked inside trial ``number``, which therefore cannot finish."""
    os.kill(gate.wait_until_inside(number, process, log), signal.SIGKILL)


def check_cache_intact(cache_root: Path) -> None:
    """Every blob passes its checksum, and every embedding shard is read back (none dropped as corrupt)."""
    blobs = list(cache_root.rglob("*.blob"))
    assert blobs and all(blob_payload(blob.read_bytes()) is not None for blob in blobs)
    folders = {manifest.parent for manifest in (cache_root / "embeddings").rglob("*.json")}
    assert folders
    for folder in folders:
        before = sorted(folder.glob("*.json"))
        EmbeddingStore(folder)  # removes a shard whose checksums fail
        assert sorted(folder.glob("*.json")) == before


def test_a_worker_killed_mid_trial_loses_nothing(tmp_path, mlflow_template):
    state = tmp_path / "state"
    state.mkdir()
    (state / "mlflow.db").write_bytes(mlflow_template.read_bytes())  # a cache of its own, written by the workers
    path = write_study(tmp_path, "kill", n_trials=8)
    log = tmp_path / "run.log"
    killed = 3  # a sampled trial, after both baselines have started
    gate = TrialGate(tmp_path / "gate", trials=[killed])

    with running(run_command(path, state, "--workers", "2"), log, tmp_path, gate.environment()) as process:
        kill_a_worker_inside(gate, killed, process, log)
        returncode = process.wait(timeout=600)

    output = log.read_text()
    assert returncode == 0, output
    assert "stopped with signal 9" in output
    config = load_study_config(path)
    locations = study_locations(config, state)
    study = load_optuna_study(config, locations)
    trials = {trial.number: trial for trial in study.trials}
    assert trials[killed].state == FAIL
    assert "died during the trial" in trials[killed].user_attrs[FAIL_ATTR]
    (retry,) = [trial for trial in study.trials if trial.system_attrs.get("failed_trial") == killed]
    assert retry.state == COMPLETE and retry.params == trials[killed].params
    complete = [trial for trial in study.trials if trial.state == COMPLETE]
    assert len(complete) == 8 and all(METRICS_ATTR in trial.user_attrs for trial in complete)
    children = check_one_run_per_trial(study, locations.tracking_uri, config.name)
    assert children[killed].info.status == "FAILED"
    assert "died" in children[killed].data.tags[FAIL_ATTR]
    check_cache_intact(state / "cache")


def test_the_trial_of_a_dead_local_process_is_failed_once_and_queued_again(tmp_path: Path):
    from workbench.study.storage import journal_url, open_storage
    from workbench.study.workers import OrphanedTrialHandler, fail_dead_local_trials

    url = journal_url(tmp_path / "optuna.journal")
    study = optuna.create_study(study_name="dead", storage=open_storage(url))
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_worker = worker_label(int(finished.stdout))  # a process of this machine that ended
    trial.set_user_attr(WORKER_ATTR, dead_worker)
    alive = study.ask()
    alive.set_user_attr(WORKER_ATTR, worker_label())

    assert fail_dead_local_trials(study, url, OrphanedTrialHandler()) == [trial.number]
    assert fail_dead_local_trials(study, url, OrphanedTrialHandler()) == []  # once

    trials = {one.number: one for one in study.get_trials()}
    assert trials[trial.number].state == optuna.trial.TrialState.FAIL
    assert trials[trial.number].user_attrs[FAIL_ATTR] == f"worker {dead_worker} died during the trial"
    assert trials[alive.number].state == optuna.trial.TrialState.RUNNING
    (retry,) = [one for one in trials.values() if one.system_attrs.get("failed_trial") == trial.number]
    assert retry.state == optuna.trial.TrialState.WAITING and retry.params == {"x": trial.params["x"]}
    assert WORKER_ATTR not in retry.user_attrs and FAIL_ATTR not in retry.user_attrs


# --- across machines: PostgreSQL storage with heartbeats, an MLflow tracking server -------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return candidates[-1].parent if candidates else None


def as_postgres_user(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as Debian's postgres user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster on a free localhost port; yields its URL."""
    import shutil
    import tempfile

    bin_dir = postgres_bin()
    if bin_dir is None:
        message = "PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    folder = Path(tempfile.mkdtemp(prefix="workbench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        as_postgres_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-o", options, "-w"]
    subprocess.run(as_postgres_user([*pg_ctl, "start"]), check=True, capture_output=True)
    try:
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "workbench"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/workbench"
    finally:
        subprocess.run(as_postgres_user([*pg_ctl, "-m", "immediate", "stop"]), capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def mlflow_server(tmp_path, mlflow_template):
    """An `mlflow server` on a free localhost port over a sqlite store; yields its URL."""
    import urllib.request

    port = free_port()
    (tmp_path / "server.db").write_bytes(mlflow_template.read_bytes())
    log = (tmp_path / "mlflow-server.log").open("wb")
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", (tmp_path / "server-artifacts").as_uri(),
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(tmp_path / 'mlflow-server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_workers_on_postgres_retry_the_trial_of_a_killed_worker(tmp_path, session_cache, postgres_url, mlflow_server):
    state = tmp_path / "state"
    state.mkdir()
    (state / "cache").symlink_to(session_cache.root, target_is_directory=True)
    path = write_study(tmp_path, "remote", n_trials=8, extra="heartbeat_s = 1")
    flags = ("--workers", "2", "--storage", postgres_url, "--tracking-uri", mlflow_server)
    config = load_study_config(path)
    locations = study_locations(config, state, postgres_url, mlflow_server)
    log = tmp_path / "run.log"

    killed = 3
    gate = TrialGate(tmp_path / "gate", trials=[killed])

    # The schema made before the run, so that two processes cannot race to create it.
    optuna.storages.RDBStorage(postgres_url)
    with running(run_command(path, state, *flags), log, tmp_path, gate.environment()) as process:
        pid = gate.wait_until_inside(killed, process, log)
        time.sleep(2)  # the trial's heartbeat thread beats every second: let it record one before the kill
        os.kill(pid, signal.SIGKILL)
        returncode = process.wait(timeout=600)

    output = log.read_text()
    assert returncode == 0, output
    study = load_optuna_study(config, locations)
    trials = {trial.number: trial for trial in study.trials}
    assert trials[killed].state == FAIL, "the heartbeat check failed the silent trial"
    (retry,) = [trial for trial in study.trials if trial.system_attrs.get("failed_trial") == killed]
    assert retry.state == COMPLETE and retry.params == trials[killed].params
    assert len([trial for trial in study.trials if trial.state == COMPLETE]) == 8
    children = check_one_run_per_trial(study, mlflow_server, config.name)
    assert children[killed].info.status == "FAILED"
    assert children[retry.number].info.status == "FINISHED"


# --- refusals, before any trial ----------------------------------------------------------------


def test_a_worker_refuses_a_study_that_does_not_exist(tmp_path):
    from typer.testing import CliRunner

    from workbench.cli import app

    path = write_study(tmp_path, "nowhere", n_trials=2)
    result = CliRunner().invoke(app, ["worker", str(path), "--state-dir", str(tmp_path / "state")])

    assert result.exit_code == 2
    assert "no study named 'nowhere'" in result.output and "workbench run" in result.output


def test_several_workers_refuse_sqlite_storage(tmp_path):
    from typer.testing import CliRunner

    from workbench.cli import app

    path = write_study(tmp_path, "lite", n_trials=2)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = CliRunner().invoke(
        app, ["run", str(path), "--workers", "2", "--storage", url, "--state-dir", str(tmp_path)]
    )

    assert result.exit_code == 2
    assert "sqlite is not safe for 2 worker processes" in result.output
    assert not (tmp_path / "optuna.db").exists()


def test_a_worker_with_another_corpus_is_refused(tmp_path, session_cache, mlflow_template):
    import shutil

    from typer.testing import CliRunner

    from workbench.cli import app
    from workbench.study.runner import run_study

    state = tmp_path / "state"
    state.mkdir()
    link_test_stores(state, session_cache, mlflow_template)
    run_study(load_study_config(write_study(tmp_path, "same", n_trials=2)), state, show_progress=False)
    changed = tmp_path / "changed"
    shutil.copytree(ADI, changed / "adi")
    with (changed / "adi" / "corpus.jsonl").open("a") as corpus:
        corpus.write('{"_id": "extra", "title": "", "text": "a document the study never saw"}\n')
    other = write_study(changed, "same", n_trials=2).read_text().replace(str(ADI), str(changed / "adi"))
    (changed / "same.toml").write_text(other)

    result = CliRunner().invoke(app, ["worker", str(changed / "same.toml"), "--state-dir", str(state)])

    assert result.exit_code == 2
    assert "differs from the one study 'same' was started on" in result.output


def test_ctrl_c_stops_every_worker_cleanly_and_the_run_resumes(tmp_path, session_cache, mlflow_template):
    state = tmp_path / "state"
    state.mkdir()
    link_test_stores(state, session_cache, mlflow_template)
    path = write_study(tmp_path, "stop", n_trials=8)
    log = tmp_path / "run.log"
    gate = TrialGate(tmp_path / "gate", trials=[2, 3])  # each worker blocks inside one sampled trial

    with running(run_command(path, state, "--workers", "2"), log, tmp_path, gate.environment()) as process:
        for number in (2, 3):
            gate.wait_until_inside(number, process, log)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        returncode = process.wait(timeout=120)

    assert returncode == 130, log.read_text()
    config = load_study_config(path)
    locations = study_locations(config, state)
    study = load_optuna_study(config, locations)
    assert not [trial for trial in study.trials if trial.state == optuna.trial.TrialState.RUNNING]
    _, parent, children = mlflow_runs(locations.tracking_uri, config.name)
    assert all(run.info.status != "RUNNING" for run in [parent, *children.values()])

    rerun = run_two_workers(path, state, tmp_path)

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    study = load_optuna_study(config, locations)
    assert len([trial for trial in study.trials if trial.state == COMPLETE]) == 8


def test_a_state_folder_from_before_the_journal_keeps_its_sqlite_study(tmp_path):
    from workbench.study.optuna_study import study_locations

    config = load_study_config(write_study(tmp_path, "old", n_trials=2))
    (tmp_path / "optuna.db").write_bytes(b"")

    assert study_locations(config, tmp_path).storage_url == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert study_locations(config, tmp_path / "new").storage_url.startswith("journal:")
