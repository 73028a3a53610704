"""Re-ranker (issue 7): train a cross-encoder on the corpus, then its held-out quality, cost and latency.

(a) Trains a re-ranker with ``workbench.training.reranker.train_reranker`` (what
``workbench train-reranker`` calls) on the train split, from the bundled all-MiniLM-L6-v2, 2 epochs
by default, seeded: wall seconds, the card's pair counts and validation nDCG@10.
(b) On the test split, with ``Pipeline`` + ``evaluate``: BM25 alone, dense alone and hybrid alone
(configs/*.toml), BM25 + the trained re-ranker at depth 20/50/100, hybrid (convex, min-max,
alpha 0.5) + the re-ranker at the best of those depths: nDCG@10 and Recall@100 with bootstrap CIs,
and paired randomisation tests against BM25 alone.
(c) Latency of single queries (one torch thread, query vectors and re-ranker scores computed
afresh, as ``measure_latency`` does): end to end and the re-ranking stage alone, p50/p95,
at depth 20/50/100.
(d) Optionally (``--study-trials N``, 0 to skip) a small study whose space includes the trained
re-ranker as a choice, run with ``workbench.study.runner.run_study``; its best trial is evaluated on the
test split with ``StudySession.heldout_report`` (CIs, p-values against BM25 and dense).

    .venv/bin/python benchmarks/reranker.py --state-dir /work/state-scifact [--epochs 2] [--learning-rate 1e-4] [--max-pairs N]
        [--reuse-model] [--latency-sample 20] [--study-trials 12] [--out benchmarks/results/reranker.json]
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import harness

NAME = "reranker"
SPLIT_TRAIN = "train"
SPLIT_TEST = "test"
DEPTHS = (20, 50, 100)
METRICS = ("nDCG@10", "Recall@100", "MRR@10")
TUNE_SPLIT = "rerank-val"  # the study's tuning queries: the re-ranker's validation queries (never trained on)
REFERENCE = {  # issue 7's comparison points (full SciFact test, 300 queries)
    "bm25_ndcg_at_10": 0.686,
    "minilm_dense_ndcg_at_10": 0.645,
    "published_bm25_plus_msmarco_cross_encoder_ndcg_at_10": 0.688,
    "workbench_goal_ndcg_at_10": 0.75,
}


def quantiles_ms(timings: list[float]) -> dict[str, float]:
    """p50/p95/mean of ``timings`` computed exactly as ``measure_latency`` does."""
    if not timings:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "mean_ms": 0.0}
    cuts = statistics.quantiles(timings, n=20, method="inclusive") if len(timings) > 1 else timings * 19
    return {"p50_ms": statistics.median(timings), "p95_ms": cuts[18], "mean_ms": statistics.fmean(timings)}


def single_query_latency(pipeline, queries: dict[str, str], sample: int) -> dict:
    """Times single queries the way ``workbench.evaluation.latency.measure_latency`` does, and also
    reports the re-rank stage.

    One torch thread; a pipeline with ``query_cache=False`` so query vectors and cross-encoder
    scores are computed afresh (no disk or memory cache). The first ``sample`` queries in the
    given order are timed, after one untimed warm-up query (the one after them).
    """
    from workbench.evaluation.latency import one_torch_thread
    from workbench.retrieval.pipeline import Pipeline

    cold = Pipeline(pipeline.config, pipeline.resources, query_cache=False)
    items = list(queries.items())
    timed, warmup = items[:sample], items[sample : sample + 1] or items[:1]
    total, rerank = [], []
    with one_torch_thread():
        for query_id, text in warmup:
            cold.search({query_id: text})
        for query_id, text in timed:
            started = time.perf_counter()
            result = cold.search({query_id: text})
            total.append((time.perf_counter() - started) * 1000)
            rerank.append(result.stage_seconds.get("rerank", 0.0) * 1000)
    return {"queries": len(timed), "total": quantiles_ms(total), "rerank_stage": quantiles_ms(rerank)}


def train_or_reuse(args, corpus, model_dir: Path, cache) -> tuple[dict, dict]:
    """Returns the re-ranker's card and the timing figures of this run (empty when reused)."""
    from workbench.retrieval.config import DEFAULT_MODEL
    from workbench.training.examples import build_training_examples
    from workbench.training.reranker import CARD_NAME, train_reranker
    from workbench.training.settings import RerankerSettings

    card_path = model_dir / CARD_NAME
    if args.reuse_model and card_path.is_file():
        card = json.loads(card_path.read_text())
        print(f"reusing the trained re-ranker in {model_dir} (trained {card['training_seconds']} s, card)")
        return card, {"reused": True}
    # Mining first (BM25 + dense over the train queries) so the timed training finds the corpus
    # vectors and query vectors cached and measures the fine-tuning itself.
    started = time.perf_counter()
    build_training_examples(corpus, SPLIT_TRAIN, max_pairs=args.max_pairs, seed=args.seed, cache=cache)
    mining_warmup_s = time.perf_counter() - started
    print(f"hard-negative mining (warm-up, corpus vectors cached): {mining_warmup_s:.1f} s")
    started = time.perf_counter()
    settings = RerankerSettings(
        base_model=DEFAULT_MODEL,
        epochs=args.epochs,
        max_pairs=args.max_pairs,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    train_reranker(corpus, SPLIT_TRAIN, model_dir, settings, cache=cache)
    wall = time.perf_counter() - started
    card = json.loads(card_path.read_text())  # the card as written, as a reused model's is read
    print(
        f"trained on {card['pairs']} pairs from {card['training_queries']} queries in {wall:.1f} s; "
        f"validation nDCG@10 {card['validation_ndcg_at_10']:.4f}"
    )
    return card, {"reused": False, "mining_warmup_s": mining_warmup_s, "train_reranker_wall_s": wall}


def evaluate_configs(corpus, resources, model_dir: Path, seed: int, latency_sample: int, depths) -> dict:
    """Test-split quality of first stages and re-ranked pipelines, and single-query latency per depth."""
    from workbench.evaluation.metrics import evaluate
    from workbench.evaluation.significance import bootstrap_ci, paired_test
    from workbench.retrieval.config import RerankConfig, load_pipeline_config
    from workbench.retrieval.pipeline import Pipeline

    queries, qrels = corpus.judged_queries(SPLIT_TEST), corpus.split_qrels(SPLIT_TEST)
    configs_dir = harness.REPO_ROOT / "configs"
    bm25 = load_pipeline_config(configs_dir / "bm25.toml")
    dense = load_pipeline_config(configs_dir / "dense.toml")
    hybrid = load_pipeline_config(configs_dir / "hybrid.toml")

    def reranked(config, depth: int, weight: float = 1.0):
        name = f"{config.name}+rerank{depth}" + (f"-w{weight}" if weight < 1.0 else "")
        rerank = RerankConfig(model=str(model_dir), depth=depth, weight=weight)
        return config.model_copy(update={"name": name, "rerank": rerank})

    rows: dict[str, dict] = {}
    per_query: dict[str, dict] = {}
    pipelines: dict[str, object] = {}

    def run(label: str, config) -> None:
        started = time.perf_counter()
        pipeline = Pipeline(config, resources)
        built = time.perf_counter()
        result = pipeline.search(queries)
        searched = time.perf_counter()
        evaluation = evaluate(result.run, qrels, METRICS)
        per_query[label] = evaluation.per_query
        pipelines[label] = pipeline
        rows[label] = {
            "config": config.to_toml_dict(),
            "queries": evaluation.num_queries,
            "metrics": evaluation.means,
            "ci95": {
                m: {"low": ci.low, "high": ci.high}
                for m in METRICS
                for ci in [bootstrap_ci(evaluation.per_query[m], seed=seed)]
            },
            "build_s": built - started,
            "search_s": searched - built,
            "stage_s": result.stage_seconds,
        }
        print(
            f"  {label}: nDCG@10 {evaluation.means['nDCG@10']:.4f}, Recall@100 {evaluation.means['Recall@100']:.4f} "
            f"(search {searched - built:.1f} s, rerank stage {result.stage_seconds.get('rerank', 0.0):.1f} s)"
        )

    print(f"test split: {len(queries)} queries")
    run("bm25", bm25)
    run("dense", dense)
    run("hybrid", hybrid)
    # Depths in increasing order: pair scores are cached by content, so each depth scores only the
    # pairs the previous one did not (20, then 30 more, then 50 more per query).
    for depth in depths:
        run(f"bm25+rerank@{depth}", reranked(bm25, depth))
    best_depth = max(depths, key=lambda d: (rows[f"bm25+rerank@{d}"]["metrics"]["nDCG@10"], -d))
    run(f"hybrid+rerank@{best_depth}", reranked(hybrid, best_depth))
    # An even blend with the first stage's scores, fixed beforehand (the study tunes the weight on
    # validation queries); every pair is already scored, so these rows cost no model time.
    run(f"bm25+rerank@{best_depth} weight 0.5", reranked(bm25, best_depth, 0.5))
    run(f"hybrid+rerank@{best_depth} weight 0.5", reranked(hybrid, best_depth, 0.5))

    for label, row in rows.items():
        if label == "bm25":
            continue
        row["vs_bm25"] = {
            m: {
                "mean_difference": c.mean_difference,
                "p_value": c.p_value,
                "wins": c.wins,
                "ties": c.ties,
                "losses": c.losses,
            }
            for m in METRICS
            for c in [paired_test(per_query[label][m], per_query["bm25"][m], seed=seed)]
        }

    latency = {"bm25": single_query_latency(pipelines["bm25"], queries, latency_sample)}
    for depth in DEPTHS:
        label = f"bm25+rerank@{depth}"
        # Latency at every depth, also where quality was not measured (the pipeline is cheap to build).
        pipeline = pipelines.get(label) or Pipeline(reranked(bm25, depth), resources)
        latency[label] = single_query_latency(pipeline, queries, latency_sample)
        print(
            f"  latency {label}: total p50 {latency[label]['total']['p50_ms']:.0f} ms, "
            f"rerank stage p50 {latency[label]['rerank_stage']['p50_ms']:.0f} / "
            f"p95 {latency[label]['rerank_stage']['p95_ms']:.0f} ms"
        )
    return {"rows": rows, "best_depth": best_depth, "latency": latency}


def write_tuning_view(source: Path, card: dict, target: Path) -> dict:
    """Writes a corpus folder that shares ``source``'s documents and queries (symlinks) and has two splits:

    ``rerank-val`` (the re-ranker's validation queries, which it never trained on) and ``test``.
    Caches are keyed by document content, so it reuses every vector and score of ``source``.
    """
    from workbench.retrieval.corpus import load_corpus

    target.mkdir(parents=True, exist_ok=True)
    (target / "qrels").mkdir(exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        link = target / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to((source / name).resolve())
    train_qrels = load_corpus(source).split_qrels(SPLIT_TRAIN)
    lines = ["query-id\tcorpus-id\tscore"] + [
        f"{query_id}\t{doc_id}\t{grade}"
        for query_id in card["validation_query_ids"]
        for doc_id, grade in train_qrels[query_id].items()
    ]
    (target / "qrels" / f"{TUNE_SPLIT}.tsv").write_text("\n".join(lines) + "\n")
    test = target / "qrels" / f"{SPLIT_TEST}.tsv"
    if test.is_symlink() or test.exists():
        test.unlink()
    test.symlink_to((source / "qrels" / f"{SPLIT_TEST}.tsv").resolve())
    return {"path": str(target), "tune_split": TUNE_SPLIT, "tune_queries": len(card["validation_query_ids"])}


def rerank_study_config(corpus: Path, model_dir: Path, n_trials: int, seed: int, name: str, depths=(20, 50)):
    """A small study over whole documents: fusion convex/rrf/bm25, BM25 k1/b, re-ranker none/trained, its depth and weight."""
    from workbench.retrieval.config import DEFAULT_MODEL
    from workbench.study.config import StudyConfig
    from workbench.study.search_space import (
        BM25Space,
        ChunkingSpace,
        DenseSpace,
        FloatRange,
        FusionSpace,
        IntRange,
        RerankSpace,
        SearchSpace,
    )

    return StudyConfig(
        name=name,
        corpus=corpus,
        tune_split=TUNE_SPLIT,
        heldout_split=SPLIT_TEST,
        metric="nDCG@10",
        n_trials=n_trials,
        sampler="tpe",
        seed=seed,
        latency_sample=5,
        space=SearchSpace(
            first_stage_depth=[100],
            chunking=ChunkingSpace(kind=["none"]),
            dense=DenseSpace(model=[DEFAULT_MODEL]),
            fusion=FusionSpace(
                method=["convex", "rrf", "bm25"],
                alpha=FloatRange(low=0.0, high=1.0),
                normalization=["minmax", "zscore"],
                rrf_k=IntRange(low=5, high=100),
            ),
            bm25=BM25Space(k1=FloatRange(low=0.5, high=2.0), b=FloatRange(low=0.3, high=1.0)),
            rerank=RerankSpace(
                model=["none", str(model_dir)], depth=list(depths), weight=FloatRange(low=0.0, high=1.0)
            ),
        ),
    )


def run_rerank_study(bench, args, card: dict, model_dir: Path) -> dict:
    """Runs the small study with the trained re-ranker as a choice; evaluates its best trial on test."""
    import optuna
    from rich.console import Console

    from workbench.reporting.tables import heldout_table
    from workbench.retrieval.models import model_fingerprint
    from workbench.study.attributes import BASELINE_ATTR, DUPLICATE_ATTR, METRICS_ATTR
    from workbench.study.export import choose_trial
    from workbench.study.objective import trial_config
    from workbench.study.runner import run_study

    view = write_tuning_view(bench.corpus_path, card, bench.state_dir / "scifact-rerank-view")
    # The model's fingerprint in the name: a retrained model starts a new study instead of resuming.
    name = f"scifact-rerank-{model_fingerprint(str(model_dir))[:8]}"
    config = rerank_study_config(Path(view["path"]), model_dir, args.study_trials, args.seed, name, args.study_depths)
    state = bench.state_dir  # the same cache as the rest: vectors and re-ranker scores are reused
    started = time.perf_counter()
    outcome = run_study(config, state, show_progress=False)
    study_wall = time.perf_counter() - started
    trials = []
    for trial in sorted(outcome.study.get_trials(deepcopy=False), key=lambda t: t.number):
        complete = trial.state == optuna.trial.TrialState.COMPLETE
        pipeline = trial_config(trial) if complete else None
        metrics = trial.user_attrs.get(METRICS_ATTR, {})
        trials.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "baseline": trial.user_attrs.get(BASELINE_ATTR),
                "duplicate_of": trial.user_attrs.get(DUPLICATE_ATTR),
                "value": trial.values[0] if complete and trial.values else None,
                "summary": describe(pipeline) if pipeline else None,
                "config": pipeline.to_toml_dict() if pipeline else None,
                "duration_s": (trial.datetime_complete - trial.datetime_start).total_seconds()
                if trial.datetime_complete and trial.datetime_start
                else None,
                "search_s": metrics.get("search_s"),
            }
        )
    best = choose_trial(outcome.study)
    started = time.perf_counter()
    report = outcome.session.heldout_report(best)
    heldout_s = time.perf_counter() - started
    Console(width=200).print(heldout_table(report))
    return {
        "name": name,
        "state_dir": str(state),
        "view": view,
        "config": config.model_dump(mode="json"),
        "wall_s": study_wall,
        "heldout_eval_s": heldout_s,
        "trials": trials,
        "best_trial": best.number,
        "best_summary": describe(trial_config(best)),
        "best_config": trial_config(best).to_toml_dict(),
        "best_tuning_value": best.values[0],
        "heldout": report.to_dict(),
    }


