"""A study's log file: what Optuna has to say (a failed trial's traceback, storage warnings) goes there,
and the terminal gets one line per failed trial instead."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

LOG_NAME = "study.log"  # under <state>/studies/<name>/
MAX_REASON_CHARS = 300


@contextlib.contextmanager
def study_log(path: Path) -> Iterator[Path]:
    """Sends Optuna's log records to ``path`` (appended; several workers may share it) instead of stderr.

    Yields the path; on exit Optuna logs to stderr again.
    """
    import optuna

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("optuna")
    optuna.logging.disable_default_handler()
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()
        optuna.logging.enable_default_handler()


def one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """Returns ``text`` on one line, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def failed_trial_line(number: int, reason: str | None, log_path: Path) -> str:
    """Returns the terminal's line for a failed trial: its recorded reason and where the details are."""
    return f"trial {number} failed: {one_line(reason or 'no reason recorded')} (traceback in {log_path})"
