"""Pipeline configs: typed, frozen, validated at the boundary, round-tripping through TOML."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from workbench.errors import ConfigError
from workbench.files import atomic_write_bytes

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class FrozenModel(BaseModel):
    """Base of every config: unknown keys are errors, values are never coerced from another type
    (``k1 = true`` and ``first_stage_depth = "100"`` are errors; an int is still a float), and a
    built config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ChunkingConfig(FrozenModel):
    """How documents are cut before indexing. ``none`` indexes whole documents.

    ``recursive`` measures ``chunk_size`` in characters; ``token`` measures it in tokens
    of the embedding model's tokenizer.
    """

    kind: Literal["none", "recursive", "token"] = "none"
    chunk_size: int = Field(default=512, ge=16, le=100_000)
    chunk_overlap: int = Field(default=0, ge=0)

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, overlap: int, info: ValidationInfo) -> int:
        size = info.data.get("chunk_size")
        if size is not None and overlap >= size:
            raise ValueError(f"must be smaller than chunk_size ({size}), got {overlap}")
        return overlap


class BM25Config(FrozenModel):
    """Lexical first stage. ``bm25s`` is the fast engine; ``rank_bm25`` the reference one."""

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


class DenseConfig(FrozenModel):
    """Dense first stage: a sentence-transformers model and a faiss index over its vectors."""

    model: str = DEFAULT_MODEL
    index: Literal["flat", "hnsw"] = "flat"
    hnsw_m: int = Field(default=32, ge=4, le=256)
    batch_size: int = Field(default=64, ge=1, le=4096)


class FusionConfig(FrozenModel):
    """How the two first stages combine.

    ``convex`` scores ``alpha * dense + (1 - alpha) * bm25`` after per-query normalisation,
    so alpha 0 is BM25 alone and alpha 1 is dense alone. ``rrf`` is reciprocal rank fusion.
    """

    method: Literal["convex", "rrf", "bm25", "dense"] = "convex"
    alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    normalization: Literal["minmax", "zscore"] = "minmax"
    rrf_k: int = Field(default=60, ge=1, le=10_000)

    @property
    def uses_bm25(self) -> bool:
        return self.method == "bm25" or self.method == "rrf" or (self.method == "convex" and self.alpha < 1.0)

    @property
    def uses_dense(self) -> bool:
        return self.method == "dense" or self.method == "rrf" or (self.method == "convex" and self.alpha > 0.0)


class RerankConfig(FrozenModel):
    """Cross-encoder over the top ``depth`` fused documents; ``model = "none"`` switches it off.

    ``weight`` is the cross-encoder's share of the head's new order, the rest being the first
    stage's (both min-max normalised per query): 1 re-ranks by the cross-encoder alone.
    """

    model: str = "none"
    depth: int = Field(default=50, ge=1, le=10_000)
    weight: float = Field(default=1.0, ge=0.0, le=1.0)
    batch_size: int = Field(default=32, ge=1, le=4096)

    @property
    def enabled(self) -> bool:
        return self.model != "none"


class PipelineConfig(FrozenModel):
    """Everything that decides which documents a query gets back, and in which order."""

    name: str = "pipeline"
    chunking: ChunkingConfig = ChunkingConfig()
    bm25: BM25Config = BM25Config()
    dense: DenseConfig = DenseConfig()
    fusion: FusionConfig = FusionConfig()
    rerank: RerankConfig = RerankConfig()
    first_stage_depth: int = Field(default=100, ge=1, le=100_000)
    doc_aggregation: Literal["max", "sum"] = "max"
    output_depth: int = Field(default=100, ge=1, le=100_000)

    def to_toml_dict(self) -> dict[str, Any]:
        """Returns the config as a plain dict ready for ``tomli_w``."""
        return self.model_dump(mode="json")


def _is_union_member(part: Any) -> bool:
    """Returns whether a part of an error location names a member of a union (``float``, ``list[int]``,
    ``FloatRange``) rather than a key: config keys are lower-case names or list positions."""
    return isinstance(part, str) and (not part.isidentifier() or part[:1].isupper() or part in _TYPE_NAMES)


_TYPE_NAMES = {"int", "float", "str", "bool", "list", "dict", "none"}


def format_validation_error(error: ValidationError, source: str) -> str:
    """Returns one line per bad key: ``<source>: <key>: <message>``.

    A value that fits no member of a union (a number, a list of choices or a range) gets one
    line too: the members' complaints about a value of the member's own shape (a table's bad
    ``low``) when there are some, else what each member expected.
    """
    by_key: dict[str, list[tuple[tuple, dict]]] = {}
    for detail in error.errors():
        location = tuple(detail["loc"])
        cut = next((index for index, part in enumerate(location) if _is_union_member(part)), len(location))
        key = ".".join(str(part) for part in location[:cut]) or "(top level)"
        by_key.setdefault(key, []).append((location[cut + 1 :], detail))
    lines = []
    for key, details in by_key.items():
        deeper = [(rest, detail) for rest, detail in details if rest]
        if deeper:  # the value had the right shape for one member: say what is wrong inside it
            rest, detail = deeper[0]
            inner = ".".join(str(part) for part in rest if not _is_union_member(part))
            lines.append(f"{source}: {key}.{inner}: {_message(detail)}")
        elif len(details) > 1:
            expected = list(dict.fromkeys(_expected(detail) for _, detail in details))
            either = ", ".join(expected[:-1]) + f" or {expected[-1]}"
            lines.append(f"{source}: {key}: expected {either}, got {_shown(details[0][1]['input'])}")
        else:
            lines.append(f"{source}: {key}: {_message(details[0][1])}")
    return "\n".join(lines)


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
    """Returns a validated ``PipelineConfig``; raises ``ConfigError`` naming every bad key."""
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """Returns the parsed TOML file; raises ``ConfigError`` if missing or malformed."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None


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
