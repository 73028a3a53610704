"""Content-addressed caches, in a local folder or at a URL every machine reaches (``s3://``, through fsspec).

Embeddings are stored per (model fingerprint, role) in shards: each shard holds the sha256 of the
embedded texts and their vectors, and a manifest with checksums written last. A shard is named by
the hash of its contents and each file is written whole (a rename on disk, one PUT in an object
store), so two writers of the same shard write the same bytes under the same names, and a shard
whose manifest is missing does not exist. A shard whose checksums do not match is ignored and
removed, so a killed process never leaves an entry that is read back.

Several processes on one machine share a local cache: computing a missing entry happens under a
file lock, and whoever waited on the lock reads what the holder wrote instead of recomputing it.
Across machines there is no lock: writes need none (above), and with a Ray cluster one encoding
service per cluster keeps two workers from encoding the same texts (``retrieval/cluster.py``).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import CacheError, EnvironmentFault
from workbench.files import process_label
from workbench.retrieval.cache_files import LOCK_NAME, CacheFiles, cache_files, is_url, local_folder

SHARD_TEXTS = 4096  # texts encoded between two shard writes: bounds memory and work lost on a crash
PROGRESS_TEXTS = 256  # texts per encode call inside a shard, so progress shows on long encodings
_NO_KEYS = np.empty(0, dtype="S16")


def text_key(text: str) -> bytes:
    """Returns the 16-byte content address of a text."""
    return hashlib.sha256(text.encode("utf-8")).digest()[:16]


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """Returns the content addresses of ``texts`` as an ``S16`` array, in order."""
    if not texts:
        return _NO_KEYS
    return np.frombuffer(b"".join(text_key(text) for text in texts), dtype="S16")


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@dataclass(frozen=True)
class ShardInfo:
    """A shard as its manifest describes it: its name, its rows, who wrote it (``origin``)."""

    name: str
    rows: int
    origin: dict[str, str]


@dataclass
class _Shard:
    info: ShardInfo
    vectors_sha256: str
    vectors: np.ndarray | None  # memory-mapped where the file is local; fetched on first use from a URL


class _ShardDropped(Exception):
    """A shard's vectors failed their checksum when first read: the shard was removed."""