def describe(config) -> str:
    """One line: first stage, fusion, re-ranker."""
    line = harness.describe_pipeline(config)
    if bm25 := config.first_stage("bm25"):
        line += f" k1={bm25.k1:.2f} b={bm25.b:.2f}"
    if config.rerank.enabled:
        line += f" + rerank@{config.rerank.depth} weight {config.rerank.weight:.2f}"
    return line


def snapshot_package() -> list[str]:
    """Imports every workbench module now, so a run of an hour uses one version of the code throughout.

    The study part comes last; without this it would import whatever the package files hold by
    then, which may be a different (or half-edited) version when someone works on the tree.
    """
    import importlib
    import pkgutil

    import workbench

    names = [info.name for info in pkgutil.walk_packages(workbench.__path__, "workbench.")]
    for module in names:
        importlib.import_module(module)
    return names


def main() -> None:
    parser = harness.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default: %(default)s)")
    parser.add_argument(
        "--learning-rate", type=float, default=1e-4, help="training learning rate (default: %(default)s)"
    )
    parser.add_argument("--max-pairs", type=int, default=None, help="cap on training pairs (default: all)")
    parser.add_argument(
        "--seed", type=int, default=42, help="training, sampler and bootstrap seed (default: %(default)s)"
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="where the trained model goes (default: <state-dir>/reranker-scifact)",
    )
    parser.add_argument(
        "--reuse-model", action="store_true", help="skip training when --model-dir already holds a trained model"
    )
    parser.add_argument(
        "--latency-sample", type=int, default=20, help="test queries timed one by one per depth (default: %(default)s)"
    )
    parser.add_argument(
        "--quality-depths",
        type=int,
        nargs="+",
        default=list(DEPTHS),
        help="re-ranking depths whose test quality is measured (default: %(default)s; latency is always at 20/50/100)",
    )
    parser.add_argument(
        "--study-depths",
        type=int,
        nargs="+",
        default=[20, 50],
        help="re-ranker depths in the study space (default: %(default)s)",
    )
    parser.add_argument(
        "--study-trials", type=int, default=0, help="trials of the study with the re-ranker as a choice (0: no study)"
    )
    args = parser.parse_args()
    snapshot_package()
    bench = harness.start(NAME, args)

    from workbench.retrieval.cache import Cache
    from workbench.retrieval.corpus import load_corpus
    from workbench.retrieval.pipeline import Resources

    corpus = load_corpus(bench.corpus_path)
    cache = Cache(bench.state_dir / "cache")
    model_dir = (args.model_dir or bench.state_dir / "reranker-scifact").resolve()
    machine = harness.machine_info()
    loads = {"start": machine["load_average"], "code_version_at_start": machine["workbench_code_version"]}
    card, training = train_or_reuse(args, corpus, model_dir, cache)
    loads["after_training"] = harness.machine_info()["load_average"]
    resources = Resources(corpus, cache)
    started = time.perf_counter()
    evaluation = evaluate_configs(corpus, resources, model_dir, args.seed, args.latency_sample, args.quality_depths)
    evaluation_wall = time.perf_counter() - started
    loads["after_evaluation"] = harness.machine_info()["load_average"]
    print_tables(args, card, training, evaluation, None)
    if args.study_trials > 0:
        # Write what is measured so far first: the study is the longest and last part.
        temp_dirs, bench._temp_dirs = bench._temp_dirs, []  # keep the (cut) corpus: the study still reads it
        finish(bench, args, card, training, evaluation, evaluation_wall, None, model_dir, loads, partial=True)
        bench._temp_dirs = temp_dirs
        study = run_rerank_study(bench, args, card, model_dir)
        loads["after_study"] = harness.machine_info()["load_average"]
        print_tables(args, card, training, None, study)
        finish(bench, args, card, training, evaluation, evaluation_wall, study, model_dir, loads)
    else:
        finish(bench, args, card, training, evaluation, evaluation_wall, None, model_dir, loads)


