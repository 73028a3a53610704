"""Synthetic queries (issue 15): how far can a study tuned on generated questions be trusted?

For each collection: (a) ``workbench.synthesis.synthesize.synthesize`` (what ``workbench synthesize``
calls) writes one question for each of ``--documents`` seeded documents with the bundled Gemma 3
270M, filtered (length, example copies, passage copies, duplicates, round trip through BM25 or
dense at ``--round-trip``); (b) the demo study's search space (``studies/demo.toml``) is tuned
twice with ``run_study``, once on the generated questions only and once on real judged queries;
(c) both best configs and the BM25/dense baselines are scored on the same held-out real queries
(``StudySession.heldout_report``: bootstrap CIs, paired tests), and the two best configs against each other;
(d) every trial config of the generated-questions study is scored on the real queries too, and
Kendall's tau (scipy, tau-b) says how alike the two orders of configurations are; the same tau
between the real tuning and real held-out queries is given for scale.

Real queries: SciFact tunes on ``train`` and holds out ``test``; cranfield and cisi have one judged
split, so a seeded half of it is the real tuning split (``real-tune``) and the other half the
held-out one (``real-heldout``), the same for both studies. The prompt's examples come from
``train`` where a collection has it (SciFact), else from the built-in examples (documents alone).

    .venv/bin/python benchmarks/synthetic.py --state-dir /work/state-synthetic \\
        [--collections cranfield cisi scifact] [--documents 150] [--trials 16] [--round-trip 20]

``--mode documents-alone`` (issue 26) starts from the documents only (a folder holding the
collection's ``corpus.jsonl`` and nothing else, so the prompt shows the built-in examples) and
judges on the same real held-out queries: (a) the guarded pick of a study tuned on the generated
questions (``study_result``: the tuned trial, or the robust default when the guard refuses it),
(b) BM25, dense and RRF of both at default settings, (c) RRF of BM25 and an encoder trained on the
generated questions, then re-ranked by a cross-encoder trained on them (depth ``--rerank-depth``),
(d) the same trained on the real tuning queries (each also without its re-ranker); each with a 95% bootstrap CI and paired tests
against BM25 and against the best default (Holm over all of them). ``--train-pairs`` and
``--epochs`` size the training; ``adi`` (82 documents, this repository) makes a check of minutes:

    .venv/bin/python benchmarks/synthetic.py --mode documents-alone --state-dir /tmp/state-docs \\
        --collections adi --documents 12 --trials 6 --train-pairs 64 --out /tmp/docs-alone.json
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import harness

NAME = "synthetic"
SHARED = harness.REPO_ROOT.parent / "shared" / "corpora"
BUNDLED = harness.REPO_ROOT / "corpora"  # adi: small enough to check the benchmark in minutes
METRIC = "nDCG@10"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/synthetic.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--collections", nargs="+", default=["cranfield", "cisi"], help="shared collections to run")
    parser.add_argument("--documents", type=int, default=150, help="documents to write a question for (seeded)")
    parser.add_argument("--trials", type=int, default=16, help="trials per study, baselines included")
    parser.add_argument("--round-trip", type=int, default=20, help="round-trip depth k (0: off)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--state-dir", type=Path, required=True, help="state/cache folder (kept: generation is cached)")
    parser.add_argument("--out", type=Path, default=None, help="default: results/synthetic[-documents-alone].json")
    parser.add_argument("--mode", choices=["compare", "documents-alone"], default="compare")
    parser.add_argument("--train-pairs", type=int, default=2000, help="documents-alone: pairs per trained model")
    parser.add_argument("--epochs", type=int, default=1, help="documents-alone: epochs per trained model")
    parser.add_argument("--rerank-depth", type=int, default=20, help="documents-alone: documents re-ranked")
    parser.add_argument(
        "--recheck-guard",
        action="store_true",
        help="documents-alone: decide the export of each collection's stored study again with this code's "
        "guard, judge it on the real held-out queries and add it to the collection's entry (nothing generated or trained)",
    )
    args = parser.parse_args()
    if args.out is None:
        suffix = "" if args.mode == "compare" else "-documents-alone"
        args.out = harness.RESULTS_DIR / f"{NAME}{suffix}.json"
    return args


def real_query_corpus(name: str, work: Path, seed: int) -> tuple[Path, str, str]:
    """Returns (corpus folder, real tuning split, real held-out split) for a shared collection."""
    from workbench.retrieval.corpus import load_corpus

    source = SHARED / name if (SHARED / name).is_dir() else BUNDLED / name
    corpus = load_corpus(source)
    if "train" in corpus.qrels and "test" in corpus.qrels:
        return source, "train", "test"
    folder = work / f"{name}-halves"
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").symlink_to((source / "corpus.jsonl").resolve())
    shutil.copyfile(source / "queries.jsonl", folder / "queries.jsonl")
    (split,) = corpus.splits()
    judged = sorted(corpus.judged_queries(split))
    tune = set(random.Random(seed).sample(judged, len(judged) // 2))
    qrels = corpus.split_qrels(split)
    for half, members in (("real-tune", tune), ("real-heldout", set(judged) - tune)):
        rows = ["query-id\tcorpus-id\tscore"] + [
            f"{q}\t{d}\t{g}" for q in sorted(members) for d, g in sorted(qrels[q].items())
        ]
        (folder / "qrels" / f"{half}.tsv").write_text("\n".join(rows) + "\n")
    return folder, "real-tune", "real-heldout"


def study_config(name: str, corpus: Path, tune_split: str, heldout_split: str, trials: int, seed: int):
    """Returns studies/demo.toml's study with another corpus, splits and trial count."""
    from workbench.study.config import load_study_config

    demo = load_study_config(harness.REPO_ROOT / "studies" / "demo.toml")
    return demo.model_copy(
        update={
            "name": name,
            "corpus": corpus,
            "tune_split": tune_split,
            "heldout_split": heldout_split,
            "n_trials": trials,
            "seed": seed,
            "latency_sample": 5,
        }
    )


