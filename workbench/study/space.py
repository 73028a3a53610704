"""From a study's search space to one trial's pipeline config, define-by-run.

A parameter is asked of the trial only when it applies: no chunk size for whole documents,
no alpha unless fusion is convex, no re-ranker depth or weight without a re-ranker. Fixed values in the
space are used as they are and never sampled.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from workbench.errors import ConfigError
from workbench.retrieval.config import (
    BM25Config,
    ChunkingConfig,
    DenseConfig,
    FrozenModel,
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


# --- every value a space can produce, checked before a study starts --------------------------


@dataclass(frozen=True)
class SpacePoint:
    """A pipeline config the space can produce, and the value each sampled parameter took in it."""

    config: PipelineConfig
    params: dict[str, Any]


def _edges(distribution) -> list[Any]:
    """Returns the values at the edges of an Optuna distribution: a range's ends, or every choice."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return list(dict.fromkeys([distribution.low, distribution.high]))  # high already cut to a whole step


def _edge_trial(given: dict[str, Any]):
    """Returns a ``FixedTrial`` that answers a parameter missing from ``given`` with its lowest edge.

    ``failing`` names the parameter whose range Optuna refused (say ``log`` with ``low = 0``).
    """
    from optuna.trial import FixedTrial

    class EdgeTrial(FixedTrial):
        failing: str | None = None

        def _ask(self, name: str, first: Any, suggest: Callable[[], Any]) -> Any:
            self.given.setdefault(name, first)
            try:
                return suggest()
            except ValueError:
                self.failing = name
                raise

        def suggest_int(self, name, low, high, *, step=1, log=False):
            return self._ask(name, low, lambda: super(EdgeTrial, self).suggest_int(name, low, high, step=step, log=log))

        def suggest_float(self, name, low, high, *, step=None, log=False):
            return self._ask(
                name, low, lambda: super(EdgeTrial, self).suggest_float(name, low, high, step=step, log=log)
            )

        def suggest_categorical(self, name, choices):
            return self._ask(name, choices[0], lambda: super(EdgeTrial, self).suggest_categorical(name, choices))

    trial = EdgeTrial(given)  # FixedTrial keeps this very dict: a value set here is what it answers
    trial.given = given
    return trial


def space_entries(space: FrozenModel, prefix: str = "") -> dict[str, Any]:
    """Returns every entry of the space by its dotted key (``bm25.k1``): a fixed value, a choice list or a range."""
    entries: dict[str, Any] = {}
    for field in type(space).model_fields:
        value = getattr(space, field)
        if isinstance(value, FrozenModel) and not isinstance(value, (IntRange, FloatRange)):
            entries |= space_entries(value, f"{prefix}{field}.")
        else:
            entries[f"{prefix}{field}"] = value
    return entries


def _can_give(spec: Any, value: Any) -> bool:
    if isinstance(spec, (IntRange, FloatRange)):
        return isinstance(value, (int, float)) and spec.low <= value <= spec.high
    if isinstance(spec, list):
        return value in spec
    return spec == value


def key_of_value(space: SearchSpace, value: Any, field: str | None = None, asked: dict[str, Any] | None = None) -> str:
    """Returns the study key (``space.bm25.k1``) whose entry gave ``value``; ``field`` is the config field it went
    into when known, ``asked`` the parameters sampled for the config. Falls back to ``space``."""
    asked = asked or {}
    candidates = [key for key, given in asked.items() if given == value] + [
        key for key, spec in space_entries(space).items() if _can_give(spec, value)
    ]
    named = [key for key in candidates if field is None or key.rsplit(".", 1)[-1] == field]
    return f"space.{(named or candidates or [''])[0]}".rstrip(".")


def space_points(space: SearchSpace) -> list[SpacePoint]:
    """Returns the pipeline configs built, by ``suggest_pipeline`` itself, from every edge value of the space.

    Starting from the lowest edges, each parameter that a config asks for is set in turn to each of
    its other edges (a range's ends, every choice); a parameter that applies only in some configs
    (alpha only for convex fusion) is visited in those. The two baselines are included. The same
    code that builds trial configs builds these, so new space entries are checked without change here.
    Raises ``ConfigError`` naming the study key of the first value that gives an invalid config.
    """
    points: list[SpacePoint] = []
    visited: set[tuple[str, Any]] = set()
    pending: list[tuple[dict[str, Any], str | None]] = [({}, None)]
    while pending:
        given, varied = pending.pop(0)
        trial = _edge_trial(dict(given))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a range not divisible by its step: Optuna trims it and warns
                config = suggest_pipeline(trial, space, "space-check")
        except ValidationError as error:
            detail = error.errors()[0]
            field = str(detail["loc"][-1]) if detail["loc"] else None
            value = detail.get("input")
            key = key_of_value(space, value, field, trial.params)
            if key == "space" and varied is not None:
                key = f"space.{varied}"
            message = detail["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{key}: {value!r} gives an invalid pipeline config ({field}: {message})") from None
        except ValueError as error:
            if trial.failing is None:
                raise
            raise ConfigError(f"space.{trial.failing}: {error}") from None
        points.append(SpacePoint(config, dict(trial.params)))
        visited |= set(trial.params.items())
        for name, distribution in trial.distributions.items():
            for value in _edges(distribution):
                if (name, value) not in visited:
                    visited.add((name, value))
                    pending.append(({**trial.params, name: value}, name))
    points += [SpacePoint(baseline_config(name, space, f"baseline-{name}"), {}) for name in BASELINES]
    return points
