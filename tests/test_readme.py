"""The README, end to end, as a user types it: every command of its code blocks runs here, in
order, in a fresh folder (the demo study with fewer trials, to keep CI short). A command added to
the README that this test does not know how to run fails it, so the README cannot promise a
command nobody ran."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
from extras import require_extra

pytestmark = pytest.mark.slow  # the README's demo study end to end

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
# Install and test commands: `.ci/run` runs them around this test, not inside it.
# Install and test commands, and the commands behind the README's figures (a benchmark and the
# encoder it needs: minutes to hours, run alone on the machine, never inside the suite).
NOT_RUN_HERE = (
    "scripts/setup",
    ".venv/bin/python -m pytest",
    ".venv/bin/python benchmarks/",
    ".venv/bin/workbench distill-encoder",
)
SERVER_START_S = 600  # a generous bound for a loaded machine; nothing asserts on speed
README_PORTS = {"serve": 8000, "ui": 5000}  # the ports the README's servers listen on


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def readme_blocks(language: str) -> list[str]:
    """Returns the README's code blocks in ``language``, in order."""
    return re.findall(rf"```{language}\n(.*?)\n```", README.read_text(), flags=re.S)


def readme_commands() -> list[str]:
    """Every shell command of the README's bash blocks: continuation lines joined, `&&` chains
    split, comments dropped, install and test commands left out."""
    commands = []
    for block in readme_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ", 1)[0].strip()
            for command in filter(None, (part.strip() for part in line.split("&&"))):
                if not command.startswith(NOT_RUN_HERE):
                    commands.append(command)
    return commands


def test_every_readme_command_is_one_this_test_runs():
    unknown = [c for c in readme_commands() if not c.startswith((".venv/bin/workbench ", "curl "))]
    assert not unknown, f"README commands this test cannot run: {unknown}"
    subcommands = {shlex.split(c)[1] for c in readme_commands() if c.startswith(".venv/bin/workbench ")}
    assert subcommands <= set(RUNNERS), subcommands - set(RUNNERS)