def print_tables(args, card: dict, training: dict, evaluation: dict | None, study: dict | None) -> None:
    """Prints the training, test-split, latency and (when given) study tables."""
    if evaluation is not None:
        rows = evaluation["rows"]
        harness.print_table(
            f"re-ranker training ({card['epochs']} epoch(s), seed {card['seed']})",
            ["figure", "value"],
            [
                ["training queries / validation queries", f"{card['training_queries']} / {card['validation_queries']}"],
                [
                    "pairs (positive / negative)",
                    f"{card['pairs']} ({card['positive_pairs']} / {card['negative_pairs']})",
                ],
                ["validation nDCG@10 (re-ranking mined candidates)", card["validation_ndcg_at_10"]],
                ["training seconds (card: mining + fine-tuning + validation)", card["training_seconds"]],
                ["mining warm-up s (this run)", training.get("mining_warmup_s")],
            ],
        )
        harness.print_table(
            f"test split ({rows['bm25']['queries']} queries)",
            ["config", "nDCG@10", "95% CI", "Recall@100", "Δ nDCG@10 vs BM25", "p", "W/T/L", "rerank stage s"],
            [
                [
                    label,
                    row["metrics"]["nDCG@10"],
                    f"[{row['ci95']['nDCG@10']['low']:.3f}, {row['ci95']['nDCG@10']['high']:.3f}]",
                    row["metrics"]["Recall@100"],
                    row.get("vs_bm25", {}).get("nDCG@10", {}).get("mean_difference"),
                    row.get("vs_bm25", {}).get("nDCG@10", {}).get("p_value"),
                    "/".join(str(row["vs_bm25"]["nDCG@10"][k]) for k in ("wins", "ties", "losses"))
                    if "vs_bm25" in row
                    else None,
                    row["stage_s"].get("rerank"),
                ]
                for label, row in rows.items()
            ],
        )
        harness.print_table(
            f"single-query latency, ms (first {args.latency_sample} test queries, 1 torch thread, no caches)",
            ["pipeline", "total p50", "total p95", "rerank p50", "rerank p95"],
            [
                [
                    label,
                    lat["total"]["p50_ms"],
                    lat["total"]["p95_ms"],
                    lat["rerank_stage"]["p50_ms"],
                    lat["rerank_stage"]["p95_ms"],
                ]
                for label, lat in evaluation["latency"].items()
            ],
        )
    if study is not None:
        tuned = study["heldout"]["systems"]["tuned"]["nDCG@10"]
        harness.print_table(
            f"study {study['name']}: {len(study['trials'])} trials tuned on {study['view']['tune_queries']} "
            f"'{TUNE_SPLIT}' queries, best trial {study['best_trial']}",
            ["trial", "tuning nDCG@10", "duration s", "config"],
            [[t["number"], t["value"], t["duration_s"], t["summary"] or t["state"]] for t in study["trials"]],
        )
        print(
            f"best: {study['best_summary']}; test nDCG@10 {tuned['mean']:.4f} "
            f"[{tuned['ci_low']:.3f}, {tuned['ci_high']:.3f}]"
        )
        print(study["heldout"]["verdict"])


