"""Naive loop: the same trials through workbench and through the loop a user would write by hand.

(a) workbench: the study of studies/scifact.toml (pointed at the chosen corpus) with
    ``run_study`` in a cold state folder: one shared ``Resources``, cold cache, its encoding
    included. Its completed trials' configs (``trial_config``) are the configurations both sides run.
(b) naive: for each of those configs, from scratch: langchain ``RecursiveCharacterTextSplitter``
    (or whole documents), ``SentenceTransformer.encode`` of every chunk (no cache), faiss
    ``IndexFlatIP``, rank-bm25 ``BM25Okapi`` over lower-cased whitespace tokens, min-max / z-score /
    RRF fusion in Python, pytrec_eval nDCG@10 on the same tuning queries.

The naive side stops after the config during which ``--naive-limit-s`` passes and is then
extrapolated per trial (``naive_extrapolated: true`` in the JSON). Reports naive / workbench;
target >= 20x, next to its ceiling: trials / distinct chunkings, the ratio when encoding is the
whole cost and costs the same on both sides (workbench encodes each chunking once, the naive loop
once per trial).

    .venv/bin/python benchmarks/naive_loop.py [--corpus ../shared/corpora/scifact] [--max-docs N]
        [--trials 30] [--naive-limit-s 900] [--out benchmarks/results/naive_loop.json]
"""

from __future__ import annotations

import math
import statistics
import time

import harness

NAME = "naive_loop"
TARGET_RATIO = 20.0


# --- the hand-written loop: what a user writes without workbench ---------------------------------


def naive_chunks(documents, chunking, model) -> tuple[list[str], list[str]]:
    """Returns (chunk texts, doc id of each chunk) cut as ``chunking`` says."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    if chunking.kind == "none":
        return [doc.full_text for doc in documents], [doc.doc_id for doc in documents]
    if chunking.kind == "recursive":
        splitter = RecursiveCharacterTextSplitter(chunk_size=chunking.chunk_size, chunk_overlap=chunking.chunk_overlap)
    else:
        splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            model.tokenizer, chunk_size=chunking.chunk_size, chunk_overlap=chunking.chunk_overlap
        )
    texts, doc_ids = [], []
    for doc in documents:
        for piece in splitter.split_text(doc.full_text) or [doc.full_text]:
            texts.append(piece)
            doc_ids.append(doc.doc_id)
    return texts, doc_ids


def max_per_doc(chunk_indices, chunk_scores, doc_ids, depth) -> dict[str, float]:
    """Returns the ``depth`` best documents, each scored by its best chunk."""
    scores: dict[str, float] = {}
    for index, score in zip(chunk_indices, chunk_scores):
        doc_id = doc_ids[index]
        if float(score) > scores.get(doc_id, -math.inf):
            scores[doc_id] = float(score)
    return dict(sorted(scores.items(), key=lambda item: -item[1])[:depth])


def normalise(scores: dict[str, float], how: str) -> dict[str, float]:
    """Returns the scores min-max scaled to [0, 1] or standardised (z-score)."""
    if not scores:
        return {}
    values = list(scores.values())
    if how == "minmax":
        low, high = min(values), max(values)
        return {d: (s - low) / (high - low) if high > low else 1.0 for d, s in scores.items()}
    mean = sum(values) / len(values)
    deviation = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {d: (s - mean) / deviation if deviation > 0 else 0.0 for d, s in scores.items()}


def fuse(bm25_scores, dense_scores, fusion, alpha: float) -> dict[str, float]:
    """Returns one query's fused document scores (convex over normalised scores, dense weighing alpha, or RRF)."""
    if dense_scores is None:
        return bm25_scores
    if bm25_scores is None:
        return dense_scores
    if fusion.method == "rrf":
        fused: dict[str, float] = {}
        for scores in (bm25_scores, dense_scores):
            for rank, doc_id in enumerate(sorted(scores, key=lambda d: -scores[d]), start=1):
                fused[doc_id] = fused.get(doc_id, 0.0) + 1.0 / (fusion.rrf_k + rank)
        return fused
    dense_norm, bm25_norm = normalise(dense_scores, fusion.normalization), normalise(bm25_scores, fusion.normalization)
    dense_floor, bm25_floor = min(dense_norm.values(), default=0.0), min(bm25_norm.values(), default=0.0)
    return {
        d: alpha * dense_norm.get(d, dense_floor) + (1 - alpha) * bm25_norm.get(d, bm25_floor)
        for d in dense_norm.keys() | bm25_norm.keys()
    }


