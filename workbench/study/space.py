"""From a study's search space to one trial's pipeline config, define-by-run.

A parameter is asked of the trial only when it applies: no chunk size for whole documents, no
fusion weights unless several first stages fuse convexly, no re-ranker depth or weight without a
re-ranker. Fixed values in the
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
    DEFAULT_MODEL,
    BM25Config,
    DenseConfig,
    FrozenModel,
    PipelineConfig,
)
from workbench.study.search_space import BM25Candidate, DenseCandidate, FloatRange, IntRange, RerankSpace, SearchSpace

MIN_RAW_WEIGHT = 0.01  # raw fusion weights are sampled in [this, 1] and normalised: no retriever weighs 0


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


def _suggest_chunking(trial, space: SearchSpace, tokenizer: str) -> dict[str, Any]:
    kind = _pick(trial, "chunking.kind", space.chunking.kind)
    if kind == "none":
        return {"kind": kind}
    if kind not in ("recursive", "token"):  # a chunker of one's own: its own settings
        return {"kind": kind} | _own_settings(trial, "chunking", space.chunking.settings_for(kind))
    size = _pick(trial, "chunking.chunk_size", space.chunking.chunk_size)
    overlap_fraction = _pick(trial, "chunking.chunk_overlap_fraction", space.chunking.chunk_overlap_fraction)
    chunking = {"kind": kind, "chunk_size": size, "chunk_overlap": int(size * overlap_fraction)}
    return chunking | {"tokenizer": tokenizer} if kind == "token" else chunking


def _suggest_rerank(trial, space: SearchSpace) -> dict[str, Any]:
    kind = _pick(trial, "rerank.kind", space.rerank.kind)
    if kind == "cross-encoder":
        own = {"model": _pick(trial, "rerank.model", space.rerank.model)}
        if own["model"] == "none":
            return own
    else:  # a re-ranker of one's own
        own = _own_settings(trial, "rerank", space.rerank.settings_for(kind))
    return {
        "kind": kind,
        **own,
        "depth": _pick(trial, "rerank.depth", space.rerank.depth),
        "weight": _pick(trial, "rerank.weight", space.rerank.weight),
    }


def _own_settings(trial, table: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings of a component of one's own, each asked as ``<table>.<key>`` (fixed ones are not asked)."""
    return {key: _pick(trial, f"{table}.{key}", spec) for key, spec in settings.items()}


def _combinations(space: SearchSpace) -> list[str]:
    names = [candidate.name for candidate in space.retrievers]
    chosen = space.combinations or [
        [name for bit, name in enumerate(names) if mask >> bit & 1] for mask in range(1, 2 ** len(names))
    ]
    return ["+".join(combination) for combination in chosen]


def used_candidates(space: SearchSpace) -> list:
    """Returns the retriever candidates that at least one combination of the space uses."""
    used = {name for combination in _combinations(space) for name in combination.split("+")}
    return [candidate for candidate in space.retrievers if candidate.name in used]


def _suggest_retrievers(trial, space: SearchSpace) -> tuple[list[dict], dict[str, Any], str]:
    """One combination of the ``[[space.retrievers]]`` candidates, each asked only for its own settings.

    Returns the retrievers, the fusion table and the model whose tokenizer cuts token chunks
    (the first dense retriever's, else the first dense candidate's first model).
    """
    used = set(_pick(trial, "retrievers", _combinations(space)).split("+"))
    candidates = [candidate for candidate in space.retrievers if candidate.name in used]
    retrievers: list[dict] = []
    for candidate in candidates:
        prefix = f"retrievers.{candidate.name}"
        settings: dict[str, Any] = {}
        for key, spec in candidate.settings().items():
            if not isinstance(candidate, DenseCandidate) or candidate.applies(key, settings):
                settings[key] = _pick(trial, f"{prefix}.{key}", spec)
        retrievers.append({"kind": candidate.kind, "name": candidate.name} | settings)
    fusion: dict[str, Any] = {}
    if len(retrievers) > 1:
        method = _pick(trial, "fusion.method", space.fusion_methods)
        fusion["method"] = method
        if method == "convex":
            raw = [trial.suggest_float(f"fusion.weight.{r['name']}", MIN_RAW_WEIGHT, 1.0) for r in retrievers]
            fusion["weights"] = [weight / sum(raw) for weight in raw]
            fusion["normalization"] = _pick(trial, "fusion.normalization", space.fusion.normalization)
        else:
            fusion["rrf_k"] = _pick(trial, "fusion.rrf_k", space.fusion.rrf_k)
    dense_models = [r["model"] for r in retrievers if r["kind"] == "dense"]
    dense_candidates = [c for c in space.retrievers if isinstance(c, DenseCandidate)]
    tokenizer = (
        dense_models[0]
        if dense_models
        else first_choice(dense_candidates[0].model)
        if dense_candidates
        else DEFAULT_MODEL
    )
    return retrievers, fusion, tokenizer


