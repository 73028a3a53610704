"""The search space a study file's ``[space]`` table describes, typed and validated like pipeline configs.

An entry is either a fixed value (not sampled), a list of choices (categorical), or a table
``{low, high}`` (with optional ``step`` and ``log``) for a numeric range. ``study/space.py`` samples
pipelines from it and lists every value it can give.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, WrapValidator, field_validator, model_validator

from workbench.retrieval.config import DEFAULT_MODEL, NAME_PATTERN, Backend, FrozenModel, default_stage_name


class IntRange(FrozenModel):
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self


class FloatRange(FrozenModel):
    low: float
    high: float
    step: float | None = None
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self


IntParam = Union[int, list[int], IntRange]
FloatParam = Union[float, list[float], FloatRange]


def _extremes(value: FloatParam) -> list[float]:
    """Returns the values a parameter can take at its edges: a range's ends, or every choice."""
    return [value.low, value.high] if isinstance(value, FloatRange) else value if isinstance(value, list) else [value]


def _in_unit_interval(value: FloatParam, name: str) -> FloatParam:
    if any(not 0.0 <= bound <= 1.0 for bound in _extremes(value)):
        raise ValueError(f"{name} must lie in [0, 1]")
    return value


def _non_empty(value: Any) -> Any:
    if isinstance(value, list) and not value:
        raise ValueError("a list of choices must not be empty")
    return value


class KindSpace(FrozenModel):
    """A ``[space.chunking]`` or ``[space.rerank]`` table: ``kind`` (one kind or a list of choices) names
    components of ``family`` (built-ins, registered names, entry points, ``module:attribute``); a key the
    table does not define is a setting of the components of one's own it lists (kept in ``settings``,
    each a fixed value, a list of choices or a range) when one of their configs has it, else unknown.

    A component of one's own is asked each setting its config has, and each key the table defines
    that its config has too when the study file writes it (so a built-in's default never reaches it).
    """

    family: ClassVar[str]  # the components' family, by its noun in ``components.FAMILIES``
    settings: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _settings_apart(cls, data: Any) -> Any:
        """Moves the keys the listed components of one's own take into ``settings``; any other key the
        table does not define stays, to be refused as unknown."""
        if not isinstance(data, dict):
            return data
        defined = set(cls.model_fields) - {"settings"}
        taken = _own_fields(data.get("kind", cls.model_fields["kind"].default), cls.family)
        settings = {key: _setting(value) for key, value in data.items() if key not in defined and key in taken}
        return {key: value for key, value in data.items() if key not in settings} | {"settings": settings}

    @field_validator("kind", check_fields=False)
    @classmethod
    def _kinds_are_known(cls, kind: Any) -> Any:
        for each in _choices_of(_non_empty(kind)):
            _component(each, cls.family)  # raises ValueError naming the known kinds
        return kind

    def settings_for(self, kind: str) -> dict[str, Any]:
        """Returns the own settings a trial of ``kind`` (a component of one's own) is asked, each a fixed
        value, a choice list or a range: the settings and the written keys its config has (not the keys
        every component of the family has, such as a re-ranker's ``depth``)."""
        config_type = _component(kind, self.family).config_type
        own = set(config_type.model_fields) - _shared_fields(self.family)
        written = {key: getattr(self, key) for key in self.model_fields_set if key != "settings"}
        return {key: spec for key, spec in (written | self.settings).items() if key in own}


def _choices_of(spec: Any) -> list:
    return list(spec) if isinstance(spec, list) else [spec]


def _component(kind: str, family: str) -> Any:
    from workbench.retrieval.components import component

    return component(kind, _family(family))


def _family(noun: str) -> Any:
    from workbench.retrieval.components import FAMILIES

    return next(member for member in FAMILIES if member.noun == noun)


def _shared_fields(family: str) -> set[str]:
    return _family(family).shared_fields


def _own_fields(kind: Any, family: str) -> set[str]:
    """The config fields of the components of one's own among ``kind`` (one or a list; built-ins and
    kinds that do not resolve, refused by the kind's own check, have none)."""
    built_ins = _family(family).built_ins
    fields: set[str] = set()
    for each in _choices_of(kind):
        if isinstance(each, str) and each not in built_ins:
            try:
                fields |= set(_component(each, family).config_type.model_fields)
            except ValueError:
                continue
    return fields


