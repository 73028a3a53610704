"""Parallel workers: wall time of the same study with 1 and with N local workers, cache warm.

Warms the cache first (every chunking of the study's space: chunk lists, BM25 tokens, document
and tuning-query embeddings), then runs the study once per worker count, each time under a new
study name with fresh Optuna and MLflow stores but the same warm cache, so the runs compare the
trials themselves, not the encoding. Reports wall seconds, finished trials and the speed-up.

    .venv/bin/python benchmarks/workers.py [--study studies/demo.toml] [--workers 1 2]
        [--trials N] [--state-dir DIR] [--out benchmarks/results/workers-<study>.json]
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import harness

NAME = "workers"


def study_copy(config, name: str, n_trials: int, folder: Path) -> Path:
    """Writes the study under another name (absolute corpus path) and returns the file."""
    import tomli_w

    data = config.model_dump(mode="json", exclude_none=True)
    data |= {"name": name, "n_trials": n_trials, "corpus": str(config.corpus)}
    path = folder / f"{name}.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def warm_cache(config, cache_dir: Path) -> float:
    """Encodes and tokenises everything the study's trials can ask for; returns seconds."""
    from workbench.retrieval.cache import Cache
    from workbench.retrieval.config import BM25Config, ChunkingConfig, DenseConfig, PipelineConfig
    from workbench.retrieval.corpus import load_corpus
    from workbench.retrieval.pipeline import Pipeline, Resources
    from workbench.study.splits import study_splits

    started = time.perf_counter()
    corpus = load_corpus(config.corpus)
    queries = study_splits(config, corpus).tune.queries
    resources = Resources(corpus, Cache(cache_dir))
    space = config.space
    kinds = space.chunking.kind if isinstance(space.chunking.kind, list) else [space.chunking.kind]
    sizes = space.chunking.chunk_size if isinstance(space.chunking.chunk_size, list) else [space.chunking.chunk_size]
    overlaps = space.chunking.chunk_overlap_fraction
    overlaps = overlaps if isinstance(overlaps, list) else [overlaps]
    models = space.dense.model if isinstance(space.dense.model, list) else [space.dense.model]
    for kind in kinds:
        for size in sizes if kind != "none" else [1000]:
            for overlap in overlaps if kind != "none" else [0.0]:
                chunking = ChunkingConfig(kind=kind, chunk_size=size, chunk_overlap=int(overlap * size))
                for model in models:
                    pipeline_config = PipelineConfig(
                        name="warm",
                        chunking=chunking.model_copy(update={"tokenizer": model}),
                        retrievers=(BM25Config(), DenseConfig(model=model)),
                    )
                    print(f"  warming {kind} {size if kind != 'none' else ''} {model}", flush=True)
                    Pipeline(pipeline_config, resources).search(queries)
    return time.perf_counter() - started


def main() -> None:
    parser = harness.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=harness.REPO_ROOT / "studies" / "demo.toml")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default: 1 2)")
    parser.add_argument("--trials", type=int, default=None, help="finished trials per run (default: the study's)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from workbench.study.config import load_study_config
    from workbench.study.runner import run_study

    config = load_study_config(args.study)
    if args.corpus == harness.DEFAULT_CORPUS:
        args.corpus = config.corpus  # the study's own corpus unless --corpus says otherwise
    if args.out is None:
        args.out = harness.RESULTS_DIR / f"{NAME}-{config.name}.json"
    bench = harness.start(NAME, args)
    config = config.model_copy(update={"corpus": bench.corpus_path})
    n_trials = args.trials or config.n_trials
    cache_dir = bench.state_dir / "cache"
    warm_s = warm_cache(config, cache_dir)
    print(f"cache warmed in {warm_s:.1f} s")

    runs = []
    for workers in args.workers:
        name = f"{config.name}-w{workers}-{int(time.time())}"
        state = bench.state_dir / "runs" / name
        state.mkdir(parents=True)
        (state / "cache").symlink_to(cache_dir, target_is_directory=True)
        study_file = study_copy(config, name, n_trials, state)
        run_config = load_study_config(study_file)
        started = time.perf_counter()
        outcome = run_study(run_config, state, show_progress=False, workers=workers, study_file=study_file)
        wall = time.perf_counter() - started
        trials = outcome.study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state.name == "COMPLETE"]
        durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in finished]
        best = max((t.values[0] for t in finished), default=None)
        runs.append(
            {
                "workers": workers,
                "wall_s": wall,
                "finished_trials": len(finished),
                "all_trials": len(trials),
                "mean_trial_s": sum(durations) / len(durations) if durations else None,
                "best_value": best,
            }
        )
        print(f"  {workers} worker(s): {wall:.1f} s, {len(finished)} finished trials", flush=True)

    base = runs[0]["wall_s"]
    rows = [
        [
            run["workers"],
            f"{run['wall_s']:.1f}",
            run["finished_trials"],
            f"{run['mean_trial_s']:.2f}",
            f"{base / run['wall_s']:.2f}x",
        ]
        for run in runs
    ]
    harness.print_table(
        f"study {config.name}, {n_trials} trials, warm cache",
        ["workers", "wall s", "finished", "mean trial s", "speed-up"],
        rows,
    )
    figures = {"warm_up_s": warm_s, "runs": runs, "speedup": {run["workers"]: base / run["wall_s"] for run in runs}}
    bench.finish(
        figures,
        target={"note": "no target: 2 cores bound the speed-up near 2x"},
        details={"study": str(args.study), "trials": n_trials, "cpu_count": os.cpu_count()},
    )


if __name__ == "__main__":
    main()
