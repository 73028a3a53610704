"""The journal file's lock: owned by host:pid, so a lock left by a killed process is noticed at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna

from workbench.files import process_label
from workbench.study.storage import OwnedJournalLock, journal_url, open_storage


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
