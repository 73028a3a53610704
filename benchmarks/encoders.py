"""Encoders tuned to the corpus: base MiniLM vs MiniLM fine-tuned with each loss (vs mpnet), and a study that picks.

SciFact's 809 train queries are cut (seeded) into a *fit* part, on which the re-ranker and both
encoders train (each keeps its own validation slice inside it), and a *tune* part that no model
ever saw, on which the study tunes. The 300 test queries are the verdict, touched by nothing else.

1. ``train_reranker`` on fit (the teacher of margin-mse and a re-ranker the study may pick).
2. ``train_encoder`` on fit with ``mnrl`` and with ``margin-mse`` (the re-ranker as teacher).
3. Per encoder, on test with 95% bootstrap CIs: dense alone, and a convex BM25 + dense hybrid whose
   weight and normalisation are tuned on the tune queries (a grid), each against base MiniLM.
4. A study (TPE) whose space offers every encoder, the re-ranker or none, and the fusion choices,
   tuned on the tune queries; its own pick is scored on test.

Each model is trained once into ``<state>/encoder-benchmark/``; a rerun reuses it.

    .venv/bin/python benchmarks/encoders.py --state-dir DIR [--fit-fraction 0.75] [--max-pairs 2000]
        [--epochs 1] [--reranker-epochs 1] [--trials 16] [--mpnet] [--extra LABEL=MODEL] [--skip-study]
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import harness

NAME = "encoders"
METRIC = "nDCG@10"
BASE = "sentence-transformers/all-MiniLM-L6-v2"
MPNET = "sentence-transformers/all-mpnet-base-v2"
TARGET = 0.78  # test nDCG@10 of a study's own pick (0.746 before encoders were tuned)


def split_corpus(source: Path, work: Path, fit_fraction: float, seed: int) -> Path:
    """Writes a BEIR folder over ``source``'s documents with qrels fit / tune (train cut in two) and test."""
    from workbench.retrieval.corpus import load_corpus

    folder = work / "scifact-fit-tune-test"
    if (folder / "qrels" / "test.tsv").is_file():
        return folder
    corpus = load_corpus(source)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (folder / name).symlink_to((source / name).resolve())
    train = sorted(corpus.judged_queries("train"))
    fit = set(random.Random(seed).sample(train, round(len(train) * fit_fraction)))
    parts = {"fit": fit, "tune": set(train) - fit}
    for part, members in parts.items():
        qrels = corpus.split_qrels("train")
        rows = ["query-id\tcorpus-id\tscore"] + [
            f"{q}\t{d}\t{g}" for q in sorted(members) for d, g in sorted(qrels[q].items())
        ]
        (folder / "qrels" / f"{part}.tsv").write_text("\n".join(rows) + "\n")
    (folder / "qrels" / "test.tsv").write_text((source / "qrels" / "test.tsv").read_text())
    return folder


def train_models(corpus, work: Path, cache, args) -> dict[str, dict[str, Any]]:
    """Trains (or reuses) the re-ranker and one encoder per loss; returns each model's card."""
    from workbench.training.encoder import CARD_NAME as ENCODER_CARD
    from workbench.training.encoder import train_encoder
    from workbench.training.reranker import CARD_NAME as RERANKER_CARD
    from workbench.training.reranker import train_reranker
    from workbench.training.settings import EncoderSettings, RerankerSettings

    cards = {}
    reranker = work / "reranker"
    if not (reranker / RERANKER_CARD).is_file():
        print(f"training the re-ranker on fit into {reranker}", flush=True)
        settings = RerankerSettings(epochs=args.reranker_epochs, max_pairs=args.max_pairs, seed=args.seed)
        train_reranker(corpus, "fit", reranker, settings, cache=cache)
    cards["reranker"] = json.loads((reranker / RERANKER_CARD).read_text())
    for loss in ("mnrl", "margin-mse"):
        out = work / f"encoder-{loss}"
        if not (out / ENCODER_CARD).is_file():
            print(f"training an encoder with {loss} on fit into {out}", flush=True)
            settings = EncoderSettings(
                base_model=BASE, epochs=args.epochs, max_pairs=args.max_pairs, loss=loss,
                teacher=str(reranker) if loss == "margin-mse" else None, seed=args.seed,
            )  # fmt: skip
            train_encoder(corpus, "fit", out, settings, cache=cache)
        cards[f"encoder-{loss}"] = json.loads((out / ENCODER_CARD).read_text())
    return cards


