"""A fixed 30% held-out split against 5-fold cross-validation, on small judged collections.

For each corpus, runs the same study twice with the cache warm (the documents encoded once,
beforehand): once holding out a seeded 30% of the judged queries (``heldout = "split"``), once
with ``heldout = "kfold"`` and 5 folds. Reports, for each: the number of queries behind the
verdict, the width of the tuned pipeline's 95% bootstrap CI on the study metric, its difference
from the best baseline with the raw and Holm-corrected p, and the wall time of the run (trials,
fold studies and the verdict; the one-off encoding excluded).

    .venv/bin/python benchmarks/crossval.py [--study studies/cranfield.toml]
        [--corpora ../shared/corpora/cranfield ../shared/corpora/cisi] [--trials N] [--state-dir DIR]
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import harness

NAME = "crossval"
SHARED = harness.REPO_ROOT.parent / "shared" / "corpora"


def study_variant(config, corpus: Path, mode: str, n_trials: int | None):
    """The study on ``corpus`` with a fixed 30% split or 5 folds, default baselines, under its own name."""
    from workbench.study.config import StudyConfig

    data = config.model_dump(exclude_none=True)
    data |= {"name": f"{NAME}-{corpus.name}-{mode}", "corpus": corpus, "heldout": mode, "baselines": "default"}
    data.pop("heldout_split", None)
    data.pop("baseline_trials", None)
    if mode == "split":
        data |= {"heldout_fraction": 0.3}
    else:
        data.pop("heldout_fraction", None)
        data |= {"folds": 5}
    if n_trials is not None:
        data["n_trials"] = n_trials
    return StudyConfig.model_validate(data)


def warm(config, state_dir: Path) -> float:
    """Encodes the documents and judged queries once (every pipeline of the space reads them from the cache)."""
    from workbench.retrieval.cache import Cache
    from workbench.retrieval.corpus import load_corpus
    from workbench.retrieval.pipeline import Pipeline, Resources
    from workbench.study.space import baseline_config

    started = time.perf_counter()
    corpus = load_corpus(config.corpus)
    resources = Resources(corpus, Cache(state_dir / "cache"))
    for name in ("bm25", "dense"):
        Pipeline(baseline_config(name, config.space, "warm"), resources).search(
            corpus.judged_queries(config.tune_split)
        )
    return time.perf_counter() - started


def measure(config, state_dir: Path) -> dict:
    """Runs the study and its verdict; returns the figures of one row."""
    from workbench.study.runner import run_study

    started = time.perf_counter()
    outcome = run_study(config, state_dir, show_progress=False)
    verdict = outcome.session.judge(outcome.study, outcome.study.best_trial)
    wall = time.perf_counter() - started
    report = verdict.heldout
    tuned = report.intervals["tuned"][report.metric]
    baseline = report.best_baseline
    comparison = report.comparisons[baseline][report.metric]
    row = {
        "mode": config.heldout,
        "verdict_queries": report.num_queries,
        "tuned_mean": tuned.mean,
        "ci_low": tuned.low,
        "ci_high": tuned.high,
        "ci_width": tuned.high - tuned.low,
        "best_baseline": baseline,
        "difference": comparison.mean_difference,
        "p_value": comparison.p_value,
        "p_holm": report.corrected[baseline][report.metric],
        "beats_best_baseline": report.beats_baselines,
        "wall_s": wall,
    }
    if verdict.crossval is not None:
        row["distinct_fold_configs"] = verdict.crossval.distinct_configs
    return row


def main() -> None:
    parser = harness.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=harness.REPO_ROOT / "studies" / "cranfield.toml")
    parser.add_argument("--corpora", type=Path, nargs="+", default=[SHARED / "cranfield", SHARED / "cisi"])
    parser.add_argument("--trials", type=int, default=None, help="trials per study (default: the study's)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from workbench.study.config import load_study_config

    base = load_study_config(args.study)
    args.corpus = args.corpora[0]
    bench = harness.start(NAME, args)
    rows, warm_seconds = [], {}
    for corpus in args.corpora:
        corpus = corpus.resolve()
        for mode in ("split", "kfold"):
            config = study_variant(base, corpus, mode, args.trials)
            if corpus.name not in warm_seconds:
                warm_seconds[corpus.name] = warm(config, bench.state_dir)
                print(f"{corpus.name}: encoded in {warm_seconds[corpus.name]:.0f} s (not counted below)", flush=True)
            row = {"corpus": corpus.name} | measure(config, bench.state_dir)
            print(row, flush=True)
            rows.append(row)
    header = "| corpus | held out | queries behind the verdict | tuned nDCG@10 [95% CI] | CI width | Δ vs best baseline | p | Holm p | wall s |"
    print(header)
    print("|" + "---|" * 9)
    for row in rows:
        mode = "30% split" if row["mode"] == "split" else "5 folds"
        print(
            f"| {row['corpus']} | {mode} | {row['verdict_queries']} | {row['tuned_mean']:.3f} "
            f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}] | {row['ci_width']:.3f} | {row['difference']:+.3f} "
            f"({row['best_baseline']}) | {row['p_value']:.3g} | {row['p_holm']:.3g} | {row['wall_s']:.0f} |"
        )
    bench.finish({"rows": rows, "encoding_s": warm_seconds}, {"none fixed": "compares the two ways to judge"})


if __name__ == "__main__":
    main()
