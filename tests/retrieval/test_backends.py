"""The OpenVINO backend: the same model as torch, the same vectors to a stated tolerance, its own cache key."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from rankings import assert_same_order

from workbench.errors import ConfigError, ModelError
from workbench.retrieval.cache import Cache
from workbench.retrieval.config import DEFAULT_MODEL, DenseConfig, pipeline_config_from_dict
from workbench.retrieval.models import load_encoder, model_fingerprint
from workbench.retrieval.retrievers.dense import Encoder

# fp32 through another engine: only summation order differs, and by how much depends on the CPU's
# instruction set (the largest coordinate difference was 0.0009 on AVX2 and 0.0011 on AVX-512), so
# no per-coordinate bound is asserted. What matters: the direction of each vector (measured on
# ADI: cosine >= 0.99999) and the order it gives documents.
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def adi_texts(adi) -> list[str]:
    documents = [doc.full_text for doc in adi.documents.values()][:40]
    return documents + list(adi.queries.values())[:20]


@pytest.mark.extra("openvino")
def test_openvino_encodes_the_same_texts_as_torch_within_tolerance(adi_texts):
    torch_vectors = load_encoder(DEFAULT_MODEL, "cpu").encode(adi_texts, batch_size=16, normalize_embeddings=True)
    openvino_vectors = load_encoder(DEFAULT_MODEL, "cpu", "openvino").encode(
        adi_texts, batch_size=16, normalize_embeddings=True
    )
    assert openvino_vectors.shape == torch_vectors.shape == (60, 384)
    assert np.allclose(np.linalg.norm(openvino_vectors, axis=1), 1.0, atol=1e-5)
    cosines = (openvino_vectors * torch_vectors).sum(axis=1)
    assert cosines.min() >= MIN_COSINE, cosines.min()
    # A unit vector moved by e = sqrt(2 (1 - cosine)) changes an inner product by at most e; query
    # and document both moved, so a score moves by at most 2e and the gap between two documents
    # by at most 4e. Documents closer than that may swap; any other swap is a real difference.
    tie = 4 * math.sqrt(2 * (1 - float(cosines.min())))
    documents, queries = slice(0, 40), slice(40, 60)
    for torch_row, openvino_row in zip(
        torch_vectors[queries] @ torch_vectors[documents].T,
        openvino_vectors[queries] @ openvino_vectors[documents].T,
        strict=True,
    ):
        assert_same_order(dict(enumerate(torch_row.tolist())), dict(enumerate(openvino_row.tolist())), tie)
    # Batching and the length sort must not reorder anything: a text alone gets its own vector.
    alone = load_encoder(DEFAULT_MODEL, "cpu", "openvino").encode([adi_texts[7]], normalize_embeddings=True)
    assert float(alone[0] @ torch_vectors[7]) >= MIN_COSINE


@pytest.mark.extra("openvino")
def test_openvino_vectors_are_cached_apart_from_torchs(adi_texts, cache: Cache):
    texts = adi_texts[:5]
    Encoder(DenseConfig(), cache).encode(texts, "document")
    openvino = Encoder(DenseConfig(backend="openvino"), cache)
    openvino.encode(texts, "document")
    assert openvino.seconds_encoding > 0, "torch's cached vectors must not stand in for OpenVINO's"
    fingerprint = model_fingerprint(DEFAULT_MODEL)
    assert sorted(path.name for path in (cache.root / "embeddings").iterdir()) == [
        fingerprint,
        f"{fingerprint}+openvino",
    ]


def test_openvino_with_cuda_is_a_config_error_naming_the_key():
    data = {"retrievers": [{"kind": "dense", "backend": "openvino", "device": "cuda"}]}
    with pytest.raises(ConfigError, match=r'^cfg.toml: retrievers\[0\]: backend "openvino" runs on the CPU'):
        pipeline_config_from_dict(data, "cfg.toml")


@pytest.mark.extra("openvino")
def test_a_model_without_mean_pooling_is_refused_in_one_line(tmp_path: Path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    base = load_encoder(DEFAULT_MODEL, "cpu")
    cls_model = SentenceTransformer(modules=[base[0], Pooling(384, pooling_mode="cls")], device="cpu")
    cls_model.save(str(tmp_path / "cls"))
    with pytest.raises(ModelError, match="runs transformer models with mean pooling") as error:
        load_encoder(str(tmp_path / "cls"), "cpu", "openvino")
    assert "\n" not in str(error.value)
