"""The dashboard: the real MLflow server, started as ``workbench ui`` starts it, lists a study's runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from stores import link_test_stores

from workbench.reporting.dashboard import dashboard_command
from workbench.study.config import load_study_config
from workbench.study.runner import run_study

pytestmark = pytest.mark.slow  # starts the MLflow UI

ADI = Path(__file__).resolve().parents[2] / "corpora" / "adi"
STARTUP_SECONDS = 60

STUDY = f"""
name = "dashboard"
corpus = "{ADI}"
tune_split = "test"
heldout = "split"
n_trials = 3
sampler = "random"
seed = 2
latency_sample = 3

[space.fusion]
method = ["bm25", "convex"]
[space.bm25]
k1 = {{ low = 0.5, high = 2.0 }}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def post_json(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def wait_until_healthy(base: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the MLflow server exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    pytest.fail(f"the MLflow server did not answer /health within {STARTUP_SECONDS} s:\n{log.read_text()}")


def stop(server: subprocess.Popen) -> None:
    """Ends the server and whatever it spawned (it runs in its own process group)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_the_dashboard_lists_the_studys_runs(tmp_path, session_cache, mlflow_template):
    state = tmp_path / "state"
    state.mkdir()
    link_test_stores(state, session_cache, mlflow_template)
    study_file = tmp_path / "dashboard.toml"
    study_file.write_text(STUDY)
    config = load_study_config(study_file)
    outcome = run_study(config, state, show_progress=False)
    trials = outcome.study.trials
    assert len(trials) == config.n_trials

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    command = dashboard_command(outcome.session.locations.tracking_uri, state / "mlflow-artifacts", port)
    with log.open("wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(base, server, log)
        query = urllib.parse.urlencode({"experiment_name": config.name})
        experiment = get_json(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}")["experiment"]
        runs = post_json(
            f"{base}/api/2.0/mlflow/runs/search",
            {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000},
        )["runs"]
    finally:
        stop(server)

    assert experiment["artifact_location"] == (state / "mlflow-artifacts").resolve().as_uri()
    assert len(runs) == len(trials) + 1
    tags = {run["info"]["run_id"]: {tag["key"]: tag["value"] for tag in run["data"]["tags"]} for run in runs}
    parents = [run_id for run_id, run_tags in tags.items() if run_tags.get("workbench.role") == "study"]
    assert len(parents) == 1
    children = {run_id: run_tags for run_id, run_tags in tags.items() if run_id != parents[0]}
    assert all(run_tags["mlflow.parentRunId"] == parents[0] for run_tags in children.values())
    assert sorted(int(run_tags["workbench.trial_number"]) for run_tags in children.values()) == [
        trial.number for trial in trials
    ]
    for run in runs:
        if run["info"]["run_id"] in children:
            assert "ndcg_at_10" in {metric["key"] for metric in run["data"]["metrics"]}
