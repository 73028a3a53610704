"""Where a result came from: code version and the versions of the libraries that shaped it."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import workbench

TRACKED_PACKAGES = (
    "sentence-transformers",
    "transformers",
    "torch",
    "faiss-cpu",
    "bm25s",
    "rank-bm25",
    "langchain-text-splitters",
    "optuna",
    "mlflow",
    "pytrec-eval-terrier",
)


@lru_cache(maxsize=1)
def code_version() -> str:
    """Returns the package version, plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{workbench.__version__}+{commit}" if commit else workbench.__version__


def package_versions() -> dict[str, str]:
    """Returns installed versions of the libraries that decide retrieval results."""
    versions = {}
    for package in TRACKED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
