"""Static encoders distilled locally from a sentence-transformers model with model2vec.

Distillation needs no data: model2vec passes every token of the base model's vocabulary through
the model once, keeps one vector per token (reduced by PCA and weighted by token frequency), and an
encoder then averages the vectors of a text's tokens. It encodes far faster than the transformer
and ranks worse; whether it earns its place inside a hybrid is for a study to measure.

The output is a sentence-transformers folder (one ``StaticEmbedding`` module) plus the card
``workbench-encoder.json``, so any ``dense.model`` or study space can name it.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from workbench.errors import ConfigError, ModelError, install_hint
from workbench.files import atomic_write_bytes, building_folder, check_new_folder, writable_folder
from workbench.retrieval.models import load_encoder, model_fingerprint, resolve_device, resolve_model
from workbench.training.settings import DistilledEncoderCard

CARD_NAME = "workbench-encoder.json"
METHOD = "model2vec-distillation"


def check_distill_output(out_dir: Path) -> None:
    """Raises ``OutputError`` unless ``out_dir`` is missing or an empty folder whose parent can be written."""
    check_new_folder(out_dir)
    writable_folder(out_dir.parent, "folder of --out")


def distill_encoder(
    base_model: str, out_dir: Path, pca_dims: int | None = 256, device: str = "auto"
) -> DistilledEncoderCard:
    """Distils a static encoder from ``base_model`` into ``out_dir``; returns the card written beside it.

    ``pca_dims`` is the vectors' dimension after PCA (None keeps the base model's). The folder is
    built in a temporary folder next to ``out_dir`` and renamed into place at the end, so an
    interrupted run leaves nothing at ``out_dir``. Raises ``OutputError`` when ``out_dir`` exists
    and is not empty (checked before any work), ``ConfigError`` for ``pca_dims`` outside
    [2, the base model's dimension], ``ModelError`` when the base model cannot load or model2vec
    is not installed.
    """
    out_dir = out_dir.expanduser().resolve()
    check_distill_output(out_dir)
    base = load_encoder(base_model, "cpu")  # a base model that cannot load fails here, with the usual message
    base_dims = _dimension(base)
    if pca_dims is not None and not 2 <= pca_dims <= base_dims:
        raise ConfigError(f"--pca-dims {pca_dims}: must lie in [2, {base_dims}], the base model's dimension")
    try:
        from model2vec.distill import distill  # noqa: F401  (only to fail early with the install hint)
    except ImportError as error:
        raise ModelError(f"distilling a static encoder needs model2vec: {install_hint('distill')} ({error})") from None
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    except ImportError:  # sentence-transformers 5
        from sentence_transformers.models import StaticEmbedding

    location = resolve_model(base_model)
    started = time.perf_counter()
    with building_folder(out_dir) as work:
        with _quiet_unsupported_argument_warnings():
            embedding = StaticEmbedding.from_distillation(
                str(location), pca_dims=pca_dims, device=resolve_device(device)
            )
        model = SentenceTransformer(modules=[embedding], device="cpu")
        model.save(str(work))
        seconds = time.perf_counter() - started
        card = DistilledEncoderCard(
            method=METHOD,
            base_model=base_model,
            base_model_fingerprint=model_fingerprint(base_model),
            pca_dims=pca_dims,
            dimensions=_dimension(model),
            vocabulary_size=embedding.num_embeddings,
            training_data="none: distilled from the base model's own vocabulary, no queries or documents",
            seconds=round(seconds, 1),
            versions={name: _version(name) for name in ("model2vec", "sentence-transformers", "torch")},
        )
        atomic_write_bytes(work / CARD_NAME, json.dumps(card.model_dump(), indent=2).encode())
    return card


def _dimension(model) -> int:
    """The vectors' dimension (``get_embedding_dimension`` from sentence-transformers 6 on)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return getter()


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@contextmanager
def _quiet_unsupported_argument_warnings():
    """sentence-transformers passes model2vec arguments that newer model2vec versions dropped
    (``apply_zipf``, ``use_subword``) and warns that they are ignored; the defaults are what we want."""
    logger = logging.getLogger("sentence_transformers.sentence_transformer.modules.static_embedding")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
