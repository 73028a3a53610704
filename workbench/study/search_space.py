"""The search space a study file's ``[space]`` table describes, typed and validated like pipeline configs.

An entry is either a fixed value (not sampled), a list of choices (categorical), or a table
``{low, high}`` (with optional ``step`` and ``log``) for a numeric range. ``study/space.py`` samples
pipelines from it and lists every value it can give.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, PrivateAttr, WrapValidator, field_validator, model_validator

from workbench.retrieval.config import (
    DEFAULT_MODEL,
    NAME_PATTERN,
    Backend,
    FrozenModel,
    IndexKind,
    default_stage_name,
)


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


# A dense setting that applies to one index kind only → that kind.
_INDEX_SETTINGS = {"hnsw_m": "hnsw", "ef_search": "hnsw", "nlist": "ivf", "nprobe": "ivf"}


class DenseCandidate(DenseSpace):
    """A dense first stage a trial may use: one encoder, or a choice of encoders, and its faiss index
    (``index``; ``hnsw_m`` and ``ef_search`` asked only for HNSW, ``nlist`` and ``nprobe`` only for IVF)."""

    kind: Literal["dense"]
    name: str = Field(default="dense", pattern=NAME_PATTERN)
    index: Union[IndexKind, list[IndexKind]] = "flat"
    hnsw_m: IntParam = 32
    ef_search: IntParam = 64
    nlist: Union[IntParam, None] = None  # None: 4·sqrt(chunks)
    nprobe: IntParam = 8

    _check_index_lists = field_validator("index", "hnsw_m", "ef_search", "nlist", "nprobe")(_non_empty)

    def settings(self) -> dict[str, Any]:
        """The config keys a trial sets, each a fixed value, a choice list or a range, in the order asked."""
        return {
            "model": self.model,
            "backend": self.backend,
            "index": self.index,
            "hnsw_m": self.hnsw_m,
            "ef_search": self.ef_search,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
        }

    def applies(self, key: str, chosen: dict[str, Any]) -> bool:
        """Whether a trial that chose ``chosen`` so far is asked for ``key`` (an index setting only
        for its index kind)."""
        return key not in _INDEX_SETTINGS or chosen.get("index") == _INDEX_SETTINGS[key]


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
    """What a study may vary. First stages are ``[[space.retrievers]]``: a list of candidate first
    stages, of which each trial uses one of ``combinations`` (default: every non-empty subset), fused
    by ``fusion.method`` (convex or rrf) with sampled weights.

    A space written before that list (``[space.bm25]``/``[space.dense]`` with ``fusion.method``
    choosing among convex, rrf, bm25 and dense) is translated into it when it validates: see
    ``from_two_stage_layout``. Errors about its values still name the keys as written.
    """

    chunking: ChunkingSpace = ChunkingSpace()
    fusion: FusionSpace = FusionSpace()
    rerank: RerankSpace = RerankSpace()
    first_stage_depth: IntParam = 100
    retrievers: tuple[RetrieverCandidate, ...] = Field(default=(), strict=False)  # TOML gives a list
    combinations: list[list[str]] | None = None
    # The two-stage layout's tables: only ever set when they do not validate (their errors name
    # them), or next to ``retrievers`` (an error); a valid one is translated into ``retrievers``.
    bm25: BM25Space | None = None
    dense: DenseSpace | None = None
    # study key of a sampled parameter (prefix) → the key written in a translated two-stage space
    _written_as: dict[str, str] = PrivateAttr(default_factory=dict)

    _check_lists = field_validator("first_stage_depth")(_non_empty)

    @model_validator(mode="wrap")
    @classmethod
    def _two_stage_layout(cls, data: Any, handler: Any) -> SearchSpace:
        translated = from_two_stage_layout(data)
        space = handler(data if translated is None else translated)
        if translated is not None:
            space._written_as = dict(TWO_STAGE_KEYS)
        return space

    @model_validator(mode="after")
    def _one_way_to_name_first_stages(self) -> SearchSpace:
        if "retrievers" not in self.model_fields_set:
            if self.combinations is not None:
                raise ValueError("combinations: needs a [[space.retrievers]] list to choose from")
            return self  # a two-stage layout whose tables did not validate: their errors are raised
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

    def written_key(self, key: str) -> str:
        """Returns the key of the study file that gave the space's ``key`` (a parameter name such as
        ``retrievers.bm25.k1``, or ``retrievers[0].k1``): itself, or in a translated two-stage space
        the key as written there (``bm25.k1``)."""
        for translated, written in self._written_as.items():
            if key == translated or (translated.endswith(".") and key.startswith(translated)):
                return written + key[len(translated) :]
        return key


# In a translated two-stage space: where each sampled parameter's values were written.
TWO_STAGE_KEYS = {
    "retrievers.bm25.": "bm25.",
    "retrievers.dense.": "dense.",
    "retrievers[0].": "bm25.",
    "retrievers[1].": "dense.",
    "retrievers": "fusion.method",
}
# What each two-stage ``fusion.method`` uses, as a combination of the translated candidates.
TWO_STAGE_COMBINATIONS = {"convex": ["bm25", "dense"], "rrf": ["bm25", "dense"], "bm25": ["bm25"], "dense": ["dense"]}


def from_two_stage_layout(data: Any) -> dict[str, Any] | None:
    """Returns a ``[space]`` table in the two-stage layout (no ``retrievers`` list) as the equivalent
    ``[[space.retrievers]]`` table, or None when ``data`` is not one or its tables do not validate
    (left as they are, validation names the bad key as written).

    ``[space.bm25]`` and ``[space.dense]`` become candidates named ``bm25`` and ``dense``; each
    ``fusion.method`` becomes the combination it uses (convex and rrf: both; bm25, dense: that one),
    in the order listed, and the methods that fuse stay ``fusion.method``. ``fusion.alpha`` has no
    counterpart: the convex weights are sampled per retriever (alpha's range [0, 1] covers the same
    pipelines). Trials of a translated space have the parameter names of the list layout.
    """
    from pydantic import ValidationError

    if not isinstance(data, dict) or "retrievers" in data or "combinations" in data:
        return None
    try:
        bm25 = BM25Space.model_validate(data.get("bm25", {}))
        dense = DenseSpace.model_validate(data.get("dense", {}))
        fusion = FusionSpace.model_validate(data.get("fusion", {}))
    except ValidationError:
        return None
    methods = fusion.method if isinstance(fusion.method, list) else [fusion.method]
    combinations = list(dict.fromkeys(tuple(TWO_STAGE_COMBINATIONS[method]) for method in methods))
    fusing = [method for method in methods if method in ("convex", "rrf")]
    fusion_table = {key: value for key, value in data.get("fusion", {}).items() if key not in ("method", "alpha")}
    return {key: value for key, value in data.items() if key not in ("bm25", "dense", "fusion")} | {
        "retrievers": [
            BM25Candidate(kind="bm25", k1=bm25.k1, b=bm25.b),
            DenseCandidate(kind="dense", model=dense.model, backend=dense.backend),
        ],
        "combinations": [list(combination) for combination in combinations],
        "fusion": fusion_table | ({"method": fusing} if fusing else {}),
    }
