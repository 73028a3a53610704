"""A deterministic hook for tests that stop a study mid-trial: chosen trials block until the test says so.

``TrialGate(folder, trials).environment()`` gives a ``workbench`` subprocess a ``sitecustomize`` module
that wraps ``Objective._score``: trial N writes ``folder/started-N`` (holding its pid) and then waits
for ``folder/release-N``. A test waits for the started file and kills or interrupts a process that is
certainly inside that trial, instead of polling for a RUNNING trial that may end first.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

SITECUSTOMIZE = """
import os

_folder = os.environ.get("WORKBENCH_TEST_GATE_DIR")
if _folder:
    import time
    from pathlib import Path

    import workbench.study.objective as _objective

    _gated = {int(number) for number in os.environ["WORKBENCH_TEST_GATE_TRIALS"].split(",")}
    _score = _objective.Objective._score

    def _gated_score(self, config, *args, **kwargs):
        number = int(config.name.rpartition("-")[2])  # trial configs are named <study>-trial-<number>
        if number in _gated:
            Path(_folder, f"started-{number}").write_text(str(os.getpid()))
            while not Path(_folder, f"release-{number}").exists():
                time.sleep(0.05)
        return _score(self, config, *args, **kwargs)

    _objective.Objective._score = _gated_score
"""


class TrialGate:
    def __init__(self, folder: Path, trials: list[int]):
        self.folder = folder
        self.trials = trials
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)

    def environment(self) -> dict[str, str]:
        """The current environment plus what makes a ``workbench`` subprocess (and its workers) gated."""
        path = os.pathsep.join(filter(None, [str(self.folder), os.environ.get("PYTHONPATH")]))
        return dict(
            os.environ,
            PYTHONPATH=path,
            WORKBENCH_TEST_GATE_DIR=str(self.folder),
            WORKBENCH_TEST_GATE_TRIALS=",".join(map(str, self.trials)),
        )

    def wait_until_inside(self, number: int, process: subprocess.Popen, log: Path, timeout_s: float = 300) -> int:
        """Waits until trial ``number`` is blocked in its gate; returns the pid of the process running it."""
        started = self.folder / f"started-{number}"
        deadline = time.monotonic() + timeout_s
        while not started.exists():
            assert process.poll() is None, f"the study ended before trial {number} began:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"trial {number} did not begin in time:\n{log.read_text()}"
            time.sleep(0.1)
        return int(started.read_text())

    def release(self, number: int) -> None:
        (self.folder / f"release-{number}").touch()
