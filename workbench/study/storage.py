"""Optuna storages by URL: a journal file for workers on one machine, a database across machines.

- ``journal:///abs/path/optuna.journal``: Optuna's ``JournalStorage`` over a file, safe for
  several processes on one machine (the default, under the state folder).
- ``postgresql://…`` / ``mysql://…``: ``RDBStorage`` with heartbeats, so a trial whose worker
  died is failed (and retried) by another worker on any machine.
- ``sqlite:///…``: ``RDBStorage`` for a single process; several writers are not safe on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from workbench.errors import ConfigError

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


def open_storage(
    url: str,
    heartbeat_s: int = 30,
    on_stale_trial: Callable | None = None,
):
    """Returns the Optuna storage behind ``url``.

    Databases get heartbeats every ``heartbeat_s`` seconds; a trial silent for three intervals
    is failed by the next worker that checks, which then calls ``on_stale_trial(study, trial)``.
    Raises ``ConfigError`` for an unknown scheme.
    """
    check_storage_url(url)
    path = journal_path(url)
    if path is not None:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    from optuna.storages import RDBStorage

    return RDBStorage(
        url,
        heartbeat_interval=heartbeat_s,
        grace_period=3 * heartbeat_s,
        heartbeat_stale_trial_callback=on_stale_trial,
    )
