"""Scale: SciFact among distractors, 10k to 1M documents: what each stage costs, against the engines alone, and what quality survives.

For each size in ``--sizes`` (total documents: SciFact's 5,183 plus distractors from
``benchmarks/distractors.py``), two fresh processes, so that each one's peak memory belongs to it:

1. *pipeline*: workbench's own stages over whole documents with a fresh cache (``Resources`` and its
   first stages, as ``Retriever.from_config`` builds them): loading, chunking, BM25 (tokenising and
   the bm25s index; the index alone timed again from the pipeline's tokens), dense (encoding with
   ``--dense-model``, then the ``--ann`` index). Then the engines alone on the same data: bm25s
   tokenising and indexing with the same stemmer and stopwords; faiss flat and the ``--ann`` index
   built on the same vectors. Single-query latency p50/p95 (``--latency-queries`` test queries, one
   torch thread) through ``Retriever.search`` (BM25 alone, dense alone, the BM25 + dense hybrid) and
   through the engines (bm25s ``retrieve`` on the same query tokens; faiss ``search`` on the same
   query vectors, and the encoder's own query encoding), k = the first-stage depth. A warm trial: a
   fusion variation over the built indexes, searched on the train queries and scored. nDCG@10 and
   Recall@100 on SciFact's test queries for BM25, dense and the untuned hybrid. all-MiniLM-L6-v2's
   encoding cost: measured on every document up to ``--minilm-max-docs``, above that extrapolated
   from its rate on a seeded sample of ``--minilm-rate-docs`` documents (labelled so).
2. *study*: a study TOML written here (BM25 + dense with ``--dense-model`` and ``--ann``; convex or
   RRF fusion; ``--trials`` trials, tuned on SciFact's train queries), run with the library as
   ``workbench run`` runs it, over the warm cache: its trials' durations and the held-out verdict
   (the tuned pipeline's nDCG@10 on the 300 test queries next to BM25's and dense's).

Each phase records its peak RSS (VmHWM, reset per step through /proc/self/clear_refs where Linux
allows it) and the cache's size on disk. A size whose process fails (e.g. killed for memory) is
recorded as failed and the next size still runs. Writes benchmarks/results/scale.json, prints
markdown tables and, with ``--plot``, a log-log plot of cost against corpus size.

    .venv/bin/python benchmarks/scale.py --sizes 10000,100000,1000000 --dense-model STATIC_FOLDER
        [--ann hnsw] [--ann-param hnsw_m=32] [--minilm-max-docs 10000] [--trials 8] [--plot docs/img/scale.png]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import harness

NAME = "scale"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TUNE_SPLIT, HELDOUT_SPLIT = "train", "test"
QUALITY_METRICS = ("nDCG@10", "Recall@100")
MINILM_STEP = "MiniLM encoding"
DEPTH = 100  # the pipelines' first-stage depth; the engines are asked for as many hits


# --- memory and time of the steps inside one phase --------------------------------------------------


def peak_rss_mb() -> float | None:
    """Returns this process' peak resident memory (VmHWM) in MiB, or None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Resets VmHWM to the current RSS (Linux ≥ 4.0); returns whether it could."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Steps:
    """Seconds and peak RSS of each named step of a phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float | None] = {}
        self.peak_is_per_step = True

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.peak_is_per_step &= reset_peak_rss()
        started = time.perf_counter()
        print(f"  {name} ...", flush=True)
        yield
        self.seconds[name] = time.perf_counter() - started
        self.peak_rss_mb[name] = peak_rss_mb()
        print(f"  {name}: {self.seconds[name]:.2f} s, peak RSS {self.peak_rss_mb[name] or 0:.0f} MiB", flush=True)

    def report(self, leave_out_prefix: str = "\0") -> dict[str, Any]:
        """Returns the figures; ``peak_rss_mb_max`` leaves out steps named with ``leave_out_prefix``."""
        peaks = [
            value
            for name, value in self.peak_rss_mb.items()
            if value is not None and not name.startswith(leave_out_prefix)
        ]
        return {
            "seconds": self.seconds,
            "peak_rss_mb": self.peak_rss_mb,
            "peak_rss_mb_max": max(peaks) if peaks else None,
            "peak_rss_is_per_step": self.peak_is_per_step,
        }


def folder_bytes(folder: Path) -> int:
    """Returns the bytes of the files under ``folder``."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


# --- what both phases and the parent share ---------------------------------------------------------