def naive_trial(config, documents, queries: dict[str, str], qrels, models: dict) -> float:
    """Runs one config from scratch and returns its mean nDCG@10 over the judged queries."""
    import faiss
    import numpy as np
    import pytrec_eval
    from rank_bm25 import BM25Okapi
    from sentence_transformers import SentenceTransformer

    from workbench.retrieval.models import resolve_model

    fusion = config.fusion
    bm25_config, dense_config = config.first_stage("bm25"), config.first_stage("dense")
    model = None
    if dense_config or config.chunking.kind == "token":
        model_name = dense_config.model if dense_config else config.chunking.tokenizer
        if model_name not in models:
            models[model_name] = SentenceTransformer(str(resolve_model(model_name)), device="cpu")
        model = models[model_name]
    texts, doc_ids = naive_chunks(documents, config.chunking, model)
    chunks_per_doc = math.ceil(len(texts) / len(documents))
    k = min(config.first_stage_depth * chunks_per_doc, len(texts))
    query_ids, query_texts = list(queries), list(queries.values())

    bm25_runs = dense_runs = None
    if bm25_config:
        bm25 = BM25Okapi([text.lower().split() for text in texts], k1=bm25_config.k1, b=bm25_config.b)
        bm25_runs = []
        for text in query_texts:
            scores = bm25.get_scores(text.lower().split())
            best = np.argsort(-scores)[:k]
            bm25_runs.append(max_per_doc(best, scores[best], doc_ids, config.first_stage_depth))
    if dense_config:
        vectors = model.encode(texts, batch_size=64, normalize_embeddings=True)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.asarray(vectors, dtype=np.float32))
        query_vectors = model.encode(query_texts, batch_size=64, normalize_embeddings=True)
        scores, indices = index.search(np.asarray(query_vectors, dtype=np.float32), k)
        dense_runs = [
            max_per_doc(row, row_scores, doc_ids, config.first_stage_depth) for row, row_scores in zip(indices, scores)
        ]

    run = {}
    for position, query_id in enumerate(query_ids):
        fused = fuse(
            bm25_runs[position] if bm25_runs else None,
            dense_runs[position] if dense_runs else None,
            fusion,
            config.fusion_weights[-1],
        )
        run[query_id] = dict(sorted(fused.items(), key=lambda item: -item[1])[: config.output_depth])
    judged = {q: grades for q, grades in qrels.items() if any(g > 0 for g in grades.values())}
    results = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10"}).evaluate(run)
    return sum(results.get(q, {}).get("ndcg_cut_10", 0.0) for q in judged) / len(judged)


# --- the benchmark ---------------------------------------------------------------------------------


