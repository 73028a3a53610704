"""Cheaper encoders on SciFact: throughput against raw SentenceTransformer.encode, nDCG@10 alone and in a hybrid.

Each encoder (all-MiniLM-L6-v2 on torch, the reference; the same model on the OpenVINO backend; a
static model2vec encoder distilled from it; any other model given with --encoder) is measured two ways:

- throughput: raw ``SentenceTransformer.encode`` of the same texts (the first --throughput-docs
  documents, batch 64, unit vectors), torch MiniLM timed before and after the others, its rate the
  mean of the two runs so the noise of a shared machine falls on both sides;
- quality on the split's judged queries (test by default), whole documents: nDCG@10 with a 95%
  bootstrap CI, dense alone and inside the hybrid of configs/hybrid.toml (BM25 + the encoder, convex
  fusion 0.5/0.5 after per-query min-max), each paired against BM25 alone and against MiniLM in the
  same role.

Vectors come from the state folder's cache when they are there: ``--state-dir`` pointing at a state
folder that already holds MiniLM's SciFact vectors saves re-encoding 5,183 documents with it.

    .venv/bin/python benchmarks/cheap_encoders.py [--state-dir DIR] [--static DIR] [--encoder NAME=MODEL ...]
        [--throughput-docs 600] [--split test]
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import harness

NAME = "cheap_encoders"
BATCH_SIZE = 64
HYBRID_CONFIG = harness.REPO_ROOT / "configs" / "hybrid.toml"
STATIC_FOLDER = "static-minilm-pca256"  # under the state folder's models/, when --static is not given


def main() -> None:
    parser = harness.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--static", type=Path, default=None, help="a distilled static encoder folder to use")
    parser.add_argument(
        "--encoder",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="another encoder (id or folder, run by torch) to measure; repeatable",
    )
    parser.add_argument("--throughput-docs", type=int, default=600, help="documents timed (default: %(default)s)")
    parser.add_argument("--split", default="test", help="judged queries scored (default: %(default)s)")
    args = parser.parse_args()
    bench = harness.start(NAME, args)

    from workbench.retrieval.config import DEFAULT_MODEL

    static_dir, distill_card = static_encoder(args.static, bench.state_dir)
    encoders = {
        "all-MiniLM-L6-v2 (torch)": (DEFAULT_MODEL, "torch"),
        "all-MiniLM-L6-v2 (openvino fp32)": (DEFAULT_MODEL, "openvino"),
        "static, model2vec from MiniLM": (str(static_dir), "torch"),
    }
    for entry in args.encoder:
        label, _, model = entry.partition("=")
        encoders[label] = (model, "torch")

    throughput = measure_throughput(bench, encoders, args.throughput_docs)
    quality = measure_quality(bench, encoders, args.split)

    reference = next(iter(encoders))
    rows = []
    for label in encoders:
        speed = throughput[label]
        dense, hybrid = quality["dense"][label], quality["hybrid"][label]
        rows.append(
            [
                label,
                speed["texts_per_s"],
                f"{speed['ratio']:.2f}x",
                f"{speed['cosine_mean']:.5f}" if "cosine_mean" in speed else "",
                f"{dense['ndcg']:.3f} [{dense['low']:.3f}, {dense['high']:.3f}]",
                f"{hybrid['ndcg']:.3f} [{hybrid['low']:.3f}, {hybrid['high']:.3f}]",
                f"{hybrid['vs_bm25']['difference']:+.3f} (p {hybrid['vs_bm25']['p_value']:.3g})",
                f"{hybrid['vs_reference']['difference']:+.3f} (p {hybrid['vs_reference']['p_value']:.3g})"
                if label != reference
                else "",
            ]
        )
    bm25 = quality["bm25"]
    bm25_cell = f"{bm25['ndcg']:.3f} [{bm25['low']:.3f}, {bm25['high']:.3f}]"
    rows.append(["BM25 alone", None, None, None, bm25_cell, None, None, None])
    harness.print_table(
        f"{len(quality['queries'])} {args.split} queries, {bench.corpus_info['documents']} documents; "
        f"throughput on {throughput['texts']} documents",
        [
            "encoder",
            "texts/s",
            "vs torch",
            "cosine",
            "nDCG@10 dense",
            "nDCG@10 hybrid",
            "hybrid - BM25",
            "hybrid - MiniLM hybrid",
        ],
        rows,
    )
    bench.finish(
        {"throughput": throughput, "quality": quality},
        {"note": "an encoder is worth keeping when it is faster than torch and its hybrid matches MiniLM's"},
        {
            "encoders": {label: {"model": model, "backend": backend} for label, (model, backend) in encoders.items()},
            "static_card": distill_card,
            "hybrid_config": str(HYBRID_CONFIG.relative_to(harness.REPO_ROOT)),
            "hybrid_config_text": HYBRID_CONFIG.read_text(),
            "batch_size": BATCH_SIZE,
        },
    )


def static_encoder(given: Path | None, state_dir: Path) -> tuple[Path, dict]:
    """Returns the static encoder folder and its card: the given one, else one distilled once into the state folder."""
    from workbench.retrieval.config import DEFAULT_MODEL
    from workbench.training.distill import CARD_NAME, distill_encoder

    folder = given.resolve() if given is not None else state_dir / "models" / STATIC_FOLDER
    if not (folder / CARD_NAME).is_file():
        print(f"distilling {DEFAULT_MODEL} into {folder}")
        distill_encoder(DEFAULT_MODEL, folder, pca_dims=256)
    return folder, json.loads((folder / CARD_NAME).read_text())


def measure_throughput(bench: harness.Bench, encoders: dict[str, tuple[str, str]], count: int) -> dict:
    """Times raw ``encode`` of the first ``count`` documents with each encoder; torch MiniLM first and last.

    Also returns each encoder's mean and lowest cosine to the reference's vectors of the same texts
    (meaningful only for the same model on another backend).
    """
    import numpy as np

    from workbench.retrieval.corpus import load_corpus
    from workbench.retrieval.models import load_encoder

    corpus = load_corpus(bench.corpus_path)
    texts = [doc.full_text for doc in corpus.documents.values()][:count]
    models = {label: load_encoder(model, "cpu", backend) for label, (model, backend) in encoders.items()}
    for model in models.values():  # first calls pay for lazy initialisation; keep them out of the timing
        model.encode(texts[:BATCH_SIZE], batch_size=BATCH_SIZE, show_progress_bar=False)

    def timed(label: str) -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        vectors = models[label].encode(
            texts, batch_size=BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return time.perf_counter() - started, vectors

    reference = next(iter(encoders))
    runs: dict[str, list[float]] = {label: [] for label in encoders}
    vectors: dict[str, np.ndarray] = {}
    seconds, vectors[reference] = timed(reference)
    runs[reference].append(seconds)
    for label in list(encoders)[1:]:
        seconds, vectors[label] = timed(label)
        runs[label].append(seconds)
    seconds, _ = timed(reference)
    runs[reference].append(seconds)
    reference_rate = len(texts) / statistics.fmean(runs[reference])
    result: dict = {"texts": len(texts), "runs_s": runs}
    for label in encoders:
        rate = len(texts) / statistics.fmean(runs[label])
        result[label] = {"texts_per_s": rate, "ratio": rate / reference_rate}
        if vectors[label].shape == vectors[reference].shape:
            cosines = (vectors[label] * vectors[reference]).sum(axis=1)
            result[label] |= {"cosine_mean": float(cosines.mean()), "cosine_min": float(cosines.min())}
        print(f"{label}: {rate:.1f} texts/s ({rate / reference_rate:.2f}x torch MiniLM)")
    return result


def measure_quality(bench: harness.Bench, encoders: dict[str, tuple[str, str]], split: str) -> dict:
    """Returns nDCG@10 (95% CI) of each encoder alone and in the hybrid, with paired tests against
    BM25 alone and against the first (reference) encoder in the same role."""
    from workbench.evaluation.metrics import evaluate
    from workbench.evaluation.significance import bootstrap_ci, paired_test
    from workbench.retrieval.cache import Cache
    from workbench.retrieval.config import BM25Config, DenseConfig, PipelineConfig, load_pipeline_config
    from workbench.retrieval.corpus import load_corpus
    from workbench.retrieval.pipeline import Pipeline, Resources

    corpus = load_corpus(bench.corpus_path)
    queries = corpus.judged_queries(split)
    qrels = corpus.split_qrels(split)
    resources = Resources(corpus, Cache(bench.state_dir / "cache"))
    hybrid_template = load_pipeline_config(HYBRID_CONFIG)

    def scored(config: PipelineConfig) -> tuple[dict[str, float], float]:
        before = resources.seconds_encoding
        started = time.perf_counter()
        run = Pipeline(config, resources).search(queries).run
        wall = time.perf_counter() - started
        print(f"  {config.name}: {wall:.1f} s (encoding {resources.seconds_encoding - before:.1f} s)")
        return evaluate(run, qrels, ["nDCG@10"]).per_query["nDCG@10"], wall

    def summary(per_query: dict[str, float], wall: float) -> dict:
        interval = bootstrap_ci(per_query)
        return {"ndcg": interval.mean, "low": interval.low, "high": interval.high, "wall_s": wall}

    def compared(a: dict[str, float], b: dict[str, float]) -> dict:
        test = paired_test(a, b)
        return {"difference": test.mean_difference, "p_value": test.p_value, "wins": test.wins, "losses": test.losses}

    bm25_scores, wall = scored(PipelineConfig(name="bm25", retrievers=(BM25Config(),)))
    result: dict = {"queries": list(queries), "bm25": summary(bm25_scores, wall), "dense": {}, "hybrid": {}}
    per_query: dict[str, dict[str, dict[str, float]]] = {"dense": {}, "hybrid": {}}
    for label, (model, backend) in encoders.items():
        dense = PipelineConfig(name=f"dense {label}", retrievers=(DenseConfig(model=model, backend=backend),))
        retrievers = tuple(
            r.model_copy(update={"model": model, "backend": backend}) if isinstance(r, DenseConfig) else r
            for r in hybrid_template.retrievers
        )
        hybrid = hybrid_template.model_copy(update={"name": f"hybrid {label}", "retrievers": retrievers})
        for role, config in (("dense", dense), ("hybrid", hybrid)):
            scores, wall = scored(config)
            per_query[role][label] = scores
            result[role][label] = summary(scores, wall) | {"vs_bm25": compared(scores, bm25_scores)}
    reference = next(iter(encoders))
    for role in ("dense", "hybrid"):
        for label in encoders:
            if label != reference:
                result[role][label]["vs_reference"] = compared(per_query[role][label], per_query[role][reference])
    return result


if __name__ == "__main__":
    main()