def ann_settings(ann: str, ann_params: dict[str, Any]) -> dict[str, Any]:
    """Returns the dense config's index keys: ``index`` and its parameters (unknown keys fail when the config is built)."""
    return {"index": ann, **ann_params}


def dense_config(settings: dict[str, Any], model: str | None = None, ann: str | None = None):
    """Returns the dense first stage of the run's settings (``model``/``ann`` override them); raises ``ConfigError``."""
    from workbench.retrieval.config import pipeline_config_from_dict

    stage = {"kind": "dense", "model": model or settings["dense_model"]}
    stage |= ann_settings(ann or settings["ann"], settings["ann_params"] if ann is None else {})
    return pipeline_config_from_dict({"retrievers": [stage]}, source="--dense-model/--ann/--ann-param").retrievers[0]


def pipeline_config(name: str, retrievers: tuple, **fusion: Any):
    from workbench.retrieval.config import FusionConfig, PipelineConfig

    return PipelineConfig(
        name=name,
        retrievers=retrievers,
        fusion=FusionConfig(**fusion),
        first_stage_depth=DEPTH,
        output_depth=DEPTH,
    )


def latency_figures(latency) -> dict[str, float]:
    return {"p50_ms": latency.p50_ms, "p95_ms": latency.p95_ms, "mean_ms": latency.mean_ms}


def one_at_a_time(search_text):
    """Adapts a function of one query text to ``time_queries``' batches of one query."""
    return lambda batch: search_text(next(iter(batch.values())))


# --- phase 1: the pipeline's stages, the engines alone, latency, quality -------------------------


