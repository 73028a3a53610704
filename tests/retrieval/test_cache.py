"""Tests of workbench/cache.py: encode once, share by content, survive corruption and interruption."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

import workbench.retrieval.cache as cache_module
from workbench.files import atomic_write_bytes
from workbench.retrieval.cache import LOCK_NAME, Cache, EmbeddingStore, text_key
from workbench.retrieval.chunking import chunk_documents
from workbench.retrieval.config import ChunkingConfig
from workbench.types import Document

DIM = 8


class CountingEncoder:
    """A deterministic encoder (vector from the text's hash) that records every call."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("killed while encoding")
        return np.stack([expected_vector(text) for text in texts])

    @property
    def encoded(self) -> list[str]:
        return [text for call in self.calls for text in call]


def expected_vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def expected_matrix(texts: list[str]) -> np.ndarray:
    return np.stack([expected_vector(text) for text in texts])


TEXTS = [f"text number {i}" for i in range(10)]


def shard_files(folder: Path) -> list[Path]:
    """Returns the shard files of a store folder (not its lock file)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != LOCK_NAME)


def test_encodes_once_then_hits(cache: Cache):
    store = cache.embeddings("model-a", "document")
    encoder = CountingEncoder()
    first = store.get_or_encode(TEXTS + TEXTS[:3], encoder)
    assert sorted(encoder.encoded) == sorted(TEXTS), "each distinct text encoded once"
    np.testing.assert_array_equal(first, expected_matrix(TEXTS + TEXTS[:3]))
    assert first.dtype == np.float32

    second = store.get_or_encode(list(reversed(TEXTS)), encoder)
    assert len(encoder.calls) == 1
    np.testing.assert_array_equal(second, expected_matrix(list(reversed(TEXTS))))

    # a new process (fresh objects) reads the vectors back from disk
    reopened = Cache(cache.root).embeddings("model-a", "document")
    fresh = CountingEncoder()
    np.testing.assert_array_equal(reopened.get_or_encode(TEXTS, fresh), expected_matrix(TEXTS))
    assert fresh.calls == []


def test_model_and_role_are_separate_stores(cache: Cache):
    encoder = CountingEncoder()
    cache.embeddings("model-a", "document").get_or_encode(TEXTS, encoder)
    cache.embeddings("model-a", "query").get_or_encode(TEXTS, encoder)
    cache.embeddings("model-b", "document").get_or_encode(TEXTS, encoder)
    assert len(encoder.calls) == 3
    assert cache.embeddings("model-a", "document") is cache.embeddings("model-a", "document")


def test_same_text_in_two_chunkings_shares_a_vector(cache: Cache):
    documents = [
        Document("short", "", "A short note."),
        Document("long", "", " ".join(f"word{i}" for i in range(60))),
    ]
    whole = chunk_documents(documents, ChunkingConfig(kind="none"))
    pieces = chunk_documents(documents, ChunkingConfig(kind="recursive", chunk_size=100, chunk_overlap=0))
    store = cache.embeddings("model-a", "document")
    encoder = CountingEncoder()
    whole_vectors = store.get_or_encode([c.text for c in whole], encoder)
    piece_vectors = store.get_or_encode([c.text for c in pieces], encoder)
    assert len(encoder.calls) == 2
    assert "A short note." not in encoder.calls[1], "the short document's only chunk is its whole text"
    assert set(encoder.calls[1]) == {c.text for c in pieces} - {"A short note."}
    np.testing.assert_array_equal(whole_vectors[0], piece_vectors[0])


def test_empty_request_encodes_nothing(cache: Cache):
    encoder = CountingEncoder()
    vectors = cache.embeddings("model-a", "document").get_or_encode([], encoder)
    assert vectors.shape[0] == 0 and encoder.calls == []


def corrupt_flip_vector_bytes(stem: Path) -> None:
    path = Path(f"{stem}.vectors.npy")
    payload = bytearray(path.read_bytes())
    for position in range(len(payload) - 8, len(payload)):
        payload[position] ^= 0xFF
    path.write_bytes(bytes(payload))


def corrupt_truncate_vectors(stem: Path) -> None:
    path = Path(f"{stem}.vectors.npy")
    path.write_bytes(path.read_bytes()[: -DIM * 4])


def corrupt_truncate_keys(stem: Path) -> None:
    path = Path(f"{stem}.keys.npy")
    path.write_bytes(path.read_bytes()[:-16])


def corrupt_manifest_json(stem: Path) -> None:
    Path(f"{stem}.json").write_text("{not json")


@pytest.mark.parametrize(
    "corrupt", [corrupt_flip_vector_bytes, corrupt_truncate_vectors, corrupt_truncate_keys, corrupt_manifest_json]
)
def test_corrupted_shard_is_removed_and_recomputed(cache: Cache, corrupt):
    cache.embeddings("model-a", "document").get_or_encode(TEXTS, CountingEncoder())
    folder = cache.root / "embeddings" / "model-a" / "document"
    (manifest,) = folder.glob("*.json")
    corrupt(manifest.with_suffix(""))

    store = EmbeddingStore(folder)
    assert shard_files(folder) == [], "a shard that fails its checksums is deleted"
    assert store.missing(TEXTS) == TEXTS
    encoder = CountingEncoder()
    np.testing.assert_array_equal(store.get_or_encode(TEXTS, encoder), expected_matrix(TEXTS))
    assert sorted(encoder.encoded) == sorted(TEXTS)
    assert EmbeddingStore(folder).missing(TEXTS) == []


def test_shard_without_manifest_is_not_read_and_is_recomputed(cache: Cache):
    cache.embeddings("model-a", "document").get_or_encode(TEXTS, CountingEncoder())
    folder = cache.root / "embeddings" / "model-a" / "document"
    (manifest,) = folder.glob("*.json")
    manifest.unlink()

    store = EmbeddingStore(folder)
    assert store.missing(TEXTS) == TEXTS
    encoder = CountingEncoder()
    np.testing.assert_array_equal(store.get_or_encode(TEXTS, encoder), expected_matrix(TEXTS))
    assert sorted(encoder.encoded) == sorted(TEXTS)
    assert len(list(folder.glob("*.json"))) == 1
    assert EmbeddingStore(folder).missing(TEXTS) == []


def test_interrupted_encoding_keeps_only_complete_shards(cache: Cache, monkeypatch):
    monkeypatch.setattr(cache_module, "SHARD_TEXTS", 3)
    folder = cache.root / "embeddings" / "model-a" / "document"
    with pytest.raises(KeyboardInterrupt):
        EmbeddingStore(folder).get_or_encode(TEXTS, CountingEncoder(fail_on_call=2))

    assert not list(folder.glob("*.tmp")) and [p.name for p in folder.glob(".*")] == [LOCK_NAME]
    manifests = list(folder.glob("*.json"))
    assert len(manifests) == 1
    assert json.loads(manifests[0].read_text())["rows"] == 3

    store = EmbeddingStore(folder)
    missing = store.missing(TEXTS)
    assert len(missing) == len(TEXTS) - 3, "the finished shard is read back"
    encoder = CountingEncoder()
    np.testing.assert_array_equal(store.get_or_encode(TEXTS, encoder), expected_matrix(TEXTS))
    assert sorted(encoder.encoded) == sorted(missing)
    assert sorted(len(call) for call in encoder.calls) == [1, 3, 3]


def test_crash_before_the_manifest_leaves_no_readable_shard(cache: Cache, monkeypatch):
    """Killed between writing the vectors and the manifest: the half shard is never read back."""
    import workbench.retrieval.cache_files as files_module

    folder = cache.root / "embeddings" / "model-a" / "document"
    real_write = files_module.atomic_write_bytes

    def write_then_die_on_manifest(path: Path, payload: bytes) -> None:
        if path.suffix == ".json":
            raise KeyboardInterrupt("killed before the commit point")
        real_write(path, payload)

    monkeypatch.setattr(files_module, "atomic_write_bytes", write_then_die_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        EmbeddingStore(folder).get_or_encode(TEXTS, CountingEncoder())
    monkeypatch.setattr(files_module, "atomic_write_bytes", real_write)

    store = EmbeddingStore(folder)
    assert store.missing(TEXTS) == TEXTS
    encoder = CountingEncoder()
    np.testing.assert_array_equal(store.get_or_encode(TEXTS, encoder), expected_matrix(TEXTS))
    assert sorted(encoder.encoded) == sorted(TEXTS)


def test_atomic_write_leaves_no_temp_file_on_failure(tmp_path: Path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"first")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_key_ending_in_nul_bytes_reads_back_from_disk(cache: Cache):
    """numpy's S16 strips trailing NUL bytes; such a key must still be found after a reload."""
    text = next(f"text {i}" for i in range(100_000) if text_key(f"text {i}").endswith(b"\x00"))
    texts = [text, "another text"]
    cache.embeddings("model-a", "document").get_or_encode(texts, CountingEncoder())
    reopened = EmbeddingStore(cache.root / "embeddings" / "model-a" / "document")
    encoder = CountingEncoder()
    np.testing.assert_array_equal(reopened.get_or_encode(texts, encoder), expected_matrix(texts))
    assert encoder.calls == []


def test_text_key_is_content_address():
    assert text_key("a") == text_key("a") != text_key("b")
    assert len(text_key("a")) == 16


def test_size_by_kind_and_clear(cache: Cache):
    assert cache.size_by_kind() == {}
    cache.embeddings("model-a", "document").get_or_encode(TEXTS, CountingEncoder())
    cache.embeddings("model-a", "query").get_or_encode(TEXTS[:2], CountingEncoder())
    files = [p for p in (cache.root / "embeddings").rglob("*") if p.is_file() and p.name != LOCK_NAME]
    total = sum(p.stat().st_size for p in files)
    assert len(files) == 6  # two shards: keys, vectors, manifest each (lock files are not counted)
    assert cache.size_by_kind() == {"embeddings": (6, total)}

    assert cache.clear() == total
    assert not cache.root.exists()
    assert cache.size_by_kind() == {}
    encoder = CountingEncoder()
    cache.embeddings("model-a", "document").get_or_encode(TEXTS, encoder)
    assert sorted(encoder.encoded) == sorted(TEXTS), "after clear nothing is remembered, in memory or on disk"


def test_atomic_writes_get_the_usual_file_permissions(tmp_path: Path):
    from workbench.files import atomic_write_bytes

    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "best.toml", b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "best.toml").stat().st_mode & 0o777 == 0o644


