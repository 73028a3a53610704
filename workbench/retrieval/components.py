"""What the pipeline asks of a first stage, and the registry that finds one by its ``kind``.

A first stage is a class that builds an index over chunks and answers a batch of queries with
chunk hits. BM25, dense and TF-IDF are first stages; so is a user's own class, named in a config
by a registered name (``kind = "bm25"``) or by where it lives (``kind = "mypkg.stages:MyStage"``).
The pipeline, a saved index and a study call only the ``FirstStage`` protocol: adding a kind
touches no file here.

A kind is resolved in this order: a class registered in this process (``register``); a built-in
(``BUILT_INS``); an entry point of the group ``workbench.components`` (read on first need); a
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
from workbench.retrieval.config_base import FirstStageConfig
from workbench.retrieval.retrievers import ChunkHits
from workbench.types import Chunk

__all__ = [
    "BuildContext",
    "ChunkHits",
    "FirstStage",
    "FirstStageBase",
    "FirstStageConfig",
    "component",
    "known_kinds",
    "register",
]

ENTRY_POINT_GROUP = "workbench.components"
# The package's own first stages, by kind. pyproject.toml registers the same names as entry points;
# listing them here too keeps them found in a checkout whose install predates an entry point.
BUILT_INS = {
    "bm25": "workbench.retrieval.retrievers.bm25:BM25Index",
    "dense": "workbench.retrieval.retrievers.dense:DenseIndex",
    "tfidf": "workbench.retrieval.retrievers.tfidf:TfidfIndex",
}


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


class FirstStageBase:
    """Defaults for the optional parts of ``FirstStage``: no models, an update that builds afresh,
    no search-time settings.

    ``search_settings`` names config fields that change how a built index is searched, not what is
    built (dense: ``ef_search``, ``nprobe``): configs that differ only there share one built index,
    and ``searching(config)`` returns it searched with that config's values.
    """

    version: ClassVar[str] = "1"
    seconds_encoding: float = 0.0
    search_settings: ClassVar[tuple[str, ...]] = ()

    def searching(self, config: Any) -> Self:
        return self

    def updated(self, context: BuildContext, kept: Sequence[int | None]) -> Self:
        return type(self).build(self.config, context)  # type: ignore[attr-defined]

    @classmethod
    def models(cls, config: Any) -> dict[str, str]:
        return {}

    @classmethod
    def load_models(cls, config: Any) -> None:
        return None


# --- the registry -------------------------------------------------------------------------------

# What the class itself must have (num_chunks is set on each built index, so it is not checked here).
_REQUIRED = (
    "config_type", "version", "build", "search", "save", "load", "updated", "models", "load_models", "seconds_encoding",
)  # fmt: skip
_registered: dict[str, type] = {}
_entry_points: dict[str, Any] | None = None


def register(kind: str, component: type) -> None:
    """Registers ``component`` (a ``FirstStage`` class) under ``kind`` for this process; raises
    ``ValueError`` when it is not one or the kind is a built-in's."""
    if kind in BUILT_INS:
        raise ValueError(f"kind {kind!r} is a built-in first stage; choose another name")
    _registered[kind] = _checked(kind, component)


def _checked(kind: str, component: Any) -> type:
    missing = [name for name in _REQUIRED if not hasattr(component, name)]
    if missing:
        raise ValueError(f"{kind!r} names {component!r}, which is not a first stage: it has no {', '.join(missing)}")
    config_type = component.config_type
    if not (isinstance(config_type, type) and issubclass(config_type, FirstStageConfig)):
        raise ValueError(f"{kind!r}: config_type of {component.__name__} must be a FirstStageConfig subclass")
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
    for kind in [kind for kind in _resolved if ":" not in kind and kind not in BUILT_INS]:
        del _resolved[kind]


def known_kinds() -> list[str]:
    """Returns the names a config may give as ``kind``: built-ins, registered ones and entry points."""
    return list(dict.fromkeys([*BUILT_INS, *_registered, *_discovered()]))


_resolved: dict[str, type] = {}


def component(kind: str) -> type[FirstStage]:
    """Returns the first-stage class of ``kind``; raises ``ValueError`` (a message for a config key's
    line) when no class answers to it or the class is not a first stage."""
    if kind in _registered:
        return _registered[kind]  # type: ignore[return-value]
    if kind not in _resolved:
        _resolved[kind] = _checked(kind, _find(kind))
    return _resolved[kind]  # type: ignore[return-value]


def _find(kind: str) -> Any:
    if kind in BUILT_INS:
        return _import(BUILT_INS[kind], kind)
    discovered = _discovered()
    if kind in discovered:
        try:
            return discovered[kind].load()
        except Exception as error:  # a plugin that fails to import: say which, and why
            raise ValueError(f"entry point {kind!r} ({discovered[kind].value}) fails to load: {error}") from None
    if ":" in kind:
        return _import(kind, kind)
    raise ValueError(
        f"unknown kind {kind!r}; known kinds: {', '.join(known_kinds())}, "
        "or name a first-stage class as 'module:attribute'"
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


def component_of(config: FirstStageConfig) -> type[FirstStage]:
    """Returns the first-stage class that builds ``config`` (by its ``kind``)."""
    return component(config.kind)


def first_stage_config(data: Any) -> FirstStageConfig:
    """Returns ``data`` (a dict with a ``kind``) validated as that kind's config.

    Raises pydantic's ``ValidationError``, every location prefixed with the kind (as a discriminated
    union would), or ``ValueError`` for a missing or unknown kind.
    """
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise ValueError(f"expected a table with a `kind`, got {type(data).__name__}")
    kind = data.get("kind")
    try:
        if not isinstance(kind, str):
            raise ValueError(f"missing or not a string; known kinds: {', '.join(known_kinds())}")
        config_type = component(kind).config_type
    except ValueError as error:
        # "?" stands where the kind would: the key reads ``retrievers[0].kind`` all the same.
        detail = {"type": "value_error", "loc": (kind if isinstance(kind, str) else "?", "kind"), "input": kind}
        raise ValidationError.from_exception_data("FirstStageConfig", [detail | {"ctx": {"error": error}}]) from None
    try:
        return config_type.model_validate(data)
    except ValidationError as error:
        details = [dict(detail, loc=(kind, *detail["loc"])) for detail in error.errors()]
        raise ValidationError.from_exception_data(error.title, details) from None