class EmbeddingStore:
    """Vectors of texts under one model and role, addressed by the texts' hashes.

    The keys of every shard read so far sit in one sorted ``S16`` array searched with numpy, with
    each key's shard and row beside it (24 bytes a text), not in a dict of Python objects. Vectors
    in a folder are memory-mapped; at a URL, a shard's vectors are fetched when first asked for.
    """

    def __init__(self, location: str | Path):
        self.files = cache_files(location)
        self.location = self.files.location
        self._shards: list[_Shard] = []
        self._known: set[str] = set()  # manifests read already
        self._sorted_keys = _NO_KEYS
        self._places = np.empty(0, dtype=np.int64)  # shard index << 32 | row, aligned with _sorted_keys
        self._pending: list[tuple[int, np.ndarray]] = []  # shards read but not yet merged into the sorted keys
        self.refresh()

    def refresh(self) -> None:
        """Reads the shards not read yet: all at first, then those other processes have added since."""
        for manifest_name in self.files.names("", ".json"):
            if manifest_name not in self._known:
                self._read_shard(manifest_name.removesuffix(".json"))

    def shards(self) -> list[ShardInfo]:
        """Returns the shards read so far (call ``refresh`` first for what others wrote since)."""
        return [shard.info for shard in self._shards]

    def _read_shard(self, stem: str) -> None:
        manifest_name, keys_name, vectors_name = f"{stem}.json", f"{stem}.keys.npy", f"{stem}.vectors.npy"
        try:
            manifest = json.loads(self.files.read(manifest_name) or b"")
            keys_payload = self.files.read(keys_name)
            if keys_payload is None or hashlib.sha256(keys_payload).hexdigest() != manifest["keys_sha256"]:
                raise ValueError("keys checksum mismatch")
            keys = np.load(io.BytesIO(keys_payload), allow_pickle=False)
            if len(keys) != manifest["rows"]:
                raise ValueError("row count mismatch")
            info = ShardInfo(stem, len(keys), dict(manifest.get("origin", {})))
            local = self.files.local_path(vectors_name) is not None
            vectors = self._read_vectors(info, manifest["vectors_sha256"]) if local else None
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
            self._remove_files(stem)
            return
        self._known.add(manifest_name)
        self._add_shard(info, keys, vectors, manifest["vectors_sha256"])

    def _remove_files(self, stem: str) -> None:
        for name in (f"{stem}.json", f"{stem}.keys.npy", f"{stem}.vectors.npy"):
            self.files.remove(name)

    def _read_vectors(self, info: ShardInfo, sha256: str) -> np.ndarray:
        """Returns a shard's vectors; raises ``ValueError`` when they fail their checksum or row count."""
        name = f"{info.name}.vectors.npy"
        path = self.files.local_path(name)
        if path is not None:
            from workbench.files import file_sha256

            if file_sha256(path) != sha256:
                raise ValueError("vectors checksum mismatch")
            vectors = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            payload = self.files.read(name)
            if payload is None or hashlib.sha256(payload).hexdigest() != sha256:
                raise ValueError("vectors checksum mismatch")
            vectors = np.load(io.BytesIO(payload), allow_pickle=False)
        if len(vectors) != info.rows:
            raise ValueError("row count mismatch")
        return vectors

    def _shard_vectors(self, index: int) -> np.ndarray:
        """Returns a shard's vectors, fetching them on first use; a shard that fails its checks is
        removed (files and keys) and ``_ShardDropped`` raised."""
        shard = self._shards[index]
        if shard.vectors is None:
            try:
                shard.vectors = self._read_vectors(shard.info, shard.vectors_sha256)
            except (OSError, ValueError):
                self._remove_files(shard.info.name)
                self._known.discard(f"{shard.info.name}.json")
                sorted_keys, places = self._merged()
                kept = (places >> 32) != index
                self._sorted_keys, self._places = sorted_keys[kept], places[kept]
                raise _ShardDropped(shard.info.name) from None
        return shard.vectors

    def _add_shard(self, info: ShardInfo, keys: np.ndarray, vectors: np.ndarray | None, vectors_sha256: str) -> None:
        self._shards.append(_Shard(info, vectors_sha256, vectors))
        self._pending.append((len(self._shards) - 1, keys.astype("S16", copy=False)))

    def _merged(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns (sorted keys, places), merging the shards read since the last call."""
        if self._pending:
            keys = np.concatenate([self._sorted_keys, *(keys for _, keys in self._pending)])
            places = np.concatenate(
                [self._places]
                + [(np.int64(shard) << 32) + np.arange(len(keys), dtype=np.int64) for shard, keys in self._pending]
            )
            order = np.argsort(keys, kind="stable")  # stable: of two shards holding a key, the first read wins
            self._sorted_keys, self._places = keys[order], places[order]
            self._pending.clear()
        return self._sorted_keys, self._places

    def _lookup(self, keys: np.ndarray) -> np.ndarray:
        """Returns each key's place (shard << 32 | row), or -1 where no shard holds it."""
        sorted_keys, places = self._merged()
        if not len(sorted_keys):
            return np.full(len(keys), -1, dtype=np.int64)
        positions = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
        return np.where(sorted_keys[positions] == keys, places[positions], -1)

    def write_shard(self, texts: Sequence[str], vectors: np.ndarray, origin: dict[str, str] | None = None) -> ShardInfo:
        """Writes one shard of ``texts`` and their vectors (``write_shard`` below) and reads it into this store."""
        keys = text_keys(texts)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        info, vectors_sha256 = _write_shard_files(self.files, keys, vectors, origin)
        if f"{info.name}.json" not in self._known:
            self._known.add(f"{info.name}.json")
            self._add_shard(info, keys, vectors, vectors_sha256)
        return info

    def missing(self, texts: Sequence[str]) -> list[str]:
        """Returns the distinct texts that have no stored vector, in first-seen order."""
        if not texts:
            return []
        keys = text_keys(texts)
        _, first = np.unique(keys, return_index=True)
        first.sort()
        absent = first[self._lookup(keys[first]) < 0]
        return [texts[position] for position in absent.tolist()]

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Returns the (n, dim) float32 vectors of ``texts``; raises ``CacheError`` when one is not stored
        (or its shard failed its checksum just now: it was removed)."""
        try:
            return self._gather(self._lookup(text_keys(texts)))
        except _ShardDropped as dropped:
            raise CacheError(f"{self.location}: shard {dropped} failed its checksum and was removed") from None

    def _gather(self, places: np.ndarray) -> np.ndarray:
        if not len(places):
            return np.empty((0, 0), dtype=np.float32)
        if (places < 0).any():
            absent = int((places < 0).sum())
            raise CacheError(f"{self.location}: {absent} of {len(places)} texts have no stored vector")
        shard_of, row_of = places >> 32, places & 0xFFFFFFFF
        out: np.ndarray | None = None
        for shard in np.unique(shard_of).tolist():
            vectors = self._shard_vectors(shard)
            if out is None:
                out = np.empty((len(places), vectors.shape[1]), dtype=np.float32)
            positions = np.flatnonzero(shard_of == shard)
            out[positions] = vectors[row_of[positions]]
        return out

    def get_or_encode(
        self,
        texts: Sequence[str],
        encode: Callable[[list[str]], np.ndarray],
        on_progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Returns an (n, dim) float32 array of the texts' vectors, encoding only what is missing.

        Missing texts are encoded longest first (so batches hold texts of similar length and
        little padding), and written every ``SHARD_TEXTS`` texts, so an interrupted encoding
        keeps what it finished. ``on_progress`` gets the count of texts just encoded. Another
        process encoding into the same local store holds its lock; this one waits, then encodes
        only what is still missing.
        """
        keys = text_keys(texts)
        for _ in range(3):  # a shard dropped while read leaves its texts missing: they are encoded on the next pass
            places = self._lookup(keys)
            if (places < 0).any():
                with self.files.lock(LOCK_NAME):
                    self.refresh()
                    self._encode_missing(texts, encode, on_progress)
                places = self._lookup(keys)
            try:
                return self._gather(places)
            except _ShardDropped:
                continue
        raise CacheError(f"{self.location}: shards fail their checksums as soon as they are written")

    def _encode_missing(
        self,
        texts: Sequence[str],
        encode: Callable[[list[str]], np.ndarray],
        on_progress: Callable[[int], None] | None,
    ) -> None:
        for batch in length_ordered_shards(self.missing(texts), SHARD_TEXTS):
            parts = []
            for part_start in range(0, len(batch), PROGRESS_TEXTS):
                parts.append(encode(batch[part_start : part_start + PROGRESS_TEXTS]))
                if on_progress is not None:
                    on_progress(len(parts[-1]))
            self.write_shard(batch, np.concatenate(parts))


def write_shard(
    files: CacheFiles, texts: Sequence[str], vectors: np.ndarray, origin: dict[str, str] | None = None
) -> ShardInfo:
    """Writes one shard of ``texts`` and their vectors (rows in the same order) into a store's files; returns it.

    The name is the hash of the contents and the manifest is written last: writing the same shard
    twice, from anywhere, leaves one whole shard. ``origin`` (default: this process, ``host:pid``)
    goes into the manifest. Raises ``OSError`` when the location cannot be written.
    """
    return _write_shard_files(files, text_keys(texts), vectors, origin)[0]


def _write_shard_files(
    files: CacheFiles, keys: np.ndarray, vectors: np.ndarray, origin: dict[str, str] | None
) -> tuple[ShardInfo, str]:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    keys_payload, vectors_payload = _npy_bytes(keys), _npy_bytes(vectors)
    keys_sha256, vectors_sha256 = hashlib.sha256(keys_payload).hexdigest(), hashlib.sha256(vectors_payload).hexdigest()
    stem = hashlib.sha256(f"{keys_sha256}{vectors_sha256}".encode()).hexdigest()[:24]  # named by both contents
    files.write(f"{stem}.keys.npy", keys_payload)
    files.write(f"{stem}.vectors.npy", vectors_payload)
    manifest = {
        "rows": len(keys),
        "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
        "keys_sha256": keys_sha256,
        "vectors_sha256": vectors_sha256,
        "origin": origin or {"process": process_label()},
    }
    # The manifest is the commit point: without it the shard does not exist.
    files.write(f"{stem}.json", json.dumps(manifest).encode())
    return ShardInfo(stem, len(keys), manifest["origin"]), vectors_sha256


def length_ordered_shards(texts: Sequence[str], shard_texts: int) -> Iterator[list[str]]:
    """Yields ``texts`` longest first, ``shard_texts`` at a time: each shard's texts have similar lengths."""
    ordered = sorted(texts, key=len, reverse=True)
    for start in range(0, len(ordered), shard_texts):
        yield ordered[start : start + shard_texts]


def content_address(parts: dict) -> str:
    """Returns the hex address of everything that decides a cached result (canonical JSON, sha256)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def blob_bytes(payload: bytes) -> bytes:
    """Returns ``payload`` behind a sha256 header line, as a blob file holds it."""
    return hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def blob_payload(data: bytes | None) -> bytes | None:
    """Returns the payload of a blob file's bytes, or None when they are missing, truncated or corrupt."""
    if data is None:
        return None
    header, _, payload = data.partition(b"\n")
    return payload if header == hashlib.sha256(payload).hexdigest().encode() else None


class Cache:
    """A cache location (a state folder's ``cache/``, a shared folder, or a URL); hands out stores by content address.

    ``cluster``, when given, encodes what the embedding stores miss (``retrieval/cluster.py``).
    """

    def __init__(self, root: str | Path, cluster=None):
        self.files = cache_files(root)
        self.root: str | Path = self.files.location if is_url(root) else local_folder(root)
        self.cluster = cluster
        self._embedding_stores: dict[tuple[str, str], EmbeddingStore] = {}

    def check(self) -> None:
        """Writes and removes a probe file, so an unreachable location fails before any work.

        Raises ``EnvironmentFault`` (exit code 1) naming the location.
        """
        probe = f".probe-{process_label().replace(':', '-')}"
        try:
            self.files.write(probe, b"")
            self.files.remove(probe)
        except Exception as error:  # whatever the file system raises: permission, DNS, credentials, a bucket
            detail = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            raise EnvironmentFault(f"cache {self.files.location}: cannot be written ({detail})") from None

    def embeddings(self, model_fingerprint: str, role: str) -> EmbeddingStore:
        """Returns the store of vectors made by one model for one role ("document" or "query")."""
        key = (model_fingerprint, role)
        if key not in self._embedding_stores:
            self._embedding_stores[key] = EmbeddingStore(self.store_location(model_fingerprint, role))
        return self._embedding_stores[key]

    def store_location(self, model_fingerprint: str, role: str) -> str:
        """Returns where the store of one model and role lives: a folder, or a URL."""
        return f"{self.files.location.rstrip('/')}/embeddings/{model_fingerprint}/{role}"

    def blob(self, kind: str, parts: dict, compute: Callable[[], bytes]) -> bytes:
        """Returns the cached bytes addressed by ``parts`` under ``kind``, computing and storing them on a miss.

        A miss is computed under a lock on the address (local caches), so two processes never compute it twice.
        """
        address = content_address(parts)
        name = f"{kind}/{address}.blob"
        payload = blob_payload(self.files.read(name))
        if payload is not None:
            return payload
        with self.files.lock(f"{kind}/{address}{LOCK_NAME}"):
            payload = blob_payload(self.files.read(name))  # written by the process that held the lock
            if payload is None:
                payload = compute()
                self.files.write(name, blob_bytes(payload))
        return payload

    def size_by_kind(self) -> dict[str, tuple[int, int]]:
        """Returns kind → (files, bytes) for everything under the cache location."""
        return self.files.sizes()

    def clear(self) -> int:
        """Deletes the whole cache; returns the bytes freed."""
        freed = sum(size for _, size in self.size_by_kind().values())
        self.files.clear()
        self._embedding_stores.clear()
        return freed
