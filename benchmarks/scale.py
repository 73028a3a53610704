"""Scale: SciFact among distractors, 10k to 1M documents: what each stage costs, against the engines alone, and what quality survives.

For each size in ``--sizes`` (total documents: SciFact's 5,183 plus distractors from
``benchmarks/distractors.py``), two fresh processes (``benchmarks/scale_phases.py``), so that each one's peak memory belongs to it:

1. *pipeline* (``scale_pipeline.py``): workbench's own stages over whole documents with a fresh cache
   (``Resources`` and its first stages, as ``Retriever.from_config`` builds them): loading, chunking,
   BM25 (tokenising and the bm25s index; the index alone timed again from the pipeline's tokens),
   dense (encoding with ``--dense-model``, then the ``--ann`` index). Then the engines alone on the
   same data: bm25s tokenising and indexing with the same stemmer and stopwords; faiss flat and the
   ``--ann`` index built on the vectors the pipeline wrote to the cache (read through the cache, never
   encoded again). Above ``--engine-build-max-docs`` these builds are skipped ("not measured") and the
   engines' query latency is measured on the pipeline's own bm25s engine and faiss index. Single-query
   latency p50/p95 (``--latency-queries`` test queries, one torch thread) through ``Retriever.search``
   (BM25 alone, dense alone, the BM25 + dense hybrid) and through the engines (bm25s ``retrieve`` on
   the same query tokens; faiss ``search`` on the same query vectors with the config's search settings,
   and the encoder's own query encoding), k = the first-stage depth. A warm trial: a fusion variation
   over the built indexes, searched on the train queries and scored. nDCG@10 and Recall@100 on
   SciFact's test queries for BM25, dense and the untuned hybrid, and the ANN index's recall@100
   against exact search. all-MiniLM-L6-v2's encoding cost: measured on every document up to
   ``--minilm-max-docs``, above that extrapolated from its rate on a seeded sample of
   ``--minilm-rate-docs`` documents (labelled so).
2. *study* (``scale_study.py``): a study TOML written here (every trial fuses BM25 and dense with
   ``--dense-model`` over the ``--study-ann`` index, its ``ef_search`` (HNSW) or ``nprobe`` (IVF)
   searched; convex or RRF fusion; ``--trials`` trials after the two default baselines count among
   them, tuned on SciFact's train queries or a seeded sample of ``--tune-queries``), run with the
   library as ``workbench run`` runs it, over the cache the pipeline phase filled (checked: no
   document encoded or tokenised again): each trial's duration, score and ANN recall, and the held-out
   verdict (the tuned pipeline's nDCG@10 on the 300 test queries next to BM25's and dense's).

Each phase records its peak RSS (VmHWM, reset per step through /proc/self/clear_refs where Linux
allows it) and the cache's size on disk. A size whose process fails (e.g. killed for memory) is
recorded as failed and the next size still runs. Writes benchmarks/results/scale.json, prints
markdown tables and, with ``--plot``, a log-log plot of cost against corpus size.

    .venv/bin/python benchmarks/scale.py --sizes 10000,100000,1000000 --dense-model STATIC_FOLDER
        [--ann hnsw] [--ann-param hnsw_m=32] [--engine-build-max-docs 100000] [--minilm-max-docs 10000]
        [--trials 8,8,5] [--tune-queries all,all,200] [--plot docs/img/scale.png]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness
from scale_phases import DEPTH, MINILM, PHASES, dense_config

NAME = "scale"


# --- the parent: corpora, one process per phase, tables, plot -------------------------------------


def run_phase(phase: str, settings: dict[str, Any], work: Path, timeout_s: float | None) -> dict[str, Any]:
    """Runs one phase in a fresh process; returns its figures, or ``{"failed": why}``."""
    settings_file = work / f"{phase}-settings.json"
    result_file = work / f"{phase}-result.json"
    settings_file.write_text(json.dumps(settings, indent=2))
    command = [sys.executable, str(Path(__file__).resolve().with_name("scale_phases.py")), phase, str(settings_file), str(result_file)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(harness.REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    try:
        completed = subprocess.run(command, env=env, timeout=timeout_s, cwd=harness.REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout_s:.0f} s"}
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        if result_file.exists():
            return json.loads(result_file.read_text()) | {"wall_s": wall}
        why = "killed by signal 9 (out of memory?)" if completed.returncode == -9 else f"exit code {completed.returncode}"
        return {"failed": why, "wall_s": wall}
    return json.loads(result_file.read_text()) | {"wall_s": wall}


def measure_size(position: int, args: argparse.Namespace, bench: harness.Bench) -> dict[str, Any]:
    """Writes the corpus of the ``position``-th size, runs both phases on it; returns its row of the report."""
    from distractors import write_distractor_corpus

    from workbench.files import file_sha256

    size = args.sizes[position]
    work = bench.state_dir / f"size-{size}"
    corpus_dir, state_dir = work / "corpus", work / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    print(f"\n== {size:,} documents: writing the corpus", flush=True)
    card = write_distractor_corpus(corpus_dir, size - args.scifact_documents, args.seed, args.corpus.resolve())
    corpus_file = corpus_dir / "corpus.jsonl"
    row: dict[str, Any] = {
        "size": size,
        "corpus": card | {"bytes": corpus_file.stat().st_size, "sha256": file_sha256(corpus_file)},
    }
    settings = {
        "size": size,
        "corpus": str(corpus_dir),
        "state_dir": str(state_dir),
        "dense_model": args.dense_model,
        "ann": args.ann,
        "ann_params": args.ann_params,
        "study_ann": args.study_ann or args.ann,
        "study_search_values": {"hnsw": args.study_ef_search, "ivf": args.study_nprobe},
        "engine_build_max_docs": args.engine_build_max_docs,
        "minilm_max_docs": args.minilm_max_docs,
        "minilm_rate_docs": args.minilm_rate_docs,
        "latency_queries": args.latency_queries,
        "trials": args.trials[position],
        "tune_queries": args.tune_queries[position],
        "seed": args.seed,
    }
    for phase in PHASES:
        if phase == "study" and settings["trials"] == 0:
            continue
        print(f"== {size:,} documents: {phase} (fresh process)", flush=True)
        row[phase] = run_phase(phase, settings, work, args.size_timeout_s)
    if not args.keep_state:
        shutil.rmtree(work, ignore_errors=True)
    return row


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 10000,100000, got {text!r}") from None
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one size")
    return sizes


def parse_per_size(text: str) -> list[int | None]:
    """Parses one value for every size, or one per ``--sizes`` entry: integers, or ``all`` (None)."""
    values = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return [None if value == "all" else int(value.replace("_", "")) for value in values]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers (or 'all') like 8 or 8,8,4, got {text!r}") from None


def parse_int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 32,64,128, got {text!r}") from None


def parse_ann_param(text: str) -> tuple[str, Any]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, json.loads(value) if value.strip().lstrip("-").replace(".", "", 1).isdigit() else value


def _get(row: dict, *path: str) -> Any:
    for key in path:
        if not isinstance(row, dict) or key not in row:
            return None
        row = row[key]
    return row


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def side_by_side(workbench_value: float | None, engine_value: float | None) -> str:
    """Returns "workbench / engine (ratio x)"; "not measured" for a figure that is missing."""
    cells = [harness.cell_text(value) if value is not None else "not measured" for value in (workbench_value, engine_value)]
    ratio = _ratio(workbench_value, engine_value)
    return " / ".join(cells) + (f" ({ratio:.1f}x)" if ratio is not None else "")


def study_recalls(study: dict[str, Any]) -> str | None:
    """Returns each searched ef_search or nprobe value with the mean ANN recall of the trials that used it."""
    by_setting: dict[tuple[str, int], list[float]] = {}
    for trial in study.get("trials", []):
        searched = [(key.rsplit(".", 1)[-1], value) for key, value in trial["params"].items() if key.endswith(("ef_search", "nprobe"))]
        if searched and trial["ann_recall"]:
            by_setting.setdefault(searched[0], []).extend(trial["ann_recall"].values())
    cells = [f"{name} {value}: {sum(recalls) / len(recalls):.3f}" for (name, value), recalls in sorted(by_setting.items())]
    return ", ".join(cells) or None


def summary_rows(rows: list[dict[str, Any]], ann: str) -> tuple[list[str], list[list[Any]], list[str], list[list[Any]]]:
    """Returns the cost table and the quality table (columns, rows) of the sizes measured."""
    cost_columns = [
        "documents",
        "chunking s",
        "BM25 tokenise+cache s",
        "BM25 index s",
        "BM25 build s (pipeline / bm25s alone)",
        "encoding s",
        f"{ann} build s (pipeline / faiss alone)",
        "MiniLM encoding s",
        "warm trial s",
        "BM25 p50 ms (pipeline / bm25s)",
        f"dense p50 ms (pipeline / encode + faiss {ann})",
        "hybrid p50 / p95 ms",
        "peak RSS GiB",
        "cache GiB",
    ]
    quality_columns = [
        "documents",
        "BM25",
        f"dense ({ann})",
        f"{ann} recall@{DEPTH}",
        "hybrid (untuned)",
        "tuned (study)",
        "study pick",
        "study trials / tune queries",
        "ANN recall by study setting",
        "study warm trial s",
    ]
    cost, quality = [], []
    for row in rows:
        pipeline, study = row.get("pipeline", {}), row.get("study", {})
        if "failed" in pipeline:
            cost.append([row["size"], f"failed: {pipeline['failed']}"] + [None] * (len(cost_columns) - 2))
            continue
        stages, engines, latency = pipeline["stages_s"], pipeline["engines_s"], pipeline["latency_ms"]
        minilm = pipeline["minilm_encoding"]
        engine_bm25 = (
            engines["bm25s_tokenise"] + engines["bm25s_index"] if engines["bm25s_tokenise"] is not None else None
        )
        engine_dense_p50 = (_get(latency, "query encoding", "p50_ms") or 0) + (
            _get(latency, f"faiss {ann} search", "p50_ms") or 0
        )
        peaks = [_get(row, phase, "steps", "peak_rss_mb_max") for phase in ("pipeline", "study")]
        peak = max((value for value in peaks if value is not None), default=None)
        cost.append(
            [
                pipeline["documents"],
                stages["chunking"],
                stages["bm25_tokenising_and_cache"],
                stages["bm25_index"],
                side_by_side(stages["bm25_total"], engine_bm25),
                stages["encoding"],
                side_by_side(stages["ann_build_and_cache"], engines["faiss_ann_build"]),
                f"{minilm['seconds']:,.0f}" + (" (extrapolated)" if minilm.get("extrapolated") else ""),
                pipeline["warm_trial_s"],
                side_by_side(_get(latency, "Retriever.search bm25", "p50_ms"), _get(latency, "bm25s retrieve", "p50_ms")),
                side_by_side(_get(latency, "Retriever.search dense", "p50_ms"), engine_dense_p50),
                f"{_get(latency, 'Retriever.search hybrid', 'p50_ms'):.2f} / {_get(latency, 'Retriever.search hybrid', 'p95_ms'):.2f}",
                peak / 1024 if peak else None,
                max(pipeline["cache_bytes"], study.get("cache_bytes", 0)) / 2**30,
            ]
        )
        scores = pipeline["quality_test"]
        quality.append(
            [
                pipeline["documents"],
                scores["bm25"]["nDCG@10"],
                scores["dense"]["nDCG@10"],
                pipeline.get("ann_recall_test"),
                scores["hybrid"]["nDCG@10"],
                _get(study, "heldout", "tuned", "nDCG@10") if "failed" not in study else f"failed: {study['failed']}",
                study.get("chosen"),
                f"{study['trials_complete']} / {study['tune_queries']}" if "trials_complete" in study else None,
                study_recalls(study),
                study.get("warm_trial_median_s"),
            ]
        )
    return cost_columns, cost, quality_columns, quality


def engine_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Returns, per size whose engines were not built alone, why (printed under the cost table)."""
    return [
        f"{row['size']:,} documents: engine builds {row['pipeline']['engines_built_by']}"
        for row in rows
        if row.get("pipeline", {}).get("engines_s", {}).get("bm25s_tokenise", 0) is None
    ]


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    """Returns a GitHub markdown table; numbers as ``harness.print_table`` shows them."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(harness.cell_text(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def write_plot(rows: list[dict[str, Any]], ann: str, path: Path) -> None:
    """Writes a log-log plot: build seconds, single-query latency and peak RSS against documents."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [row for row in rows if "failed" not in row.get("pipeline", {"failed": "not run"})]
    sizes = [row["pipeline"]["documents"] for row in done]
    figure, (build, latency, memory) = plt.subplots(1, 3, figsize=(15, 4.5))
    build_series = {
        "chunking": ("stages_s", "chunking"),
        "BM25 (pipeline)": ("stages_s", "bm25_total"),
        "encoding": ("stages_s", "encoding"),
        f"{ann} build (pipeline)": ("stages_s", "ann_build_and_cache"),
        "bm25s tokenise (engine)": ("engines_s", "bm25s_tokenise"),
        "bm25s index (engine)": ("engines_s", "bm25s_index"),
        f"faiss {ann} build (engine)": ("engines_s", "faiss_ann_build"),
    }
    for label, path_in_row in build_series.items():
        build.plot(sizes, [_get(row["pipeline"], *path_in_row) for row in done], marker="o", label=label)
    minilm = [row["pipeline"]["minilm_encoding"] for row in done]
    build.plot(sizes, [entry["seconds"] for entry in minilm], marker="x", linestyle="--", label="MiniLM encoding (x: extrapolated where labelled)")
    build.set_title("index build (s)")
    latency_series = {
        "Retriever.search BM25": "Retriever.search bm25",
        "bm25s retrieve": "bm25s retrieve",
        "Retriever.search dense": "Retriever.search dense",
        f"faiss {ann} search": f"faiss {ann} search",
        "faiss flat search": "faiss flat search",
        "Retriever.search hybrid": "Retriever.search hybrid",
    }
    for label, key in latency_series.items():
        latency.plot(sizes, [_get(row["pipeline"], "latency_ms", key, "p50_ms") for row in done], marker="o", label=label)
    latency.set_title("single-query latency p50 (ms)")
    for phase in ("pipeline", "study"):
        memory.plot(
            sizes,
            [(_get(row, phase, "steps", "peak_rss_mb_max") or float("nan")) / 1024 for row in done],
            marker="o",
            label=f"{phase} process",
        )
    memory.set_title("peak RSS (GiB)")
    for axes in (build, latency, memory):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("documents")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle("workbench at scale: SciFact among distractors (2 CPU cores)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    parser = harness.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[10_000, 100_000, 1_000_000], help="total documents, comma-separated (default: 10000,100000,1000000)")
    parser.add_argument("--dense-model", default=MINILM, help="dense encoder: a static encoder folder (distill-encoder) or MiniLM")
    parser.add_argument("--ann", default="hnsw", help="the dense config's index kind (default: %(default)s)")
    parser.add_argument("--ann-param", type=parse_ann_param, action="append", default=[], metavar="KEY=VALUE", help="a dense index key, e.g. hnsw_m=32 (repeatable)")
    parser.add_argument("--study-ann", default=None, help="the dense index kind of the study's space (default: --ann)")
    parser.add_argument("--study-ef-search", type=parse_int_list, default=[32, 64, 128], help="ef_search choices of an HNSW study (default: 32,64,128)")
    parser.add_argument("--study-nprobe", type=parse_int_list, default=[4, 8, 16], help="nprobe choices of an IVF study (default: 4,8,16)")
    parser.add_argument(
        "--engine-build-max-docs",
        type=int,
        default=None,
        help="above this many documents bm25s and faiss are not built alone (their latency is measured on the pipeline's own); default: always built",
    )
    parser.add_argument("--minilm-max-docs", type=int, default=10_000, help="above this many documents MiniLM's encoding is extrapolated (default: %(default)s)")
    parser.add_argument("--minilm-rate-docs", type=int, default=1000, help="sampled documents MiniLM's rate is measured on above that (default: %(default)s)")
    parser.add_argument("--latency-queries", type=int, default=100, help="test queries timed one at a time (default: %(default)s)")
    parser.add_argument("--trials", type=parse_per_size, default=[8], help="study trials, one number or one per size (8,8,5); 0 skips the study (default: 8)")
    parser.add_argument(
        "--tune-queries",
        type=parse_per_size,
        default=[None],
        help="train queries the study tunes on (a seeded sample), one number or one per size (all,all,200); default: all",
    )
    parser.add_argument("--seed", type=int, default=42, help="distractor and sampler seed (default: %(default)s)")
    parser.add_argument("--size-timeout-s", type=float, default=None, help="give up a phase after this many seconds")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of cost against corpus size (log-log)")
    args = parser.parse_args()
    if args.max_docs is not None:
        parser.error("--max-docs does not apply: --sizes sets the corpus sizes")
    args.ann_params = dict(args.ann_param)
    for name in ("trials", "tune_queries"):
        values = getattr(args, name)
        if len(values) not in (1, len(args.sizes)):
            parser.error(f"--{name.replace('_', '-')}: give one value or one per size ({len(args.sizes)}), got {len(values)}")
        setattr(args, name, values * len(args.sizes) if len(values) == 1 else values)
    if None in args.trials:
        parser.error("--trials: give numbers of trials ('all' is for --tune-queries)")
    dense_model = Path(args.dense_model).expanduser()
    if dense_model.exists():
        args.dense_model = str(dense_model.resolve())
    if args.dense_model == MINILM and max(args.sizes) > args.minilm_max_docs:
        parser.error(f"--dense-model MiniLM above --minilm-max-docs {args.minilm_max_docs}: give a static encoder (workbench distill-encoder)")
    dense_config({"dense_model": args.dense_model, "ann": args.ann, "ann_params": args.ann_params})  # fail before any work
    bench = harness.start(NAME, args)
    args.scifact_documents = bench.corpus_info["documents"]
    too_small = [size for size in args.sizes if size < args.scifact_documents]
    if too_small:
        parser.error(f"--sizes {too_small}: each size must be at least SciFact's {args.scifact_documents} documents")

    rows = [measure_size(position, args, bench) for position in range(len(args.sizes))]
    cost_columns, cost, quality_columns, quality = summary_rows(rows, args.ann)
    print("\nCost (pipeline and engines alone)\n\n" + markdown_table(cost_columns, cost))
    for note in engine_notes(rows):
        print(f"\n{note}")
    print(f"\nnDCG@10 on SciFact's 300 test queries among the distractors\n\n" + markdown_table(quality_columns, quality))
    if args.plot is not None:
        write_plot(rows, args.ann, args.plot)
    bench.finish(
        {"sizes": rows},
        {"none fixed": "issue 24 asks for the figures"},
        {
            "dense_model": args.dense_model,
            "ann": args.ann,
            "ann_params": args.ann_params,
            "depth": DEPTH,
            "minilm_max_docs": args.minilm_max_docs,
            "engine_build_max_docs": args.engine_build_max_docs,
            "trials": args.trials,
            "tune_queries": args.tune_queries,
            "plot": args.plot,
        },
    )


if __name__ == "__main__":
    main()