def finish(bench, args, card, training, evaluation, evaluation_wall, study, model_dir, loads, partial=False) -> None:
    """Writes the JSON report (``partial``: before the study, which then is still to come)."""
    from workbench.retrieval.models import model_fingerprint

    rows = evaluation["rows"]
    best_depth = evaluation["best_depth"]
    best_overall = max(
        [row["metrics"]["nDCG@10"] for row in rows.values()]
        + ([study["heldout"]["systems"]["tuned"]["nDCG@10"]["mean"]] if study else [])
    )
    goal = REFERENCE["workbench_goal_ndcg_at_10"]
    print(f"best test nDCG@10 reached: {best_overall:.4f}; goal {goal}: {'met' if best_overall >= goal else 'NOT met'}")
    latency = evaluation["latency"]
    bench.finish(
        {
            "partial_study_pending": partial,
            "training_s": card["training_seconds"],
            "training_wall_s": training.get("train_reranker_wall_s"),
            "training_pairs": card["pairs"],
            "positive_pairs": card["positive_pairs"],
            "negative_pairs": card["negative_pairs"],
            "training_queries": card["training_queries"],
            "validation_queries": card["validation_queries"],
            "validation_ndcg_at_10": card["validation_ndcg_at_10"],
            "epochs": card["epochs"],
            "max_pairs": args.max_pairs,
            "test_ndcg_at_10": {label: row["metrics"]["nDCG@10"] for label, row in rows.items()},
            "test_recall_at_100": {label: row["metrics"]["Recall@100"] for label, row in rows.items()},
            "best_depth": best_depth,
            "bm25_rerank_best_ndcg_at_10": rows[f"bm25+rerank@{best_depth}"]["metrics"]["nDCG@10"],
            "hybrid_rerank_best_depth_ndcg_at_10": rows[f"hybrid+rerank@{best_depth}"]["metrics"]["nDCG@10"],
            "rerank_latency_ms": {
                depth: {
                    "rerank_p50_ms": latency[f"bm25+rerank@{depth}"]["rerank_stage"]["p50_ms"],
                    "rerank_p95_ms": latency[f"bm25+rerank@{depth}"]["rerank_stage"]["p95_ms"],
                    "total_p50_ms": latency[f"bm25+rerank@{depth}"]["total"]["p50_ms"],
                    "total_p95_ms": latency[f"bm25+rerank@{depth}"]["total"]["p95_ms"],
                }
                for depth in DEPTHS
            },
            "latency_sample": args.latency_sample,
            "study_best_test_ndcg_at_10": study["heldout"]["systems"]["tuned"]["nDCG@10"] if study else None,
            "study_best_config": study["best_summary"] if study else None,
            "best_test_ndcg_at_10": best_overall,
            "evaluation_wall_s": evaluation_wall,
            "study_wall_s": study["wall_s"] if study else None,
        },
        {**REFERENCE, "goal_met": best_overall >= goal, "gap_to_goal": goal - best_overall},
        {
            "model_dir": str(model_dir),
            "model_fingerprint": model_fingerprint(str(model_dir)),
            "card": {k: v for k, v in card.items() if not k.endswith("_query_ids")},
            "training_run": training,
            "load_averages_and_code_version": loads,
            "evaluation": evaluation,
            "study": study,
            "notes": [
                (
                    "test rows: configs/bm25.toml, dense.toml, hybrid.toml as shipped; '+rerank@d' adds the trained "
                    "model at depth d; the hybrid row uses the depth with the best BM25+rerank test nDCG@10 (chosen on test)"
                ),
                (
                    "rerank stage s: seconds re-scoring the pairs not already in the score cache (depths run in "
                    "increasing order, so each scores only the pairs the previous depth did not)"
                ),
                (
                    "latency: Pipeline.search of one query at a time with query_cache=False, one torch thread, as "
                    "measure_latency; 'rerank' is the re-ranking stage alone"
                ),
                "study: tuned on the re-ranker's validation queries (train split, never trained on), held out on test",
            ],
        },
    )


if __name__ == "__main__":
    main()
