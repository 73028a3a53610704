"""The bases every config derives from: frozen strict models, and the configs of any first stage,
re-ranker and chunker.

Apart from ``config.py`` so that the component registry (``components.py``) and the pipeline
config, which validates ``retrievers``, ``[rerank]`` and ``[chunking]`` through the registry, import it
without importing each other.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


class FrozenModel(BaseModel):
    """Base of every config: unknown keys are errors, values are never coerced from another type
    (``k1 = true`` and ``first_stage_depth = "100"`` are errors; an int is still a float), and a
    built config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FirstStageConfig(FrozenModel):
    """Base of every first stage's config: ``kind`` names the first stage (``"bm25"``, a registered
    name, or ``"module:attribute"``), ``name`` tells two of them apart in one pipeline (default: the
    kind's last part, unless the subclass gives ``name`` a default). A subclass adds the stage's own settings."""

    kind: str
    name: str = Field(pattern=NAME_PATTERN)

    @model_validator(mode="before")
    @classmethod
    def _name_from_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and cls.model_fields["name"].is_required():
            return data | {"name": default_stage_name(data.get("kind"))}
        return data


def default_stage_name(kind: Any) -> Any:
    """The name of a first stage whose config gives none: the last part of its kind
    (``"mypkg.stages:Overlap"`` → ``"Overlap"``)."""
    return kind.rsplit(":", 1)[-1].rsplit(".", 1)[-1] if isinstance(kind, str) else kind


class RerankerConfig(FrozenModel):
    """Base of every re-ranker's config (``[rerank]``): ``kind`` names the re-ranker (default: the
    built-in cross-encoder; a registered name or ``"module:attribute"`` names another), ``depth`` and
    ``weight`` say how the pipeline uses its scores. A subclass adds the re-ranker's own settings.

    ``weight`` is the re-ranker's share of the head's new order, the rest being the first stage's
    (both min-max normalised per query): 1 re-ranks by the re-ranker alone.
    """

    kind: str
    depth: int = Field(default=50, ge=1, le=10_000)
    weight: float = Field(default=1.0, ge=0.0, le=1.0)

    @property
    def enabled(self) -> bool:
        """Whether the pipeline re-ranks at all (the cross-encoder's ``model = "none"`` switches it off)."""
        return True


class ChunkerConfig(FrozenModel):
    """Base of every chunker's config (``[chunking]``): ``kind`` names the chunker (default: whole
    documents; a registered name or ``"module:attribute"`` names another). A subclass adds the
    chunker's own settings."""

    kind: str