def pipeline_phase(settings: dict[str, Any]) -> dict[str, Any]:
    """Builds, times and scores everything of one size in this process; returns the figures."""
    import bm25s
    import numpy as np
    import Stemmer

    from workbench.evaluation.latency import time_queries
    from workbench.evaluation.metrics import evaluate
    from workbench.retrieval.cache import Cache
    from workbench.retrieval.config import BM25Config, ChunkingConfig
    from workbench.retrieval.corpus import load_corpus
    from workbench.retrieval.index import DocumentIndex, Stage
    from workbench.retrieval.models import load_encoder
    from workbench.retrieval.pipeline import Pipeline, Resources, load_models
    from workbench.retrieval.retrievers.bm25 import BM25Index, tokenize
    from workbench.retrieval.retrievers.dense import Encoder
    from workbench.retriever import Retriever

    steps = Steps()
    cache_dir = Path(settings["state_dir"]) / "cache"
    bm25 = BM25Config()
    dense = dense_config(settings)
    chunking = ChunkingConfig()
    hybrid = pipeline_config("hybrid", (bm25, dense))
    load_models(hybrid)  # model loading is not a stage of the corpus' cost

    with steps.step("load corpus"):
        corpus = load_corpus(settings["corpus"])
    resources = Resources(corpus, Cache(cache_dir))
    with steps.step("chunking"):
        chunks = resources.chunk_set(chunking).chunks
    texts = [chunk.text for chunk in chunks]
    with steps.step("bm25 (pipeline: tokenising, index, cache)"):
        bm25_stage = resources.first_stage(chunking, bm25)
    with steps.step("bm25 index from the pipeline's tokens"):
        BM25Index(texts, bm25, bm25_stage.tokens)
    with steps.step("dense (pipeline: encoding, ann, cache)"):
        dense_stage = resources.first_stage(chunking, dense)
    encoding_s = resources.seconds_encoding

    with steps.step("bm25s tokenising (engine)"):
        stemmer = Stemmer.Stemmer(bm25.stemmer) if bm25.stemmer != "none" else None
        stopwords = bm25.stopwords if bm25.stopwords != "none" else None
        engine_tokens = bm25s.tokenize(texts, stopwords=stopwords, stemmer=stemmer, show_progress=False)
    with steps.step("bm25s index (engine)"):
        bm25_engine = bm25s.BM25(k1=bm25.k1, b=bm25.b, method=bm25.method)
        bm25_engine.index(engine_tokens, show_progress=False)
    del engine_tokens
    with steps.step("read cached vectors"):
        vectors = Encoder(dense, Cache(cache_dir)).encode(texts, "document")
    engines = {}
    with steps.step("faiss flat (engine)"):
        engines["flat"] = faiss_engine("flat", vectors, {})
    if settings["ann"] != "flat":
        with steps.step(f"faiss {settings['ann']} (engine)"):
            engines[settings["ann"]] = faiss_engine(settings["ann"], vectors, settings["ann_params"])
    del vectors

    queries = corpus.judged_queries(HELDOUT_SPLIT)
    sample = dict(list(queries.items())[: settings["latency_queries"]])
    systems = {
        "bm25": pipeline_config("bm25", (bm25,)),
        "dense": pipeline_config("dense", (dense,)),
        "hybrid": hybrid,
    }
    stages = {"bm25": Stage(bm25, bm25_stage), "dense": Stage(dense, dense_stage)}
    latency: dict[str, dict[str, float]] = {}
    with steps.step("latency"):
        for name, config in systems.items():
            index = DocumentIndex(
                config, corpus.documents, chunks, tuple(stages[stage.kind] for stage in config.retrievers)
            )
            retriever = Retriever(index)
            retriever.search(next(iter(sample.values())))  # lazy initialisation is not a query's cost
            latency[f"Retriever.search {name}"] = latency_figures(
                time_queries(one_at_a_time(lambda text: retriever.search(text)), sample, len(sample))
            )
        known = bm25_engine.vocab_dict
        query_tokens = {
            text: [token for token in tokens if token in known]
            for text, tokens in zip(sample.values(), tokenize(list(sample.values()), bm25))
        }
        answerable = {query_id: text for query_id, text in sample.items() if query_tokens[text]}
        latency["bm25s retrieve"] = latency_figures(
            time_queries(
                one_at_a_time(
                    lambda text: bm25_engine.retrieve([query_tokens[text]], k=DEPTH, show_progress=False, n_threads=0)
                ),
                answerable,
                len(answerable),
            )
        )
        encoder = load_encoder(dense.model, dense.device, dense.backend)
        latency["query encoding"] = latency_figures(
            time_queries(
                one_at_a_time(lambda text: encoder.encode([text], normalize_embeddings=True, show_progress_bar=False)),
                sample,
                len(sample),
            )
        )
        query_vectors = dict(zip(sample.values(), Encoder(dense, None).encode_uncached(list(sample.values()))))
        for kind, engine in engines.items():
            latency[f"faiss {kind} search"] = latency_figures(
                time_queries(
                    one_at_a_time(lambda text: engine.search(query_vectors[text][np.newaxis, :], DEPTH)),
                    sample,
                    len(sample),
                )
            )
    del engines, bm25_engine

    quality = {}
    qrels = corpus.split_qrels(HELDOUT_SPLIT)
    with steps.step("quality (test queries)"):
        for name, config in systems.items():
            run = Pipeline(config, resources).search(queries).run
            quality[name] = evaluate(run, qrels, QUALITY_METRICS).means
    with steps.step("warm trial"):
        variation = pipeline_config("hybrid-rrf", (bm25, dense), method="rrf", rrf_k=60)
        run = Pipeline(variation, resources).search(corpus.judged_queries(TUNE_SPLIT)).run
        warm_trial_value = evaluate(run, corpus.split_qrels(TUNE_SPLIT), ["nDCG@10"]).means["nDCG@10"]

    minilm = minilm_cost(settings, texts, dense, encoding_s, steps)
    report = steps.report(leave_out_prefix=MINILM_STEP)  # its model is not the pipeline's memory
    seconds = report["seconds"]
    bm25_total = seconds["bm25 (pipeline: tokenising, index, cache)"]
    bm25_index = seconds["bm25 index from the pipeline's tokens"]
    return {
        "documents": len(corpus.documents),
        "chunks": len(chunks),
        "stages_s": {
            "load_corpus": seconds["load corpus"],
            "chunking": seconds["chunking"],
            "bm25_total": bm25_total,
            "bm25_index": bm25_index,
            "bm25_tokenising_and_cache": bm25_total - bm25_index,
            "dense_total": seconds["dense (pipeline: encoding, ann, cache)"],
            "encoding": encoding_s,
            "ann_build_and_cache": seconds["dense (pipeline: encoding, ann, cache)"] - encoding_s,
        },
        "engines_s": {
            "bm25s_tokenise": seconds["bm25s tokenising (engine)"],
            "bm25s_index": seconds["bm25s index (engine)"],
            "faiss_flat_build": seconds["faiss flat (engine)"],
            "faiss_ann_build": seconds.get(f"faiss {settings['ann']} (engine)", seconds["faiss flat (engine)"]),
        },
        "latency_ms": latency,
        "latency_queries": len(sample),
        "latency_queries_bm25s": len(answerable),
        "quality_test": quality,
        "warm_trial_s": seconds["warm trial"],
        "warm_trial": f"{variation.name}: Pipeline over the built indexes + search + nDCG@10 of the "
        f"{len(corpus.judged_queries(TUNE_SPLIT))} {TUNE_SPLIT} queries",
        "warm_trial_value": warm_trial_value,
        "minilm_encoding": minilm,
        "dense": dense.model_dump(mode="json"),
        "cache_bytes": folder_bytes(cache_dir),
        "steps": report,
    }


