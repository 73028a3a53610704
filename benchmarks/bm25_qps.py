"""BM25 queries per second: workbench's BM25Index on bm25s against the rank-bm25 backend.

Builds ``BM25Index`` over the corpus' whole documents with backend ``bm25s`` and ``rank_bm25``
(method ``robertson`` for both, so they rank alike), times ``search`` of the test queries with
k = 100 (query tokenisation included), and reports queries per second of each and the speed-up.

    .venv/bin/python benchmarks/bm25_qps.py [--corpus ../shared/corpora/scifact] [--max-docs N]
        [--repeats 3] [--out benchmarks/results/bm25_qps.json]
"""

from __future__ import annotations

import statistics
import time

import harness

NAME = "bm25_qps"
SPLIT = "test"
K = 100


def main() -> None:
    parser = harness.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed searches per backend; the median counts (default: %(default)s)"
    )
    args = parser.parse_args()
    bench = harness.start(NAME, args)

    from workbench.retrieval.config import BM25Config
    from workbench.retrieval.corpus import load_corpus
    from workbench.retrieval.retrievers.bm25 import BM25Index

    corpus = load_corpus(bench.corpus_path)
    texts = [doc.full_text for doc in corpus.documents.values()]
    query_texts = list(corpus.judged_queries(SPLIT).values())

    import bm25s  # noqa: F401  (imported up front so the first backend timed does not pay for it)
    import rank_bm25  # noqa: F401
    import Stemmer  # noqa: F401

    results = {}
    top10 = {}
    for backend in ("bm25s", "rank_bm25"):
        config = BM25Config(backend=backend, method="robertson")
        started = time.perf_counter()
        index = BM25Index(texts, config)
        build_s = time.perf_counter() - started
        searches = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            hits = index.search(query_texts, K)
            searches.append(time.perf_counter() - started)
        search_s = statistics.median(searches)
        top10[backend] = [indices[:10].tolist() for indices in hits.indices]
        results[backend] = {
            "build_s": build_s,
            "search_s": search_s,
            "search_runs_s": searches,
            "qps": len(query_texts) / search_s,
        }
    speedup = results["bm25s"]["qps"] / results["rank_bm25"]["qps"]
    same_top10 = sum(a == b for a, b in zip(top10["bm25s"], top10["rank_bm25"])) / max(1, len(query_texts))

    harness.print_table(
        f"BM25 robertson, {len(texts)} docs, {len(query_texts)} {SPLIT} queries, k={K}",
        ["backend", "build s", "search s (median)", "queries/s"],
        [[backend, row["build_s"], row["search_s"], row["qps"]] for backend, row in results.items()]
        + [
            ["speed-up bm25s / rank_bm25", None, None, f"{speedup:.1f}x"],
            ["queries with identical top 10", None, None, f"{same_top10:.0%}"],
        ],
    )
    bench.finish(
        {
            "bm25s_qps": results["bm25s"]["qps"],
            "rank_bm25_qps": results["rank_bm25"]["qps"],
            "speedup": speedup,
            "queries": len(query_texts),
            "documents": len(texts),
            "same_top10_fraction": same_top10,
        },
        {"note": "no fixed target: reports the speed-up"},
        {"k": K, "repeats": args.repeats, "backends": results},
    )


if __name__ == "__main__":
    main()