def ci(report, system: str) -> dict[str, float]:
    interval = report.intervals[system][METRIC]
    return {"mean": interval.mean, "low": interval.low, "high": interval.high}


def comparison(c) -> dict[str, Any]:
    return {"difference": c.mean_difference, "p_value": c.p_value, "wins_ties_losses": [c.wins, c.ties, c.losses]}


def run_one_study(config, state_dir: Path) -> dict[str, Any]:
    """Runs a study; returns its outcome, best trial, held-out report and wall seconds."""
    from workbench.study.export import choose_trial
    from workbench.study.runner import run_study

    started = time.perf_counter()
    outcome = run_study(config, state_dir, show_progress=False)
    wall = time.perf_counter() - started
    best = choose_trial(outcome.study)
    report = outcome.session.heldout_report(best)
    return {"outcome": outcome, "best": best, "report": report, "wall_s": wall}


def trial_scores(study, resources, query_sets: dict[str, Any]) -> list[dict[str, Any]]:
    """Returns, per distinct complete trial config, its tuning value and its mean METRIC on each query set."""
    import optuna

    from workbench.evaluation.metrics import evaluate
    from workbench.retrieval.pipeline import Pipeline
    from workbench.study.attributes import BASELINE_ATTR
    from workbench.study.objective import trial_config

    rows, seen = [], set()
    for trial in sorted(
        study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.number
    ):
        config = trial_config(trial)
        key = json.dumps(config.model_dump(exclude={"name"}), sort_keys=True)
        if key in seen:
            continue  # a duplicate trial reuses its twin's score; counting it twice would weigh that config double
        seen.add(key)
        pipeline = Pipeline(config, resources)
        row = {
            "number": trial.number,
            "baseline": trial.user_attrs.get(BASELINE_ATTR),
            "summary": harness.describe_pipeline(config),
            "tuning_value": trial.values[0],
        }
        for label, query_set in query_sets.items():
            run = pipeline.search(query_set.queries).run
            row[label] = evaluate(run, query_set.qrels, (METRIC,)).means[METRIC]
        rows.append(row)
    return rows