def suggest_pipeline(trial, space: SearchSpace, name: str) -> PipelineConfig:
    """Returns the pipeline config of one trial, asking ``trial`` only for what applies.

    Raises pydantic's ``ValidationError`` when the sampled values make no valid pipeline config
    (``space_points`` checks every edge of a space for that before a study starts).
    """
    retrievers, fusion, tokenizer = _suggest_retrievers(trial, space)
    chunking = _suggest_chunking(trial, space, tokenizer)
    first_stage_depth = _pick(trial, "first_stage_depth", space.first_stage_depth)
    rerank = _suggest_rerank(trial, space)
    return PipelineConfig.model_validate(
        {
            "name": name,
            "chunking": chunking,
            "retrievers": retrievers,
            "fusion": fusion,
            "rerank": rerank,
            "first_stage_depth": first_stage_depth,
        },
    )


BASELINES = ("bm25", "dense")


def baseline_config(baseline: str, space: SearchSpace, name: str) -> PipelineConfig:
    """Returns the config of a baseline: one retriever with default settings, whole documents, no re-ranker.

    The dense baseline uses the space's first embedding model.
    """
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}")
    if baseline == "bm25":
        return PipelineConfig(name=name, retrievers=(BM25Config(),))
    return PipelineConfig(name=name, retrievers=(DenseConfig(model=first_embedding_model(space)),))


def baseline_space(baseline: str, space: SearchSpace) -> SearchSpace:
    """Returns the part of ``space`` that uses one retriever alone, without a re-ranker: what a
    tuned baseline searches (BM25's k1 and b, or the dense models; the space's chunkings and depths).

    A retriever list with no candidate of that kind gets one with default settings.
    """
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}")
    kind = BM25Candidate if baseline == "bm25" else DenseCandidate
    candidates = tuple(candidate for candidate in space.retrievers if isinstance(candidate, kind))
    if not candidates:
        candidates = (
            BM25Candidate(kind="bm25") if baseline == "bm25" else DenseCandidate(kind="dense", model=DEFAULT_MODEL),
        )
    alone = {"rerank": RerankSpace(), "retrievers": candidates, "combinations": [[c.name] for c in candidates]}
    return space.model_copy(update=alone)


def first_embedding_model(space: SearchSpace) -> str:
    """Returns the space's first embedding model: the one the dense baseline uses."""
    dense = [candidate for candidate in space.retrievers if isinstance(candidate, DenseCandidate)]
    return first_choice(dense[0].model) if dense else DEFAULT_MODEL


def space_models(space: SearchSpace) -> dict[str, list[str]]:
    """Returns every model the space can name, by the study key that names it."""
    models: dict[str, list[str]] = {}
    for index, candidate in enumerate(space.retrievers):
        if isinstance(candidate, DenseCandidate):
            models[f"space.{space.written_key(f'retrievers[{index}].model')}"] = _choices(candidate.model)
    models["space.rerank.model"] = [model for model in _choices(space.rerank.model) if model != "none"]
    return models


def _choices(spec: Any) -> list:
    return list(spec) if isinstance(spec, list) else [spec]


