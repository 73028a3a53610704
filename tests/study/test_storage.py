"""The journal file's lock: a kernel lock (filelock), so a process killed while it held it leaves
nothing to wait for; damaged journals; the MLflow store created by two processes at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest

from workbench.errors import StudyError
from workbench.files import process_label
from workbench.study.storage import JournalLock, journal_url, open_storage, repair_journal

HOLD_LOCK = """
import sys, time
from pathlib import Path
from workbench.study.storage import JournalLock

lock = JournalLock(Path(sys.argv[1]))  # kept: a lock object that is collected lets go
lock.acquire()
print("holding", flush=True)
time.sleep(600)
"""


def dead_pid() -> int:
    """Returns the pid of a process of this machine that has ended."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


def free_within(journal: Path, seconds: float) -> bool:
    """Returns whether a new lock on ``journal`` was taken (and let go) within ``seconds``.

    It is taken in a thread of its own (where it keeps waiting if not), as Optuna takes and lets
    go of it in one thread.
    """

    def take_and_let_go() -> None:
        lock = JournalLock(journal)
        lock.acquire()
        lock.release()
        done.set()

    done = threading.Event()
    threading.Thread(target=take_and_let_go, daemon=True).start()
    return done.wait(seconds)


def holding_process(journal: Path) -> subprocess.Popen:
    """Starts a process that takes the journal's lock and keeps it; returns once it holds it."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(journal)], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    assert process.stdout.readline().strip() == "holding"
    return process


def test_the_lock_excludes_another_process_until_it_ends(tmp_path: Path):
    journal = tmp_path / "optuna.journal"
    holder = holding_process(journal)
    try:
        assert not free_within(journal, 0.5)
    finally:
        holder.send_signal(signal.SIGKILL)  # killed while holding it, as a worker killed mid-append
        holder.wait()

    assert free_within(journal, 10)  # the kernel freed it with the process: nothing to wait out


def test_a_lock_file_left_by_an_older_workbench_does_not_block(tmp_path: Path):
    (tmp_path / "optuna.journal.lock").write_text(process_label(dead_pid()))  # the old O_EXCL lock of a killed process
    lock = JournalLock(tmp_path / "optuna.journal")

    assert lock.acquire()
    assert not free_within(tmp_path / "optuna.journal", 0.2)  # held: by this process now
    lock.release()
    assert free_within(tmp_path / "optuna.journal", 10)


def test_a_journal_storage_writes_through_the_lock(tmp_path: Path):
    journal = tmp_path / "optuna.journal"
    (tmp_path / "optuna.journal.lock").write_text(process_label(dead_pid()))
    heard: list[str] = []

    study = optuna.create_study(storage=open_storage(journal_url(journal), on_recovered=heard.append))
    study.set_user_attr("written", True)

    assert heard == []
    assert optuna.load_study(study_name=study.study_name, storage=open_storage(journal_url(journal))).user_attrs


# --- damaged journals: a torn last record is set aside, anything else is one error ---------------


def records(count: int) -> bytes:
    return b"".join(b'{"op_code": 0, "worker_id": "w", "study_name": "s%d"}\n' % n for n in range(count))


def test_a_torn_last_record_is_cut_and_kept_aside(tmp_path: Path):
    journal = tmp_path / "optuna.journal"
    journal.write_bytes(records(3) + b'{"op_code": 4, "wor')
    heard: list[str] = []

    repair_journal(journal, JournalLock(journal), heard.append)

    assert journal.read_bytes() == records(3)
    (aside,) = tmp_path.glob("optuna.journal.torn-*")
    assert aside.read_bytes() == b'{"op_code": 4, "wor'
    assert len(heard) == 1 and heard[0].startswith(f"recovered: the last record of the journal {journal}")
    assert free_within(journal, 10)  # the repair let its lock go


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (records(2) + b"not a record\n" + records(1), "line 3 of 4 is not a journal record"),
        (b"\x89PNG\r\n\x1a\n binary", "not an Optuna journal"),
        (b"[1, 2, 3]\n", "not an Optuna journal"),
    ],
)
def test_a_journal_damaged_elsewhere_is_refused_untouched(payload, needle, tmp_path: Path):
    journal = tmp_path / "optuna.journal"
    journal.write_bytes(payload)

    with pytest.raises(StudyError, match=needle):
        open_storage(journal_url(journal))

    assert journal.read_bytes() == payload
    assert not list(tmp_path.glob("optuna.journal.torn-*"))


# --- two first runs on a fresh state folder create the MLflow store once --------------------------


OPEN_TRACKER = """
import sys, time
from pathlib import Path
from workbench.study.tracking import StudyTracker, sqlite_uri

folder = Path(sys.argv[1])
(folder / f"ready-{sys.argv[2]}").touch()
while not (folder / "go").exists():  # both processes have imported mlflow: they reach the fresh store together
    time.sleep(0.01)
StudyTracker(sqlite_uri(folder / "mlflow.db"), "together")
"""


def test_two_processes_create_a_fresh_mlflow_store_together(tmp_path: Path):
    import time

    processes = [
        subprocess.Popen([sys.executable, "-c", OPEN_TRACKER, str(tmp_path), str(n)], stderr=subprocess.PIPE, text=True)
        for n in range(2)
    ]
    while not all((tmp_path / f"ready-{n}").exists() for n in range(2)):
        assert all(process.poll() is None for process in processes), [p.communicate()[1] for p in processes]
        time.sleep(0.05)
    (tmp_path / "go").touch()
    errors = [process.communicate(timeout=300)[1] for process in processes]

    assert [process.returncode for process in processes] == [0, 0], errors
    from stores import mlflow_runs

    from workbench.study.tracking import sqlite_uri

    _, _, children = mlflow_runs(sqlite_uri(tmp_path / "mlflow.db"), "together")  # one experiment, one parent run
    assert children == {}