def main() -> None:
    parser = harness.base_parser(NAME, __doc__.splitlines()[0])
    harness.add_study_flags(parser)
    parser.add_argument(
        "--naive-limit-s",
        type=float,
        default=900.0,
        help="stop the naive loop after the config during which this many seconds pass, then extrapolate (default: %(default)s)",
    )
    args = parser.parse_args()
    bench = harness.start(NAME, args)

    from workbench.retrieval.corpus import load_corpus
    from workbench.study.splits import study_splits

    print("(a) workbench: run_study, cold cache")
    study = harness.timed_study(bench, args.trials, args.sampler, args.seed)
    workbench_s = study["wall_s"]
    trials = [row for row in study["trials"] if row["state"] == "COMPLETE"]

    corpus = load_corpus(bench.corpus_path)
    tune = study_splits(study["config"], corpus).tune
    documents = list(corpus.documents.values())

    print(f"(b) naive loop over the same {len(trials)} configs, limit {args.naive_limit_s:.0f} s")
    models: dict = {}
    naive_rows = []
    started = time.perf_counter()
    for row in trials:
        trial_started = time.perf_counter()
        ndcg = naive_trial(row["config"], documents, tune.queries, tune.qrels, models)
        seconds = time.perf_counter() - trial_started
        naive_rows.append(
            {
                "number": row["number"],
                "summary": row["summary"],
                "uses_dense": row["config"].first_stage("dense") is not None,
                "workbench_duplicate_of": row["duplicate_of"],
                "seconds": seconds,
                "naive_ndcg_at_10": ndcg,
                "workbench_ndcg_at_10": row["value"],
                "workbench_trial_s": row["duration_s"],
            }
        )
        print(f"  trial {row['number']:>3} {row['summary']:<45} {seconds:8.1f} s  nDCG@10 {ndcg:.3f}")
        if time.perf_counter() - started >= args.naive_limit_s:
            break
    naive_run_s = time.perf_counter() - started

    trials_run = len(naive_rows)
    extrapolated = trials_run < len(trials)
    per_trial_s = naive_run_s / trials_run if trials_run else 0.0
    naive_s = per_trial_s * len(trials) if extrapolated else naive_run_s
    by_kind_s = _by_kind_estimate(naive_rows, trials) if extrapolated else naive_run_s
    ratio = naive_s / workbench_s if workbench_s > 0 else None
    met = ratio is not None and ratio >= TARGET_RATIO
    # When encoding is the whole cost and costs the same on both sides, workbench encodes each
    # distinct chunking once and the naive loop once per trial: trials / chunkings bounds the ratio.
    chunkings = {_chunking_key(row["config"]) for row in trials}
    ceiling = len(trials) / len(chunkings) if chunkings else None
    # Tighter: only dense trials encode, so dense trials / the chunkings they use.
    dense_trials = [row for row in trials if row["config"].first_stage("dense") is not None]
    dense_chunkings = {_chunking_key(row["config"]) for row in dense_trials}
    dense_ceiling = len(dense_trials) / len(dense_chunkings) if dense_chunkings else None

    harness.print_table(
        "naive loop trials",
        ["trial", "config", "dense", "naive s", "workbench trial s", "naive nDCG@10", "workbench nDCG@10"],
        [
            [
                row["number"],
                row["summary"]
                + (
                    f" (workbench reused {row['workbench_duplicate_of']})"
                    if row["workbench_duplicate_of"] is not None
                    else ""
                ),
                row["uses_dense"],
                row["seconds"],
                row["workbench_trial_s"],
                row["naive_ndcg_at_10"],
                row["workbench_ndcg_at_10"],
            ]
            for row in naive_rows
        ],
    )
    harness.print_table(
        f"naive loop vs workbench ({bench.corpus_info['documents']} docs, {len(tune.queries)} tuning queries, {len(trials)} trials)",
        ["figure", "value"],
        [
            ["workbench study wall s (cold cache)", workbench_s],
            [f"naive s ({'EXTRAPOLATED per trial' if extrapolated else 'measured'})", naive_s],
            ["  naive trials run", f"{trials_run} of {len(trials)}"],
            ["  naive seconds measured", naive_run_s],
            ["  extrapolated by dense / BM25-only mean (for reference)", by_kind_s if extrapolated else None],
            ["ratio naive / workbench", ratio],
            [f"  its ceiling: {len(trials)} trials / {len(chunkings)} distinct chunkings", ceiling],
            [f"  tighter: {len(dense_trials)} dense trials / {len(dense_chunkings)} chunkings they use", dense_ceiling],
            [f"target >= {TARGET_RATIO:.0f}x", "met" if met else "NOT met"],
        ],
    )
    if extrapolated:
        print(
            f"NOTE: the naive loop hit its {args.naive_limit_s:.0f} s limit after {trials_run} of {len(trials)} "
            f"trials; its total is extrapolated as {per_trial_s:.1f} s per trial x {len(trials)}."
        )
    bench.finish(
        {
            "workbench_s": workbench_s,
            "naive_s": naive_s,
            "ratio": ratio,
            "naive_extrapolated": extrapolated,
            "naive_trials_run": trials_run,
            "trials": len(trials),
            "naive_measured_s": naive_run_s,
            "naive_per_trial_s": per_trial_s,
            "naive_extrapolated_by_kind_s": by_kind_s if extrapolated else None,
            "naive_limit_s": args.naive_limit_s,
            "distinct_chunkings": len(chunkings),
            "ceiling": ceiling,
            "dense_trials": len(dense_trials),
            "dense_ceiling": dense_ceiling,
        },
        {"ratio_min": TARGET_RATIO, "met": met},
        {
            "study": {
                "trials": args.trials,
                "sampler": args.sampler,
                "seed": args.seed,
                "space_matches_studies_scifact_toml": study["space_matches_studies_scifact_toml"],
                "note": "workbench side = run_study wall (MLflow, Optuna storage, per-trial latency sample included; "
                "a configuration proposed twice is scored once by workbench, and run again by the naive loop)",
            },
            "naive_trials": naive_rows,
            "workbench_trials": harness.trial_rows_for_json(study["trials"]),
        },
    )


def _chunking_key(config) -> tuple:
    """What decides the chunks (and so the vectors) of a trial: whole documents, or kind, size and overlap."""
    chunking = config.chunking
    if chunking.kind == "none":
        return ("none",)
    return (chunking.kind, chunking.chunk_size, chunking.chunk_overlap, chunking.tokenizer_model)


def _by_kind_estimate(naive_rows: list[dict], trials: list[dict]) -> float:
    """Returns the naive total estimated from the mean seconds of dense and of BM25-only trials run."""
    overall = statistics.fmean(row["seconds"] for row in naive_rows)
    total = 0.0
    for uses_dense in (True, False):
        seen = [row["seconds"] for row in naive_rows if row["uses_dense"] == uses_dense]
        count = sum((row["config"].first_stage("dense") is not None) == uses_dense for row in trials)
        total += count * (statistics.fmean(seen) if seen else overall)
    return total


if __name__ == "__main__":
    main()
