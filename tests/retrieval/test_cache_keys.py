"""Blob cache entries (chunk lists, BM25 tokens, re-ranker scores): keys, hits, misses, corruption."""

from __future__ import annotations

from pathlib import Path

from workbench.retrieval.cache import Cache, content_address
from workbench.retrieval.components import component_identity
from workbench.retrieval.config import BM25Config, ChunkingConfig, RerankConfig
from workbench.retrieval.models import model_fingerprint
from workbench.retrieval.pipeline import Resources
from workbench.retrieval.rerank import CrossEncoderReranker


def blob_files(cache: Cache, kind: str) -> list[Path]:
    return sorted((cache.root / kind).glob("*.blob"))


def test_unchanged_parameters_hit_and_changed_ones_miss(cache: Cache):
    calls = []

    def compute() -> bytes:
        calls.append(1)
        return b"payload"

    assert cache.blob("things", {"size": 100, "model": "m"}, compute) == b"payload"
    assert cache.blob("things", {"model": "m", "size": 100}, compute) == b"payload"  # key order is irrelevant
    assert len(calls) == 1
    cache.blob("things", {"size": 200, "model": "m"}, compute)
    assert len(calls) == 2


def test_chunk_lists_are_keyed_by_chunking_parameters(adi, cache: Cache):
    recursive = ChunkingConfig(kind="recursive", chunk_size=300, chunk_overlap=30)
    first = Resources(adi, cache).chunk_set(recursive).chunks
    assert len(blob_files(cache, "chunks")) == 1
    again = Resources(adi, cache).chunk_set(recursive).chunks  # a new process would read the blob
    assert again == first and len(blob_files(cache, "chunks")) == 1
    Resources(adi, cache).chunk_set(recursive.model_copy(update={"chunk_overlap": 60}))
    assert len(blob_files(cache, "chunks")) == 2


def test_bm25_tokens_depend_on_tokenisation_not_on_k1_or_b(adi, cache: Cache):
    chunking = ChunkingConfig()
    Resources(adi, cache).first_stage(chunking, BM25Config(k1=1.2, b=0.75))
    Resources(adi, cache).first_stage(chunking, BM25Config(k1=0.9, b=0.4))
    assert len(blob_files(cache, "bm25-tokens")) == 1
    Resources(adi, cache).first_stage(chunking, BM25Config(stemmer="none"))
    assert len(blob_files(cache, "bm25-tokens")) == 2


def test_cached_bm25_tokens_give_the_same_ranking(adi, cache: Cache):
    queries = list(adi.queries.values())[:5]
    built = Resources(adi, cache).first_stage(ChunkingConfig(), BM25Config()).search(queries, 10)
    read = Resources(adi, cache).first_stage(ChunkingConfig(), BM25Config()).search(queries, 10)
    assert [row.tolist() for row in built.indices] == [row.tolist() for row in read.indices]


def test_truncated_or_corrupted_blob_is_not_trusted(tmp_path: Path):
    cache = Cache(tmp_path / "cache")
    computed: list[bytes] = []

    def blob(payload: bytes) -> bytes:
        return cache.blob("kind", {"entry": 1}, lambda: computed.append(payload) or payload)

    assert blob(b"0123456789" * 100) == b"0123456789" * 100
    assert blob(b"other") == b"0123456789" * 100 and len(computed) == 1  # read back, not computed again
    (path,) = (tmp_path / "cache" / "kind").glob("*.blob")
    path.write_bytes(path.read_bytes()[:-7])  # truncated
    assert blob(b"abc") == b"abc" and len(computed) == 2
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    assert blob(b"xyz") == b"xyz" and len(computed) == 3


def test_reranker_scores_are_cached_by_model_query_and_text(cross_encoder_path: str, cache: Cache):
    pairs = [("what is adi", "a document about documentation"), ("what is adi", "another text")]
    config = RerankConfig(model=cross_encoder_path)
    first = CrossEncoderReranker(config, cache).score_pairs(pairs)
    identity = component_identity(config)
    assert identity == {
        "class": "workbench.retrieval.rerank:CrossEncoderReranker",
        "version": CrossEncoderReranker.version,
        "fingerprint": model_fingerprint(cross_encoder_path),
    }
    store = cache.embeddings(content_address(identity), "rerank-score")
    assert store.missing([f"{q}\x1f{d}" for q, d in pairs]) == []
    # batch size, device, depth and weight do not change a pair's score: the same entries answer
    again = RerankConfig(model=cross_encoder_path, batch_size=2, device="cpu", depth=3, weight=0.5)
    assert component_identity(again) == identity
    assert CrossEncoderReranker(again, cache).score_pairs(pairs) == first
    assert store.missing(["what is adi\x1fa third text"]) == ["what is adi\x1fa third text"]


def test_a_model_whose_weights_change_only_at_the_end_gets_a_new_fingerprint(tmp_path):
    """A fine-tuned head lives at the end of the weights file; the fingerprint must see it."""
    from workbench.retrieval.models import model_fingerprint

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    weights = bytearray(3 * (1 << 20))
    (folder / "model.safetensors").write_bytes(bytes(weights))
    before = model_fingerprint(str(folder))
    weights[-1] = 1
    (folder / "model.safetensors").write_bytes(bytes(weights))

    assert model_fingerprint(str(folder)) != before


def test_the_pipeline_s_reranker_is_the_protocol_s(cross_encoder_path):
    from workbench.retrieval.rerank import Reranker, reranker_for

    reranker = reranker_for(RerankConfig(model=cross_encoder_path))

    assert isinstance(reranker, Reranker) and isinstance(reranker, CrossEncoderReranker)
    run = {"q": {"d1": 2.0, "d2": 1.0}}
    assert reranker.rerank(run, {"q": "query"}, {"d1": "a", "d2": "b"}, depth=2, weight=0.0) == run
