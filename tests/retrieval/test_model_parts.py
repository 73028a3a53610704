"""Models shipped as a zip split across packages: assembled once, checked piece by piece."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from workbench.errors import ModelError
from workbench.retrieval.model_parts import COMPLETE_MARKER, SplitZipModel, assemble


def record_line(relative: str, payload: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(payload).digest()).rstrip(b"=").decode()
    return f"{relative},sha256={digest},{len(payload)}"


def install_fake_parts(site: Path, zip_bytes: bytes, parts: int) -> SplitZipModel:
    """Writes ``parts`` installed distributions (dist-info + RECORD) holding the pieces of ``zip_bytes``."""
    size = -(-len(zip_bytes) // parts)
    packages = []
    for number in range(1, parts + 1):
        package = f"fake-model-part-{number:03d}"
        module = f"fake_model_part_{number:03d}"
        piece = zip_bytes[(number - 1) * size : number * size]
        relative = f"{module}/input/fake.zip.{number:03d}"
        (site / module / "input").mkdir(parents=True)
        (site / relative).write_bytes(piece)
        info = site / f"{module}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(record_line(relative, piece) + "\n")
        packages.append(package)
    return SplitZipModel("fake-model", tuple(packages), "fake.zip")


def model_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fake-model/config.json", json.dumps({"model_type": "fake"}))
        archive.writestr("fake-model/model.safetensors", bytes(range(256)) * 64)
    return buffer.getvalue()


@pytest.fixture
def fake_model(tmp_path, monkeypatch) -> SplitZipModel:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return install_fake_parts(site, model_zip(), parts=3)


def test_pieces_assemble_into_the_model_folder_once(fake_model, tmp_path):
    folder = assemble(fake_model, tmp_path / "models")
    assert folder == tmp_path / "models" / "fake-model" / "fake-model"
    assert (folder / "model.safetensors").read_bytes() == bytes(range(256)) * 64
    assert (tmp_path / "models" / "fake-model" / COMPLETE_MARKER).is_file()
    (folder / "model.safetensors").write_bytes(b"changed")  # a second call reuses the folder as it is
    assert assemble(fake_model, tmp_path / "models") == folder
    assert (folder / "model.safetensors").read_bytes() == b"changed"


def test_a_truncated_piece_is_a_clear_error(fake_model, tmp_path):
    piece = tmp_path / "site" / "fake_model_part_002" / "input" / "fake.zip.002"
    piece.write_bytes(piece.read_bytes()[:-10])
    with pytest.raises(ModelError, match=r"fake-model-part-002 is .* bytes, its RECORD says .* reinstall it"):
        assemble(fake_model, tmp_path / "models")
    assert not (tmp_path / "models" / "fake-model").exists()


def test_a_corrupt_piece_fails_its_checksum(fake_model, tmp_path):
    piece = tmp_path / "site" / "fake_model_part_001" / "input" / "fake.zip.001"
    data = bytearray(piece.read_bytes())
    data[5] ^= 0xFF
    piece.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="fails its RECORD checksum"):
        assemble(fake_model, tmp_path / "models")


def test_a_missing_package_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    missing = SplitZipModel("absent", ("absent-part-001",), "absent.zip")
    with pytest.raises(ModelError, match="absent-part-001 is not installed; pip install absent-part-001"):
        assemble(missing, tmp_path / "models")


def test_an_interrupted_assembly_is_redone(fake_model, tmp_path):
    half = tmp_path / "models" / "fake-model"
    (half / "fake-model").mkdir(parents=True)  # unpacked once, but the marker was never written
    (half / "fake-model" / "config.json").write_text("{}")
    folder = assemble(fake_model, tmp_path / "models")
    assert (folder / "model.safetensors").is_file()
