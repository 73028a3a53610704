"""Optuna storages by URL: a journal file for workers on one machine, a database across machines.

- ``journal:///abs/path/optuna.journal``: Optuna's ``JournalStorage`` over a file, safe for
  several processes on one machine (the default, under the state folder).
- ``postgresql://…`` / ``mysql://…``: ``RDBStorage`` with heartbeats, so a trial whose worker
  died is failed (and retried) by another worker on any machine.
- ``sqlite:///…``: ``RDBStorage`` for a single process; several writers are not safe on it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from workbench.errors import ConfigError, EnvironmentFault, StudyError
from workbench.files import file_lock

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


class JournalLock:
    """The lock Optuna takes around each append to a journal file: ``filelock`` on ``<journal>.lock``.

    An ``flock`` held by the kernel for the open file, not the file's existence: a process killed
    while it appends (``kill -9``) loses the lock with its life, so the next process goes on at
    once, and no stale lock is ever left to find, wait out or remove. The file itself stays
    between appends (waiters share its inode). Optuna's own journal locks (a symlink or an
    ``O_EXCL`` file of the same name) do not exclude this one: open a journal that workbench
    writes through ``open_storage``. Meets Optuna's lock protocol (``acquire``/``release``).
    """

    def __init__(self, journal: Path):
        self.path = journal.with_name(f"{journal.name}.lock")
        self._lock = file_lock(self.path)

    def acquire(self) -> bool:
        """Blocks until this process holds the lock; returns True."""
        self._lock.acquire()
        return True

    def release(self) -> None:
        """Lets the lock go."""
        self._lock.release()


def _first_bad_record(payload: bytes) -> tuple[int, int] | None:
    """Returns (line number from 1, byte offset) of the first line of a journal that is not a whole
    record (a JSON object ending in a newline), or None when every line is one."""
    offset = 0
    for number, line in enumerate(payload.splitlines(keepends=True), start=1):
        try:
            record = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
            record = None
        if not isinstance(record, dict) or "op_code" not in record:
            return number, offset
        offset += len(line)
    return None


def repair_journal(path: Path, lock: JournalLock, on_recovered: Callable[[str], None] | None = None) -> None:
    """Checks a journal file before Optuna reads it; sets a torn last record aside.

    A process killed while appending leaves the last line cut short; a stray line may be appended
    to the file. Such a last line is moved to ``<journal>.torn-<time>`` and cut from the journal,
    under the journal's lock (so a record being written is never taken for a torn one), with one
    ``recovered:`` line. Raises ``StudyError`` naming the file and a way out when a line before the
    last is not a record, or when no line is (a file that is not a journal); the file is left as it is.
    """
    tell = on_recovered or _tell_user
    lock.acquire()
    try:
        payload = path.read_bytes()
        bad = _first_bad_record(payload)
        if bad is None:
            return
        number, offset = bad
        lines = payload.count(b"\n") + (0 if payload.endswith(b"\n") else 1)
        if number == 1:
            raise StudyError(
                f"{path}: not an Optuna journal (line 1 is not a journal record); give a journal file as storage, "
                f"or move this file away (mv {path} {path}.not-a-journal) to start a new study there"
            )
        if number < lines:
            raise StudyError(
                f"{path}: line {number} of {lines} is not a journal record, so the study cannot be read past it; "
                f"keep the first {number - 1} records (head -n {number - 1} {path} > {path}.fixed && "
                f"mv {path}.fixed {path}; the trials after line {number} are lost), or move the file away "
                "to start the study over"
            )
        torn = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        torn.write_bytes(payload[offset:])
        with path.open("r+b") as handle:
            handle.truncate(offset)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        lock.release()
    tell(
        f"recovered: the last record of the journal {path} was cut short or not a record "
        f"({len(payload) - offset} bytes); it was set aside in {torn}"
    )


def _rdb_storage(url: str, heartbeat_s: int, on_stale_trial: Callable | None):
    """Returns Optuna's ``RDBStorage`` at ``url``; raises ``ConfigError`` (driver missing, sqlite file unusable)
    or ``EnvironmentFault`` (database server unreachable) in one line, the password hidden."""
    from optuna.storages import RDBStorage
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        raise ConfigError(f"storage '{url}': not a database URL") from None
    engine_kwargs = {"connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else None
    try:
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_s,
            grace_period=3 * heartbeat_s,
            heartbeat_stale_trial_callback=on_stale_trial,
        )
    except ImportError as error:
        raise ConfigError(
            f"storage '{shown}': its database driver is not installed ({error}); install it, "
            "or use a journal file (leave storage out) or postgresql://"
        ) from None
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        if url.startswith("sqlite:"):
            raise ConfigError(f"storage '{shown}': cannot be opened as a database ({reason})") from None
        raise EnvironmentFault(
            f"storage '{shown}': cannot connect ({reason}); start the database server or check the URL"
        ) from None


def open_storage(
    url: str,
    heartbeat_s: int = 30,
    on_stale_trial: Callable | None = None,
    on_recovered: Callable[[str], None] | None = None,
):
    """Returns the Optuna storage behind ``url``.

    Databases get heartbeats every ``heartbeat_s`` seconds; a trial silent for three intervals
    is failed by the next worker that checks, which then calls ``on_stale_trial(study, trial)``.
    A journal file's lock is a ``JournalLock``; ``on_recovered(message)`` hears about a torn last
    record set aside (``repair_journal``; default: a line on stderr). Raises ``ConfigError`` for an
    unknown scheme or a database that cannot be opened, ``StudyError`` for a damaged journal,
    ``EnvironmentFault`` for a database server that does not answer.
    """
    check_storage_url(url)
    path = journal_path(url)
    if path is not None:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        if path.is_dir():
            raise ConfigError(f"storage '{url}': {path} is a folder; give a journal file")
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = JournalLock(path)
        if path.is_file():
            repair_journal(path, lock, on_recovered)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    return _rdb_storage(url, heartbeat_s, on_stale_trial)
