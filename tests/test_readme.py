"""The README's main command, end to end, as a user types it (fewer trials, to keep CI short):
run the demo study, export the best config, evaluate it on the held-out queries, ask it a question."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the README's demo study end to end

REPO = Path(__file__).resolve().parent.parent


def workbench(*args: str, state: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "workbench.cli", *args]
    environment = {**os.environ, "WORKBENCH_STATE_DIR": str(state), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env=environment, timeout=1200, check=False
    )
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def test_demo_study_runs_exports_and_the_export_evaluates(tmp_path):
    state = tmp_path / "state"
    best = tmp_path / "best.toml"

    ran = workbench("run", "studies/demo.toml", "--trials", "4", state=state)
    exported = workbench("export", "studies/demo.toml", "--out", str(best), state=state)
    workbench(
        "evaluate", str(best), "--corpus", "corpora/scifact-demo", "--split", "test", "--json", str(tmp_path / "m.json"),
        state=state,
    )  # fmt: skip
    searched = workbench(
        "search", str(best), "--corpus", "corpora/scifact-demo", "vitamin D and bone density", state=state
    )

    assert "top trials by nDCG@10" in ran.stdout and "held-out split 'test'" in ran.stdout
    assert "written to" in exported.stdout
    provenance = tomllib.loads(best.read_text())["provenance"]
    assert provenance["study"] == "demo" and "heldout" in provenance
    held_out = json.loads((tmp_path / "m.json").read_text())
    tuned_heldout = provenance["heldout"]["systems"]["tuned"]["nDCG@10"]["mean"]
    assert abs(held_out["metrics"]["nDCG@10"] - tuned_heldout) < 1e-9, "evaluate reproduces the export's held-out score"
    assert "  1. " in searched.stdout