def _encode_in_process(folder: str, texts: list[str], log: str, start) -> None:
    """Runs in a child process: waits for the start signal, then asks the store for ``texts``."""

    def slow_encoder(batch: list[str]) -> np.ndarray:
        with open(log, "a") as handle:
            handle.write(f"{len(batch)}\n")
        time.sleep(0.3)
        return expected_matrix(batch)

    start.wait()
    vectors = EmbeddingStore(Path(folder)).get_or_encode(texts, slow_encoder)
    np.testing.assert_array_equal(vectors, expected_matrix(texts))


def _blob_in_process(root: str, log: str, start) -> None:
    def compute() -> bytes:
        with open(log, "a") as handle:
            handle.write("computed\n")
        time.sleep(0.3)
        return b"payload"

    start.wait()
    assert Cache(root).blob("chunks", {"corpus": "c"}, compute) == b"payload"


@pytest.mark.parametrize("target", ["embeddings", "blob"])
def test_two_processes_needing_the_same_entry_compute_it_once(tmp_path: Path, target: str):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start = context.Event()
    logs = [tmp_path / f"process-{index}.log" for index in range(2)]
    if target == "embeddings":
        jobs = [(_encode_in_process, (str(tmp_path / "store"), TEXTS, str(log), start)) for log in logs]
    else:
        jobs = [(_blob_in_process, (str(tmp_path / "cache"), str(log), start)) for log in logs]
    processes = [context.Process(target=function, args=args) for function, args in jobs]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(timeout=120)

    assert [process.exitcode for process in processes] == [0, 0]
    lines = [line for log in logs if log.exists() for line in log.read_text().split()]
    if target == "embeddings":
        assert sum(int(count) for count in lines) == len(TEXTS), "one process encoded, the other read its vectors"
    else:
        assert lines == ["computed"]