def per_query(pipeline, query_set) -> dict[str, float]:
    from workbench.evaluation.metrics import evaluate

    run = pipeline.search(query_set.queries).run
    return evaluate(run, query_set.qrels, (METRIC,)).per_query[METRIC]


def interval(scores: dict[str, float]) -> dict[str, float]:
    from workbench.evaluation.significance import bootstrap_ci

    ci = bootstrap_ci(scores)
    return {"mean": ci.mean, "low": ci.low, "high": ci.high}


def versus(scores: dict[str, float], reference: dict[str, float]) -> dict[str, Any]:
    from workbench.evaluation.significance import paired_test

    c = paired_test(scores, reference)
    return {"difference": c.mean_difference, "p_value": c.p_value, "wins_ties_losses": [c.wins, c.ties, c.losses]}


def hybrid_config(model: str, weight: float, normalization: str):
    from workbench.retrieval.config import BM25Config, DenseConfig, FusionConfig, PipelineConfig

    return PipelineConfig(
        name="hybrid",
        retrievers=(BM25Config(), DenseConfig(model=model)),
        fusion=FusionConfig(method="convex", weights=(round(1 - weight, 2), weight), normalization=normalization),
        first_stage_depth=100,
    )


def measure_encoder(model: str, resources, tune, test) -> dict[str, Any]:
    """Dense alone, and the convex hybrid tuned on ``tune`` (dense weight 0..1 by 0.1, both normalisations)."""
    from workbench.retrieval.config import DenseConfig, PipelineConfig
    from workbench.retrieval.pipeline import Pipeline

    started = time.perf_counter()
    dense = Pipeline(PipelineConfig(name="dense", retrievers=(DenseConfig(model=model),)), resources)
    encode_s = time.perf_counter() - started
    grid = [(w / 10, n) for w in range(1, 10) for n in ("minmax", "zscore")]
    tuning = {}
    for weight, normalization in grid:
        scores = per_query(Pipeline(hybrid_config(model, weight, normalization), resources), tune)
        tuning[(weight, normalization)] = sum(scores.values()) / len(scores)
    weight, normalization = max(tuning, key=tuning.get)
    return {
        "dense_test": per_query(dense, test),
        "hybrid_test": per_query(Pipeline(hybrid_config(model, weight, normalization), resources), test),
        "hybrid_choice": {
            "dense_weight": weight,
            "normalization": normalization,
            "tune_mean": tuning[(weight, normalization)],
        },
        "index_build_s": encode_s,
    }


STUDY = """
name = "{name}"
corpus = "{corpus}"
tune_split = "tune"
heldout_split = "test"
metric = "nDCG@10"
n_trials = {trials}
sampler = "tpe"
seed = {seed}
latency_sample = 1

[space]
first_stage_depth = [100]

[space.dense]
model = {models}

[space.fusion]
method = ["convex", "rrf"]
alpha = {{ low = 0.0, high = 1.0 }}
normalization = ["minmax", "zscore"]
rrf_k = {{ low = 5, high = 100 }}

[space.rerank]
model = ["none", "{reranker}"]
depth = [20]
weight = {{ low = 0.2, high = 1.0 }}
"""


def run_study(corpus_dir: Path, encoders: list[str], reranker: Path, state_dir: Path, args) -> dict[str, Any]:
    """Tunes the study on the tune queries; returns its pick and the pick's test verdict."""
    from workbench.study.config import load_study_config
    from workbench.study.export import choose_trial
    from workbench.study.objective import trial_config
    from workbench.study.runner import run_study as run

    path = state_dir / "encoder-benchmark" / "study.toml"
    name = f"encoders-{len(encoders)}-models"
    path.write_text(
        STUDY.format(
            name=name, corpus=corpus_dir, trials=args.trials, seed=args.seed,
            models=json.dumps(encoders), reranker=reranker,
        )
    )  # fmt: skip
    started = time.perf_counter()
    outcome = run(load_study_config(path), state_dir, show_progress=False)
    wall = time.perf_counter() - started
    best = choose_trial(outcome.study)
    report = outcome.session.heldout_report(best)
    chosen = harness.describe_pipeline(trial_config(best))
    intervals = report.intervals
    return {
        "study_file": str(path),
        "trials": args.trials,
        "wall_s": wall,
        "best_trial": best.number,
        "best_params": best.params,
        "best_summary": chosen,
        "tuning_value": best.values[0],
        "test": {
            system: {"mean": ci[METRIC].mean, "low": ci[METRIC].low, "high": ci[METRIC].high}
            for system, ci in intervals.items()
        },
    }


