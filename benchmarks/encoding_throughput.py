"""Encoding throughput: workbench's cached Encoder against bare SentenceTransformer.encode.

The same texts (the corpus' whole documents) are encoded raw, then through
``workbench.retrieval.retrievers.dense.Encoder`` with a fresh cache (every text a miss, so it encodes and
writes shards), then raw again. The raw figure is the mean of the two raw runs, which spreads
the noise of a shared machine over both sides. Reports texts/s and workbench/raw; target >= 95%.

    .venv/bin/python benchmarks/encoding_throughput.py [--corpus ../shared/corpora/scifact] [--max-docs N]
        [--out benchmarks/results/encoding_throughput.json]
"""

from __future__ import annotations

import statistics
import time

import harness

NAME = "encoding_throughput"
TARGET_RATIO = 0.95
BATCH_SIZE = 64


def main() -> None:
    parser = harness.base_parser(NAME, __doc__.splitlines()[0])
    args = parser.parse_args()
    bench = harness.start(NAME, args)

    from workbench.retrieval.cache import Cache
    from workbench.retrieval.config import DenseConfig
    from workbench.retrieval.corpus import load_corpus
    from workbench.retrieval.models import load_encoder
    from workbench.retrieval.retrievers.dense import Encoder

    corpus = load_corpus(bench.corpus_path)
    texts = [doc.full_text for doc in corpus.documents.values()]
    config = DenseConfig()
    if config.batch_size != BATCH_SIZE:
        print(f"note: workbench's default batch size is {config.batch_size}, the raw runs use {BATCH_SIZE}")
    model = load_encoder(config.model)  # the same SentenceTransformer object for both sides
    model.encode(texts[:BATCH_SIZE], batch_size=BATCH_SIZE, normalize_embeddings=True, show_progress_bar=False)

    def raw_run() -> float:
        started = time.perf_counter()
        model.encode(texts, batch_size=BATCH_SIZE, normalize_embeddings=True, show_progress_bar=False)
        return time.perf_counter() - started

    runs = []
    runs.append(("raw", raw_run()))
    started = time.perf_counter()
    Encoder(config, Cache(bench.state_dir / "cache")).encode(texts, "document")
    runs.append(("workbench", time.perf_counter() - started))
    runs.append(("raw", raw_run()))

    raw_s = statistics.fmean(seconds for side, seconds in runs if side == "raw")
    workbench_s = next(seconds for side, seconds in runs if side == "workbench")
    raw_tps, workbench_tps = len(texts) / raw_s, len(texts) / workbench_s
    ratio = workbench_tps / raw_tps
    met = ratio >= TARGET_RATIO

    harness.print_table(
        f"encoding {len(texts)} texts with {config.model}",
        ["run", "seconds", "texts/s"],
        [[f"{index + 1}. {side}", seconds, len(texts) / seconds] for index, (side, seconds) in enumerate(runs)]
        + [
            ["raw (mean of runs 1 and 3)", raw_s, raw_tps],
            ["workbench / raw", None, f"{ratio:.1%}"],
            [f"target >= {TARGET_RATIO:.0%}", None, "met" if met else "NOT met"],
        ],
    )
    bench.finish(
        {
            "texts": len(texts),
            "raw_texts_per_s": raw_tps,
            "workbench_texts_per_s": workbench_tps,
            "ratio": ratio,
            "raw_s_mean": raw_s,
            "workbench_s": workbench_s,
        },
        {"ratio_min": TARGET_RATIO, "met": met},
        {
            "model": config.model,
            "batch_size": BATCH_SIZE,
            "runs": [{"side": side, "seconds": seconds, "texts_per_s": len(texts) / seconds} for side, seconds in runs],
            "note": "workbench side = Encoder(DenseConfig(), Cache(fresh)).encode(texts, 'document'): hashing, "
            "encoding of every miss, shard writes and the final gather",
        },
    )


if __name__ == "__main__":
    main()