# --- a cache at a URL, shared by machines: no lock, shards written whole -------------------------


def test_a_store_at_a_memory_url_encodes_once_and_reads_back():
    """``memory://`` takes the fsspec path an ``s3://`` cache takes, without S3."""
    cache = Cache("memory://workbench-test/encodes-once")
    encoder = CountingEncoder()
    np.testing.assert_array_equal(
        cache.embeddings("model-a", "document").get_or_encode(TEXTS, encoder), expected_matrix(TEXTS)
    )
    reopened = EmbeddingStore(cache.store_location("model-a", "document"))
    fresh = CountingEncoder()
    np.testing.assert_array_equal(reopened.get_or_encode(list(reversed(TEXTS)), fresh), expected_matrix(TEXTS[::-1]))
    assert fresh.calls == [] and sorted(encoder.encoded) == sorted(TEXTS)
    assert cache.blob("chunks", {"corpus": "c"}, lambda: b"payload") == b"payload"
    assert Cache("memory://workbench-test/encodes-once").blob("chunks", {"corpus": "c"}, lambda: b"other") == b"payload"
    assert set(cache.size_by_kind()) == {"embeddings", "chunks"}
    cache.clear()
    assert cache.size_by_kind() == {}


def test_vectors_at_a_url_are_fetched_when_asked_for_and_a_damaged_shard_is_encoded_again():
    import fsspec

    location = "memory://workbench-test/lazy"
    Cache(location).embeddings("model-a", "document").get_or_encode(TEXTS, CountingEncoder())
    memory = fsspec.filesystem("memory")
    (vectors_object,) = memory.glob("/workbench-test/lazy/embeddings/model-a/document/*.vectors.npy")
    memory.pipe_file(vectors_object, b"damaged")

    store = Cache(location).embeddings("model-a", "document")
    assert store.missing(TEXTS) == [], "opening reads keys only"
    encoder = CountingEncoder()
    np.testing.assert_array_equal(store.get_or_encode(TEXTS, encoder), expected_matrix(TEXTS))
    assert sorted(encoder.encoded) == sorted(TEXTS), "the damaged shard was dropped when read, and encoded again"
    assert EmbeddingStore(store.location).get_or_encode(TEXTS, CountingEncoder()).shape == (len(TEXTS), DIM)
    Cache(location).clear()


