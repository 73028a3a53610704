"""Optuna storages by URL: a journal file for workers on one machine, a database across machines.

- ``journal:///abs/path/optuna.journal``: Optuna's ``JournalStorage`` over a file, safe for
  several processes on one machine (the default, under the state folder).
- ``postgresql://…`` / ``mysql://…``: ``RDBStorage`` with heartbeats, so a trial whose worker
  died is failed (and retried) by another worker on any machine.
- ``sqlite:///…``: ``RDBStorage`` for a single process; several writers are not safe on it.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from workbench.errors import ConfigError
from workbench.files import dead_local_process, file_lock, process_label

JOURNAL_SCHEME = "journal:"
MULTI_HOST_SCHEMES = ("postgresql", "mysql")
RDB_SCHEMES = ("sqlite:", *MULTI_HOST_SCHEMES)


def journal_url(path: Path) -> str:
    """Returns the ``journal:///`` URL of a journal file."""
    return f"{JOURNAL_SCHEME}//{path.resolve()}"


def journal_path(url: str) -> Path | None:
    """Returns the file of a ``journal:`` URL, or None for any other storage."""
    if not url.startswith(JOURNAL_SCHEME):
        return None
    path = url.removeprefix(JOURNAL_SCHEME)
    return Path(path.removeprefix("//") if path.startswith("///") else path)


def is_rdb(url: str) -> bool:
    """Returns whether the URL names a relational database (where Optuna keeps heartbeats)."""
    return url.startswith(RDB_SCHEMES)


def check_storage_url(url: str, workers: int = 1) -> None:
    """Raises ``ConfigError`` for a storage URL workbench cannot open, or one unsafe for ``workers`` processes."""
    if not (url.startswith(JOURNAL_SCHEME) or is_rdb(url)):
        raise ConfigError(f"storage '{url}': expected journal:///path, postgresql://…, mysql://… or sqlite:///path")
    if workers > 1 and url.startswith("sqlite:"):
        raise ConfigError(
            f"storage '{url}': sqlite is not safe for {workers} worker processes; "
            "leave --storage out (a journal file under the state folder) or use postgresql://"
        )


def storage_exists(url: str) -> bool:
    """Returns False when a file-backed storage has no file yet (opening it would create one)."""
    path = journal_path(url)
    if path is None and url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
    return path is None or path.is_file()


def _tell_user(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)  # keeps a running progress bar intact


class OwnedJournalLock:
    """The lock Optuna takes around each append to a journal file, recording who holds it.

    Like Optuna's ``JournalFileOpenLock`` it is the file ``<journal>.lock``, created with
    ``O_EXCL`` and removed on release, so it excludes Optuna's own lock classes on the same
    journal too; unlike them it holds its owner's ``host:pid``. A lock whose owner is a process
    of this machine that no longer exists (killed mid-append) is removed at once, with one line
    saying so. A lock whose owner cannot be checked (another machine, or a lock made by Optuna's
    classes) is removed after ``grace_s`` seconds without change, as Optuna does.
    """

    def __init__(self, journal: Path, on_recovered: Callable[[str], None] | None = None, grace_s: float = 30.0):
        self.path = journal.with_name(f"{journal.name}.lock")
        self.on_recovered = on_recovered or _tell_user
        self.grace_s = grace_s
        self._label = process_label()

    def acquire(self) -> bool:
        """Blocks until this process holds the lock; returns True (Optuna's lock protocol)."""
        pause_s = 0.001
        seen, seen_since = None, time.monotonic()
        while True:
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pass
            else:
                try:
                    os.write(descriptor, self._label.encode())
                except BaseException:
                    os.close(descriptor)
                    self.path.unlink(missing_ok=True)
                    raise
                os.close(descriptor)
                return True
            holder = self._holder()
            if holder is None:
                continue  # released in between
            owner = holder[0]
            if owner and dead_local_process(owner):
                if self._remove_if_still(holder):
                    self.on_recovered(
                        f"recovered: removed the journal lock {self.path} left by process {owner}, "
                        "which is no longer running"
                    )
                continue
            if holder != seen:
                seen, seen_since = holder, time.monotonic()
            elif time.monotonic() - seen_since > self.grace_s:
                if self._remove_if_still(holder):
                    self.on_recovered(
                        f"recovered: removed the journal lock {self.path}, held by "
                        f"{owner or 'a process that left no name'} and unchanged for {self.grace_s:g} s"
                    )
                continue
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.1)

    def release(self) -> None:
        """Removes the lock if this process still holds it; raises ``RuntimeError`` if it is gone."""
        holder = self._holder()
        if holder is None:
            raise RuntimeError(f"{self.path}: did not possess the lock")
        if holder[0] != self._label:
            return  # removed after the grace period and taken by another process: theirs now
        self._remove()

    def _holder(self) -> tuple[str, int] | None:
        """Returns (owner label or "", inode and mtime) of the lock file, or None when there is none."""
        try:
            status = os.lstat(self.path)
            # Optuna's symlink lock points at the journal itself: no owner to read there.
            owner = "" if self.path.is_symlink() else self.path.read_text(errors="replace").strip()
        except FileNotFoundError:
            return None
        return owner, (status.st_ino, status.st_mtime_ns)

    def _remove_if_still(self, holder: tuple) -> bool:
        """Removes the lock if it is still the one seen as ``holder``; returns whether it did.

        Two processes may find the same stale lock; the guard (an fcntl lock, which the kernel
        frees when its holder dies) makes sure that the second does not remove the new lock of the first.
        """
        with file_lock(self.path.with_name(f"{self.path.name}.guard")):
            if self._holder() != holder:
                return False
            self._remove()
            return True

    def _remove(self) -> None:
        moved = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}.rename")
        os.rename(self.path, moved)  # atomic even on NFS, unlike unlink of a file another client may recreate
        os.unlink(moved)


def open_storage(
    url: str,
    heartbeat_s: int = 30,
    on_stale_trial: Callable | None = None,
    on_recovered_lock: Callable[[str], None] | None = None,
):
    """Returns the Optuna storage behind ``url``.

    Databases get heartbeats every ``heartbeat_s`` seconds; a trial silent for three intervals
    is failed by the next worker that checks, which then calls ``on_stale_trial(study, trial)``.
    A journal file's lock is an ``OwnedJournalLock``; ``on_recovered_lock(message)`` hears about
    stale locks it removed (default: a line on stderr). Raises ``ConfigError`` for an unknown scheme.
    """
    check_storage_url(url)
    path = journal_path(url)
    if path is not None:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=OwnedJournalLock(path, on_recovered_lock)))
    from optuna.storages import RDBStorage

    return RDBStorage(
        url,
        heartbeat_interval=heartbeat_s,
        grace_period=3 * heartbeat_s,
        heartbeat_stale_trial_callback=on_stale_trial,
    )
