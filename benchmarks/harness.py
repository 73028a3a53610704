"""What every speed benchmark shares: flags, a corpus (whole or cut), a state folder, the machine, the report.

Each benchmark script is ``.venv/bin/python benchmarks/<name>.py [--corpus DIR] [--max-docs N]
[--out FILE] [--state-dir DIR]``. It prints a table and writes a JSON file with the figures, the
command line and the machine, so a figure can always be traced back to how it was made.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "corpora" / "scifact"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    """Returns the parser with the flags every benchmark takes; scripts add their own."""
    parser = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=description)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus folder (default: %(default)s)")
    parser.add_argument(
        "--max-docs",
        type=int,
        default=None,
        help="keep only the first N documents, and the queries whose judged documents are all kept (quick check)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"JSON result file (default: benchmarks/results/{name}.json, or {name}-maxdocs<N>.json with --max-docs)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="state/cache folder to use instead of a fresh temporary one (then 'cold' is not guaranteed)",
    )
    parser.add_argument("--keep-state", action="store_true", help="keep the temporary state folder afterwards")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's own choice)"
    )
    return parser


@dataclass
class Bench:
    """One benchmark run: where its corpus and state live, and what it will report."""

    name: str
    args: argparse.Namespace
    corpus_path: Path  # the corpus the benchmark reads: the given one, or a cut of it
    state_dir: Path
    state_is_fresh: bool
    out_path: Path
    corpus_info: dict[str, Any]
    _temp_dirs: list[Path] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def finish(self, figures: dict[str, Any], target: dict[str, Any], details: dict[str, Any] | None = None) -> dict:
        """Writes the JSON report, removes temporary folders (unless --keep-state); returns the report."""
        report = {
            "benchmark": self.name,
            "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
            "cwd": os.getcwd(),
            "machine": machine_info(),
            "corpus": self.corpus_info,
            "state_dir": str(self.state_dir) if (self.args.keep_state or not self.state_is_fresh) else None,
            "state_was_fresh": self.state_is_fresh,
            "figures": figures,
            "target": target,
            "details": details or {},
            "benchmark_wall_s": time.perf_counter() - self.started,
        }
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.out_path.write_text(json.dumps(report, indent=2, default=json_default) + "\n")
        print(f"wrote {self.out_path}")
        if not self.args.keep_state:
            for folder in self._temp_dirs:
                shutil.rmtree(folder, ignore_errors=True)
        elif self._temp_dirs:
            print("kept: " + ", ".join(str(folder) for folder in self._temp_dirs))
        return report


def json_default(value: Any) -> Any:
    """``json.dumps``' fallback: paths as strings, numpy scalars as numbers."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def start(name: str, args: argparse.Namespace) -> Bench:
    """Prepares the corpus (cut to ``--max-docs`` when given) and a fresh state folder; returns the Bench."""
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    temp_dirs: list[Path] = []
    corpus_path = args.corpus.resolve()
    if args.max_docs is not None:
        cut_dir = Path(tempfile.mkdtemp(prefix=f"wb-bench-{name}-corpus-"))
        temp_dirs.append(cut_dir)
        corpus_info = write_corpus_cut(corpus_path, args.max_docs, cut_dir)
        corpus_path = cut_dir
    else:
        corpus_info = describe_corpus(corpus_path)
    corpus_info["source"] = str(args.corpus.resolve())
    corpus_info["max_docs"] = args.max_docs
    if args.state_dir is not None:
        state_dir, fresh = args.state_dir.resolve(), False
        state_dir.mkdir(parents=True, exist_ok=True)
    else:
        state_dir, fresh = Path(tempfile.mkdtemp(prefix=f"wb-bench-{name}-state-")), True
        temp_dirs.append(state_dir)
    if args.out is not None:
        out_path = args.out
    elif args.max_docs is not None:
        out_path = RESULTS_DIR / f"{name}-maxdocs{args.max_docs}.json"
    else:
        out_path = RESULTS_DIR / f"{name}.json"
    print(
        f"{name}: corpus {corpus_info['source']} ({corpus_info['documents']} docs"
        + (f", cut to the first {args.max_docs}" if args.max_docs is not None else "")
        + f"), state {state_dir}{'' if fresh else ' (given, may be warm)'}"
    )
    return Bench(name, args, corpus_path, state_dir, fresh, out_path, corpus_info, temp_dirs)


