"""Judging what nested studies chose: each fold's choice scored on the fold's own queries, the
cross-validated verdict over every judged query, and the tuned baselines' choices.

The nested studies themselves (which exist, how they run) live in ``nested.py``. Every function
here takes the study's config, its splits and the stores it shares with them, never a session.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workbench.errors import StudyError
from workbench.evaluation.heldout import HeldoutReport, build_report, combine_evaluations, report_metrics
from workbench.evaluation.metrics import Evaluation, evaluate, parse_metric
from workbench.retrieval.config import PipelineConfig
from workbench.retrieval.pipeline import Pipeline, Resources
from workbench.study.attributes import BASELINE_ATTR, TARGET_ATTR, TUNE_QUERIES_ATTR
from workbench.study.config import StudyConfig
from workbench.study.export import choose_trial
from workbench.study.nested import NestedStudy, StudyStores, nested_studies, open_nested_study
from workbench.study.objective import describe_choice, trial_config
from workbench.study.space import BASELINES, baseline_config
from workbench.study.splits import StudySplits, query_digest
from workbench.study.workers import study_done, trial_counts


def default_baselines(config: StudyConfig) -> dict[str, PipelineConfig]:
    """Returns the configs of the BM25-only and dense-only baselines with default settings, by name."""
    return {name: baseline_config(name, config.space, f"{name}-baseline") for name in BASELINES}


@dataclass(frozen=True)
class FoldChoice:
    """What one nested study chose, and how its choice scored on the queries it never saw."""

    fold: int | None
    study: str
    trial: int
    baseline: str | None  # the default baseline, when the search chose it
    params: dict[str, Any]
    config: PipelineConfig
    tuning_value: float  # the study metric on the nested study's tuning queries
    heldout_value: float  # the study metric on its held-out queries
    tune_queries: int
    heldout_queries: int

    def describe(self) -> str:
        """The choice in one line: ``baseline: bm25-only, defaults`` or ``k1=1.2, b=0.71``."""
        return describe_choice(self.params, self.baseline)


def same_pipeline(first: PipelineConfig, second: PipelineConfig) -> bool:
    """True when two configs differ at most in their names."""
    return first.model_copy(update={"name": "-"}) == second.model_copy(update={"name": "-"})


def parameter_agreement(choices: Sequence[FoldChoice]) -> dict[str, dict[str, Any]]:
    """Returns, per sampled parameter, how much the folds' choices agree.

    A choice (category, integer) gets its most common value and how many folds chose it
    (``{"value", "folds", "of"}``); a float gets its range over the folds that set it
    (``{"low", "high", "set_in", "of"}``). Folds that chose a default baseline set no parameter.
    """
    names = list(dict.fromkeys(name for choice in choices for name in choice.params))
    agreement: dict[str, dict[str, Any]] = {}
    for name in names:
        values = [choice.params[name] for choice in choices if name in choice.params]
        if all(isinstance(value, float) for value in values):
            agreement[name] = {"low": min(values), "high": max(values), "set_in": len(values), "of": len(choices)}
        else:
            value, count = Counter(str(value) for value in values).most_common(1)[0]
            agreement[name] = {"value": value, "folds": count, "of": len(choices)}
    return agreement


@dataclass(frozen=True)
class CrossValidation:
    """The cross-validated verdict over every judged query, and what each fold chose."""

    report: HeldoutReport
    folds: tuple[FoldChoice, ...]
    baseline_folds: dict[str, tuple[FoldChoice, ...]]  # tuned baseline → its choice per fold; empty by default
    exported: PipelineConfig  # the final study's chosen config, the one exported

    @property
    def identical_to_exported(self) -> int:
        """How many folds chose exactly the exported pipeline."""
        return sum(same_pipeline(choice.config, self.exported) for choice in self.folds)

    @property
    def distinct_configs(self) -> int:
        """How many different pipelines the folds chose (1 = every fold agreed)."""
        distinct: list[PipelineConfig] = []
        for choice in self.folds:
            if not any(same_pipeline(choice.config, seen) for seen in distinct):
                distinct.append(choice.config)
        return len(distinct)

    def agreement(self) -> dict[str, dict[str, Any]]:
        return parameter_agreement(self.folds)

    def to_metrics(self) -> dict[str, float]:
        """Flat MLflow metrics of the per-fold choices (the verdict's own are ``report.to_metrics()``)."""
        tracking = parse_metric(self.report.metric).tracking_name
        metrics = {
            "cv_identical_to_exported": float(self.identical_to_exported),
            "cv_distinct_configs": float(self.distinct_configs),
        }
        for choice in self.folds:
            metrics[f"cv_fold_{choice.fold}_tuning_{tracking}"] = choice.tuning_value
            metrics[f"cv_fold_{choice.fold}_heldout_{tracking}"] = choice.heldout_value
        for name, entry in self.agreement().items():
            if "folds" in entry:
                metrics[f"cv_agreement_{name}"] = entry["folds"] / entry["of"]
        return metrics

    def to_tags(self) -> dict[str, str]:
        """MLflow tags naming each fold's choice."""
        return {f"workbench.cv.fold_{choice.fold}": choice.describe()[:5000] for choice in self.folds}

    def to_dict(self) -> dict[str, Any]:
        """Plain data for TOML provenance and JSON (no None: TOML has no null)."""

        def fold_row(choice: FoldChoice) -> dict[str, Any]:
            return {
                "fold": choice.fold,
                "study": choice.study,
                "trial": choice.trial,
                "choice": choice.describe(),
                "params": dict(choice.params),
                "tune_queries": choice.tune_queries,
                "heldout_queries": choice.heldout_queries,
                "tuning_value": choice.tuning_value,
                "heldout_value": choice.heldout_value,
            }

        tuned = self.report.intervals["tuned"][self.report.metric]
        return {
            "folds": len(self.folds),
            "queries": self.report.num_queries,
            "metric": self.report.metric,
            "estimate": {"mean": tuned.mean, "ci_low": tuned.low, "ci_high": tuned.high},
            "distinct_configs": self.distinct_configs,
            "identical_to_exported": self.identical_to_exported,
            "agreement": self.agreement(),
            "per_fold": [fold_row(choice) for choice in self.folds],
            "tuned_baselines": {
                baseline: [fold_row(choice) for choice in choices] for baseline, choices in self.baseline_folds.items()
            },
        }


def _judge(nested: NestedStudy, stores: StudyStores, metrics: tuple[str, ...]) -> tuple[FoldChoice, Evaluation, str]:
    """Loads a nested study, takes its choice and scores it on the nested study's held-out queries.

    Returns the choice, its evaluation, and a warning when the study has not reached its target
    (a timeout or Ctrl-C stopped it; ``workbench run`` resumes it), else "".
    """
    study, trial = _chosen(nested, stores)
    recorded = study.user_attrs.get(TUNE_QUERIES_ATTR)
    if recorded != query_digest(nested.tune.queries):
        raise StudyError(
            f"study '{nested.name}' was not tuned on this fold's queries (heldout, folds, seed or the splits "
            "changed since it ran): run `workbench run` again with a new study name or a fresh --state-dir"
        )
    config = trial_config(trial)
    run = Pipeline(config, stores.resources).search(nested.heldout.queries).run
    evaluation = evaluate(run, nested.heldout.qrels, metrics)
    choice = FoldChoice(
        nested.fold,
        nested.name,
        trial.number,
        trial.user_attrs.get(BASELINE_ATTR),
        dict(trial.params),
        config,
        trial.values[0],
        evaluation.means[parse_metric(nested.config.metric).name],
        len(nested.tune.queries),
        len(nested.heldout.queries),
    )
    return choice, evaluation, _shortfall(study, nested)


def _shortfall(study, nested: NestedStudy) -> str:
    """A warning when ``study`` stopped short of its trials (timeout, Ctrl-C; `workbench run` resumes it), else ""."""
    finished, target = trial_counts(study)[0], int(study.user_attrs.get(TARGET_ATTR, nested.target))
    if study_done(study, target):
        return ""
    return (
        f"WARNING: study '{nested.name}' has {finished} of its {target} trials: run `workbench run` again to finish it"
    )


def _chosen(nested: NestedStudy, stores: StudyStores):
    """Opens a nested study and returns it with its chosen trial; raises ``StudyError`` when it has none yet."""
    study = open_nested_study(nested, stores)
    if trial_counts(study)[0] == 0:
        raise StudyError(f"study '{nested.name}' has no finished trial yet: run `workbench run` again to finish it")
    return study, choose_trial(study)


def tuned_baseline_configs(
    config: StudyConfig, splits: StudySplits, stores: StudyStores
) -> tuple[dict[str, PipelineConfig], list[str]]:
    """Returns the configs the tuned baselines' searches chose on the tuning split (held-out split mode),
    and a warning for each search short of its trials.

    Raises ``StudyError`` when a search has no finished trial yet.
    """
    configs, warnings = {}, []
    for nested in nested_studies(config, splits, config.n_trials):
        study, trial = _chosen(nested, stores)
        configs[nested.baseline] = trial_config(trial)
        warnings += [short] if (short := _shortfall(study, nested)) else []
    return configs, warnings


def cross_validate(
    config: StudyConfig, splits: StudySplits, stores: StudyStores, exported: PipelineConfig
) -> CrossValidation:
    """Scores each fold's choice on the fold's queries and judges the result over every judged query.

    The baselines are scored on every query too: with default settings directly (nothing is
    tuned), tuned ones fold by fold like the pipeline. Raises ``StudyError`` when a fold's study
    is missing or has no finished trial (cross-validation incomplete: `workbench run` resumes it).
    """
    metrics = report_metrics(config.metric)
    by_system: dict[str, list[tuple[FoldChoice, Evaluation]]] = {}
    unfinished = []
    for nested in nested_studies(config, splits, config.n_trials):
        choice, evaluation, short = _judge(nested, stores, metrics)
        by_system.setdefault(nested.baseline or "tuned", []).append((choice, evaluation))
        unfinished += [short] if short else []
    evaluations = {system: combine_evaluations([e for _, e in judged]) for system, judged in by_system.items()}
    if config.baselines == "default":
        tune = splits.tune
        for name, baseline in default_baselines(config).items():
            evaluations[name] = evaluate(
                Pipeline(baseline, stores.resources).search(tune.queries).run, tune.qrels, metrics
            )
    choices = tuple(choice for choice, _ in by_system["tuned"])
    report = build_report(
        splits.tune.name,
        evaluations,
        config.metric,
        math.fsum(choice.tuning_value for choice in choices) / len(choices),
        seed=config.seed,
        folds=len(splits.folds),
        tuned_baselines=config.baselines == "tuned",
        warnings=[*splits.warnings(), *unfinished],
    )
    baseline_folds = {
        system: tuple(choice for choice, _ in judged) for system, judged in by_system.items() if system != "tuned"
    }
    return CrossValidation(report, choices, baseline_folds, exported)


def tuned_baseline_for_export(
    config: StudyConfig, splits: StudySplits, resources: Resources, choices: Sequence[FoldChoice]
) -> tuple[FoldChoice, float]:
    """Returns the config a tuned baseline exports as under k-fold, with its study metric on every judged query.

    No search of that baseline runs on every judged query (only one per fold), so among the folds'
    choices the one scoring best on all of them is taken (the earliest fold on a tie): like the
    study's own pick, it is then chosen on every judged query.
    """
    metric = config.metric
    tune = splits.tune
    scored: list[tuple[FoldChoice, float]] = []
    for choice in choices:
        if any(same_pipeline(choice.config, seen.config) for seen, _ in scored):
            continue
        run = Pipeline(choice.config, resources).search(tune.queries).run
        scored.append((choice, evaluate(run, tune.qrels, [metric]).means[parse_metric(metric).name]))
    return max(scored, key=lambda item: item[1])  # max keeps the first of equals: the earliest fold
