"""The two measuring phases of benchmarks/scale.py, each run in a fresh process by it.

    python benchmarks/scale_phases.py pipeline|study SETTINGS.json RESULT.json

SETTINGS.json is what ``scale.measure_size`` writes; RESULT.json gets the phase's figures, or
``{"failed": why}`` when it raised.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import harness

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


def main() -> None:
    phase, settings_file, result_file = sys.argv[1:]
    try:
        figures = PHASES[phase](json.loads(Path(settings_file).read_text()))
    except Exception as error:
        Path(result_file).write_text(json.dumps({"failed": f"{type(error).__name__}: {error}"}))
        raise
    Path(result_file).write_text(json.dumps(figures, indent=2, default=harness.json_default))


if __name__ == "__main__":
    main()