def faiss_engine(kind: str, vectors, params: dict[str, Any]):
    """Returns a faiss inner-product index of ``kind`` holding ``vectors``, built with faiss alone
    (the ANN parameters as the dense config names them; defaults are the config's own)."""
    import faiss
    import numpy as np

    from workbench.retrieval.config import DenseConfig

    def param(name: str):
        if name in params:
            return params[name]
        field = DenseConfig.model_fields.get(name)
        return field.default if field is not None else None

    dim = vectors.shape[1]
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, param("hnsw_m"), faiss.METRIC_INNER_PRODUCT)
        if param("ef_construction") is not None:
            index.hnsw.efConstruction = param("ef_construction")
    elif kind == "ivf":
        nlist = param("nlist") or max(1, int(4 * len(vectors) ** 0.5))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, min(nlist, len(vectors)), faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
    else:
        raise SystemExit(f"--ann {kind!r}: the engine comparison knows flat, hnsw and ivf")
    index.add(vectors)
    if kind == "hnsw" and param("ef_search") is not None:
        index.hnsw.efSearch = param("ef_search")
    if kind == "ivf" and param("nprobe") is not None:
        index.nprobe = param("nprobe")
    return index


def minilm_cost(settings: dict[str, Any], texts: list[str], dense, encoding_s: float, steps: Steps) -> dict[str, Any]:
    """Returns all-MiniLM-L6-v2's encoding seconds for ``texts``: the dense stage's own when it is MiniLM,
    measured (uncached) up to ``minilm_max_docs`` texts, else extrapolated from a seeded sample's rate."""
    from workbench.retrieval.retrievers.dense import Encoder

    if dense.model == MINILM:
        return {"seconds": encoding_s, "texts": len(texts), "how": "measured (the dense stage)"}
    if len(texts) <= settings["minilm_max_docs"]:
        with steps.step(f"{MINILM_STEP} (all)"):
            Encoder(dense_config(settings, model=MINILM, ann="flat"), None).encode_uncached(texts)
        return {"seconds": steps.seconds[f"{MINILM_STEP} (all)"], "texts": len(texts), "how": "measured"}
    sample = random.Random(settings["seed"]).sample(texts, min(settings["minilm_rate_docs"], len(texts)))
    with steps.step(f"{MINILM_STEP} (sample)"):
        Encoder(dense_config(settings, model=MINILM, ann="flat"), None).encode_uncached(sample)
    per_text = steps.seconds[f"{MINILM_STEP} (sample)"] / len(sample)
    return {
        "seconds": per_text * len(texts),
        "texts": len(texts),
        "how": f"extrapolated from {len(sample)} sampled texts ({per_text * 1000:.1f} ms each)",
        "extrapolated": True,
    }


# --- phase 2: a small study over the warm cache ----------------------------------------------------


def study_toml(settings: dict[str, Any]) -> dict[str, Any]:
    """Returns the study file's content: BM25 + dense (the run's model and index), convex or RRF fusion."""
    dense = {"kind": "dense", "model": settings["dense_model"]}
    if settings["study_ann"] != "flat":
        dense |= ann_settings(settings["study_ann"], settings["ann_params"] if settings["study_ann"] == settings["ann"] else {})
    return {
        "name": f"scale-{settings['size']}",
        "corpus": settings["corpus"],
        "tune_split": TUNE_SPLIT,
        "heldout_split": HELDOUT_SPLIT,
        "metric": "nDCG@10",
        "n_trials": settings["trials"],
        "sampler": "tpe",
        "seed": settings["seed"],
        "latency_sample": 10,
        "space": {
            "first_stage_depth": DEPTH,
            "retrievers": [{"kind": "bm25"}, dense],
            "fusion": {
                "method": ["convex", "rrf"],
                "normalization": ["minmax", "zscore"],
                "rrf_k": {"low": 5, "high": 100},
            },
        },
    }


