"""Fresh study state folders for tests that share the slow parts between them."""

from __future__ import annotations

import shutil
from pathlib import Path


def link_test_stores(state: Path, session_cache, mlflow_template: Path) -> None:
    """Gives ``state`` a copy of the pre-migrated MLflow store and the session's embedding cache.

    Each study still gets its own Optuna and MLflow stores; only the content-addressed cache
    (safe to share) and the MLflow schema migrations (seconds per store) are shared.
    """
    shutil.copy(mlflow_template, state / "mlflow.db")
    (state / "cache").symlink_to(session_cache.root, target_is_directory=True)
