"""Pipeline configs: typed, frozen, validated at the boundary, round-tripping through TOML."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import (
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_serializer,
    model_validator,
)

from workbench.errors import ConfigError
from workbench.files import atomic_write_bytes
from workbench.retrieval.config_base import (
    NAME_PATTERN,
    ChunkerConfig,
    FirstStageConfig,
    FrozenModel,
    RerankerConfig,
)
from workbench.retrieval.config_base import default_stage_name as default_stage_name  # found here too

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Where a model runs: "auto" takes a GPU when torch sees one, else the CPU. Never part of a cache
# key: a model gives the same vectors and scores (to float tolerance) wherever it runs.
Device = Literal["auto", "cpu", "cuda"]
# What runs a dense encoder: torch (sentence-transformers itself) or OpenVINO on the CPU (fp32).
Backend = Literal["torch", "openvino"]


class ChunkingConfig(ChunkerConfig):
    """The built-in chunkers' config: how documents are cut before indexing. ``none`` indexes whole
    documents.

    ``recursive`` measures ``chunk_size`` in characters; ``token`` measures it in tokens
    of ``tokenizer``'s tokenizer (a model id or folder). Any other ``kind`` names a chunker of
    one's own, validated by that chunker's config (``components.py``).
    """

    kind: Literal["none", "recursive", "token"] = "none"
    chunk_size: int = Field(default=512, ge=16, le=100_000)
    chunk_overlap: int = Field(default=0, ge=0)
    tokenizer: str = DEFAULT_MODEL

    @model_validator(mode="before")
    @classmethod
    def _tokenizer_only_for_tokens(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind", "none") != "token":
            return {key: value for key, value in data.items() if key != "tokenizer"}
        return data

    @model_serializer(mode="wrap")
    def _tokenizer_written_for_tokens(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if self.kind != "token":
            data.pop("tokenizer", None)
        return data

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, overlap: int, info: ValidationInfo) -> int:
        size = info.data.get("chunk_size")
        if size is not None and overlap >= size:
            raise ValueError(f"must be smaller than chunk_size ({size}), got {overlap}")
        return overlap

    @property
    def tokenizer_model(self) -> str | None:
        """The model whose tokenizer cuts the chunks, or None when chunks are cut by characters."""
        return self.tokenizer if self.kind == "token" else None


class BM25Config(FirstStageConfig):
    """Lexical first stage. ``bm25s`` is the fast engine; ``rank_bm25`` the reference one."""

    kind: Literal["bm25"] = "bm25"
    name: str = Field(default="bm25", pattern=NAME_PATTERN)
    backend: Literal["bm25s", "rank_bm25"] = "bm25s"
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    k1: float = Field(default=1.5, ge=0.0, le=10.0)
    b: float = Field(default=0.75, ge=0.0, le=1.0)
    stemmer: Literal["english", "none"] = "english"
    stopwords: Literal["en", "none"] = "en"

    @model_validator(mode="after")
    def _rank_bm25_is_okapi(self) -> BM25Config:
        if self.backend == "rank_bm25" and self.method != "robertson":
            raise ValueError("backend 'rank_bm25' implements method 'robertson' (BM25Okapi) only")
        return self


IndexKind = Literal["flat", "hnsw", "ivf"]


class DenseConfig(FirstStageConfig):
    """Dense first stage: a sentence-transformers model and a faiss index over its vectors.

    ``index`` is ``flat`` (exact), ``hnsw`` (a graph of ``hnsw_m`` neighbours per vector, built with
    ``ef_construction`` candidates, searched with ``ef_search``) or ``ivf`` (``nlist`` k-means lists,
    ``nprobe`` of them searched; ``nlist`` unset: 4·sqrt(chunks), at most the chunk count).
    ``ef_search`` and ``nprobe`` are read at search time: changing them rebuilds nothing.
    """

    kind: Literal["dense"] = "dense"
    name: str = Field(default="dense", pattern=NAME_PATTERN)
    model: str = DEFAULT_MODEL
    index: IndexKind = "flat"
    hnsw_m: int = Field(default=32, ge=4, le=256)
    ef_construction: int = Field(default=40, ge=1, le=10_000)  # faiss' own default
    ef_search: int = Field(default=64, ge=1, le=100_000)
    nlist: int | None = Field(default=None, ge=1, le=10_000_000)
    nprobe: int = Field(default=8, ge=1, le=10_000_000)
    batch_size: int = Field(default=64, ge=1, le=4096)
    device: Device = "auto"
    backend: Backend = "torch"

    @model_validator(mode="after")
    def _openvino_runs_on_the_cpu(self) -> DenseConfig:
        if self.backend == "openvino" and self.device == "cuda":
            raise ValueError('backend "openvino" runs on the CPU; use device = "auto" or "cpu", or backend = "torch"')
        return self

    @property
    def cache_key(self) -> str:
        """What, besides the model's fingerprint, keys this encoder's cached vectors ("" for torch)."""
        return "" if self.backend == "torch" else f"+{self.backend}"


def _validated_by_kind(base: type) -> WrapValidator:
    """Validates a table as the config of the component its ``kind`` names in the family whose
    configs derive from ``base``: through the registry, not a fixed union."""

    def validate(data: Any, handler: Any) -> Any:
        from workbench.retrieval.components import component_config, family_of  # not at import: it loads numpy

        return data if isinstance(data, base) else component_config(data, family_of(base))

    return WrapValidator(validate)


# A component's config of any registered kind, validated as that kind's own model and dumped with
# all its fields.
RetrieverConfig = Annotated[SerializeAsAny[FirstStageConfig], _validated_by_kind(FirstStageConfig)]
AnyRerankerConfig = Annotated[SerializeAsAny[RerankerConfig], _validated_by_kind(RerankerConfig)]
AnyChunkerConfig = Annotated[SerializeAsAny[ChunkerConfig], _validated_by_kind(ChunkerConfig)]


class FusionConfig(FrozenModel):
    """How the first stages' runs combine into one (ignored with a single first stage).

    ``convex`` scores ``sum(weight_i * score_i)`` after per-query normalisation, one weight per
    retriever in the order of ``retrievers`` (equal weights when none are given); ``rrf`` is
    reciprocal rank fusion.
    """

    method: Literal["convex", "rrf"] = "convex"
    weights: tuple[float, ...] | None = Field(default=None, strict=False)  # TOML gives a list
    normalization: Literal["minmax", "zscore"] = "minmax"
    rrf_k: int = Field(default=60, ge=1, le=10_000)

    @field_validator("weights")
    @classmethod
    def _weights_sum_to_one(cls, weights: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if weights is None:
            return None
        if any(not 0.0 < weight <= 1.0 for weight in weights):
            raise ValueError("each weight must lie in (0, 1]; leave out a retriever rather than weigh it 0")
        if abs(sum(weights) - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1, got {sum(weights):.6g}")
        return weights


class RerankConfig(RerankerConfig):
    """The built-in re-ranker: a cross-encoder over the top ``depth`` fused documents;
    ``model = "none"`` switches re-ranking off. ``depth`` and ``weight`` are every re-ranker's
    (``RerankerConfig``); any other ``kind`` names a re-ranker of one's own."""

    kind: Literal["cross-encoder"] = "cross-encoder"
    model: str = "none"
    batch_size: int = Field(default=32, ge=1, le=4096)
    device: Device = "auto"

    @property
    def enabled(self) -> bool:
        return self.model != "none"


