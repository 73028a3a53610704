"""Phase 2 of benchmarks/scale.py, run in its own process by ``scale_phases.py``: a small study over
the cache the pipeline phase filled, and its held-out verdict."""

from __future__ import annotations

import random
import statistics
from pathlib import Path
from typing import Any

from scale_phases import DEPTH, HELDOUT_SPLIT, TUNE_SPLIT, Steps, folder_bytes


# --- phase 2: a small study over the warm cache ----------------------------------------------------


# The search-time setting a study searches for each approximate index kind.
SEARCHED_SETTING = {"hnsw": "ef_search", "ivf": "nprobe"}
TUNE_SAMPLE_SPLIT = "train-sample"


def study_dense_candidate(settings: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Returns the study space's dense candidate (the run's model, ``study_ann`` index, its searched
    setting's choices) and the ``--ann-param`` keys a study space has no place for (left at their defaults)."""
    from workbench.study.search_space import DenseCandidate

    candidate = {"kind": "dense", "model": settings["dense_model"]}
    kind = settings["study_ann"]
    if kind == "flat":
        return candidate, []
    candidate["index"] = kind
    build_params = settings["ann_params"] if kind == settings["ann"] else {}
    candidate |= {key: value for key, value in build_params.items() if key in DenseCandidate.model_fields}
    if kind in SEARCHED_SETTING:
        candidate[SEARCHED_SETTING[kind]] = settings["study_search_values"][kind]
    return candidate, sorted(key for key in build_params if key not in DenseCandidate.model_fields)


def study_toml(settings: dict[str, Any], tune_split: str) -> dict[str, Any]:
    """Returns the study file's content: BM25 + dense fused in every trial (convex or RRF), the dense
    index as ``study_dense_candidate`` says, tuned on ``tune_split``."""
    return {
        "name": f"scale-{settings['size']}",
        "corpus": settings["corpus"],
        "tune_split": tune_split,
        "heldout_split": HELDOUT_SPLIT,
        "metric": "nDCG@10",
        "n_trials": settings["trials"],
        "sampler": "tpe",
        "seed": settings["seed"],
        "latency_sample": 10,
        "space": {
            "first_stage_depth": DEPTH,
            "retrievers": [{"kind": "bm25"}, study_dense_candidate(settings)[0]],
            "combinations": [["bm25", "dense"]],
            "fusion": {
                "method": ["convex", "rrf"],
                "normalization": ["minmax", "zscore"],
                "rrf_k": {"low": 5, "high": 100},
            },
        },
    }


def write_tune_sample(corpus_dir: Path, count: int, seed: int) -> list[str]:
    """Writes ``qrels/train-sample.tsv``: the qrels of ``count`` judged train queries drawn with ``seed``;
    returns their ids. The corpus fingerprint covers documents only, so the cache still matches."""
    from workbench.retrieval.corpus import load_corpus

    corpus = load_corpus(corpus_dir)
    judged = sorted(corpus.judged_queries(TUNE_SPLIT))
    chosen = sorted(random.Random(seed).sample(judged, min(count, len(judged))))
    qrels = corpus.split_qrels(TUNE_SPLIT)
    rows = [f"{query_id}\t{doc_id}\t{grade}\n" for query_id in chosen for doc_id, grade in qrels[query_id].items()]
    (corpus_dir / "qrels" / f"{TUNE_SAMPLE_SPLIT}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(rows))
    return chosen


def cached_work(cache_dir: Path, dense_model: str) -> dict[str, int]:
    """Returns what the cache holds of the corpus' costly work: document vectors of ``dense_model``
    (rows, over every backend's store) and BM25 token files."""
    from workbench.retrieval.cache import Cache
    from workbench.retrieval.models import model_fingerprint

    cache = Cache(cache_dir)
    stores = Path(cache.root) / "embeddings"
    fingerprint = model_fingerprint(dense_model)
    rows = sum(
        sum(shard.rows for shard in cache.embeddings(store.name, "document").shards())
        for store in (stores.iterdir() if stores.is_dir() else ())
        if store.name.startswith(fingerprint)
    )
    return {"document_vectors": rows, "bm25_token_files": cache.size_by_kind().get("bm25-tokens", (0, 0))[0]}


def trial_figures(trial) -> dict[str, Any]:
    """Returns one trial's figures: what it chose, its score, duration, encoding and the recall of its ANN search."""
    from workbench.study.attributes import ANN_RECALL_ATTR, BASELINE_ATTR, METRICS_ATTR

    metrics = trial.user_attrs.get(METRICS_ATTR, {})
    done = trial.datetime_complete and trial.datetime_start
    return {
        "number": trial.number,
        "state": trial.state.name,
        "baseline": trial.user_attrs.get(BASELINE_ATTR),
        "params": trial.params,
        "value": trial.values[0] if trial.values else None,
        "seconds": (trial.datetime_complete - trial.datetime_start).total_seconds() if done else None,
        "ann_recall": trial.user_attrs.get(ANN_RECALL_ATTR),
        "encoding_s": metrics.get("encoding_s"),
        "index_build_s": metrics.get("index_build_s"),
        "search_s": metrics.get("search_s"),
    }


def study_phase(settings: dict[str, Any]) -> dict[str, Any]:
    """Runs the study of ``study_toml`` over the cache the pipeline phase filled, and judges its pick on
    the held-out queries; returns the figures."""
    import tomli_w

    from workbench.study.attributes import CONFIG_ATTR
    from workbench.study.config import load_study_config
    from workbench.study.result import study_result
    from workbench.study.runner import run_study

    steps = Steps()
    state_dir = Path(settings["state_dir"])
    tune_split, tune_queries = TUNE_SPLIT, None
    if settings["tune_queries"] is not None:
        tune_split = TUNE_SAMPLE_SPLIT
        tune_queries = write_tune_sample(Path(settings["corpus"]), settings["tune_queries"], settings["seed"])
    study_file = state_dir / f"scale-{settings['size']}.toml"
    study_file.write_bytes(tomli_w.dumps(study_toml(settings, tune_split)).encode())
    config = load_study_config(study_file)
    cache_before = cached_work(state_dir / "cache", settings["dense_model"])
    with steps.step("study"):
        outcome = run_study(config, state_dir, show_progress=False, study_file=study_file)
    cache_after = cached_work(state_dir / "cache", settings["dense_model"])
    with steps.step("held-out verdict"):
        result = study_result(outcome.session, outcome.study)
    trials = [trial_figures(trial) for trial in sorted(outcome.study.get_trials(deepcopy=False), key=lambda t: t.number)]
    durations = [trial["seconds"] for trial in trials if trial["state"] == "COMPLETE" and trial["seconds"] is not None]
    # The baselines build BM25 and a flat index (the dense baseline has default settings), the first
    # fused trial the ANN index (one hnsw_m or nlist for all); every trial after that reuses them.
    fused = [trial for trial in trials if trial["baseline"] in (None, "none")]
    warm = [trial["seconds"] for trial in fused[1:] if trial["state"] == "COMPLETE" and trial["seconds"] is not None]
    heldout = result.verdict.heldout if result.verdict is not None else None
    return {
        "study_file": study_toml(settings, tune_split),
        "ann_params_not_in_study_space": study_dense_candidate(settings)[1],
        "tune_split": tune_split,
        "tune_queries": len(tune_queries) if tune_queries is not None else len(outcome.session.corpus.judged_queries(TUNE_SPLIT)),
        "tune_query_ids": tune_queries,
        "cache_before_study": cache_before,
        "cache_after_study": cache_after,
        # Nothing of the corpus encoded or tokenised again: the pipeline phase's cache served the study.
        "cache_reused": cache_before == cache_after and cache_before["document_vectors"] > 0,
        "trials": trials,
        "trials_complete": len(durations),
        "trials_failed": sum(trial["state"] == "FAIL" for trial in trials),
        "trial_durations_s": durations,
        "index_building_trials_s": {
            str(trial["baseline"] or f"trial {trial['number']}"): trial["seconds"]
            for trial in trials
            if trial["baseline"] not in (None, "none") or trial is (fused[0] if fused else None)
        },
        "warm_trial_median_s": statistics.median(warm) if warm else None,
        "chosen": result.export.system if result.export is not None else None,
        "chosen_config": result.verdict.trial.user_attrs.get(CONFIG_ATTR) if result.verdict else None,
        "tuning_value": heldout.tuning_value if heldout else None,
        "heldout": {system: evaluation.means for system, evaluation in heldout.evaluations.items()} if heldout else {},
        "cache_bytes": folder_bytes(state_dir / "cache"),
        "steps": steps.report(),
    }
