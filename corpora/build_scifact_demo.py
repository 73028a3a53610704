"""Build corpora/scifact-demo/ from BEIR SciFact: a compact corpus with hard distractors.

    python corpora/build_scifact_demo.py [--source ../shared/corpora/scifact] [--out corpora/scifact-demo]

Keeps a seeded sample of judged queries per split (150 test, 150 train), every document
judged relevant to a kept query, and then the documents BM25 ranks highest for the kept
queries (round-robin over queries, rank by rank) until the corpus holds 1,000 documents.
Output lines are copied byte for byte from the source, in source order, so the result is
deterministic for a given source, seed and bm25s version.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import bm25s
import Stemmer

SEED = 2024
QUERIES_PER_SPLIT = {"test": 150, "train": 150}
TARGET_DOCS = 1000
BM25_DEPTH = 100  # deep enough to fill TARGET_DOCS with the kept queries' top-ranked docs
QRELS_HEADER = "query-id\tcorpus-id\tscore\n"


def read_jsonl_lines(path: Path) -> list[tuple[str, str, dict]]:
    """Return (id, original line, record) for each line of a JSONL file."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            rows.append((record["_id"], line, record))
    return rows


def read_qrels_lines(path: Path) -> list[tuple[str, str, int, str]]:
    """Return (query id, doc id, grade, original line) for each row, skipping the header."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            query_id, doc_id, score = line.rstrip("\n").split("\t")
            if score == "score":
                continue
            rows.append((query_id, doc_id, int(score), line))
    return rows


def sample_queries(qrels_rows: list[tuple[str, str, int, str]], count: int, rng: random.Random) -> list[str]:
    """Return ``count`` query ids with at least one relevant doc, sampled reproducibly."""
    judged = sorted({query_id for query_id, _, grade, _ in qrels_rows if grade > 0}, key=int)
    return sorted(rng.sample(judged, count), key=int)


def hard_distractors(
    documents: list[tuple[str, str, dict]], queries: dict[str, str], kept: set[str], budget: int
) -> list[str]:
    """Return up to ``budget`` doc ids not in ``kept``, taken rank by rank from each query's BM25 list."""
    doc_ids = [doc_id for doc_id, _, _ in documents]
    texts = [f"{record.get('title', '')} {record['text']}".strip() for _, _, record in documents]
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    corpus_tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
    retriever.index(corpus_tokens, show_progress=False)
    query_texts = [queries[q] for q in sorted(queries, key=int)]
    query_tokens = bm25s.tokenize(query_texts, stopwords="en", stemmer=stemmer, show_progress=False)
    ranked, _ = retriever.retrieve(query_tokens, k=BM25_DEPTH, show_progress=False, n_threads=1)

    chosen: list[str] = []
    seen = set(kept)
    for rank in range(BM25_DEPTH):
        for row in ranked:
            doc_id = doc_ids[int(row[rank])]
            if doc_id not in seen:
                seen.add(doc_id)
                chosen.append(doc_id)
                if len(chosen) == budget:
                    return chosen
    return chosen


def build(source: Path, out: Path) -> dict[str, int]:
    """Write the demo corpus under ``out`` and return its counts."""
    rng = random.Random(SEED)
    documents = read_jsonl_lines(source / "corpus.jsonl")
    queries = read_jsonl_lines(source / "queries.jsonl")
    query_text = {query_id: record["text"] for query_id, _, record in queries}

    kept_queries: dict[str, list[str]] = {}
    kept_qrels: dict[str, list[str]] = {}
    relevant: set[str] = set()
    for split, count in QUERIES_PER_SPLIT.items():
        rows = read_qrels_lines(source / "qrels" / f"{split}.tsv")
        sample = set(sample_queries(rows, count, rng))
        kept_queries[split] = sorted(sample, key=int)
        kept_qrels[split] = [line for query_id, _, _, line in rows if query_id in sample]
        relevant |= {doc_id for query_id, doc_id, grade, _ in rows if query_id in sample and grade > 0}

    all_kept = {query_id for ids in kept_queries.values() for query_id in ids}
    distractors = hard_distractors(
        documents, {q: query_text[q] for q in all_kept}, relevant, TARGET_DOCS - len(relevant)
    )
    kept_docs = relevant | set(distractors)

    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8", newline="") as handle:
        handle.writelines(line for doc_id, line, _ in documents if doc_id in kept_docs)
    with (out / "queries.jsonl").open("w", encoding="utf-8", newline="") as handle:
        handle.writelines(line for query_id, line, _ in queries if query_id in all_kept)
    for split, lines in kept_qrels.items():
        with (out / "qrels" / f"{split}.tsv").open("w", encoding="utf-8", newline="") as handle:
            handle.write(QRELS_HEADER)
            handle.writelines(lines)
    return {
        "documents": len(kept_docs),
        "relevant documents": len(relevant),
        "distractors": len(distractors),
        **{f"{split} queries": len(ids) for split, ids in kept_queries.items()},
        **{f"{split} qrels rows": len(lines) for split, lines in kept_qrels.items()},
    }


def main() -> None:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=here.parent.parent / "shared" / "corpora" / "scifact")
    parser.add_argument("--out", type=Path, default=here / "scifact-demo")
    args = parser.parse_args()
    for name, value in build(args.source, args.out).items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
