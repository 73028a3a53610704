"""The journal file's lock: owned by host:pid, so a lock left by a killed process is noticed at once;
damaged journals; the MLflow store created by two processes at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from workbench.errors import StudyError
from workbench.files import process_label
from workbench.study.storage import OwnedJournalLock, journal_url, open_storage, repair_journal


def dead_pid() -> int:
    """Returns the pid of a process of this machine that has ended."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


def test_the_lock_holds_its_owner_and_is_gone_after_release(tmp_path: Path):
    lock = OwnedJournalLock(tmp_path / "optuna.journal")

    assert lock.acquire()
    assert (tmp_path / "optuna.journal.lock").read_text() == process_label()
    lock.release()
    assert not (tmp_path / "optuna.journal.lock").exists()


def test_a_lock_of_a_dead_local_process_is_removed_at_once_and_said(tmp_path: Path):
    (tmp_path / "optuna.journal.lock").write_text(process_label(dead_pid()))
    heard: list[str] = []
    lock = OwnedJournalLock(tmp_path / "optuna.journal", heard.append, grace_s=3600)

    assert lock.acquire()  # with an hour's grace period: only the owner check can free it

    assert len(heard) == 1 and heard[0].startswith("recovered: removed the journal lock")
    assert (tmp_path / "optuna.journal.lock").read_text() == process_label()
    lock.release()


def test_a_lock_whose_owner_cannot_be_checked_waits_for_the_grace_period(tmp_path: Path):
    (tmp_path / "optuna.journal.lock").write_text("another-machine:12345")
    heard: list[str] = []

    assert OwnedJournalLock(tmp_path / "optuna.journal", heard.append, grace_s=0.2).acquire()

    assert heard == [
        f"recovered: removed the journal lock {tmp_path / 'optuna.journal.lock'}, held by another-machine:12345 "
        "and unchanged for 0.2 s"
    ]


def test_release_leaves_a_lock_another_process_took_over(tmp_path: Path):
    lock = OwnedJournalLock(tmp_path / "optuna.journal")
    lock.acquire()
    (tmp_path / "optuna.journal.lock").write_text("another-machine:1")  # forced and taken after a grace period

    lock.release()

    assert (tmp_path / "optuna.journal.lock").read_text() == "another-machine:1"


def test_a_journal_storage_writes_through_the_owned_lock(tmp_path: Path):
    journal = tmp_path / "optuna.journal"
    (tmp_path / "optuna.journal.lock").write_text(process_label(dead_pid()))
    heard: list[str] = []

    study = optuna.create_study(storage=open_storage(journal_url(journal), on_recovered_lock=heard.append))
    study.set_user_attr("written", True)

    assert len(heard) == 1
    assert optuna.load_study(study_name=study.study_name, storage=open_storage(journal_url(journal))).user_attrs
    assert not os.path.lexists(tmp_path / "optuna.journal.lock")


# --- damaged journals: a torn last record is set aside, anything else is one error ---------------


def records(count: int) -> bytes:
    return b"".join(b'{"op_code": 0, "worker_id": "w", "study_name": "s%d"}\n' % n for n in range(count))


def test_a_torn_last_record_is_cut_and_kept_aside(tmp_path: Path):
    journal = tmp_path / "optuna.journal"
    journal.write_bytes(records(3) + b'{"op_code": 4, "wor')
    heard: list[str] = []

    repair_journal(journal, OwnedJournalLock(journal), heard.append)

    assert journal.read_bytes() == records(3)
    (aside,) = tmp_path.glob("optuna.journal.torn-*")
    assert aside.read_bytes() == b'{"op_code": 4, "wor'
    assert len(heard) == 1 and heard[0].startswith(f"recovered: the last record of the journal {journal}")
    assert not (tmp_path / "optuna.journal.lock").exists()


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
