"""Encoding on a Ray cluster: a cold, encoding-bound study on 1 node against k nodes, one CPU each.

For each node count, on a fresh local Ray cluster (a head with no CPU for work, then N nodes of
one CPU each, so the comparison is fair on a small machine):

1. encoding: every document text of the study's chunkings, encoded cold into a fresh shared
   cache through the cluster, timed; texts encoded per node;
2. study: the same study, cold (another fresh cache), run by `workbench run --workers 2 --ray
   ADDRESS --cache FOLDER`, timed; trials per worker, texts encoded per node.

Reports both wall times and their ratio to one node (goal: at most 0.6x with 2 nodes).

    .venv/bin/python benchmarks/distributed.py [--corpus DIR] [--max-docs N] [--tune-split train]
        [--heldout-split test] [--nodes 1 2] [--trials 6] [--out FILE]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import harness

NAME = "distributed"
# Dense only, over whole documents and one chunking: a study whose cost is encoding.
SPACE = """
[space.chunking]
kind = ["none", "recursive"]
chunk_size = [1000]
chunk_overlap_fraction = [0.15]
[space.fusion]
method = ["dense", "convex"]
alpha = { low = 0.0, high = 1.0 }
"""


def write_study(folder: Path, name: str, corpus: Path, args) -> Path:
    heldout = f'heldout_split = "{args.heldout_split}"' if args.heldout_split else 'heldout = "split"'
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\ncorpus = "{corpus}"\ntune_split = "{args.tune_split}"\n{heldout}\n'
        f'n_trials = {args.trials}\nsampler = "random"\nseed = 7\nlatency_sample = 5\n{SPACE}'
    )
    return path


def document_texts(study_file: Path) -> list[str]:
    """Returns the distinct chunk texts of every chunking the study's space holds."""
    from workbench.retrieval.chunking import chunk_documents
    from workbench.retrieval.corpus import load_corpus
    from workbench.study.config import load_study_config
    from workbench.study.space import space_points

    config = load_study_config(study_file)
    corpus = load_corpus(config.corpus)
    chunkings = {point.config.chunking for point in space_points(config.space)}
    return sorted({chunk.text for chunking in chunkings for chunk in chunk_documents(corpus.documents.values(), chunking)})


def rows_per_node(cache: Path) -> dict[str, int]:
    counts: Counter = Counter()
    for manifest in cache.glob("embeddings/*/document/*.json"):
        content = json.loads(manifest.read_text())
        counts[content.get("origin", {}).get("ray_node", "outside the cluster")[:12]] += content["rows"]
    return dict(counts)


def run_on(nodes: int, study_file: Path, texts: list[str], folder: Path) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from workbench.retrieval.cache import Cache
    from workbench.retrieval.cluster import RayCluster
    from workbench.retrieval.config import DenseConfig
    from workbench.retrieval.retrievers.dense import Encoder
    from workbench.study.attributes import WORKER_ATTR
    from workbench.study.config import load_study_config
    from workbench.study.optuna_study import load_optuna_study, study_locations

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        encoding_cache = folder / "encoding-cache"
        started = time.perf_counter()
        Encoder(DenseConfig(), Cache(encoding_cache, RayCluster(cluster.address))).encode(texts, "document")
        encoding_s = time.perf_counter() - started
        ray.shutdown()
        print(f"  {nodes} node(s): encoded {len(texts)} texts in {encoding_s:.1f} s", flush=True)

        state, study_cache = folder / "state", folder / "study-cache"
        command = [
            sys.executable, "-m", "workbench.cli", "run", str(study_file), "--state-dir", str(state),
            "--workers", "2", "--ray", cluster.address, "--cache", str(study_cache),
        ]  # fmt: skip
        started = time.perf_counter()
        finished = subprocess.run(command, capture_output=True, text=True, check=False)
        study_s = time.perf_counter() - started
        if finished.returncode != 0:
            raise SystemExit(f"the study failed:\n{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}")
        print(f"  {nodes} node(s): cold study in {study_s:.1f} s", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    config = load_study_config(study_file)
    study = load_optuna_study(config, study_locations(config, state))
    complete = [trial for trial in study.trials if trial.state.name == "COMPLETE"]
    return {
        "nodes": nodes,
        "encoding_s": encoding_s,
        "encoding_texts_per_node": rows_per_node(encoding_cache),
        "study_s": study_s,
        "study_texts_per_node": rows_per_node(study_cache),
        "trials_per_worker": dict(Counter(trial.user_attrs.get(WORKER_ATTR, "?") for trial in complete)),
    }


def main() -> None:
    parser = harness.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--tune-split", default="train")
    parser.add_argument("--heldout-split", default="test", help="'' to hold out a fraction of the tuning split")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2], help="node counts (default: 1 2)")
    parser.add_argument("--trials", type=int, default=6, help="finished trials of each study (default: 6)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the nodes inherit it
    bench = harness.start(NAME, args)
    study_file = write_study(bench.state_dir, "distributed", bench.corpus_path, args)
    texts = document_texts(study_file)
    print(f"{len(texts)} distinct document texts over the study's chunkings", flush=True)

    runs = []
    for nodes in args.nodes:
        folder = bench.state_dir / f"nodes-{nodes}"
        folder.mkdir()
        runs.append(run_on(nodes, study_file, texts, folder))

    base = runs[0]
    rows = [
        [
            run["nodes"],
            f"{run['encoding_s']:.1f}",
            f"{run['encoding_s'] / base['encoding_s']:.2f}x",
            f"{run['study_s']:.1f}",
            f"{run['study_s'] / base['study_s']:.2f}x",
            " ".join(str(count) for count in run["study_texts_per_node"].values()),
            " ".join(str(count) for count in run["trials_per_worker"].values()),
        ]
        for run in runs
    ]
    harness.print_table(
        f"cold study, {len(texts)} document texts, {args.trials} trials, 2 workers; nodes of one CPU each",
        ["nodes", "encoding s", "ratio", "study s", "ratio", "texts per node", "trials per worker"],
        rows,
    )
    figures = {
        "texts": len(texts),
        "runs": runs,
        "encoding_ratio": {run["nodes"]: run["encoding_s"] / base["encoding_s"] for run in runs},
        "study_ratio": {run["nodes"]: run["study_s"] / base["study_s"] for run in runs},
    }
    bench.finish(
        figures,
        target={"encoding_ratio_2_nodes": "<= 0.6 of one node, for an encoding-bound study"},
        details={"trials": args.trials, "cpu_count": os.cpu_count(), "space": SPACE},
    )


if __name__ == "__main__":
    main()