class ChunkingSpace(KindSpace):
    """``kind``: ``none``, ``recursive``, ``token`` or chunkers of one's own; ``chunk_size`` and
    ``chunk_overlap_fraction`` are the built-in chunkers' (asked unless the kind is ``none``)."""

    family: ClassVar[str] = "chunker"
    kind: Union[str, list[str]] = "none"
    chunk_size: IntParam = 512
    chunk_overlap_fraction: FloatParam = 0.0

    _check_lists = field_validator("chunk_size", "chunk_overlap_fraction")(_non_empty)

    @field_validator("chunk_overlap_fraction")
    @classmethod
    def _fraction_in_range(cls, value: FloatParam) -> FloatParam:
        if any(not 0.0 <= bound < 1.0 for bound in _extremes(value)):
            raise ValueError("chunk_overlap_fraction must lie in [0, 1)")
        return value


class DenseSpace(FrozenModel):
    model: Union[str, list[str]] = DEFAULT_MODEL
    backend: Union[Backend, list[Backend]] = "torch"  # what runs the encoder; searchable like the model

    _check_lists = field_validator("model", "backend")(_non_empty)


FusionMethod = Literal["convex", "rrf", "bm25", "dense"]


class FusionSpace(FrozenModel):
    method: Union[FusionMethod, list[FusionMethod]] = Field(default_factory=lambda: ["convex", "rrf", "bm25", "dense"])
    alpha: FloatParam = Field(default_factory=lambda: FloatRange(low=0.0, high=1.0))
    normalization: Union[Literal["minmax", "zscore"], list[Literal["minmax", "zscore"]]] = "minmax"
    rrf_k: IntParam = 60

    _check_lists = field_validator("method", "alpha", "normalization", "rrf_k")(_non_empty)

    @field_validator("alpha")
    @classmethod
    def _alpha_in_unit_interval(cls, value: FloatParam) -> FloatParam:
        return _in_unit_interval(value, "alpha")


class BM25Space(FrozenModel):
    k1: FloatParam = 1.5
    b: FloatParam = 0.75

    _check_lists = field_validator("k1", "b")(_non_empty)


class RerankSpace(KindSpace):
    """``kind``: ``cross-encoder`` (whose ``model = "none"`` means no re-ranker) or re-rankers of one's
    own; ``depth`` and ``weight`` are every re-ranker's."""

    family: ClassVar[str] = "re-ranker"
    kind: Union[str, list[str]] = "cross-encoder"
    model: Union[str, list[str]] = "none"
    depth: IntParam = 50
    weight: FloatParam = 1.0

    _check_lists = field_validator("model", "depth", "weight")(_non_empty)

    @field_validator("weight")
    @classmethod
    def _weight_in_unit_interval(cls, value: FloatParam) -> FloatParam:
        return _in_unit_interval(value, "weight")


class BM25Candidate(BM25Space):
    """A BM25 first stage a trial may use, with its own k1/b space."""

    kind: Literal["bm25"]
    name: str = Field(default="bm25", pattern=NAME_PATTERN)

    def settings(self) -> dict[str, Any]:
        """The config keys a trial sets, each a fixed value, a choice list or a range, in the order asked."""
        return {"k1": self.k1, "b": self.b}


class DenseCandidate(DenseSpace):
    """A dense first stage a trial may use: one encoder, or a choice of encoders."""

    kind: Literal["dense"]
    name: str = Field(default="dense", pattern=NAME_PATTERN)

    def settings(self) -> dict[str, Any]:
        """The config keys a trial sets, each a fixed value, a choice list or a range, in the order asked."""
        return {"model": self.model, "backend": self.backend}


SettingSpec = Union[IntRange, FloatRange, list, Any]