def study_phase(settings: dict[str, Any]) -> dict[str, Any]:
    """Runs the study of ``study_toml`` and judges its pick on the held-out queries; returns the figures."""
    import optuna
    import tomli_w

    from workbench.study.attributes import CONFIG_ATTR
    from workbench.study.config import load_study_config
    from workbench.study.result import study_result
    from workbench.study.runner import run_study

    steps = Steps()
    state_dir = Path(settings["state_dir"])
    study_file = state_dir / f"scale-{settings['size']}.toml"
    study_file.write_bytes(tomli_w.dumps(study_toml(settings)).encode())
    config = load_study_config(study_file)
    with steps.step("study"):
        outcome = run_study(config, state_dir, show_progress=False, study_file=study_file)
    with steps.step("held-out verdict"):
        result = study_result(outcome.session, outcome.study)
    trials = sorted(outcome.study.get_trials(deepcopy=False), key=lambda trial: trial.number)
    durations = [
        (trial.datetime_complete - trial.datetime_start).total_seconds()
        for trial in trials
        if trial.state == optuna.trial.TrialState.COMPLETE and trial.datetime_complete and trial.datetime_start
    ]
    heldout = result.verdict.heldout if result.verdict is not None else None
    return {
        "study_file": study_toml(settings),
        "trials_complete": len(durations),
        "trials_failed": sum(trial.state == optuna.trial.TrialState.FAIL for trial in trials),
        "trial_durations_s": durations,
        "first_trial_s": durations[0] if durations else None,
        "warm_trial_median_s": statistics.median(durations[1:]) if len(durations) > 1 else None,
        "chosen": result.export.system if result.export is not None else None,
        "chosen_config": result.verdict.trial.user_attrs.get(CONFIG_ATTR) if result.verdict else None,
        "tuning_value": heldout.tuning_value if heldout else None,
        "heldout": {system: evaluation.means for system, evaluation in heldout.evaluations.items()} if heldout else {},
        "cache_bytes": folder_bytes(state_dir / "cache"),
        "steps": steps.report(),
    }


PHASES = {"pipeline": pipeline_phase, "study": study_phase}


# --- the parent: corpora, one process per phase, tables, plot -------------------------------------


def run_phase(phase: str, settings: dict[str, Any], work: Path, timeout_s: float | None) -> dict[str, Any]:
    """Runs one phase in a fresh process; returns its figures, or ``{"failed": why}``."""
    settings_file = work / f"{phase}-settings.json"
    result_file = work / f"{phase}-result.json"
    settings_file.write_text(json.dumps(settings, indent=2))
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, str(settings_file), str(result_file)]
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


def measure_size(size: int, args: argparse.Namespace, bench: harness.Bench) -> dict[str, Any]:
    """Writes the corpus of ``size`` documents, runs both phases on it; returns its row of the report."""
    import shutil

    from distractors import write_distractor_corpus

    from workbench.files import file_sha256

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
        "minilm_max_docs": args.minilm_max_docs,
        "minilm_rate_docs": args.minilm_rate_docs,
        "latency_queries": args.latency_queries,
        "trials": args.trials,
        "seed": args.seed,
    }
    for phase in PHASES:
        if phase == "study" and args.trials == 0:
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


