"""Phase 1 of benchmarks/scale.py, run in its own process by ``scale_phases.py``: workbench's stages
over one corpus, the engines alone on the same texts and vectors, single-query latency, quality."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from scale_phases import (
    DEPTH,
    HELDOUT_SPLIT,
    MINILM,
    MINILM_STEP,
    QUALITY_METRICS,
    TUNE_SPLIT,
    Steps,
    dense_config,
    folder_bytes,
    latency_figures,
    one_at_a_time,
    pipeline_config,
)


# --- phase 1: the pipeline's stages, the engines alone, latency, quality -------------------------


def pipeline_phase(settings: dict[str, Any]) -> dict[str, Any]:
    """Builds, times and scores everything of one size in this process; returns the figures."""
    import numpy as np

    from workbench.evaluation.latency import time_queries
    from workbench.evaluation.metrics import evaluate
    from workbench.retrieval.cache import Cache
    from workbench.retrieval.config import BM25Config, ChunkingConfig
    from workbench.retrieval.corpus import load_corpus
    from workbench.retrieval.index import DocumentIndex, Stage
    from workbench.retrieval.models import load_encoder
    from workbench.retrieval.pipeline import Pipeline, Resources, load_models
    from workbench.retrieval.retrievers.bm25 import BM25Index, tokenize
    from workbench.retrieval.retrievers.dense import Encoder, _search_parameters
    from workbench.retriever import Retriever

    steps = Steps()
    cache = Cache(Path(settings["state_dir"]) / "cache")
    bm25 = BM25Config()
    dense = dense_config(settings)
    chunking = ChunkingConfig()
    hybrid = pipeline_config("hybrid", (bm25, dense))
    load_models(hybrid)  # model loading is not a stage of the corpus' cost

    with steps.step("load corpus"):
        corpus = load_corpus(settings["corpus"])
    resources = Resources(corpus, cache)
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

    build_max = settings["engine_build_max_docs"]
    if build_max is None or len(corpus.documents) <= build_max:
        bm25_engine, faiss_indexes = engines_alone(texts, bm25, dense, cache, settings["ann"], steps)
        engines_built_by = "the engines alone, on the pipeline's texts and cached vectors"
    else:
        # Above the limit the engines' own builds are skipped; their query latency is measured on
        # the objects the pipeline built (its bm25s engine, its faiss index), not on a second copy.
        bm25_engine, faiss_indexes = bm25_stage._engine, {settings["ann"]: dense_stage._index}
        engines_built_by = (
            f"not measured: {len(corpus.documents):,} documents is above --engine-build-max-docs {build_max:,}; "
            "engine latency is measured on the pipeline's own bm25s engine and faiss index"
        )

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
        for kind, faiss_index in faiss_indexes.items():
            parameters = _search_parameters(faiss_index, dense)  # the dense config's ef_search or nprobe
            latency[f"faiss {kind} search"] = latency_figures(
                time_queries(
                    one_at_a_time(
                        lambda text: faiss_index.search(query_vectors[text][np.newaxis, :], DEPTH, params=parameters)
                    ),
                    sample,
                    len(sample),
                )
            )
    del faiss_indexes, bm25_engine

    quality = {}
    qrels = corpus.split_qrels(HELDOUT_SPLIT)
    with steps.step("quality (test queries)"):
        for name, config in systems.items():
            run = Pipeline(config, resources).search(queries).run
            quality[name] = evaluate(run, qrels, QUALITY_METRICS).means
    with steps.step("ann recall (test queries)"):
        ann_recall = Pipeline(systems["dense"], resources).ann_recall(queries).get(dense.name)
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
            "bm25s_tokenise": seconds.get(ENGINE_STEPS["bm25s_tokenise"]),
            "bm25s_index": seconds.get(ENGINE_STEPS["bm25s_index"]),
            "faiss_flat_build": seconds.get(ENGINE_STEPS["faiss_flat_build"]),
            "faiss_ann_build": seconds.get(f"faiss {settings['ann']} (engine)"),
        },
        "engines_built_by": engines_built_by,
        "latency_ms": latency,
        "latency_queries": len(sample),
        "latency_queries_bm25s": len(answerable),
        "quality_test": quality,
        "ann_recall_test": ann_recall,
        "ann_recall_k": DEPTH,
        "warm_trial_s": seconds["warm trial"],
        "warm_trial": f"{variation.name}: Pipeline over the built indexes + search + nDCG@10 of the "
        f"{len(corpus.judged_queries(TUNE_SPLIT))} {TUNE_SPLIT} queries",
        "warm_trial_value": warm_trial_value,
        "minilm_encoding": minilm,
        "dense": dense.model_dump(mode="json"),
        "cache_bytes": folder_bytes(Path(cache.root)),
        "steps": report,
    }


ENGINE_STEPS = {
    "bm25s_tokenise": "bm25s tokenising (engine)",
    "bm25s_index": "bm25s index (engine)",
    "read_vectors": "read the pipeline's vectors (cache)",
    "faiss_flat_build": "faiss flat (engine)",
}


def engines_alone(texts: list[str], bm25, dense, cache, ann: str, steps: Steps):
    """Builds bm25s and faiss (flat, and the ``ann`` kind) alone on the pipeline's texts and on the
    vectors the pipeline wrote to ``cache`` (read, never encoded again); returns the bm25s engine
    and {kind: faiss index}."""
    import bm25s
    import Stemmer

    from workbench.retrieval.models import model_fingerprint

    with steps.step(ENGINE_STEPS["bm25s_tokenise"]):
        stemmer = Stemmer.Stemmer(bm25.stemmer) if bm25.stemmer != "none" else None
        stopwords = bm25.stopwords if bm25.stopwords != "none" else None
        engine_tokens = bm25s.tokenize(texts, stopwords=stopwords, stemmer=stemmer, show_progress=False)
    with steps.step(ENGINE_STEPS["bm25s_index"]):
        bm25_engine = bm25s.BM25(k1=bm25.k1, b=bm25.b, method=bm25.method)
        bm25_engine.index(engine_tokens, show_progress=False)
    del engine_tokens
    with steps.step(ENGINE_STEPS["read_vectors"]):
        # The store the dense stage's Encoder wrote them to: the model's fingerprint and backend key.
        store = cache.embeddings(f"{model_fingerprint(dense.model)}{dense.cache_key}", "document")
        vectors = store.vectors(texts)
    faiss_indexes = {}
    for kind in dict.fromkeys(("flat", ann)):
        with steps.step(ENGINE_STEPS["faiss_flat_build"] if kind == "flat" else f"faiss {kind} (engine)"):
            faiss_indexes[kind] = faiss_engine(kind, vectors, dense)
    return bm25_engine, faiss_indexes


def faiss_engine(kind: str, vectors, dense):
    """Returns a faiss inner-product index of ``kind`` holding ``vectors``, built with faiss alone
    with the dense config's build settings (``hnsw_m``, ``ef_construction``; ``nlist`` as the
    pipeline chooses it)."""
    import faiss
    import numpy as np

    from workbench.retrieval.retrievers.dense import ivf_lists

    count, dim = vectors.shape
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, dense.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = dense.ef_construction
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, ivf_lists(dense, count), faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
    else:
        raise SystemExit(f"--ann {kind!r}: the engine comparison knows flat, hnsw and ivf")
    index.add(vectors)
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