def key_of_model(space: SearchSpace, model: str) -> str:
    """Returns the study key that names ``model`` (``space.retrievers[1].model``, ``space.rerank.model``, …)."""
    for key, models in space_models(space).items():
        if model in models:
            return key
    return "space"


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
        elif isinstance(value, dict):  # the settings of components of one's own, written beside the table's keys
            entries |= {f"{prefix}{key}": spec for key, spec in value.items()}
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
    """Returns the study key (``space.retrievers.bm25.k1``, as written in the file) whose entry gave ``value``; ``field`` is the config field it went
    into when known, ``asked`` the parameters sampled for the config. Falls back to ``space``."""
    asked = asked or {}
    candidates = [key for key, given in asked.items() if given == value] + [
        key for key, spec in space_entries(space).items() if _can_give(spec, value)
    ]
    named = [key for key in candidates if field is None or key.rsplit(".", 1)[-1] == field]
    return f"space.{space.written_key((named or candidates or [''])[0])}".rstrip(".")


def space_points(space: SearchSpace) -> list[SpacePoint]:
    """Returns the pipeline configs built, by ``suggest_pipeline`` itself, from every edge value of the space.

    Starting from the lowest edges, each parameter that a config asks for is set in turn to each of
    its other edges (a range's ends, every choice); a parameter that applies only in some configs
    (fusion weights only for convex fusion) is visited in those. The two baselines are included. The same
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
                key = f"space.{space.written_key(varied)}"
            message = detail["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{key}: {value!r} gives an invalid pipeline config ({field}: {message})") from None
        except ValueError as error:
            if trial.failing is None:
                raise
            raise ConfigError(f"space.{space.written_key(trial.failing)}: {error}") from None
        points.append(SpacePoint(config, dict(trial.params)))
        visited |= set(trial.params.items())
        for name, distribution in trial.distributions.items():
            for value in _edges(distribution):
                if (name, value) not in visited:
                    visited.add((name, value))
                    pending.append(({**trial.params, name: value}, name))
    points += [SpacePoint(baseline_config(name, space, f"baseline-{name}"), {}) for name in BASELINES]
    return points


# --- how many configurations a space holds ---------------------------------------------------


class _Unasked(Exception):
    """Raised by the counting trial at the first parameter it was not given a value for."""

    def __init__(self, name: str, values: list[Any] | None):
        super().__init__(name)
        self.name, self.values = name, values  # values None: a continuous range


def _range_values(low, high, step, log: bool, integer: bool) -> list[Any] | None:
    """Returns every value a range can take as Optuna samples it, or None for a continuous one."""
    if integer:
        return list(range(low, high + 1, step))
    if step is None:
        return None
    count = int((high - low) / step + 1e-9) + 1
    return [low + index * step for index in range(count)]


def _counting_trial(given: dict[str, Any]):
    """Returns a ``FixedTrial`` that answers from ``given`` and raises ``_Unasked`` for anything else."""
    from optuna.trial import FixedTrial

    class CountingTrial(FixedTrial):
        def _value(self, name: str, values: Callable[[], list[Any] | None]) -> None:
            if name not in given:
                raise _Unasked(name, values())

        def suggest_int(self, name, low, high, *, step=1, log=False):
            self._value(name, lambda: _range_values(low, high, step, log, integer=True))
            return super().suggest_int(name, low, high, step=step, log=log)

        def suggest_float(self, name, low, high, *, step=None, log=False):
            self._value(name, lambda: _range_values(low, high, step, log, integer=False))
            return super().suggest_float(name, low, high, step=step, log=log)

        def suggest_categorical(self, name, choices):
            self._value(name, lambda: list(dict.fromkeys(choices)))
            return super().suggest_categorical(name, choices)

    return CountingTrial(given)


def space_size(space: SearchSpace, limit: int) -> int | None:
    """Returns how many distinct configurations (sets of sampled parameters) the space holds, or None
    when it holds more than ``limit`` or has a continuous range (more than any study can try).

    Walks the space as ``suggest_pipeline`` asks for parameters, so a parameter that applies only in
    some configurations (fusion weights only with convex fusion) is counted only there. Combinations that give
    no valid pipeline config are not counted.
    """
    count = 0
    pending: list[dict[str, Any]] = [{}]
    while pending:
        given = pending.pop()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a range not divisible by its step: Optuna trims it and warns
                suggest_pipeline(_counting_trial(given), space, "space-size")
        except _Unasked as unasked:
            if unasked.values is None:
                return None
            pending += [{**given, unasked.name: value} for value in unasked.values]
            continue
        except (ValidationError, ValueError):
            continue
        count += 1
        if count > limit:
            return None
    return count
