"""Where models run: ``device = "auto" | "cpu" | "cuda"``, one loaded copy per device, caches that ignore it."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import ConfigError, ModelError
from workbench.retrieval.cache import Cache
from workbench.retrieval.config import (
    DEFAULT_MODEL,
    DenseConfig,
    PipelineConfig,
    RerankConfig,
    pipeline_config_from_dict,
)
from workbench.retrieval.models import load_cross_encoder, load_encoder, resolve_device
from workbench.retrieval.pipeline import load_models
from workbench.retrieval.retrievers.dense import Encoder

GPU = torch.cuda.is_available()
no_gpu_only = pytest.mark.skipif(GPU, reason="checks the refusal of device 'cuda' on a machine without a GPU")


def test_auto_is_the_default_and_takes_the_gpu_only_when_torch_sees_one():
    assert DenseConfig().device == "auto" and RerankConfig().device == "auto"
    assert resolve_device("auto") == ("cuda" if GPU else "cpu")
    assert resolve_device("cpu") == "cpu"
    assert load_encoder(DEFAULT_MODEL, "auto").device.type == ("cuda" if GPU else "cpu")


@no_gpu_only
def test_cuda_without_a_gpu_is_one_clear_error():
    with pytest.raises(ModelError, match=r'^device = "cuda": torch sees no GPU.*use device = "auto" or "cpu"$'):
        resolve_device("cuda")
    with pytest.raises(ModelError, match="torch sees no GPU"):
        load_models(PipelineConfig(retrievers=(DenseConfig(device="cuda"),)))
    with pytest.raises(ModelError, match="torch sees no GPU"):
        load_cross_encoder(DEFAULT_MODEL, "cuda")


@no_gpu_only
def test_one_loaded_copy_per_resolved_device():
    # "auto" resolves to the CPU here, so it must share the CPU copy rather than load a second one.
    assert load_encoder(DEFAULT_MODEL) is load_encoder(DEFAULT_MODEL, "auto") is load_encoder(DEFAULT_MODEL, "cpu")


def test_an_unknown_device_names_the_key():
    data = {"retrievers": [{"kind": "dense", "device": "tpu"}], "rerank": {"device": "gpu"}}
    with pytest.raises(ConfigError) as error:
        pipeline_config_from_dict(data, "cfg.toml")
    lines = str(error.value).splitlines()
    assert any(line.startswith("cfg.toml: retrievers[0].device: ") and "'tpu'" in line for line in lines)
    assert any(line.startswith("cfg.toml: rerank.device: ") and "'gpu'" in line for line in lines)


def test_device_is_not_part_of_the_embedding_cache_key(adi, cache: Cache):
    texts = [doc.full_text for doc in list(adi.documents.values())[:6]]
    on_cpu = Encoder(DenseConfig(device="cpu"), cache)
    vectors = on_cpu.encode(texts, "document")
    assert on_cpu.seconds_encoding > 0
    automatic = Encoder(DenseConfig(device="auto"), cache)
    assert (automatic.encode(texts, "document") == vectors).all()
    assert automatic.seconds_encoding == 0.0  # every vector came from the cache the CPU run wrote