class PipelineConfig(FrozenModel):
    """Everything that decides which documents a query gets back, and in which order.

    A config written before first stages became a list (``[bm25]``, ``[dense]`` and
    ``[fusion] method``/``alpha``) loads as the equivalent ``retrievers`` list; see
    ``from_two_stage_layout``.
    """

    name: str = "pipeline"
    chunking: AnyChunkerConfig = ChunkingConfig()
    retrievers: tuple[RetrieverConfig, ...] = Field(default=(BM25Config(), DenseConfig()), strict=False)
    fusion: FusionConfig = FusionConfig()
    rerank: AnyRerankerConfig = RerankConfig()
    first_stage_depth: int = Field(default=100, ge=1, le=100_000)
    doc_aggregation: Literal["max", "sum"] = "max"
    output_depth: int = Field(default=100, ge=1, le=100_000)

    @model_validator(mode="before")
    @classmethod
    def _two_stage_layout(cls, data: Any) -> Any:
        if is_two_stage_layout(data):
            problems: list[str] = []
            data = from_two_stage_layout(data, problems)
            if problems:
                raise ValueError("; ".join(problems))
        return data

    @model_validator(mode="after")
    def _retrievers_fit_fusion(self) -> PipelineConfig:
        if not self.retrievers:
            raise ValueError("retrievers: at least one first stage is needed")
        names = [retriever.name for retriever in self.retrievers]
        if len(set(names)) != len(names):
            raise ValueError(f"retrievers: names must be unique, got {names}; set `name` on each")
        weights = self.fusion.weights
        if weights is not None and len(weights) != len(self.retrievers):
            raise ValueError(
                f"fusion.weights: {len(weights)} weights for {len(self.retrievers)} retrievers; give one per retriever"
            )
        return self

    def first_stage(self, kind: str) -> RetrieverConfig | None:
        """Returns the first retriever of ``kind`` ("bm25" or "dense"), or None when the config has none."""
        return next((retriever for retriever in self.retrievers if retriever.kind == kind), None)

    @property
    def fusion_weights(self) -> tuple[float, ...]:
        """One convex weight per retriever: the configured ones, or equal shares."""
        return self.fusion.weights or tuple(1.0 / len(self.retrievers) for _ in self.retrievers)

    def to_toml_dict(self) -> dict[str, Any]:
        """Returns the config as a plain dict ready for ``tomli_w`` (no null values)."""
        data = self.model_dump(mode="json")
        if data["fusion"]["weights"] is None:
            del data["fusion"]["weights"]
        data["retrievers"] = [
            {key: value for key, value in retriever.items() if value is not None} for retriever in data["retrievers"]
        ]
        return data


