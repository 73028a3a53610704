"""What the pipeline asks of a first stage, and the registry that finds any component by its ``kind``.

A first stage is a class that builds an index over chunks and answers a batch of queries with
chunk hits. BM25, dense and TF-IDF are first stages; so is a user's own class, named in a config
by a registered name (``kind = "bm25"``) or by where it lives (``kind = "mypkg.stages:MyStage"``).
The pipeline, a saved index and a study call only the ``FirstStage`` protocol: adding a kind
touches no file here.

The same registry finds the two other families of components, re-rankers (``[rerank] kind``, the
``Reranker`` protocol of ``rerank.py``) and chunkers (``[chunking] kind``, the ``Chunker`` protocol of
``chunking.py``). Kinds of all three share one namespace and one entry-point group; a class belongs to
the family whose config base its ``config_type`` derives from.

A kind is resolved in this order: a class registered in this process (``register``); a built-in
(``Family.built_ins``); an entry point of the group ``workbench.components`` (read on first need); a
``module:attribute`` name, imported.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

from workbench.progress import ProgressCallback
from workbench.retrieval.cache import Cache
from workbench.retrieval.config_base import ChunkerConfig, FirstStageConfig, FrozenModel, RerankerConfig
from workbench.retrieval.retrievers import ChunkHits
from workbench.types import Chunk

__all__ = [
    "BuildContext",
    "ChunkHits",
    "ChunkerConfig",
    "FirstStage",
    "FirstStageBase",
    "FirstStageConfig",
    "RerankerConfig",
    "component",
    "component_identity",
    "known_kinds",
    "register",
]

ENTRY_POINT_GROUP = "workbench.components"


@dataclass
class BuildContext:
    """What a first stage is built from: the chunks, and what stages over the same chunks share.

    ``address`` keys these chunks in ``cache`` (corpus fingerprint and chunking); None when they
    are not cacheable (an index update's new chunks). ``memo`` is one dict per chunk list, kept for
    the life of the resources: a stage may keep there what several of its configs share (BM25 keeps
    tokens, which do not depend on k1 or b).
    """

    chunks: Sequence[Chunk]
    cache: Cache | None = None
    address: dict[str, Any] | None = None
    memo: dict[Any, Any] = field(default_factory=dict)
    progress: ProgressCallback | None = None

    @property
    def texts(self) -> list[str]:
        """The chunks' texts, in chunk order."""
        return [chunk.text for chunk in self.chunks]

    def cached(self, kind: str, parts: dict[str, Any], compute: Callable[[], Any]) -> Any:
        """Returns ``compute()`` (any JSON value), read from the disk cache when it holds it for these
        chunks and ``parts`` (what besides the chunks decides the value; include a code version)."""
        if self.cache is None or self.address is None:
            return compute()
        payload = self.cache.blob(kind, self.address | parts, lambda: json.dumps(compute()).encode())
        return json.loads(payload)

    def cached_bytes(self, kind: str, parts: dict[str, Any], compute: Callable[[], bytes]) -> bytes:
        """Returns ``compute()`` (bytes, say arrays as ``.npz``), read from the disk cache when it holds
        it for these chunks and ``parts``, as ``cached`` does for JSON values."""
        if self.cache is None or self.address is None:
            return compute()
        return self.cache.blob(kind, self.address | parts, compute)


@runtime_checkable
class FirstStage(Protocol):
    """A first stage: an index over a fixed list of chunks that answers queries with chunk hits.

    ``config_type`` is its pydantic config (a ``FirstStageConfig``: a ``kind`` and a ``name``);
    ``version`` names the code that builds it, bumped when what it produces changes (disk-cache
    addresses and index manifests carry it). Built-ins and users' stages alike implement it;
    ``FirstStageBase`` supplies the optional parts.
    """

    config_type: ClassVar[type[FirstStageConfig]]
    version: ClassVar[str]
    config: FirstStageConfig

    @classmethod
    def build(cls, config: Any, context: BuildContext) -> Self:
        """Returns the index of ``config`` over ``context.chunks``."""
        ...

    @property
    def num_chunks(self) -> int:
        """How many chunks the index holds."""
        ...

    def search(self, queries: Sequence[str], k: int, query_cache: bool = True) -> ChunkHits:
        """Returns up to ``k`` chunk positions and scores per query, best first. With ``query_cache``
        False, answer as a first-time query would be (keep and read no per-query work)."""
        ...

    def save(self, folder: Path) -> None:
        """Writes the index's files under ``folder`` (an existing, empty folder). No pickles: plain
        files whose format says how they were made."""
        ...

    @classmethod
    def load(cls, config: Any, folder: Path, chunks: Sequence[Chunk]) -> Self:
        """Returns the index ``save`` wrote under ``folder`` for ``chunks``; encodes nothing if it can.
        Raises ``SavedIndexError`` when the files do not fit ``config``."""
        ...

    def updated(self, context: BuildContext, kept: Sequence[int | None]) -> Self:
        """Returns the index over ``context.chunks``, where ``kept[i]`` is the position in this index
        of chunk ``i`` when its text is unchanged (None for a new chunk): reuse its work."""
        ...

    @classmethod
    def models(cls, config: Any) -> dict[str, str]:
        """Returns role → model id (or folder) of every model whose weights decide the results:
        an index manifest records their fingerprints. Role ``"model"`` is the stage's own model."""
        ...

    @classmethod
    def load_models(cls, config: Any) -> None:
        """Loads the models ``config`` names now; raises ``ModelError`` for one that cannot load."""
        ...

    @property
    def seconds_encoding(self) -> float:
        """Seconds spent encoding texts with a model so far (0 for a stage without one)."""
        ...


class ComponentBase:
    """What every component's base gives: ``version`` "1" and no models."""

    version: ClassVar[str] = "1"

    @classmethod
    def models(cls, config: Any) -> dict[str, str]:
        return {}

    @classmethod
    def load_models(cls, config: Any) -> None:
        return None


class FirstStageBase(ComponentBase):
    """Defaults for the optional parts of ``FirstStage``: no models, an update that builds afresh,
    no search-time settings.

    ``search_settings`` names config fields that change how a built index is searched, not what is
    built (dense: ``ef_search``, ``nprobe``): configs that differ only there share one built index,
    and ``searching(config)`` returns it searched with that config's values.
    """

    seconds_encoding: float = 0.0
    search_settings: ClassVar[tuple[str, ...]] = ()

    def searching(self, config: Any) -> Self:
        return self

    def updated(self, context: BuildContext, kept: Sequence[int | None]) -> Self:
        return type(self).build(self.config, context)  # type: ignore[attr-defined]


# --- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One family of components: where a config names them, what their class must have, and the
    config base their ``config_type`` derives from."""

    name: str  # in messages: "a first stage", "a re-ranker", "a chunker"
    noun: str  # in "name a <noun> class as 'module:attribute'"
    config_base: type[FrozenModel]
    required: tuple[str, ...]  # what the class itself must have
    # The package's own components, by kind. pyproject.toml registers the same names as entry points;
    # listing them here too keeps them found in a checkout whose install predates an entry point.
    built_ins: dict[str, str]
    default_kind: str | None = None  # the kind of a table that names none

    @property
    def shared_fields(self) -> set[str]:
        """The config fields every member has (``kind``, and the pipeline's own keys of the table):
        the rest are the component's own settings."""
        return set(self.config_base.model_fields)


# num_chunks is set on each built index, so it is not checked on the class.
FIRST_STAGE = Family(
    "a first stage",
    "first-stage",
    FirstStageConfig,
    ("config_type", "version", "build", "search", "save", "load", "updated", "models", "load_models", "seconds_encoding"),
    {
        "bm25": "workbench.retrieval.retrievers.bm25:BM25Index",
        "dense": "workbench.retrieval.retrievers.dense:DenseIndex",
        "tfidf": "workbench.retrieval.retrievers.tfidf:TfidfIndex",
    },
)  # fmt: skip
RERANKER = Family(
    "a re-ranker",
    "re-ranker",
    RerankerConfig,
    ("config_type", "version", "rerank", "models", "load_models"),
    {"cross-encoder": "workbench.retrieval.rerank:CrossEncoderReranker"},
    default_kind="cross-encoder",
)
CHUNKER = Family(
    "a chunker",
    "chunker",
    ChunkerConfig,
    ("config_type", "version", "chunk", "models", "load_models"),
    {
        "none": "workbench.retrieval.chunking:WholeDocuments",
        "recursive": "workbench.retrieval.chunking:CharacterChunker",
        "token": "workbench.retrieval.chunking:TokenChunker",
    },
    default_kind="none",
)
FAMILIES = (FIRST_STAGE, RERANKER, CHUNKER)

_registered: dict[str, type] = {}
_entry_points: dict[str, Any] | None = None
_resolved: dict[str, Any] = {}  # kind → what it named, imported once (checked against a family on each look-up)


def _built_in(kind: str) -> str | None:
    return next((family.built_ins[kind] for family in FAMILIES if kind in family.built_ins), None)


def family_of(config_type: Any) -> Family | None:
    """Returns the family whose config base ``config_type`` (a class or a config) derives from, or None."""
    config_class = config_type if isinstance(config_type, type) else type(config_type)
    return next((family for family in FAMILIES if issubclass(config_class, family.config_base)), None)


def register(kind: str, component: type) -> None:
    """Registers ``component`` (a first stage, re-ranker or chunker class: its ``config_type`` says
    which) under ``kind`` for this process; raises ``ValueError`` when it is none of them or the kind
    is a built-in's."""
    if _built_in(kind) is not None:
        raise ValueError(f"kind {kind!r} is a built-in component; choose another name")
    config_type = getattr(component, "config_type", None)
    family = family_of(config_type) if isinstance(config_type, type) else None
    if family is None:
        raise ValueError(
            f"{kind!r}: {component!r} is not a component: its config_type must derive from "
            "FirstStageConfig, RerankerConfig or ChunkerConfig"
        )
    _registered[kind] = _checked(kind, component, family)


def _checked(kind: str, component: Any, family: Family) -> type:
    missing = [name for name in family.required if not hasattr(component, name)]
    if missing:
        raise ValueError(f"{kind!r} names {component!r}, which is not {family.name}: it has no {', '.join(missing)}")
    config_type = component.config_type
    if not (isinstance(config_type, type) and issubclass(config_type, family.config_base)):
        raise ValueError(
            f"{kind!r}: config_type of {component.__name__} must be a {family.config_base.__name__} subclass"
        )
    return component


def _discovered() -> dict[str, Any]:
    """Entry points of the group ``workbench.components`` by name, read once (loading none of them)."""
    global _entry_points
    if _entry_points is None:
        from importlib.metadata import entry_points

        _entry_points = {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}
    return _entry_points


def forget_discovered() -> None:
    """Reads the entry points afresh on the next look-up (after installing a plugin in this process)."""
    global _entry_points
    _entry_points = None
    for kind in [kind for kind in _resolved if ":" not in kind and _built_in(kind) is None]:
        del _resolved[kind]


def known_kinds(family: Family = FIRST_STAGE) -> list[str]:
    """Returns the names a config may give as the ``kind`` of ``family``: built-ins, registered ones and
    entry points (an entry point of another package is imported to learn its family; one that fails
    to import is left out)."""
    registered = [kind for kind, component in _registered.items() if family_of(component.config_type) is family]
    return list(dict.fromkeys([*family.built_ins, *registered, *_discovered_of(family)]))


def _discovered_of(family: Family) -> list[str]:
    kinds = []
    for kind in _discovered():
        if _built_in(kind) is not None:
            if kind in family.built_ins:
                kinds.append(kind)
            continue
        try:
            config_type = getattr(_resolve(kind), "config_type", None)
        except ValueError:
            continue
        if isinstance(config_type, type) and family_of(config_type) is family:
            kinds.append(kind)
    return kinds


def component(kind: str, family: Family = FIRST_STAGE) -> type:
    """Returns the class of ``family`` (first stages by default) that ``kind`` names; raises
    ``ValueError`` (a message for a config key's line) when no class answers to it or the class is
    not of that family."""
    if kind in _registered:
        return _checked(kind, _registered[kind], family)
    return _checked(kind, _resolve(kind, family), family)


def _resolve(kind: str, family: Family = FIRST_STAGE) -> Any:
    if kind not in _resolved:
        _resolved[kind] = _find(kind, family)
    return _resolved[kind]


def _find(kind: str, family: Family) -> Any:
    built_in = _built_in(kind)
    if built_in is not None:
        return _import(built_in, kind)
    discovered = _discovered()
    if kind in discovered:
        try:
            return discovered[kind].load()
        except Exception as error:  # a plugin that fails to import: say which, and why
            raise ValueError(f"entry point {kind!r} ({discovered[kind].value}) fails to load: {error}") from None
    if ":" in kind:
        return _import(kind, kind)
    raise ValueError(
        f"unknown kind {kind!r}; known kinds: {', '.join(known_kinds(family))}, "
        f"or name a {family.noun} class as 'module:attribute'"
    )


def _import(target: str, kind: str) -> Any:
    module_name, _, attribute = target.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except ImportError as error:
        raise ValueError(f"kind {kind!r}: cannot import module {module_name!r} ({error})") from None
    except AttributeError:
        raise ValueError(f"kind {kind!r}: module {module_name!r} has no attribute {attribute!r}") from None
    except Exception as error:  # the user's module failed while it was imported: say so in one line
        raise ValueError(f"kind {kind!r}: importing {module_name!r} failed: {type(error).__name__}: {error}") from None
    return found


def component_of(config: FrozenModel) -> type:
    """Returns the class that implements ``config`` (a first stage's, re-ranker's or chunker's config),
    found by its ``kind`` in the family of its config base."""
    family = family_of(config)
    if family is None:
        raise TypeError(f"{type(config).__name__} is not the config of a component")
    return component(config.kind, family)  # type: ignore[attr-defined]


def own_settings(config: FrozenModel) -> dict[str, Any]:
    """Returns the component's own settings in ``config``: every field but those its family's config
    base declares (``kind``; a re-ranker's ``depth`` and ``weight``), as JSON values."""
    family = family_of(config)
    shared = family.shared_fields if family is not None else set()
    return config.model_dump(mode="json", exclude=shared)


def component_identity(config: FrozenModel) -> dict[str, Any]:
    """Returns what identifies the component ``config`` names in a cache address or an index manifest:
    its class (``module:qualified name``), its ``version`` and its fingerprint.

    The fingerprint is what the class's ``fingerprint(config)`` returns when it defines one (say a
    model's fingerprint; it must change whenever the component's output would), else its own settings.
    Two components that differ in any of these never share cached chunks or scores.
    """
    implementation = component_of(config)
    fingerprint = getattr(implementation, "fingerprint", None)
    return {
        "class": f"{implementation.__module__}:{implementation.__qualname__}",
        "version": str(getattr(implementation, "version", "")),
        "fingerprint": fingerprint(config) if callable(fingerprint) else own_settings(config),
    }


def component_config(data: Any, family: Family) -> FrozenModel:
    """Returns ``data`` (a dict with a ``kind``, or without one where the family has a default) validated
    as that kind's config.

    Raises pydantic's ``ValidationError``, every location prefixed with the kind (as a discriminated
    union would), or ``ValueError`` for a missing or unknown kind.
    """
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise ValueError(f"expected a table with a `kind`, got {type(data).__name__}")
    kind = data.get("kind", family.default_kind)
    try:
        if not isinstance(kind, str):
            raise ValueError(f"missing or not a string; known kinds: {', '.join(known_kinds(family))}")
        config_type = component(kind, family).config_type
    except ValueError as error:
        # "?" stands where the kind would: the key reads ``retrievers[0].kind`` all the same.
        detail = {"type": "value_error", "loc": (kind if isinstance(kind, str) else "?", "kind"), "input": kind}
        raise ValidationError.from_exception_data(family.config_base.__name__, [detail | {"ctx": {"error": error}}]) from None
    try:
        return config_type.model_validate(data)
    except ValidationError as error:
        details = [dict(detail, loc=(kind, *detail["loc"])) for detail in error.errors()]
        raise ValidationError.from_exception_data(error.title, details) from None


def first_stage_config(data: Any) -> FirstStageConfig:
    """Returns ``data`` (a dict with a ``kind``) validated as that first stage's config (see ``component_config``)."""
    return component_config(data, FIRST_STAGE)  # type: ignore[return-value]
