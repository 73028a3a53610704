"""Study files: which corpus, which metric, which search space (``study/search_space.py``), validated on load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, Strict, ValidationError, ValidationInfo, field_validator, model_validator

from workbench.errors import ConfigError
from workbench.evaluation.metrics import parse_metric
from workbench.retrieval.cache_files import check_cache_location, is_url
from workbench.retrieval.cluster import check_ray_address
from workbench.retrieval.config import FrozenModel, format_validation_error, read_toml
from workbench.study.search_space import SearchSpace
from workbench.study.space import space_points
from workbench.study.storage import check_storage_url

MAX_NAME_LENGTH = 100  # the name becomes a folder, an MLflow experiment and an Optuna study name


class GuardSettings(FrozenModel):
    """When a study tunes on generated questions: how far the generated set must back its choice
    (``study/guard.py``) before it is exported instead of the robust default."""

    # Split-half Kendall tau of the trials' order below which the generated set does not rank them
    # reliably; -1 switches the guard off (every choice is trusted).
    min_agreement: float = Field(default=0.5, ge=-1.0, le=1.0)
    # Bootstrap probability of beating the robust default a reliably ranked choice needs to be kept.
    clearly_better: float = Field(default=0.95, gt=0.5, le=1.0)


# How each location a study file may name is checked: the Optuna storage, the cache, the Ray cluster.
LOCATION_CHECKS = {"storage": check_storage_url, "cache": check_cache_location, "ray": check_ray_address}


class StudyConfig(FrozenModel):
    """One study file. Paths inside it are relative to the file's folder."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=MAX_NAME_LENGTH)
    corpus: Annotated[Path, Strict(False)]  # a TOML string
    tune_split: str = "train"
    heldout_split: str | None = Field(default=None, min_length=1)
    heldout_fraction: float = Field(default=0.3, ge=0.0, lt=1.0)
    # "auto": k-fold below study/splits.KFOLD_BELOW judged tuning queries unless heldout_split or
    # heldout_fraction asks for a fixed split; "split": that fixed split; "kfold": every judged query held out once.
    heldout: Literal["auto", "split", "kfold"] = "auto"
    folds: int = Field(default=5, ge=2, le=100)
    baselines: Literal["default", "tuned"] = "default"  # "tuned": BM25-only and dense-only get their own search
    baseline_trials: int = Field(default=10, ge=1, le=100_000)  # trials of each tuned baseline's search
    metric: str = "nDCG@10"
    second_objective: Literal["none", "latency"] = "none"
    n_trials: int = Field(default=20, ge=1, le=100_000)
    timeout_s: float | None = Field(default=None, gt=0)
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = 42
    storage: str | None = None
    tracking_uri: str | None = None
    # Where every worker keeps and finds vectors: a folder (every machine mounts) or a URL (s3://bucket/prefix).
    cache: str | None = Field(default=None, min_length=1)
    ray: str | None = None  # a Ray cluster that encodes: "auto" or host:port
    latency_sample: int = Field(default=30, ge=1, le=10_000)
    heartbeat_s: int = Field(default=30, ge=1, le=3600)
    pruner: Literal["none", "median", "wilcoxon"] = "none"
    pruning_batches: int = Field(default=4, ge=2, le=1000)
    space: SearchSpace = SearchSpace()
    guard: GuardSettings = GuardSettings()

    @field_validator("name")
    @classmethod
    def _not_a_folder_alias(cls, value: str) -> str:
        if set(value) == {"."}:
            raise ValueError(f"'{value}' names a folder, not a study (outputs go to <state>/studies/<name>)")
        return value

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        try:
            return parse_metric(value).name
        except ConfigError as error:
            raise ValueError(str(error)) from None

    @field_validator("storage", "cache", "ray")
    @classmethod
    def _checked_location(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            try:
                LOCATION_CHECKS[info.field_name](value)
            except ConfigError as error:
                raise ValueError(str(error)) from None
        return value

    @model_validator(mode="after")
    def _pruning_is_single_objective(self) -> StudyConfig:
        if self.pruner != "none" and self.second_objective != "none":
            raise ValueError("pruner needs a single objective: Optuna cannot prune multi-objective trials")
        return self

    @model_validator(mode="after")
    def _one_way_to_hold_out(self) -> StudyConfig:
        # Only a contradiction is an error: settings a mode does not use (folds with a fixed split,
        # heldout_fraction with k folds) are ignored, so a dumped config (every field) loads back.
        if self.heldout == "kfold" and self.heldout_split is not None:
            raise ValueError('heldout = "kfold" holds out folds of tune_split; remove heldout_split')
        return self

    @model_validator(mode="after")
    def _splits_differ(self) -> StudyConfig:
        if self.heldout_split is not None and self.heldout_split == self.tune_split:
            raise ValueError(f"heldout_split must differ from tune_split ('{self.tune_split}')")
        return self


def load_study_config(path: str | Path) -> StudyConfig:
    """Reads and validates a study file; the corpus path (and a cache folder) is resolved against the file's folder.

    Every value the search space can produce is checked against the pipeline config's rules here,
    before any study starts. Raises ``ConfigError`` naming the file and every bad key.
    """
    path = Path(path)
    data = read_toml(path)
    try:
        config = StudyConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, str(path))) from None
    try:
        space_points(config.space)  # every value the space can produce makes a valid pipeline config
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    corpus = config.corpus if config.corpus.is_absolute() else (path.parent / config.corpus)
    update: dict = {"corpus": corpus.resolve()}
    if config.cache is not None:
        update["cache"] = _resolved_cache(config.cache, path.parent)
    return config.model_copy(update=update)


def _resolved_cache(location: str, base: Path) -> str:
    """Returns a cache URL as given, and a cache folder (or ``file://`` URL) resolved against ``base``."""
    if is_url(location):
        return location
    return str((base / Path(location.removeprefix("file://")).expanduser()).resolve())


def with_cache_and_cluster(config: StudyConfig, cache: str | None, ray: str | None) -> StudyConfig:
    """Returns ``config`` with the ``--cache`` and ``--ray`` flags' values, where given, in place of its own.

    A cache folder is resolved against the working directory. Raises ``ConfigError`` naming the flag.
    """
    update: dict = {}
    for key, value in (("cache", cache), ("ray", ray)):
        if value is not None:
            try:
                LOCATION_CHECKS[key](value)
            except ConfigError as error:
                raise ConfigError(f"--{key}: {error}") from None
            update[key] = _resolved_cache(value, Path.cwd()) if key == "cache" else value
    return config.model_copy(update=update)