def kendall(rows: list[dict[str, Any]], first: str, second: str) -> dict[str, Any]:
    from scipy.stats import kendalltau

    a, b = [row[first] for row in rows], [row[second] for row in rows]
    result = kendalltau(a, b)
    return {"tau": float(result.statistic), "p_value": float(result.pvalue), "configs": len(rows)}


def every_tenth(name: str):
    """Returns a progress callback printing every tenth step of each stage, with the seconds since the first call."""
    started = time.perf_counter()

    def progress(stage: str, done: int, total: int) -> None:
        if done % 10 == 0 or done == total:
            print(f"[{name}] {stage}: {done}/{total} after {time.perf_counter() - started:.0f} s", flush=True)

    return progress


def run_collection(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from workbench.retrieval.cache import Cache
    from workbench.retrieval.corpus import load_corpus
    from workbench.study.splits import study_splits
    from workbench.synthesis.generators import GeneratorSpec
    from workbench.synthesis.synthesize import synthesis_settings, synthesize

    real_corpus, tune_split, heldout_split = real_query_corpus(name, work, args.seed)
    synthetic_dir = work / f"{name}-synthetic-{args.documents}"
    if synthetic_dir.exists():
        shutil.rmtree(synthetic_dir)  # the answers are in the cache: rewriting the folder costs seconds
    settings = synthesis_settings(documents=args.documents, seed=args.seed, round_trip_k=args.round_trip)
    print(f"[{name}] generating questions for {args.documents} documents of {real_corpus}")
    started = time.perf_counter()
    card = synthesize(
        real_corpus, synthetic_dir, GeneratorSpec(), settings, Cache(args.state_dir / "cache"), every_tenth(name)
    )
    synthesize_wall = time.perf_counter() - started
    print(
        f"[{name}] {card['counts']['kept']} of {card['counts']['generated']} questions kept; generation "
        f"{card['generation']['seconds']} s ({card['generation']['asked_now']} asked now); wall {synthesize_wall:.0f} s"
    )
    # The document count is in the name: a run with more documents tunes a study of its own.
    synthetic = study_config(
        f"{name}-on-generated-{args.documents}", synthetic_dir, "synthetic", heldout_split, args.trials, args.seed
    )
    real = study_config(f"{name}-on-real", synthetic_dir, tune_split, heldout_split, args.trials, args.seed)
    print(f"[{name}] study tuned on generated questions")
    on_synthetic = run_one_study(synthetic, args.state_dir)
    print(f"[{name}] study tuned on real queries ({tune_split})")
    on_real = run_one_study(real, args.state_dir)

    from workbench.evaluation.metrics import evaluate
    from workbench.evaluation.significance import paired_test
    from workbench.retrieval.pipeline import Pipeline
    from workbench.study.objective import trial_config

    corpus = load_corpus(synthetic_dir)
    real_splits = study_splits(real, corpus)
    query_sets = {"real_tune": real_splits.tune, "real_heldout": real_splits.heldout}
    resources = on_synthetic["outcome"].session.resources
    synthetic_rows = trial_scores(on_synthetic["outcome"].study, resources, query_sets)
    real_rows = trial_scores(
        on_real["outcome"].study, on_real["outcome"].session.resources, {"real_heldout": real_splits.heldout}
    )
    heldout = real_splits.heldout
    per_query = {
        label: evaluate(
            Pipeline(trial_config(study["best"]), resources).search(heldout.queries).run,
            heldout.qrels,
            (METRIC,),
        ).per_query[METRIC]
        for label, study in (("synthetic", on_synthetic), ("real", on_real))
    }
    synthetic_report, real_report = on_synthetic["report"], on_real["report"]
    baselines_tuning = {
        label: {row["baseline"]: row["tuning_value"] for row in rows if row["baseline"]}
        for label, rows in (("generated", synthetic_rows), ("real_tune", real_rows))
    }
    return {
        "corpus": str(real_corpus),
        "documents": len(corpus.documents),
        "real_tuning_split": {"name": tune_split, "queries": len(real_splits.tune.queries)},
        "heldout_split": {"name": heldout_split, "queries": len(heldout.queries)},
        "generation": {
            "documents_requested": args.documents,
            "documents_sampled": card["counts"]["documents_sampled"],
            "generated": card["counts"]["generated"],
            "kept": card["counts"]["kept"],
            "filters": [{k: step[k] for k in ("name", "dropped", "after")} for step in card["filters"]],
            "examples_from": card["prompt"]["examples_from"],
            "generation_s": card["generation"]["seconds"],
            "asked_now": card["generation"]["asked_now"],
            "seconds_per_question": card["generation"]["seconds_per_question_asked"],
            "synthesize_wall_s": synthesize_wall,
            "sample_questions": [
                {"doc_id": q_id.removeprefix("synthetic-").rsplit("-", 1)[0], "question": text}
                for q_id, text in list(corpus.judged_queries("synthetic").items())[:8]
            ],
        },
        "heldout_ndcg_at_10": {
            "tuned_on_generated": ci(synthetic_report, "tuned"),
            "tuned_on_real": ci(real_report, "tuned"),
            "bm25": ci(real_report, "bm25"),
            "dense": ci(real_report, "dense"),
        },
        "generated_vs_real_tuned_on_heldout": comparison(paired_test(per_query["synthetic"], per_query["real"])),
        "tuned_on_generated_vs_baselines": {b: comparison(c[METRIC]) for b, c in synthetic_report.comparisons.items()},
        "tuned_on_real_vs_baselines": {b: comparison(c[METRIC]) for b, c in real_report.comparisons.items()},
        "best": {
            "tuned_on_generated": {
                "trial": on_synthetic["best"].number,
                "summary": harness.describe_pipeline(trial_config(on_synthetic["best"])),
                "tuning_value": on_synthetic["best"].values[0],
            },
            "tuned_on_real": {
                "trial": on_real["best"].number,
                "summary": harness.describe_pipeline(trial_config(on_real["best"])),
                "tuning_value": on_real["best"].values[0],
            },
        },
        "baselines_on_tuning_queries": baselines_tuning,
        "kendall_tau": {
            "generated_vs_real_heldout": kendall(synthetic_rows, "tuning_value", "real_heldout"),
            "generated_vs_real_tune": kendall(synthetic_rows, "tuning_value", "real_tune"),
            "real_tune_vs_real_heldout_same_configs": kendall(synthetic_rows, "real_tune", "real_heldout"),
            "real_study_tune_vs_heldout": kendall(real_rows, "tuning_value", "real_heldout"),
        },
        "study_wall_s": {"tuned_on_generated": on_synthetic["wall_s"], "tuned_on_real": on_real["wall_s"]},
        "trials_tuned_on_generated": synthetic_rows,
        "trials_tuned_on_real": real_rows,
    }


def documents_only(source: Path, work: Path, name: str) -> Path:
    """Returns a folder holding the collection's documents and nothing else: what a user starts from."""
    folder = work / f"{name}-documents"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").symlink_to((source / "corpus.jsonl").resolve())
    return folder


def trained_pipeline(name: str, encoder: Path, reranker: Path | None, depth: int):
    """RRF of BM25 and ``encoder``, re-ranked by ``reranker`` (if any): the pipelines trained models are judged in."""
    from workbench.retrieval.config import BM25Config, DenseConfig, FusionConfig, PipelineConfig, RerankConfig

    return PipelineConfig(
        name=name,
        retrievers=(BM25Config(), DenseConfig(model=str(encoder))),
        fusion=FusionConfig(method="rrf"),
        rerank=RerankConfig(model=str(reranker), depth=depth) if reranker else RerankConfig(),
    )


DEFAULTS = ["bm25", "dense", "rrf"]  # the systems of default_systems the export must match or beat


def documents_alone_questions(name: str, args: argparse.Namespace, work: Path) -> Path:
    """The folder a documents-alone run writes its generated questions to (and a recheck reads)."""
    return work / f"{name}-documents-synthetic-{args.documents}"


def real_corpus_and_splits(real_corpus: Path, tune_split: str, heldout_split: str, seed: int):
    """The collection with its real queries, and its tuning and held-out splits as a study makes them."""
    from workbench.retrieval.corpus import load_corpus
    from workbench.study.splits import study_splits

    real = load_corpus(real_corpus)
    return real, study_splits(study_config("-", real_corpus, tune_split, heldout_split, 1, seed), real)


def guarded_study(name: str, args: argparse.Namespace, synthetic_dir: Path):
    """The study tuned on the generated questions alone: no held-out part, the guard judges the choice on them."""
    config = study_config(f"{name}-alone-{args.documents}", synthetic_dir, "synthetic", None, args.trials, args.seed)
    return config.model_copy(update={"heldout": "split", "heldout_fraction": 0.0})


def default_systems(exported, space) -> dict[str, Any]:
    """The guarded study's export and the defaults it is judged against: BM25, dense and their RRF."""
    from workbench.study.guard import robust_default
    from workbench.study.space import baseline_config

    return {
        "guarded_pick": exported,
        "bm25": baseline_config("bm25", space, "bm25"),
        "dense": baseline_config("dense", space, "dense"),
        "rrf": robust_default(space, "rrf")[0],
    }


def train_both(corpus, split: str, folder: Path, args, cache) -> dict[str, Any]:
    """Trains an encoder and a re-ranker on ``split`` of ``corpus`` into ``folder``; returns their folders and cards."""
    from workbench.training.encoder import train_encoder
    from workbench.training.reranker import train_reranker
    from workbench.training.settings import EncoderSettings, RerankerSettings

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    sizes = {"epochs": args.epochs, "max_pairs": args.train_pairs, "seed": args.seed}
    started = time.perf_counter()
    encoder = train_encoder(corpus, split, folder / "encoder", EncoderSettings(**sizes), cache)
    reranker = train_reranker(corpus, split, folder / "reranker", RerankerSettings(**sizes), cache)
    return {
        "encoder": folder / "encoder",
        "reranker": folder / "reranker",
        "cards": {
            "encoder": {k: getattr(encoder, k) for k in ("training_queries", "groups", "validation_ndcg_at_10_before",
                                                          "validation_ndcg_at_10_best_epoch", "kept_base_weights")},
            "reranker": {k: getattr(reranker, k) for k in ("training_queries", "pairs", "validation_ndcg_at_10",
                                                           "candidate_order_ndcg_at_10")},
        },
        "training_s": time.perf_counter() - started,
    }  # fmt: skip


def judge_systems(systems: dict[str, Any], heldout, resources, defaults: list[str]) -> dict[str, Any]:
    """Every system on the real held-out queries: mean and 95% CI, and paired tests against BM25 and
    against the best default (the default with the highest held-out mean), Holm over all tests."""
    from workbench.evaluation.metrics import evaluate
    from workbench.evaluation.significance import bootstrap_ci, holm_adjusted, paired_test
    from workbench.retrieval.pipeline import Pipeline

    per_query, seconds = {}, {}
    for label, config in systems.items():
        started = time.perf_counter()
        run = Pipeline(config, resources).search(heldout.queries).run
        per_query[label] = evaluate(run, heldout.qrels, (METRIC,)).per_query[METRIC]
        seconds[label] = time.perf_counter() - started
    best_default = max(defaults, key=lambda label: sum(per_query[label].values()))
    rows, tests = {}, []
    for label in systems:
        interval = bootstrap_ci(per_query[label], seed=0)
        rows[label] = {"mean": interval.mean, "low": interval.low, "high": interval.high,
                       "pipeline": harness.describe_pipeline(systems[label]), "search_s": seconds[label]}  # fmt: skip
        for reference in dict.fromkeys(("bm25", best_default)):
            if reference != label:
                rows[label][f"vs_{reference}"] = comparison(paired_test(per_query[label], per_query[reference]))
                tests.append((label, reference))
    for (label, reference), p_holm in zip(tests, holm_adjusted([rows[l][f"vs_{r}"]["p_value"] for l, r in tests])):
        rows[label][f"vs_{reference}"]["p_holm"] = p_holm
    return {"best_default": best_default, "systems": rows}


def run_documents_alone(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from workbench.retrieval.cache import Cache
    from workbench.retrieval.corpus import load_corpus
    from workbench.retrieval.pipeline import Resources
    from workbench.study.result import study_result
    from workbench.study.runner import run_study
    from workbench.synthesis.generators import GeneratorSpec
    from workbench.synthesis.synthesize import synthesis_settings, synthesize

    real_corpus, tune_split, heldout_split = real_query_corpus(name, work, args.seed)
    cache = Cache(args.state_dir / "cache")
    documents = documents_only(real_corpus, work, name)
    synthetic_dir = documents_alone_questions(name, args, work)
    if synthetic_dir.exists():
        shutil.rmtree(synthetic_dir)
    settings = synthesis_settings(documents=args.documents, seed=args.seed, round_trip_k=args.round_trip)
    print(f"[{name}] generating questions for {args.documents} documents of {documents} (documents alone)")
    started = time.perf_counter()
    card = synthesize(documents, synthetic_dir, GeneratorSpec(), settings, cache, every_tenth(name))
    synthesize_wall = time.perf_counter() - started

    guarded = guarded_study(name, args, synthetic_dir)
    started = time.perf_counter()
    outcome = run_study(guarded, args.state_dir, show_progress=False)
    result = study_result(outcome.session, outcome.study)
    study_wall = time.perf_counter() - started
    print(f"[{name}] {result.export.reason}")

    real, real_splits = real_corpus_and_splits(real_corpus, tune_split, heldout_split, args.seed)
    generated = load_corpus(synthetic_dir)
    print(f"[{name}] training on {len(generated.judged_queries('synthetic'))} generated questions")
    on_generated = train_both(generated, "synthetic", work / f"{name}-trained-generated-{args.documents}", args, cache)
    print(f"[{name}] training on the real '{tune_split}' queries")
    on_real = train_both(real, tune_split, work / f"{name}-trained-real", args, cache)

    systems = default_systems(result.export.config, guarded.space) | {
        "encoder_trained_on_generated": trained_pipeline("generated", on_generated["encoder"], None, 0),
        "trained_on_generated": trained_pipeline("generated", on_generated["encoder"], on_generated["reranker"],
                                                 args.rerank_depth),
        "encoder_trained_on_real": trained_pipeline("real", on_real["encoder"], None, 0),
        "trained_on_real": trained_pipeline("real", on_real["encoder"], on_real["reranker"], args.rerank_depth),
    }  # fmt: skip
    print(f"[{name}] judging {len(systems)} systems on {len(real_splits.heldout.queries)} real held-out queries")
    judged = judge_systems(systems, real_splits.heldout, Resources(real, cache), DEFAULTS)
    return {
        "corpus": str(real_corpus),
        "documents": len(real.documents),
        "heldout_split": {"name": heldout_split, "queries": len(real_splits.heldout.queries)},
        "real_tuning_split": {"name": tune_split, "queries": len(real_splits.tune.queries)},
        "generation": {
            "documents_requested": args.documents,
            "generated": card["counts"]["generated"],
            "kept": card["counts"]["kept"],
            "examples_from": card["prompt"]["examples_from"],
            "filters": [{k: step[k] for k in ("name", "dropped", "after")} for step in card["filters"]],
            "generation_s": card["generation"]["seconds"],
            "asked_now": card["generation"]["asked_now"],
            "seconds_per_question": card["generation"]["seconds_per_question_asked"],
            "synthesize_wall_s": synthesize_wall,
        },
        "guard": result.provenance.get("guard"),
        "exported": result.export.system,
        "export_reason": result.export.reason,
        "study_wall_s": study_wall,
        "training": {
            "generated": {"cards": on_generated["cards"], "training_s": on_generated["training_s"]},
            "real": {"cards": on_real["cards"], "training_s": on_real["training_s"]},
        },
        "heldout_ndcg_at_10": judged,
    }


def recheck_guard(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The export of a documents-alone run's stored study, decided again by this code's guard (the
    study is resumed, no trial added) and judged with the defaults on the real held-out queries."""
    from workbench.retrieval.cache import Cache
    from workbench.retrieval.pipeline import Resources
    from workbench.study.result import study_result
    from workbench.study.runner import run_study

    real_corpus, tune_split, heldout_split = real_query_corpus(name, work, args.seed)
    synthetic_dir = documents_alone_questions(name, args, work)
    guarded = guarded_study(name, args, synthetic_dir)
    outcome = run_study(guarded, args.state_dir, show_progress=False)
    result = study_result(outcome.session, outcome.study)
    print(f"[{name}] rechecked: {result.export.reason}")
    real, real_splits = real_corpus_and_splits(real_corpus, tune_split, heldout_split, args.seed)
    systems = default_systems(result.export.config, guarded.space)
    cache = Cache(args.state_dir / "cache")
    judged = judge_systems(systems, real_splits.heldout, Resources(real, cache), DEFAULTS)
    guarded_pick = judged["systems"]["guarded_pick"]
    print(f"[{name}] the export on the real held-out queries: {guarded_pick['mean']:.4f} ({guarded_pick['pipeline']})")
    return {
        "guard": result.provenance.get("guard"),
        "exported": result.export.system,
        "export_reason": result.export.reason,
        "heldout_ndcg_at_10": judged,
    }


def main() -> None:
    args = parse_args()
    args.state_dir = args.state_dir.resolve()
    work = args.state_dir / "benchmark-corpora"
    work.mkdir(parents=True, exist_ok=True)
    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    # Collections run earlier keep their entries: a later run of other collections adds to the file.
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results = previous.get("collections", {})
    if args.recheck_guard:
        missing = [key for key in (f"{name}-{args.documents}docs" for name in args.collections) if key not in results]
        if args.mode != "documents-alone":
            print("--recheck-guard: needs --mode documents-alone", file=sys.stderr)
            raise SystemExit(2)
        if missing:
            print(f"{args.out}: no documents-alone entry {missing[0]!r} to recheck", file=sys.stderr)
            raise SystemExit(2)
    for name in args.collections:
        started = time.perf_counter()
        alone = args.mode == "documents-alone"
        if args.recheck_guard:
            key = f"{name}-{args.documents}docs"
            recheck = recheck_guard(name, args, work)
            recheck |= {"command": command, "machine": harness.machine_info(), "wall_s": time.perf_counter() - started}
            results[key]["guard_rechecked"] = recheck  # results is previous["collections"]
            args.out.write_text(json.dumps(previous, indent=2, default=str) + "\n")
            continue
        row = (run_documents_alone if alone else run_collection)(name, args, work)
        row["command"] = command
        row["machine"] = harness.machine_info()  # its load average says how busy the shared cores were
        row["wall_s"] = time.perf_counter() - started
        results[f"{name}-{args.documents}docs"] = row
        heldout = row["heldout_ndcg_at_10"]
        title = f"{name}: held-out {row['heldout_split']['name']} ({row['heldout_split']['queries']} real queries), {METRIC}"
        if alone:
            systems = heldout["systems"]
            best = heldout["best_default"]
            harness.print_table(
                f"{title}; best default: {best}",
                ["system", "mean", "95% CI low", "95% CI high", "Δ vs bm25, p", f"Δ vs {best}, p"],
                [
                    [label, v["mean"], v["low"], v["high"]]
                    + [f"{v[k]['difference']:+.4f}, {v[k]['p_value']:.3g}" if k in v else "" for k in ("vs_bm25", f"vs_{best}")]
                    for label, v in systems.items()
                ],
            )
        else:
            harness.print_table(
                title,
                ["system", "mean", "95% CI low", "95% CI high"],
                [[system, v["mean"], v["low"], v["high"]] for system, v in heldout.items()],
            )
            print(f"[{name}] Kendall tau: {json.dumps(row['kendall_tau'])}")
        report = {
            "benchmark": NAME,
            "settings": {
                "mode": args.mode,
                "trials": args.trials,
                "train_pairs": args.train_pairs,
                "epochs": args.epochs,
                "rerank_depth": args.rerank_depth,
                "round_trip_k": args.round_trip,
                "seed": args.seed,
                "study_space": "studies/demo.toml",
                "generator": "bundled gemma3-270m (Q4_K_M GGUF) via llama-cpp-python, greedy",
            },
            "collections": results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