class ComponentCandidate(FrozenModel):
    """A first stage of any other kind (a registered name, or ``"module:attribute"``): every key besides
    ``kind`` and ``name`` is a key of that kind's config, given as a fixed value, a list of choices or
    a ``{low, high}`` range. Which values its config accepts is checked with the rest of the space."""

    kind: str
    name: str = Field(pattern=NAME_PATTERN)
    given: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _keys_are_settings(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        kind = data.get("kind")
        given = {key: _setting(value) for key, value in data.items() if key not in ("kind", "name")}
        return {"kind": kind, "name": data.get("name", _default_name(kind)), "given": given}

    @field_validator("kind")
    @classmethod
    def _kind_is_known(cls, kind: str) -> str:
        from workbench.retrieval.components import component

        component(kind)  # raises ValueError naming the known kinds
        return kind

    def settings(self) -> dict[str, Any]:
        """The config keys a trial sets, each a fixed value, a choice list or a range, in the order written."""
        return dict(self.given)


def _default_name(kind: Any) -> Any:
    """The name the kind's config gives a stage by default (``kind`` unknown: the kind's last part)."""
    from workbench.retrieval.components import component

    try:
        name = component(kind).config_type.model_fields["name"]
    except (ValueError, TypeError):
        return default_stage_name(kind)
    return default_stage_name(kind) if name.is_required() else name.default


def _setting(value: Any) -> Any:
    """A range table becomes an ``IntRange`` (whole-number ends) or a ``FloatRange``; anything else stays."""
    if isinstance(value, dict) and {"low", "high"} <= value.keys():
        whole = all(isinstance(value[end], int) and not isinstance(value[end], bool) for end in ("low", "high"))
        return (IntRange if whole else FloatRange).model_validate(value)
    return _non_empty(value)


_CANDIDATES: dict[str, type[FrozenModel]] = {"bm25": BM25Candidate, "dense": DenseCandidate}


def _candidate(data: Any, handler: Any) -> Any:
    """Validates one ``[[space.retrievers]]`` entry as the candidate of its kind; errors name the kind
    after the list position, as a discriminated union's would."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        return data if isinstance(data, (BM25Candidate, DenseCandidate, ComponentCandidate)) else handler(data)
    kind = data.get("kind")
    try:
        return _CANDIDATES.get(kind, ComponentCandidate).model_validate(data)
    except ValidationError as error:
        details = [dict(detail, loc=(str(kind), *detail["loc"])) for detail in error.errors()]
        raise ValidationError.from_exception_data(error.title, details) from None


RetrieverCandidate = Annotated[
    Union[BM25Candidate, DenseCandidate, ComponentCandidate], WrapValidator(_candidate)
]


class SearchSpace(FrozenModel):
    """What a study may vary. First stages come either from ``[space.bm25]``/``[space.dense]`` with
    ``fusion.method`` choosing among BM25, dense and their fusion, or from ``[[space.retrievers]]``:
    a list of candidate first stages, of which each trial uses one of ``combinations`` (default:
    every non-empty subset), fused by ``fusion.method`` (convex or rrf) with sampled weights."""

    chunking: ChunkingSpace = ChunkingSpace()
    dense: DenseSpace = DenseSpace()
    fusion: FusionSpace = FusionSpace()
    bm25: BM25Space = BM25Space()
    rerank: RerankSpace = RerankSpace()
    first_stage_depth: IntParam = 100
    retrievers: tuple[RetrieverCandidate, ...] | None = Field(default=None, strict=False)  # TOML gives a list
    combinations: list[list[str]] | None = None

    _check_lists = field_validator("first_stage_depth")(_non_empty)

    @model_validator(mode="after")
    def _one_way_to_name_first_stages(self) -> SearchSpace:
        if self.retrievers is None:
            if self.combinations is not None:
                raise ValueError("combinations: needs a [[space.retrievers]] list to choose from")
            return self
        if not self.retrievers:
            raise ValueError("retrievers: list at least one first stage")
        for table in ("bm25", "dense"):
            if table in self.model_fields_set:
                raise ValueError(
                    f"[space.{table}] and [[space.retrievers]] both name first stages; "
                    f'move its settings into a [[space.retrievers]] entry with kind = "{table}"'
                )
        if "alpha" in self.fusion.model_fields_set:
            raise ValueError("fusion.alpha: with [[space.retrievers]] the fusion weights are sampled per retriever")
        methods = self.fusion.method if isinstance(self.fusion.method, list) else [self.fusion.method]
        if "fusion" in self.model_fields_set and "method" in self.fusion.model_fields_set:
            if single := [method for method in methods if method in ("bm25", "dense")]:
                raise ValueError(
                    f"fusion.method: {single} chooses one retriever; with [[space.retrievers]] list combinations instead"
                )
        names = [candidate.name for candidate in self.retrievers]
        if len(set(names)) != len(names):
            raise ValueError(f"retrievers: names must be unique, got {names}; set `name` on each entry")
        for combination in self.combinations or []:
            if not combination or len(set(combination)) != len(combination):
                raise ValueError(f"combinations: {combination} must name distinct retrievers, at least one")
            if unknown := [name for name in combination if name not in names]:
                raise ValueError(f"combinations: {unknown} are not among the retrievers {names}")
        return self

    @property
    def fusion_methods(self) -> list[str]:
        """Fusion methods a trial with several first stages may use."""
        methods = self.fusion.method if isinstance(self.fusion.method, list) else [self.fusion.method]
        return [method for method in methods if method in ("convex", "rrf")] or ["convex"]