def main() -> None:
    parser = harness.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--fit-fraction", type=float, default=0.75, help="share of train queries the models train on")
    parser.add_argument(
        "--max-pairs", type=int, default=2000, help="training pairs per model (4 per relevant document)"
    )
    parser.add_argument("--epochs", type=int, default=1, help="encoder epochs")
    parser.add_argument("--reranker-epochs", type=int, default=1)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--mpnet", action="store_true", help="also measure all-mpnet-base-v2 (about 7x slower to encode)"
    )
    parser.add_argument("--skip-study", action="store_true")
    parser.add_argument(
        "--extra", action="append", default=[], metavar="LABEL=MODEL", help="also measure this encoder (repeatable)"
    )
    args = parser.parse_args()
    bench = harness.start(NAME, args)

    from workbench.retrieval.cache import Cache
    from workbench.retrieval.corpus import load_corpus
    from workbench.retrieval.pipeline import Resources
    from workbench.types import QuerySet

    work = bench.state_dir / "encoder-benchmark"
    work.mkdir(parents=True, exist_ok=True)
    corpus_dir = split_corpus(bench.corpus_path, work, args.fit_fraction, args.seed)
    corpus = load_corpus(corpus_dir)
    cache = Cache(bench.state_dir / "cache")
    started = time.perf_counter()
    cards = train_models(corpus, work, cache, args)
    training_wall = time.perf_counter() - started

    resources = Resources(corpus, cache)
    tune, test = (
        QuerySet(split, corpus.judged_queries(split), corpus.split_qrels(split)) for split in ("tune", "test")
    )
    encoders = {"MiniLM (base)": BASE}
    # A training that beat the base model on no validation query saved the base weights: measuring
    # them again would re-encode the corpus for the base model's own figures.
    encoders |= {
        f"MiniLM + {cards[k]['loss']}": str(work / k)
        for k in ("encoder-mnrl", "encoder-margin-mse")
        if not cards[k]["kept_base_weights"]
    }
    if args.mpnet:
        encoders["mpnet (base)"] = MPNET
    encoders |= dict(extra.split("=", 1) for extra in args.extra)
    measured = {}
    for label, model in encoders.items():
        print(f"measuring {label}", flush=True)
        measured[label] = measure_encoder(model, resources, tune, test)
    base = measured["MiniLM (base)"]
    rows, figures = [], {"encoders": {}}
    for label, m in measured.items():
        entry = {
            "model": encoders[label],
            "dense_test": interval(m["dense_test"]),
            "hybrid_test": interval(m["hybrid_test"]),
            "hybrid_choice": m["hybrid_choice"],
            "index_build_s": m["index_build_s"],
        }
        if label != "MiniLM (base)":
            entry["dense_vs_base"] = versus(m["dense_test"], base["dense_test"])
            entry["hybrid_vs_base"] = versus(m["hybrid_test"], base["hybrid_test"])
        figures["encoders"][label] = entry
        rows.append(
            [label, entry["dense_test"]["mean"], entry["hybrid_test"]["mean"], m["hybrid_choice"]["dense_weight"]]
        )
    harness.print_table(
        f"SciFact test (300 queries), {METRIC}", ["encoder", "dense", "tuned hybrid", "dense weight"], rows
    )
    figures["training"] = {
        name: {
            key: card.get(key)
            for key in (
                "loss", "training_seconds", "training_queries", "validation_queries", "groups", "pairs",
                "validation_ndcg_at_10_before", "validation_ndcg_at_10", "validation_ndcg_at_10_best_epoch",
                "kept_base_weights", "candidate_order_ndcg_at_10", "epochs", "max_pairs",
            )
        }
        for name, card in cards.items()
    }  # fmt: skip
    figures["training_wall_s"] = training_wall
    figures["queries"] = {
        "fit": len(corpus.judged_queries("fit")),
        "tune": len(tune.queries),
        "test": len(test.queries),
    }
    if not args.skip_study:
        figures["study"] = run_study(corpus_dir, list(encoders.values()), work / "reranker", bench.state_dir, args)
        pick = figures["study"]["test"]
        print(f"study pick on test: {json.dumps(pick)}")
    bench.finish(figures, {"study_pick_test_ndcg_at_10": TARGET})


if __name__ == "__main__":
    main()
