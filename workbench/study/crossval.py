"""Studies inside a study: the folds of cross-validation, and the searches of tuned baselines.

With k folds (``heldout = "kfold"``), fold k's study ``<name>-fold-<k>`` tunes on the other folds'
queries only, with the study's space, trial budget and seed (a worker's own seed under
``--workers``); the config it chooses is then scored
on fold k's queries. Every judged query so gets one held-out score from a config that never saw
it, and the verdict runs over all of them. The study ``<name>`` itself tunes on every judged query;
its best config is the one exported.

With ``baselines = "tuned"``, BM25-only and dense-only get searches of their own over the part of
the space that uses that retriever alone (``baseline_space``), ``baseline_trials`` trials each:
``<name>-bm25`` and ``<name>-dense`` with a held-out split, ``<name>-fold-<k>-bm25`` … inside each fold.

Every nested study shares the study's storage and its ``Resources`` (indexes, disk cache), so only
the first one pays for encoding. They log no MLflow runs of their own: the study's parent run gets
their summary (per-fold choices and the cross-validated figures).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from workbench.errors import StudyError
from workbench.evaluation.heldout import HeldoutReport, build_report, combine_evaluations, report_metrics
from workbench.evaluation.metrics import Evaluation, evaluate, parse_metric
from workbench.retrieval.config import PipelineConfig
from workbench.retrieval.pipeline import Pipeline
from workbench.study.attributes import BASELINE_ATTR, EXHAUSTED_ATTR, TARGET_ATTR, TUNE_QUERIES_ATTR
from workbench.study.config import StudyConfig
from workbench.study.export import choose_trial
from workbench.study.objective import Objective, trial_config
from workbench.study.optuna_study import enqueue_baselines, load_optuna_study
from workbench.study.space import BASELINES, baseline_space
from workbench.study.splits import StudySplits, query_digest
from workbench.study.workers import TrialProgress, study_done, trial_counts, work_on_study
from workbench.types import QuerySet

if TYPE_CHECKING:
    from workbench.study.session import StudySession


@dataclass(frozen=True)
class NestedStudy:
    """One study run inside a study: a fold's search, or a tuned baseline's."""

    config: StudyConfig  # the study's config under the nested study's name (and a baseline's space)
    tune: QuerySet  # the only queries its trials search
    heldout: QuerySet  # what its choice is judged on
    target: int  # finished trials to reach
    fold: int | None  # fold number; None with a held-out split
    baseline: str | None  # "bm25" or "dense" for a tuned baseline's search

    @property
    def name(self) -> str:
        return self.config.name


def nested_studies(config: StudyConfig, splits: StudySplits, target: int) -> list[NestedStudy]:
    """Returns the nested studies a study needs, in the order they run: per fold, the fold's search
    and its tuned baselines; with a held-out split, the tuned baselines only (if any)."""
    tuned = BASELINES if config.baselines == "tuned" else ()

    def searches(prefix: str, tune: QuerySet, heldout: QuerySet, fold: int | None, main: bool) -> list[NestedStudy]:
        found = (
            [NestedStudy(config.model_copy(update={"name": prefix}), tune, heldout, target, fold, None)] if main else []
        )
        for baseline in tuned:
            space = baseline_space(baseline, config.space)
            restricted = config.model_copy(update={"name": f"{prefix}-{baseline}", "space": space})
            found.append(NestedStudy(restricted, tune, heldout, config.baseline_trials, fold, baseline))
        return found

    if splits.folds:
        return [
            nested
            for fold in splits.folds
            for nested in searches(f"{config.name}-fold-{fold.number}", fold.tune, fold.heldout, fold.number, True)
        ]
    if splits.heldout is None:
        return []
    return searches(config.name, splits.tune, splits.heldout, None, False)


def check_tuning_queries(study, tune: QuerySet) -> None:
    """Records on ``study`` which queries it tunes on, or checks them against the record.

    Raises ``StudyError`` when the study was tuned on other queries (the held-out mode, folds,
    seed or splits changed since): resuming it would mix trials scored on different queries,
    and a fold's trials might have seen its held-out queries.
    """
    digest = query_digest(tune.queries)
    recorded = study.user_attrs.get(TUNE_QUERIES_ATTR)
    if recorded is None:
        study.set_user_attr(TUNE_QUERIES_ATTR, digest)
    elif recorded != digest:
        raise StudyError(
            f"study '{study.study_name}' was tuned on other queries than its {len(tune.queries)} queries of "
            f"'{tune.name}' now (heldout, folds, seed or the splits changed since it ran); "
            "give the study a new name, or use a fresh --state-dir"
        )


def _open(session: StudySession, nested: NestedStudy, create: bool, sampler_seed: int | None = None):
    return load_optuna_study(nested.config, session.locations, create, session.on_orphan, sampler_seed)


def prepare_nested_studies(session: StudySession, target: int) -> list[tuple[NestedStudy, Any]]:
    """Creates (or reopens) every nested study of the session with its baselines queued and its target set;
    returns each with its Optuna study, in the order they run.

    Done by `workbench run` alone, before any worker joins them: two workers queueing the same
    baselines would run them twice. Raises ``StudyError`` when one was tuned on other queries.
    """
    prepared = []
    for nested in nested_studies(session.config, session.splits, target):
        study = _open(session, nested, create=True)
        check_tuning_queries(study, nested.tune)
        enqueue_baselines(study, (nested.baseline,) if nested.baseline else BASELINES)
        study.set_user_attr(TARGET_ATTR, nested.target)
        study.set_user_attr(EXHAUSTED_ATTR, "")
        prepared.append((nested, study))
    return prepared


def _work_on(
    session: StudySession, nested: NestedStudy, study, deadline: float | None, on_trial_end: Callable | None
) -> None:
    objective = Objective(
        nested.config, nested.tune, session.resources, None, session.locations.output_dir, nested.target
    )
    work_on_study(
        study,
        objective,
        nested.target,
        session.locations.storage_url,
        session.on_orphan,
        deadline,
        on_trial_end,
        objective.space_exhausted,
    )


def run_nested_studies(
    session: StudySession,
    prepared: list[tuple[NestedStudy, Any]],
    deadline: float | None = None,
    show_progress: bool = True,
    write: Callable[[str], None] = print,
) -> None:
    """Runs (or resumes) the nested studies ``prepare_nested_studies`` returned until each has its trials,
    or ``deadline`` passes.

    Ctrl-C raises ``KeyboardInterrupt``; the next run resumes where this one stopped.
    """
    pending = [(nested, study) for nested, study in prepared if not study_done(study, nested.target)]
    if pending:
        write(f"{len(pending)} nested studies: " + ", ".join(nested.name for nested, _ in pending))
    for nested, study in pending:
        if deadline is not None and time.time() >= deadline:
            return
        progress = TrialProgress(nested.target, session.config.metric, enabled=show_progress, label=nested.name)
        try:
            _work_on(session, nested, study, deadline, lambda study, trial, progress=progress: progress.update(study))
        finally:
            progress.update(study)
            progress.close()


def join_nested_studies(
    session: StudySession,
    target: int,
    sampler_seed: int,
    deadline: float | None = None,
    on_trial_end: Callable | None = None,
) -> None:
    """A worker's share of the nested studies `workbench run` prepared: works on each in turn until it
    has its trials, with the worker's own sampler seed. A nested study not prepared yet is left to
    `workbench run`, which runs whatever the workers did not."""
    for nested in nested_studies(session.config, session.splits, target):
        if deadline is not None and time.time() >= deadline:
            return
        try:
            study = _open(session, nested, create=False, sampler_seed=sampler_seed)
        except StudyError:
            continue
        check_tuning_queries(study, nested.tune)
        if TARGET_ATTR not in study.user_attrs:
            continue  # created by a `workbench run` that stopped before preparing it
        goal = replace(nested, target=int(study.user_attrs[TARGET_ATTR]))  # what `workbench run` recorded
        if trial_counts(study)[0] < goal.target:
            _work_on(session, goal, study, deadline, on_trial_end)


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
        if self.baseline:
            return f"baseline: {self.baseline}-only, defaults"
        if not self.params:
            return "nothing sampled"
        return ", ".join(
            f"{key.split('.')[-1] if key.count('.') < 2 else '.'.join(key.split('.')[-2:])}="
            + (f"{value:.3g}" if isinstance(value, float) else str(value))
            for key, value in self.params.items()
        )


def _same_pipeline(first: PipelineConfig, second: PipelineConfig) -> bool:
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


def agreement_text(name: str, entry: dict[str, Any]) -> str:
    """``fusion.method convex in 4/5 folds`` or ``bm25.k1 0.62–1.87 over 5/5 folds``."""
    if "value" in entry:
        return f"{name} {entry['value']} in {entry['folds']}/{entry['of']} folds"
    return f"{name} {entry['low']:.3g}–{entry['high']:.3g} over {entry['set_in']}/{entry['of']} folds"


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
        return sum(_same_pipeline(choice.config, self.exported) for choice in self.folds)

    @property
    def distinct_configs(self) -> int:
        """How many different pipelines the folds chose (1 = every fold agreed)."""
        distinct: list[PipelineConfig] = []
        for choice in self.folds:
            if not any(_same_pipeline(choice.config, seen) for seen in distinct):
                distinct.append(choice.config)
        return len(distinct)

    def agreement(self) -> dict[str, dict[str, Any]]:
        return parameter_agreement(self.folds)

    def agreement_lines(self) -> list[str]:
        """How far the folds agree, in a few lines for every view."""
        k = len(self.folds)
        summary = (
            f"the {k} folds chose {self.distinct_configs} distinct pipelines; "
            f"{self.identical_to_exported}/{k} chose exactly the exported one"
        )
        lines = [summary]
        baselines = sum(1 for choice in self.folds if choice.baseline)
        if baselines:
            lines.append(f"{baselines}/{k} folds chose a default baseline")
        if entries := self.agreement():
            lines.append("per parameter: " + "; ".join(agreement_text(name, e) for name, e in entries.items()))
        return lines

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


def _judge(session: StudySession, nested: NestedStudy, metrics: tuple[str, ...]) -> tuple[FoldChoice, Evaluation, str]:
    """Loads a nested study, takes its choice and scores it on the nested study's held-out queries.

    Returns the choice, its evaluation, and a warning when the study has not reached its target
    (a timeout or Ctrl-C stopped it; ``workbench run`` resumes it), else "".
    """
    study, trial = _chosen(session, nested)
    recorded = study.user_attrs.get(TUNE_QUERIES_ATTR)
    if recorded != query_digest(nested.tune.queries):
        raise StudyError(
            f"study '{nested.name}' was not tuned on this fold's queries (heldout, folds, seed or the splits "
            "changed since it ran): run `workbench run` again with a new study name or a fresh --state-dir"
        )
    config = trial_config(trial)
    run = Pipeline(config, session.resources).search(nested.heldout.queries).run
    evaluation = evaluate(run, nested.heldout.qrels, metrics)
    choice = FoldChoice(
        nested.fold,
        nested.name,
        trial.number,
        trial.user_attrs.get(BASELINE_ATTR),
        dict(trial.params),
        config,
        trial.values[0],
        evaluation.means[parse_metric(session.config.metric).name],
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


def _chosen(session: StudySession, nested: NestedStudy):
    """Opens a nested study and returns it with its chosen trial; raises ``StudyError`` when it has none yet."""
    study = _open(session, nested, create=False)
    if trial_counts(study)[0] == 0:
        raise StudyError(f"study '{nested.name}' has no finished trial yet: run `workbench run` again to finish it")
    return study, choose_trial(study)


def tuned_baseline_configs(session: StudySession) -> tuple[dict[str, PipelineConfig], list[str]]:
    """Returns the configs the tuned baselines' searches chose on the tuning split (held-out split mode),
    and a warning for each search short of its trials.

    Raises ``StudyError`` when a search has no finished trial yet.
    """
    configs, warnings = {}, []
    for nested in nested_studies(session.config, session.splits, session.config.n_trials):
        study, trial = _chosen(session, nested)
        configs[nested.baseline] = trial_config(trial)
        warnings += [short] if (short := _shortfall(study, nested)) else []
    return configs, warnings


def cross_validate(session: StudySession, exported: PipelineConfig) -> CrossValidation:
    """Scores each fold's choice on the fold's queries and judges the result over every judged query.

    The baselines are scored on every query too: with default settings directly (nothing is
    tuned), tuned ones fold by fold like the pipeline. Raises ``StudyError`` when a fold's study
    is missing or has no finished trial (cross-validation incomplete: `workbench run` resumes it).
    """
    config, splits = session.config, session.splits
    metrics = report_metrics(config.metric)
    by_system: dict[str, list[tuple[FoldChoice, Evaluation]]] = {}
    unfinished = []
    for nested in nested_studies(config, splits, config.n_trials):
        choice, evaluation, short = _judge(session, nested, metrics)
        by_system.setdefault(nested.baseline or "tuned", []).append((choice, evaluation))
        unfinished += [short] if short else []
    evaluations = {system: combine_evaluations([e for _, e in judged]) for system, judged in by_system.items()}
    if config.baselines == "default":
        tune = splits.tune
        for name, baseline in session.baselines().items():
            evaluations[name] = evaluate(
                Pipeline(baseline, session.resources).search(tune.queries).run, tune.qrels, metrics
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


def tuned_baseline_for_export(session: StudySession, choices: Sequence[FoldChoice]) -> tuple[FoldChoice, float]:
    """Returns the config a tuned baseline exports as under k-fold, with its study metric on every judged query.

    No search of that baseline runs on every judged query (only one per fold), so among the folds'
    choices the one scoring best on all of them is taken (the earliest fold on a tie): like the
    study's own pick, it is then chosen on every judged query.
    """
    metric = session.config.metric
    tune = session.splits.tune
    scored: list[tuple[FoldChoice, float]] = []
    for choice in choices:
        if any(_same_pipeline(choice.config, seen.config) for seen, _ in scored):
            continue
        run = Pipeline(choice.config, session.resources).search(tune.queries).run
        scored.append((choice, evaluate(run, tune.qrels, [metric]).means[parse_metric(metric).name]))
    return max(scored, key=lambda item: item[1])  # max keeps the first of equals: the earliest fold
