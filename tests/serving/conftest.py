"""Fixtures of the service tests: a BM25-only ADI index, fast to load and serve."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="session")
def adi_bm25_index_dir(adi, session_cache, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/bm25.toml over ADI saved as an index folder (read-only)."""
    from workbench.retriever import Retriever

    folder = tmp_path_factory.mktemp("adi-bm25-index") / "index"
    Retriever.from_config(CONFIGS / "bm25.toml", adi, cache_dir=session_cache.root).save(folder)
    return folder