def is_two_stage_layout(data: Any) -> bool:
    """True for a config dict written before first stages became a ``retrievers`` list."""
    return isinstance(data, dict) and not isinstance(data.get("retrievers"), (list, tuple))


def from_two_stage_layout(data: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """Returns a config dict in the ``retrievers`` layout for one written with ``[bm25]``/``[dense]`` tables.

    ``fusion.method = "bm25"``/``"dense"`` keep that retriever alone; ``convex`` with ``alpha``
    becomes BM25 weighted ``1 - alpha`` and dense ``alpha`` (a weight of 0 leaves that retriever
    out); ``rrf`` keeps both. Token chunking keeps measuring chunks with the dense model's tokenizer.
    Values are passed through for the model to validate, except ``alpha`` and ``method``, which
    the conversion needs: a bad one is appended to ``problems`` as ``"key: message"``.
    """
    data = dict(data)
    bm25 = data.pop("bm25", {})
    dense = data.pop("dense", {})
    fusion = dict(data.get("fusion", {})) if isinstance(data.get("fusion"), dict) else data.get("fusion", {})
    if not isinstance(bm25, dict) or not isinstance(dense, dict) or not isinstance(fusion, dict):
        return data | {"bm25": bm25, "dense": dense}  # let validation name the malformed table
    method = fusion.pop("method", "convex")
    alpha = fusion.pop("alpha", 0.5)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        problems.append(f"fusion.alpha: must be a number in [0, 1], got {alpha!r}")
        alpha = 0.5
    if method not in ("convex", "rrf", "bm25", "dense"):
        problems.append(f"fusion.method: must be 'convex', 'rrf', 'bm25' or 'dense', got {method!r}")
        method = "convex"
    use_bm25 = method in ("bm25", "rrf") or (method == "convex" and alpha < 1.0)
    use_dense = method in ("dense", "rrf") or (method == "convex" and alpha > 0.0)
    retrievers = ([{"kind": "bm25", **bm25}] if use_bm25 else []) + ([{"kind": "dense", **dense}] if use_dense else [])
    if method in ("bm25", "dense"):
        fusion["method"] = "convex"
    else:
        fusion["method"] = method
        if method == "convex" and use_bm25 and use_dense:
            fusion["weights"] = [1 - alpha, alpha]
    chunking = data.get("chunking")
    if (
        isinstance(chunking, dict)
        and chunking.get("kind") == "token"
        and "tokenizer" not in chunking
        and "model" in dense
    ):
        data["chunking"] = chunking | {"tokenizer": dense["model"]}
    return data | {"retrievers": retrievers, "fusion": fusion}


def _is_union_member(part: Any) -> bool:
    """Returns whether a part of an error location names a member of a union (``float``, ``list[int]``,
    ``FloatRange``) rather than a key: config keys are lower-case names or list positions."""
    return isinstance(part, str) and (not part.isidentifier() or part[:1].isupper() or part in _TYPE_NAMES)


_TYPE_NAMES = {"int", "float", "str", "bool", "list", "dict", "none"}


def format_validation_error(error: ValidationError, source: str) -> str:
    """Returns one line per bad key: ``<source>: <key>: <message>``."""
    return "\n".join(f"{source}: {problem}" for problem in _validation_problems(error, two_stage=False))


def _shown(value: Any) -> str:
    """Returns a value as the user wrote it, with its TOML type where the type is the problem."""
    kinds = {bool: "boolean", str: "string", int: "integer", float: "float", list: "array", dict: "table"}
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    return f"{kinds.get(type(value), type(value).__name__)} {text}"


def _expected(detail: dict) -> str:
    """Returns what a union member wanted: ``a number``, ``a list``, ``a table``."""
    wanted = detail["msg"].removeprefix("Input should be ").removeprefix("a valid ")
    if wanted.startswith("dictionary"):
        return "a table"
    if not wanted[:1].isalpha():
        return wanted  # the allowed words of a Literal
    return f"{'an' if wanted[0] in 'aeiou' else 'a'} {wanted}"


def _message(detail: dict) -> str:
    if detail["type"] == "extra_forbidden":
        return "unknown key"
    message = detail["msg"].removeprefix("Value error, ")
    if "input" in detail and not isinstance(detail["input"], (dict, list)) and not detail["type"] == "value_error":
        message += f", got {_shown(detail['input'])}"
    return message


def pipeline_config_from_dict(data: dict[str, Any], source: str = "<config>") -> PipelineConfig:
    """Returns a validated ``PipelineConfig``; raises ``ConfigError`` naming every bad key.

    A dict in the two-stage layout (``[bm25]``, ``[dense]``, ``fusion.alpha``) is converted first,
    and its errors name the keys as written (``bm25.k1``, not ``retrievers.0.bm25.k1``).
    """
    problems: list[str] = []
    two_stage = is_two_stage_layout(data)
    if two_stage:
        data = from_two_stage_layout(data, problems)
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as error:
        problems.extend(_validation_problems(error, two_stage))
    if problems:
        raise ConfigError("\n".join(f"{source}: {problem}" for problem in problems))
    return config


def _written_location(location: tuple, two_stage: bool) -> tuple:
    """The key as the user wrote it: ("retrievers", 0, "bm25", "k1") is ``bm25.k1`` in the two-stage
    layout and ``retrievers[0].k1`` in the list layout (a first stage's errors name its kind third);
    ("chunking", "recursive", "chunk_size") is ``chunking.chunk_size`` (a chunker's or re-ranker's
    errors name its kind second)."""
    if len(location) >= 2 and location[0] in ("chunking", "rerank"):
        return (location[0], *location[2:])
    if len(location) >= 3 and location[0] == "retrievers" and isinstance(location[1], int):
        return location[2:] if two_stage else (f"retrievers[{location[1]}]", *location[3:])
    if len(location) >= 2 and location[0] == "retrievers" and isinstance(location[1], int):
        return (f"retrievers[{location[1]}]", *location[2:])
    return location


def _validation_problems(error: ValidationError, two_stage: bool) -> list[str]:
    """Returns one ``key: message`` line per bad key (a model-level message starts with its own key).

    A value that fits no member of a union (a number, a list of choices or a range) gets one
    line too: the members' complaints about a value of the member's own shape (a table's bad
    ``low``) when there are some, else what each member expected.
    """
    by_key: dict[str, list[tuple[tuple, dict]]] = {}
    for detail in error.errors():
        location = tuple(detail["loc"])
        cut = next((index for index, part in enumerate(location) if _is_union_member(part)), len(location))
        key = ".".join(str(part) for part in _written_location(location[:cut], two_stage))
        by_key.setdefault(key, []).append((location[cut + 1 :], detail))
    problems = []
    for key, details in by_key.items():
        prefix = f"{key}: " if key else ""
        deeper = [(rest, detail) for rest, detail in details if rest]
        if deeper:  # the value had the right shape for one member: say what is wrong inside it
            rest, detail = deeper[0]
            inner = ".".join(str(part) for part in rest if not _is_union_member(part))
            problems.append(f"{key}.{inner}: {_message(detail)}")
        elif shaped := [detail for _, detail in details if detail["type"] == "value_error"]:
            # a member took the value's shape and refused the value itself (a range with low > high)
            problems.append(f"{prefix}{_message(shaped[0])}")
        elif len(details) > 1:
            expected = list(dict.fromkeys(_expected(detail) for _, detail in details))
            either = ", ".join(expected[:-1]) + f" or {expected[-1]}"
            problems.append(f"{prefix}expected {either}, got {_shown(details[0][1]['input'])}")
        else:
            problems.append(f"{prefix}{_message(details[0][1])}")
    return problems


def read_toml(path: str | Path) -> dict[str, Any]:
    """Returns the parsed TOML file; raises ``ConfigError`` if missing or malformed."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; give a TOML file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}); TOML files are UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read: {error.strerror or error}") from None


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    """Reads a pipeline TOML file (a ``[provenance]`` table, as export writes, is ignored).

    Returns the validated config; raises ``ConfigError``.
    """
    data = read_toml(path)
    data.pop("provenance", None)
    return pipeline_config_from_dict(data, source=str(path))


def save_pipeline_config(config: PipelineConfig, path: str | Path, provenance: dict[str, Any] | None = None) -> None:
    """Writes the config (and an optional ``[provenance]`` table) to ``path`` atomically."""
    data = config.to_toml_dict()
    if provenance:
        data["provenance"] = provenance
    atomic_write_bytes(path, tomli_w.dumps(data).encode())