def describe_corpus(path: Path) -> dict[str, Any]:
    """Returns document count and judged queries per split of the corpus at ``path``."""
    from workbench.retrieval.corpus import load_corpus

    corpus = load_corpus(path)
    return {
        "path": str(path),
        "documents": len(corpus.documents),
        "judged_queries": {split: len(corpus.judged_queries(split)) for split in corpus.splits()},
        "fingerprint": corpus.fingerprint,
    }


def write_corpus_cut(source: Path, max_docs: int, target: Path) -> dict[str, Any]:
    """Writes a BEIR corpus of the first ``max_docs`` documents of ``source`` into ``target``.

    A query is kept in a split only when every document it is judged against is kept, so the
    cut's qrels stay valid. Returns the same description as ``describe_corpus``.
    """
    from workbench.retrieval.corpus import load_corpus

    corpus = load_corpus(source)
    kept = dict(list(corpus.documents.items())[:max_docs])
    with (target / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for doc in kept.values():
            handle.write(json.dumps({"_id": doc.doc_id, "title": doc.title, "text": doc.text}) + "\n")
    (target / "qrels").mkdir()
    used_queries: set[str] = set()
    for split in corpus.splits():
        qrels = corpus.split_qrels(split)
        rows = [
            (query_id, doc_id, grade)
            for query_id, grades in qrels.items()
            if all(doc_id in kept for doc_id in grades)
            for doc_id, grade in grades.items()
        ]
        used_queries.update(query_id for query_id, _, _ in rows)
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, d, g in rows]
        (target / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    with (target / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for query_id, text in corpus.queries.items():
            if query_id in used_queries:
                handle.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    return describe_corpus(target)


def machine_info() -> dict[str, Any]:
    """Returns what a reader needs to compare timings: cores, platform, threads, load, date, versions."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch_threads"] = None
    try:
        from workbench.provenance import code_version

        info["workbench_code_version"] = code_version()
    except Exception as error:  # provenance is informative only; never fail a benchmark for it
        info["workbench_code_version"] = f"unknown ({type(error).__name__})"
    return info


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Prints a table with rich (numbers as given; floats to 3 significant places)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*(cell_text(value) for value in row))
    Console(width=max(150, shutil.get_terminal_size().columns)).print(table)


def cell_text(value: Any) -> str:
    """Returns a table cell: "-" for None, yes/no, floats to 3 significant places (1 decimal from 100)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


# --- the study of studies/scifact.toml, built in code so it can point at any corpus ----------------


def scifact_study_config(corpus: Path, n_trials: int, sampler: str, seed: int, name: str = "scifact"):
    """Returns a StudyConfig equal to studies/scifact.toml except for corpus, trials, sampler and seed."""
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
        tune_split="train",
        heldout_split="test",
        metric="nDCG@10",
        n_trials=n_trials,
        sampler=sampler,
        seed=seed,
        latency_sample=20,
        space=SearchSpace(
            first_stage_depth=[100, 200],
            chunking=ChunkingSpace(kind=["none", "recursive"], chunk_size=[1000], chunk_overlap_fraction=[0.2]),
            dense=DenseSpace(model=[DEFAULT_MODEL]),
            fusion=FusionSpace(
                method=["convex", "rrf", "bm25", "dense"],
                alpha=FloatRange(low=0.0, high=1.0),
                normalization=["minmax", "zscore"],
                rrf_k=IntRange(low=5, high=100),
            ),
            bm25=BM25Space(k1=FloatRange(low=0.5, high=2.0), b=FloatRange(low=0.3, high=1.0)),
            rerank=RerankSpace(model=["none"]),
        ),
    )


def matches_scifact_toml(config) -> bool | None:
    """Returns whether ``config`` has the search space and settings of studies/scifact.toml (None if unreadable)."""
    from workbench.study.config import load_study_config

    try:
        reference = load_study_config(REPO_ROOT / "studies" / "scifact.toml")
    except Exception:
        return None
    ignored = {"corpus", "n_trials", "sampler", "seed"}
    return config.model_dump(exclude=ignored) == reference.model_dump(exclude=ignored)


def add_study_flags(parser: argparse.ArgumentParser, default_trials: int = 30) -> None:
    """Adds --trials, --sampler and --seed for benchmarks that run a study."""
    parser.add_argument("--trials", type=int, default=default_trials, help="finished trials (default: %(default)s)")
    parser.add_argument(
        "--sampler", choices=("tpe", "random"), default="tpe", help="Optuna sampler (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=42, help="sampler seed (default: %(default)s)")


def timed_study(bench: Bench, n_trials: int, sampler: str, seed: int) -> dict[str, Any]:
    """Runs the scifact-like study with ``workbench.study.runner.run_study`` in the bench's state folder.

    Returns wall seconds, the outcome, and one row per trial (number, state, config, durations,
    the trial's own encoding/build/search seconds).
    """
    import optuna

    from workbench.study.attributes import BASELINE_ATTR, FAIL_ATTR, METRICS_ATTR
    from workbench.study.objective import trial_config
    from workbench.study.runner import run_study

    duplicate_attr = "workbench.duplicate_of"  # set on a trial that reused an identical earlier trial's score

    config = scifact_study_config(bench.corpus_path, n_trials, sampler, seed)
    started = time.perf_counter()
    outcome = run_study(config, bench.state_dir, show_progress=False)
    wall = time.perf_counter() - started
    trials = []
    for trial in sorted(outcome.study.get_trials(deepcopy=False), key=lambda t: t.number):
        duplicate_of = trial.user_attrs.get(duplicate_attr)
        # A duplicate carries a copy of the earlier trial's metrics; it did none of that work itself.
        metrics = {} if duplicate_of is not None else trial.user_attrs.get(METRICS_ATTR, {})
        complete = trial.state == optuna.trial.TrialState.COMPLETE
        pipeline = trial_config(trial) if complete else None
        duration = (
            (trial.datetime_complete - trial.datetime_start).total_seconds()
            if trial.datetime_complete and trial.datetime_start
            else None
        )
        trials.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "baseline": trial.user_attrs.get(BASELINE_ATTR),
                "duplicate_of": duplicate_of,
                "fail_reason": trial.user_attrs.get(FAIL_ATTR),
                "value": trial.values[0] if complete and trial.values else None,
                "config": pipeline,
                "summary": describe_pipeline(pipeline) if pipeline else None,
                "duration_s": duration,
                "encoding_s": metrics.get("encoding_s"),
                "index_build_s": metrics.get("index_build_s"),
                "search_s": metrics.get("search_s"),
            }
        )
    return {
        "config": config,
        "space_matches_studies_scifact_toml": matches_scifact_toml(config),
        "wall_s": wall,
        "outcome": outcome,
        "trials": trials,
    }


def describe_pipeline(config) -> str:
    """Returns a one-line summary of a pipeline config: chunking, fusion, depth."""
    chunking = (
        "whole"
        if config.chunking.kind == "none"
        else f"{config.chunking.kind}{config.chunking.chunk_size}/{config.chunking.chunk_overlap}"
    )
    fusion = config.fusion
    names = "+".join(retriever.name for retriever in config.retrievers)
    if len(config.retrievers) == 1:
        how = names
    elif fusion.method == "convex":
        weights = "/".join(f"{weight:.2f}" for weight in config.fusion_weights)
        how = f"{names} convex {weights} {fusion.normalization}"
    else:
        how = f"{names} rrf k={fusion.rrf_k}"
    return f"{chunking} {how} d={config.first_stage_depth}"


def trial_rows_for_json(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Returns the trial rows with configs as plain dicts."""
    return [
        {key: (value.to_toml_dict() if key == "config" and value is not None else value) for key, value in row.items()}
        for row in trials
    ]