def test_a_file_url_is_the_local_folder(tmp_path: Path):
    Cache(f"file://{tmp_path}/cache").embeddings("model-a", "document").get_or_encode(TEXTS, CountingEncoder())
    assert Cache(tmp_path / "cache").embeddings("model-a", "document").missing(TEXTS) == []


def test_an_unknown_url_scheme_is_a_config_error():
    from workbench.errors import ConfigError

    with pytest.raises(ConfigError, match="no file system for 'nosuch://'"):
        Cache("nosuch://bucket/prefix")


def test_a_cache_that_cannot_be_written_fails_its_check(tmp_path: Path):
    from workbench.errors import EnvironmentFault

    (tmp_path / "a-file").write_text("")
    with pytest.raises(EnvironmentFault, match=f"cache {tmp_path / 'a-file' / 'cache'}: cannot be written"):
        Cache(tmp_path / "a-file" / "cache").check()
    Cache("memory://workbench-test/check").check()


def test_lookup_in_the_sorted_keys_matches_a_dict_of_every_write(tmp_path: Path):
    """The fast path (one sorted key array, searched with numpy) against the obvious one (a dict)."""
    rng = np.random.default_rng(7)
    store = EmbeddingStore(tmp_path / "store")
    oracle: dict[str, np.ndarray] = {}
    for _ in range(6):  # overlapping shards: a text may be in several
        texts = [f"text {int(i)}" for i in rng.choice(300, size=40, replace=False)]
        store.write_shard(texts, expected_matrix(texts))
        oracle.update(zip(texts, expected_matrix(texts)))
    asked = [f"text {i}" for i in range(300)]
    assert store.missing(asked) == [text for text in asked if text not in oracle]
    known = [text for text in asked if text in oracle]
    for reader in (store, EmbeddingStore(tmp_path / "store")):
        vectors = reader.vectors(known)
        np.testing.assert_array_equal(vectors, np.stack([oracle[text] for text in known]))


def _write_the_same_shard(folder: str, offset: float, rounds: int, start) -> None:
    """Runs in a child process: writes one shard of ``TEXTS`` again and again, with vectors shifted by ``offset``."""
    from workbench.retrieval.cache import write_shard
    from workbench.retrieval.cache_files import cache_files

    files = cache_files(folder)
    start.wait()
    for _ in range(rounds):
        write_shard(files, TEXTS, expected_matrix(TEXTS) + offset)


def test_two_machines_writing_a_shard_at_once_never_leave_a_torn_one(tmp_path: Path):
    """No lock across machines: two writers of the same texts, with identical vectors (one
    shard name, the same bytes) and with vectors that differ in the last bits (two names, as an
    AVX2 and an AVX-512 machine may give), while a reader keeps opening the store."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start = context.Event()
    folder = tmp_path / "shared" / "store"
    writers = [
        context.Process(target=_write_the_same_shard, args=(str(folder), offset, 30, start))
        for offset in (0.0, 0.0, 1e-7)
    ]
    for writer in writers:
        writer.start()
    start.set()
    while any(writer.is_alive() for writer in writers):
        store = EmbeddingStore(folder)  # would remove a shard whose files do not match its manifest
        if store.shards():
            np.testing.assert_allclose(store.vectors(TEXTS), expected_matrix(TEXTS), atol=1e-6)
    for writer in writers:
        writer.join(timeout=120)
    assert [writer.exitcode for writer in writers] == [0, 0, 0]
    assert len(list(folder.glob("*.json"))) == 2, "one shard per distinct content, each whole"
    assert not list(folder.glob(".*.tmp"))
    store = EmbeddingStore(folder)
    assert len(store.shards()) == 2 and store.missing(TEXTS) == []
