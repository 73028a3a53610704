"""BM25's share of an index update: ``BM25Index.updated`` against building BM25 again from scratch.

Builds BM25 (bm25s, default settings) over the corpus' whole documents, then changes a seeded
``--changed`` fraction of them (their text gains a sentence), removes as many again and adds as many
new ones, and times ``updated`` (only the new and changed documents are tokenised; the statistics
are rebuilt over all) against a fresh ``BM25Index`` over the new texts. Both must rank the test
queries alike; the report says whether they did.

    .venv/bin/python benchmarks/bm25_update.py --corpus DIR [--changed 0.01] [--seed 42]
        [--out benchmarks/results/bm25_update.json]

A large corpus: ``benchmarks/distractors.py --out DIR --distractors 95000`` (SciFact plus 95,000 passages).
"""

from __future__ import annotations

import random
import time

import harness

NAME = "bm25_update"
SPLIT = "test"
K = 10


def main() -> None:
    parser = harness.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--changed", type=float, default=0.01, help="fraction changed, removed and added, each (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if not 0 < args.changed <= 0.3:
        parser.error(f"--changed must be in (0, 0.3], got {args.changed}")
    bench = harness.start(NAME, args)

    from workbench.retrieval.components import BuildContext
    from workbench.retrieval.config import BM25Config
    from workbench.retrieval.corpus import load_corpus
    from workbench.retrieval.retrievers.bm25 import BM25Index
    from workbench.types import Chunk

    corpus = load_corpus(bench.corpus_path)
    texts = [doc.full_text for doc in corpus.documents.values()]
    queries = list(corpus.judged_queries(SPLIT).values())
    config = BM25Config()

    started = time.perf_counter()
    index = BM25Index(texts, config)
    build_s = time.perf_counter() - started

    rng = random.Random(args.seed)
    count = max(1, round(args.changed * len(texts)))
    picked = rng.sample(range(len(texts)), 2 * count)
    changed, removed = set(picked[:count]), set(picked[count:])
    added = [f"{texts[rng.randrange(len(texts))]} A new passage, number {n}." for n in range(count)]
    kept: list[int | None] = []
    new_texts: list[str] = []
    for position, text in enumerate(texts):
        if position in removed:
            continue
        kept.append(None if position in changed else position)
        new_texts.append(f"{text} This passage was revised." if position in changed else text)
    kept += [None] * len(added)
    new_texts += added
    context = BuildContext([Chunk(str(n), str(n), text) for n, text in enumerate(new_texts)])

    started = time.perf_counter()
    updated = index.updated(context, kept)
    update_s = time.perf_counter() - started
    started = time.perf_counter()
    rebuilt = BM25Index(new_texts, config)
    rebuild_s = time.perf_counter() - started

    by_update, by_rebuild = updated.search(queries, K), rebuilt.search(queries, K)
    same = sum(a.tolist() == b.tolist() for a, b in zip(by_update.indices, by_rebuild.indices))
    harness.print_table(
        f"BM25 update: {len(texts)} documents, {count} changed, {count} removed, {count} added",
        ["step", "seconds"],
        [["first build", build_s], ["update", update_s], ["rebuild from scratch", rebuild_s],
         ["update / rebuild", f"{update_s / rebuild_s:.2f}"], ["queries ranked alike (top 10)", f"{same}/{len(queries)}"]],
    )  # fmt: skip
    bench.finish(
        {
            "documents": len(texts),
            "changed": count,
            "removed": count,
            "added": count,
            "first_build_s": build_s,
            "update_s": update_s,
            "rebuild_s": rebuild_s,
            "update_over_rebuild": update_s / rebuild_s,
            "queries_ranked_alike": same,
            "queries": len(queries),
        },
        {"note": "no fixed target: an update should cost less than a rebuild and rank alike"},
    )


if __name__ == "__main__":
    main()