class Tour:
    """A fresh folder laid out like the repository, a state folder, and servers to stop at the end."""

    def __init__(self, folder: Path):
        self.folder = folder
        for name in ("corpora", "configs"):
            (folder / name).symlink_to(REPO / name)
        # Copied, not linked: a study's corpus path (`../docs-demo-synthetic`) must resolve inside the tour.
        shutil.copytree(REPO / "studies", folder / "studies")
        self.environment = {
            **os.environ,
            "WORKBENCH_STATE_DIR": str(folder / "state"),
            "HF_HUB_OFFLINE": "1",
            "COLUMNS": "200",
            "PYTHONPATH": str(REPO),
        }
        self.servers: list[subprocess.Popen] = []
        self.outputs: dict[str, str] = {}  # the first output of each subcommand
        self.by_command: dict[str, str] = {}
        # The README's ports may be taken on a shared machine: each server gets a free one instead.
        self.ports = {command: free_port() for command in README_PORTS}

    def on_free_ports(self, command: str) -> str:
        """``command`` with the README's ports replaced by this tour's free ones."""
        for name, port in README_PORTS.items():
            command = command.replace(f"--port {port}", f"--port {self.ports[name]}")
            command = command.replace(f"127.0.0.1:{port}", f"127.0.0.1:{self.ports[name]}")
        return command

    def workbench(self, command: str) -> str:
        arguments = shlex.split(command)[1:]
        if arguments[0] == "run":
            # The demo's 20 trials cut to its two baselines, for CI: only whole documents are
            # encoded (a chunking trial would encode the corpus a second time).
            arguments += ["--trials", "2"]
        result = subprocess.run(
            [sys.executable, "-m", "workbench.cli", *arguments],
            capture_output=True, text=True, cwd=self.folder, env=self.environment, timeout=1800, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        self.outputs.setdefault(arguments[0], result.stdout)
        self.by_command[command] = result.stdout
        return result.stdout

    def start_server(self, command: str, ready: str, port: int) -> None:
        """Starts a long-running README command and waits until it answers on ``port``."""
        arguments = shlex.split(command)[1:]
        log = (self.folder / f"{arguments[0]}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", *arguments],
            cwd=self.folder, env=self.environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.servers.append(process)
        url = f"http://127.0.0.1:{port}{ready}"
        for _ in range(SERVER_START_S * 2):
            assert process.poll() is None, (self.folder / f"{arguments[0]}.log").read_text()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            try:
                process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        pytest.fail(f"{command} did not answer on {url}")

    def stop_servers(self) -> None:
        for process in self.servers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


def run_workbench(tour: Tour, command: str) -> None:
    tour.workbench(command)


def run_synthesize(tour: Tour, command: str) -> None:
    require_extra("synth")  # `scripts/setup synth`, which the README runs just before
    tour.workbench(command)


def run_serve(tour: Tour, command: str) -> None:
    tour.start_server(tour.on_free_ports(command), "/health", tour.ports["serve"])


def run_ui(tour: Tour, command: str) -> None:
    assert "--port" not in command, "the README's ui command uses the default port"
    tour.start_server(f"{command} --port {tour.ports['ui']}", "/", tour.ports["ui"])


RUNNERS = {
    "run": run_workbench,
    "evaluate": run_workbench,
    "search": run_workbench,
    "report": run_workbench,
    "index": run_workbench,
    "synthesize": run_synthesize,
    "serve": run_serve,
    "ui": run_ui,
}


def test_the_readme_tour_runs_as_written(tmp_path):
    tour = Tour(tmp_path)
    try:
        for command in readme_commands():
            if command.startswith("curl "):
                answer = subprocess.run(
                    shlex.split(tour.on_free_ports(command)), capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
                )
                assert answer.returncode == 0, answer.stderr
                hits = json.loads(answer.stdout)["hits"]
                assert len(hits) == 3 and hits[0]["rank"] == 1
                continue
            RUNNERS[shlex.split(command)[1]](tour, command)
        for example in readme_blocks("python"):
            ran = subprocess.run(
                [sys.executable, "-c", example], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                check=False, env=tour.environment,
            )  # fmt: skip
            assert ran.returncode == 0, f"{example}\n{ran.stderr}"
            assert len(ran.stdout.splitlines()) >= 10, ran.stdout  # five hits, two lines each
    finally:
        tour.stop_servers()

    outputs = tour.outputs
    assert "top trials by nDCG@10" in outputs["run"] and "held-out split 'test'" in outputs["run"]
    assert "written to best.toml" in outputs["run"]
    provenance = tomllib.loads((tmp_path / "best.toml").read_text())["provenance"]
    assert provenance["study"] == "demo" and "heldout" in provenance
    assert "  1. " in outputs["search"]
    assert "indexed 1000 documents" in outputs["index"]
    assert (tmp_path / "report.html").stat().st_size > 10_000
    # evaluate reproduces the verdict's held-out score of what was exported: the tuned pipeline, or
    # the baseline the verdict puts above it
    exported_heldout = provenance["heldout"]["systems"][provenance["exported"]]["nDCG@10"]["mean"]
    assert f"{exported_heldout:.4f}" in outputs["evaluate"], outputs["evaluate"]
    # From documents alone: the generated questions judged the docs-demo study, and its export says
    # whether the guard kept the tuned choice or put the robust default in its place
    docs_best = tomllib.loads((tmp_path / "docs-best.toml").read_text())["provenance"]
    assert docs_best["tune_split"] == "synthetic" and docs_best["guard"]["queries"] >= 10
    assert docs_best["exported"] == ("tuned" if docs_best["guard"]["keeps_choice"] else "robust-default")
    searched = [output for command, output in tour.by_command.items() if "docs-best.toml --corpus" in command]
    assert len(searched) == 1 and "  1. " in searched[0] and ".txt" in searched[0]
