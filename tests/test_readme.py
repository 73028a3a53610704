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
    exported = provenance["exported"]  # the tuned pipeline, or the baseline the verdict puts above it
    exported_heldout = provenance["heldout"]["systems"][exported]["nDCG@10"]["mean"]
    assert abs(held_out["metrics"]["nDCG@10"] - exported_heldout) < 1e-9, "evaluate reproduces the export's score"
    assert "  1. " in searched.stdout

    # "Use the tuned retriever": index the demo corpus with best.toml, then run the README's Python
    # and LangChain examples as written, from a folder that holds the index as `index`.
    indexed = workbench("index", str(best), "corpora/scifact-demo", "--out", str(tmp_path / "index"), state=state)
    assert "indexed 1000 documents" in indexed.stdout
    for example in readme_examples("## Use the tuned retriever", "python"):
        ran_example = subprocess.run(
            [sys.executable, "-c", example], capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False,
            env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        assert ran_example.returncode == 0, f"{example}\n{ran_example.stderr}"
        assert len(ran_example.stdout.splitlines()) >= 4, ran_example.stdout
    updated = workbench(
        "index", str(best), "corpora/scifact-demo", "--out", str(tmp_path / "index"), "--update", state=state
    )
    assert "0 added, 0 changed, 0 removed, 1000 unchanged" in updated.stdout


def readme_examples(section: str, language: str) -> list[str]:
    """Returns the ``language`` code blocks of the README section that starts with ``section``."""
    text = (REPO / "README.md").read_text()
    body = text.split(section, 1)[1].split("\n## ", 1)[0]
    return [block.split("\n```", 1)[0] for block in body.split(f"```{language}\n")[1:]]