def summary_rows(rows: list[dict[str, Any]], ann: str) -> tuple[list[str], list[list[Any]], list[str], list[list[Any]]]:
    """Returns the cost table and the quality table (columns, rows) of the sizes measured."""
    cost_columns = [
        "documents",
        "chunking s",
        "BM25 tokenise+cache s",
        "BM25 index s",
        "bm25s tok + index s",
        "encoding s",
        f"{ann} build+cache s",
        f"faiss {ann} build s",
        "MiniLM encoding s",
        "warm trial s",
        "BM25 p50 ms (pipeline / bm25s)",
        f"dense p50 ms (pipeline / encode + faiss {ann})",
        "hybrid p50 / p95 ms",
        "peak RSS GiB",
        "cache GiB",
    ]
    quality_columns = ["documents", "BM25", f"dense ({ann})", "hybrid (untuned)", "tuned (study)", "study pick", "study warm trial s"]
    cost, quality = [], []
    for row in rows:
        pipeline, study = row.get("pipeline", {}), row.get("study", {})
        if "failed" in pipeline:
            cost.append([row["size"], f"failed: {pipeline['failed']}"] + [None] * (len(cost_columns) - 2))
            continue
        stages, engines, latency = pipeline["stages_s"], pipeline["engines_s"], pipeline["latency_ms"]
        minilm = pipeline["minilm_encoding"]
        bm25_p50 = _get(latency, "Retriever.search bm25", "p50_ms")
        bm25s_p50 = _get(latency, "bm25s retrieve", "p50_ms")
        dense_p50 = _get(latency, "Retriever.search dense", "p50_ms")
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
                engines["bm25s_tokenise"] + engines["bm25s_index"],
                stages["encoding"],
                stages["ann_build_and_cache"],
                engines["faiss_ann_build"],
                f"{minilm['seconds']:,.0f}" + (" (extrapolated)" if minilm.get("extrapolated") else ""),
                pipeline["warm_trial_s"],
                f"{bm25_p50:.2f} / {bm25s_p50:.2f} ({_ratio(bm25_p50, bm25s_p50):.1f}x)",
                f"{dense_p50:.2f} / {engine_dense_p50:.2f} ({_ratio(dense_p50, engine_dense_p50):.1f}x)",
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
                scores["hybrid"]["nDCG@10"],
                _get(study, "heldout", "tuned", "nDCG@10") if "failed" not in study else f"failed: {study['failed']}",
                study.get("chosen"),
                study.get("warm_trial_median_s"),
            ]
        )
    return cost_columns, cost, quality_columns, quality


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
    if len(sys.argv) == 5 and sys.argv[1] == "--phase":
        phase, settings_file, result_file = sys.argv[2:]
        try:
            figures = PHASES[phase](json.loads(Path(settings_file).read_text()))
        except Exception as error:
            Path(result_file).write_text(json.dumps({"failed": f"{type(error).__name__}: {error}"}))
            raise
        Path(result_file).write_text(json.dumps(figures, indent=2, default=harness.json_default))
        return
    parser = harness.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[10_000, 100_000, 1_000_000], help="total documents, comma-separated (default: 10000,100000,1000000)")
    parser.add_argument("--dense-model", default=MINILM, help="dense encoder: a static encoder folder (distill-encoder) or MiniLM")
    parser.add_argument("--ann", default="hnsw", help="the dense config's index kind (default: %(default)s)")
    parser.add_argument("--ann-param", type=parse_ann_param, action="append", default=[], metavar="KEY=VALUE", help="a dense index key, e.g. hnsw_m=32 (repeatable)")
    parser.add_argument(
        "--study-ann",
        default=None,
        help="the dense index the study's space names (default: --ann; 'flat' leaves the key out, for a study space that has no index key yet)",
    )
    parser.add_argument("--minilm-max-docs", type=int, default=10_000, help="above this many documents MiniLM's encoding is extrapolated (default: %(default)s)")
    parser.add_argument("--minilm-rate-docs", type=int, default=1000, help="sampled documents MiniLM's rate is measured on above that (default: %(default)s)")
    parser.add_argument("--latency-queries", type=int, default=100, help="test queries timed one at a time (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=8, help="study trials per size; 0 skips the study (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42, help="distractor and sampler seed (default: %(default)s)")
    parser.add_argument("--size-timeout-s", type=float, default=None, help="give up a phase after this many seconds")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of cost against corpus size (log-log)")
    args = parser.parse_args()
    if args.max_docs is not None:
        parser.error("--max-docs does not apply: --sizes sets the corpus sizes")
    args.ann_params = dict(args.ann_param)
    dense_model = Path(args.dense_model).expanduser()
    if dense_model.exists():
        args.dense_model = str(dense_model.resolve())
    if args.dense_model == MINILM and max(args.sizes) > args.minilm_max_docs:
        parser.error(f"--dense-model MiniLM above --minilm-max-docs {args.minilm_max_docs}: give a static encoder (workbench distill-encoder)")
    bench = harness.start(NAME, args)
    args.scifact_documents = bench.corpus_info["documents"]
    too_small = [size for size in args.sizes if size < args.scifact_documents]
    if too_small:
        parser.error(f"--sizes {too_small}: each size must be at least SciFact's {args.scifact_documents} documents")
    dense_config({"dense_model": args.dense_model, "ann": args.ann, "ann_params": args.ann_params})  # fail before any work

    rows = [measure_size(size, args, bench) for size in args.sizes]
    cost_columns, cost, quality_columns, quality = summary_rows(rows, args.ann)
    print("\nCost (pipeline and engines alone)\n\n" + markdown_table(cost_columns, cost))
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
            "plot": args.plot,
        },
    )


if __name__ == "__main__":
    main()
