"""From a study's search space to one trial's pipeline config, define-by-run.

A parameter is asked of the trial only when it applies: no chunk size for whole documents,
no alpha unless fusion is convex, no re-ranker depth or weight without a re-ranker. Fixed values in the
space are used as they are and never sampled.
"""

from __future__ import annotations

from typing import Any

from workbench.retrieval.config import (
    BM25Config,
    ChunkingConfig,
    DenseConfig,
    FusionConfig,
    PipelineConfig,
    RerankConfig,
)
from workbench.study.config import FloatRange, IntRange, SearchSpace


def _pick(trial, name: str, spec: Any) -> Any:
    """Returns the value of ``name``: sampled when ``spec`` is a choice list or a range."""
    if isinstance(spec, IntRange):
        return trial.suggest_int(name, spec.low, spec.high, step=spec.step, log=spec.log)
    if isinstance(spec, FloatRange):
        return trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)
    if isinstance(spec, list):
        return spec[0] if len(spec) == 1 else trial.suggest_categorical(name, spec)
    return spec


def first_choice(spec: Any) -> Any:
    """Returns the value a baseline uses for ``spec``: the fixed value or the first choice."""
    if isinstance(spec, list):
        return spec[0]
    if isinstance(spec, (IntRange, FloatRange)):
        return spec.low
    return spec


def suggest_pipeline(trial, space: SearchSpace, name: str) -> PipelineConfig:
    """Returns the pipeline config of one trial, asking ``trial`` only for what applies."""
    method = _pick(trial, "fusion.method", space.fusion.method)
    fusion = FusionConfig(method=method)
    if method == "convex":
        fusion = FusionConfig(
            method=method,
            alpha=_pick(trial, "fusion.alpha", space.fusion.alpha),
            normalization=_pick(trial, "fusion.normalization", space.fusion.normalization),
        )
    elif method == "rrf":
        fusion = FusionConfig(method=method, rrf_k=_pick(trial, "fusion.rrf_k", space.fusion.rrf_k))

    dense = DenseConfig(model=first_choice(space.dense.model))
    if fusion.uses_dense:
        dense = DenseConfig(model=_pick(trial, "dense.model", space.dense.model))

    bm25 = BM25Config()
    if fusion.uses_bm25:
        bm25 = BM25Config(k1=_pick(trial, "bm25.k1", space.bm25.k1), b=_pick(trial, "bm25.b", space.bm25.b))

    kind = _pick(trial, "chunking.kind", space.chunking.kind)
    chunking = ChunkingConfig(kind=kind)
    if kind != "none":
        size = _pick(trial, "chunking.chunk_size", space.chunking.chunk_size)
        overlap_fraction = _pick(trial, "chunking.chunk_overlap_fraction", space.chunking.chunk_overlap_fraction)
        chunking = ChunkingConfig(kind=kind, chunk_size=size, chunk_overlap=int(size * overlap_fraction))

    first_stage_depth = _pick(trial, "first_stage_depth", space.first_stage_depth)
    rerank_model = _pick(trial, "rerank.model", space.rerank.model)
    rerank = RerankConfig(model=rerank_model)
    if rerank.enabled:
        rerank = RerankConfig(
            model=rerank_model,
            depth=_pick(trial, "rerank.depth", space.rerank.depth),
            weight=_pick(trial, "rerank.weight", space.rerank.weight),
        )

    return PipelineConfig(
        name=name,
        chunking=chunking,
        bm25=bm25,
        dense=dense,
        fusion=fusion,
        rerank=rerank,
        first_stage_depth=first_stage_depth,
    )


BASELINES = ("bm25", "dense")


def baseline_config(baseline: str, space: SearchSpace, name: str) -> PipelineConfig:
    """Returns the config of a baseline: one retriever with default settings, whole documents, no re-ranker.

    The dense baseline uses the space's first embedding model.
    """
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}")
    return PipelineConfig(
        name=name,
        fusion=FusionConfig(method=baseline),
        dense=DenseConfig(model=first_choice(space.dense.model)),
    )
