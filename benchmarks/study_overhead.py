"""Study overhead: wall time of a cold 30-trial study against the pure encoding it cannot avoid.

Runs the study of studies/scifact.toml (pointed at the chosen corpus) with
``workbench.study.runner.run_study`` in a cold state folder, then, in the same process, times the bare
``SentenceTransformer.encode`` of every distinct (chunking, model) pair the study's dense trials
used, with no cache. ratio = study wall / pure encoding sum; target <= 1.15.

    .venv/bin/python benchmarks/study_overhead.py [--corpus ../shared/corpora/scifact] [--max-docs N]
        [--trials 30] [--sampler tpe|random] [--seed 42] [--out benchmarks/results/study_overhead.json]
"""

from __future__ import annotations

import time

import harness

NAME = "study_overhead"
TARGET_RATIO = 1.15


def pure_encoding(corpus, pairs) -> list[dict]:
    """Returns, per (chunking, model) pair, the seconds of one uncached encode of its chunks."""
    from workbench.retrieval.chunking import chunk_documents
    from workbench.retrieval.models import load_encoder

    rows = []
    for chunking, model_name in pairs:
        chunks = chunk_documents(corpus.documents.values(), chunking)
        texts = [chunk.text for chunk in chunks]
        model = load_encoder(model_name)
        started = time.perf_counter()
        model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        seconds = time.perf_counter() - started
        rows.append(
            {
                "chunking": chunking.model_dump(),
                "model": model_name,
                "texts": len(texts),
                "distinct_texts": len(set(texts)),
                "encode_s": seconds,
            }
        )
    return rows


def main() -> None:
    parser = harness.base_parser(NAME, __doc__.splitlines()[0])
    harness.add_study_flags(parser)
    args = parser.parse_args()
    bench = harness.start(NAME, args)

    from workbench.retrieval.corpus import load_corpus

    study = harness.timed_study(bench, args.trials, args.sampler, args.seed)
    complete = [row for row in study["trials"] if row["state"] == "COMPLETE"]
    pairs = list(
        dict.fromkeys(
            (row["config"].chunking, row["config"].first_stage("dense").model)
            for row in complete
            if row["config"].first_stage("dense")
        )
    )
    encodings = pure_encoding(load_corpus(bench.corpus_path), pairs)
    pure_s = sum(row["encode_s"] for row in encodings)
    wall = study["wall_s"]
    ratio = wall / pure_s if pure_s > 0 else None

    trial_seconds = sum(row["duration_s"] or 0.0 for row in study["trials"])
    study_encoding_s = sum(row["encoding_s"] or 0.0 for row in complete)
    figures = {
        "study_wall_s": wall,
        "pure_encoding_s": pure_s,
        "ratio": ratio,
        "overhead_s": wall - pure_s,
        "trials_complete": len(complete),
        "trials_failed": sum(row["state"] == "FAIL" for row in study["trials"]),
        "dense_trials": sum(row["config"].first_stage("dense") is not None for row in complete),
        "duplicate_trials": sum(row["duplicate_of"] is not None for row in complete),
        "distinct_chunking_model_pairs": len(pairs),
        # Where the wall time went, by workbench's own accounting.
        "sum_trial_durations_s": trial_seconds,
        "outside_trials_s": wall - trial_seconds,
        "study_encoding_s": study_encoding_s,
        "study_index_build_s": sum(row["index_build_s"] or 0.0 for row in complete),
        "study_search_s": sum(row["search_s"] or 0.0 for row in complete),
    }
    met = ratio is not None and ratio <= TARGET_RATIO

    harness.print_table(
        "study trials",
        ["trial", "state", "config", "nDCG@10", "trial s", "encoding s", "build s", "search s"],
        [
            [
                row["number"],
                row["state"]
                + (f" ({row['baseline']})" if row["baseline"] else "")
                + (f" (= {row['duplicate_of']})" if row["duplicate_of"] is not None else ""),
                row["summary"],
                row["value"],
                row["duration_s"],
                row["encoding_s"],
                row["index_build_s"],
                row["search_s"],
            ]
            for row in study["trials"]
        ],
    )
    harness.print_table(
        "pure encoding (SentenceTransformer.encode, no cache)",
        ["chunking", "model", "texts", "seconds"],
        [[str(row["chunking"]), row["model"], row["texts"], row["encode_s"]] for row in encodings],
    )
    harness.print_table(
        f"study overhead ({bench.corpus_info['documents']} docs, {args.trials} trials, {args.sampler} seed {args.seed})",
        ["figure", "value"],
        [
            ["study wall s", wall],
            ["pure encoding s", pure_s],
            ["ratio (wall / encoding)", ratio],
            [f"target <= {TARGET_RATIO}", "met" if met else "NOT met"],
            [
                "  trials (complete / failed / reused duplicates)",
                f"{figures['trials_complete']} / {figures['trials_failed']} / {figures['duplicate_trials']}",
            ],
            ["  sum of trial durations s", trial_seconds],
            ["  outside trials s (setup, MLflow, storage)", figures["outside_trials_s"]],
            ["  encoding inside the study s", study_encoding_s],
            ["  index build inside trials s", figures["study_index_build_s"]],
            ["  search inside trials s", figures["study_search_s"]],
        ],
    )
    if figures["trials_failed"]:
        print(
            "WARNING: some trials failed: "
            + "; ".join(f"{row['number']}: {row['fail_reason']}" for row in study["trials"] if row["state"] == "FAIL")
        )
    bench.finish(
        figures,
        {"ratio_max": TARGET_RATIO, "met": met},
        {
            "study": {
                "trials": args.trials,
                "sampler": args.sampler,
                "seed": args.seed,
                "space_matches_studies_scifact_toml": study["space_matches_studies_scifact_toml"],
                "note": "wall is run_study only (no held-out verdict, which `workbench run` adds afterwards)",
            },
            "pure_encoding": encodings,
            "trials": harness.trial_rows_for_json(study["trials"]),
        },
    )


if __name__ == "__main__":
    main()
