"""The state folder (``--state-dir``): where caches, study storage and the MLflow store live.

Layout::

    cache/              content-addressed chunks, tokens, vectors and scores (``retrieval/cache.py``)
    mlflow.db           the default MLflow tracking store (sqlite)
    mlflow-artifacts/   the MLflow runs' artifacts
    optuna.journal      the default Optuna storage of every study
    studies/<name>/     one study's outputs: log, plots, held-out report
    models/             models shipped as split zips, assembled on first use
"""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "WORKBENCH_STATE_DIR"
DEFAULT = Path(".workbench")


def state_folder(chosen: Path | None) -> Path:
    """Returns the absolute state folder: ``chosen``, else $WORKBENCH_STATE_DIR, else ./.workbench.

    Raises ``OutputError`` when it is a file or cannot be written (it is created if missing). Models
    shipped as split zips are assembled into its ``models/`` folder; the choice goes through the
    environment so that worker processes started from here assemble into the same place.
    """
    from workbench.files import writable_folder

    chosen = chosen or Path(os.environ.get(ENVIRONMENT_VARIABLE, DEFAULT))
    folder = writable_folder(chosen.expanduser().resolve(), "state folder")
    os.environ.setdefault("WORKBENCH_MODEL_DIR", str(folder / "models"))
    return folder


def cache_dir(state: Path) -> Path:
    """Returns the cache folder of the state folder ``state``."""
    return state / "cache"


def tracking_db(state: Path) -> Path:
    """Returns the default MLflow tracking database (sqlite) of the state folder ``state``."""
    return state / "mlflow.db"


def artifact_root(state: Path) -> Path:
    """Returns the folder of MLflow artifacts of the state folder ``state``."""
    return state / "mlflow-artifacts"


def studies_dir(state: Path) -> Path:
    """Returns the folder holding one output folder per study."""
    return state / "studies"
