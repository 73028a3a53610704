"""The bases every config derives from: frozen strict models, and the config of any first stage.

Apart from ``config.py`` so that the first-stage registry (``components.py``) and the pipeline
config, which validates ``retrievers`` through the registry, import it without importing each other.
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
