"""Content-addressed caches on disk, shared by every trial and study on the machine.

Embeddings are stored per (model fingerprint, role) in shards: each shard holds the
sha256 of the embedded texts and their vectors, and a manifest with checksums written last.
A shard whose manifest is missing or whose checksums do not match is ignored and removed,
so a killed process never leaves an entry that is read back.

Several processes (study workers) may share one cache: computing a missing entry happens under
a file lock, and whoever waited on the lock reads what the holder wrote instead of recomputing it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from workbench.files import atomic_write_bytes, file_lock, file_sha256

SHARD_TEXTS = 4096  # texts encoded between two shard writes: bounds memory and work lost on a crash
PROGRESS_TEXTS = 256  # texts per encode call inside a shard, so progress shows on long encodings
LOCK_NAME = ".lock"


def text_key(text: str) -> bytes:
    """Returns the 16-byte content address of a text."""
    return hashlib.sha256(text.encode("utf-8")).digest()[:16]


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class EmbeddingStore:
    """Vectors of texts under one model and role, addressed by the texts' hashes."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._keys: dict[bytes, tuple[int, int]] = {}
        self._shards: list[np.ndarray] = []
        self._loaded_manifests: set[str] = set()
        self._load_shards()

    def _load_shards(self) -> None:
        """Reads the shards not read yet: all at first, then those other processes have added since."""
        if not self.folder.is_dir():
            return
        for manifest_path in sorted(self.folder.glob("*.json")):
            if manifest_path.name in self._loaded_manifests:
                continue
            self._loaded_manifests.add(manifest_path.name)
            shard = self._read_shard(manifest_path)
            if shard is None:
                continue
            keys, vectors = shard
            shard_index = len(self._shards)
            self._shards.append(vectors)
            for row, key in enumerate(keys):
                # numpy's S16 drops trailing NUL bytes on read; keys are always 16 bytes long.
                self._keys.setdefault(bytes(key).ljust(16, b"\x00"), (shard_index, row))

    def _read_shard(self, manifest_path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        stem = manifest_path.with_suffix("")
        keys_path, vectors_path = Path(f"{stem}.keys.npy"), Path(f"{stem}.vectors.npy")
        try:
            manifest = json.loads(manifest_path.read_text())
            if (
                file_sha256(keys_path) != manifest["keys_sha256"]
                or file_sha256(vectors_path) != manifest["vectors_sha256"]
            ):
                raise ValueError("checksum mismatch")
            keys = np.load(keys_path, allow_pickle=False)
            vectors = np.load(vectors_path, mmap_mode="r", allow_pickle=False)
            if len(keys) != len(vectors) or len(keys) != manifest["rows"]:
                raise ValueError("row count mismatch")
            return keys, vectors
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            for path in (manifest_path, keys_path, vectors_path):
                path.unlink(missing_ok=True)
            return None

    def _write_shard(self, keys: list[bytes], vectors: np.ndarray) -> None:
        keys_array = np.frombuffer(b"".join(keys), dtype="S16") if keys else np.empty(0, dtype="S16")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        keys_payload, vectors_payload = _npy_bytes(keys_array), _npy_bytes(vectors)
        stem = self.folder / hashlib.sha256(keys_payload).hexdigest()[:24]
        atomic_write_bytes(Path(f"{stem}.keys.npy"), keys_payload)
        atomic_write_bytes(Path(f"{stem}.vectors.npy"), vectors_payload)
        manifest = {
            "rows": len(keys),
            "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
            "keys_sha256": hashlib.sha256(keys_payload).hexdigest(),
            "vectors_sha256": hashlib.sha256(vectors_payload).hexdigest(),
        }
        # The manifest is the commit point: without it the shard does not exist.
        atomic_write_bytes(Path(f"{stem}.json"), json.dumps(manifest).encode())
        self._loaded_manifests.add(f"{stem.name}.json")
        shard_index = len(self._shards)
        self._shards.append(vectors)
        for row, key in enumerate(keys):
            self._keys.setdefault(key, (shard_index, row))

    def missing(self, texts: Sequence[str]) -> list[str]:
        """Returns the distinct texts that have no stored vector, in first-seen order."""
        seen: set[bytes] = set()
        missing = []
        for text in texts:
            key = text_key(text)
            if key not in self._keys and key not in seen:
                seen.add(key)
                missing.append(text)
        return missing

    def get_or_encode(
        self,
        texts: Sequence[str],
        encode: Callable[[list[str]], np.ndarray],
        on_progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Returns an (n, dim) float32 array of the texts' vectors, encoding only what is missing.

        Missing texts are encoded longest first (so batches hold texts of similar length and
        little padding), and written to disk every ``SHARD_TEXTS`` texts, so an interrupted
        encoding keeps what it finished. ``on_progress`` gets the count of texts just encoded.
        Another process encoding into the same store holds its lock; this one waits, then
        encodes only what is still missing.
        """
        if self.missing(texts):
            with file_lock(self.folder / LOCK_NAME):
                self._load_shards()
                self._encode_missing(texts, encode, on_progress)
        if not texts:
            return np.empty((0, 0), dtype=np.float32)
        locations = [self._keys[text_key(text)] for text in texts]
        return np.stack([self._shards[shard][row] for shard, row in locations]).astype(np.float32, copy=False)

    def _encode_missing(
        self,
        texts: Sequence[str],
        encode: Callable[[list[str]], np.ndarray],
        on_progress: Callable[[int], None] | None,
    ) -> None:
        todo = sorted(self.missing(texts), key=len, reverse=True)
        for start in range(0, len(todo), SHARD_TEXTS):
            batch = todo[start : start + SHARD_TEXTS]
            parts = []
            for part_start in range(0, len(batch), PROGRESS_TEXTS):
                parts.append(encode(batch[part_start : part_start + PROGRESS_TEXTS]))
                if on_progress is not None:
                    on_progress(len(parts[-1]))
            vectors = np.concatenate(parts)
            self.folder.mkdir(parents=True, exist_ok=True)
            self._write_shard([text_key(text) for text in batch], vectors)


def content_address(parts: dict) -> str:
    """Returns the hex address of everything that decides a cached result (canonical JSON, sha256)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def write_blob(path: Path, payload: bytes) -> None:
    """Writes ``payload`` behind a sha256 header line, atomically."""
    atomic_write_bytes(path, hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def read_blob(path: Path) -> bytes | None:
    """Returns the payload of a blob, or None when it is missing, truncated or corrupt (then removes it)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    header, _, payload = data.partition(b"\n")
    if header != hashlib.sha256(payload).hexdigest().encode():
        path.unlink(missing_ok=True)
        return None
    return payload


class Cache:
    """The cache folder of a state directory; hands out stores by content address."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._embedding_stores: dict[tuple[str, str], EmbeddingStore] = {}

    def embeddings(self, model_fingerprint: str, role: str) -> EmbeddingStore:
        """Returns the store of vectors made by one model for one role ("document" or "query")."""
        key = (model_fingerprint, role)
        if key not in self._embedding_stores:
            self._embedding_stores[key] = EmbeddingStore(self.root / "embeddings" / model_fingerprint / role)
        return self._embedding_stores[key]

    def blob(self, kind: str, parts: dict, compute: Callable[[], bytes]) -> bytes:
        """Returns the cached bytes addressed by ``parts`` under ``kind``, computing and storing them on a miss.

        A miss is computed under a lock on the address, so two processes never compute it twice.
        """
        address = content_address(parts)
        path = self.root / kind / f"{address}.blob"
        payload = read_blob(path)
        if payload is not None:
            return payload
        with file_lock(self.root / kind / f"{address}{LOCK_NAME}"):
            payload = read_blob(path)  # written by the process that held the lock
            if payload is None:
                payload = compute()
                write_blob(path, payload)
        return payload

    def size_by_kind(self) -> dict[str, tuple[int, int]]:
        """Returns kind → (files, bytes) for everything under the cache folder."""
        sizes: dict[str, tuple[int, int]] = {}
        if not self.root.is_dir():
            return sizes
        for kind_folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            files = [p for p in kind_folder.rglob("*") if p.is_file() and not p.name.endswith(LOCK_NAME)]
            sizes[kind_folder.name] = (len(files), sum(p.stat().st_size for p in files))
        return sizes

    def clear(self) -> int:
        """Deletes the whole cache folder; returns the bytes freed."""
        freed = sum(size for _, size in self.size_by_kind().values())
        shutil.rmtree(self.root, ignore_errors=True)
        self._embedding_stores.clear()
        return freed
