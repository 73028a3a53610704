"""The objective of a study: one trial = suggest (or take the baseline), build, search the
tuning split, evaluate, log. The held-out split is never touched here."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.errors import StudyError
from workbench.evaluation.latency import measure_latency
from workbench.evaluation.metrics import DEFAULT_METRICS, evaluate, parse_metric
from workbench.provenance import code_version
from workbench.retrieval.config import PipelineConfig, pipeline_config_from_dict, save_pipeline_config
from workbench.retrieval.pipeline import Pipeline, Resources
from workbench.study.attributes import (
    ANN_RECALL_ATTR,
    ANN_RECALL_METRIC,
    BASELINE_ATTR,
    CODE_VERSION_TAG,
    CONFIG_ATTR,
    CORPUS_ATTR,
    DUPLICATE_ATTR,
    FAIL_ATTR,
    LATENCY_KEY,
    METRICS_ATTR,
    MLFLOW_RUN_ATTR,
    PRUNED_TAG,
    WORKER_ATTR,
    WORSE_ATTR,
)
from workbench.study.config import StudyConfig
from workbench.study.space import baseline_config, space_size, suggest_pipeline
from workbench.study.tracking import StudyTracker
from workbench.study.workers import is_surplus, worker_label
from workbench.types import QuerySet


def trial_config(trial) -> PipelineConfig:
    """Returns the pipeline config a finished trial ran with."""
    return pipeline_config_from_dict(trial.user_attrs[CONFIG_ATTR], source=f"trial {trial.number}")


def param_label(key: str) -> str:
    """A sampled parameter's short name, still telling stages apart: ``bm25.k1`` → ``k1``,
    ``retrievers.bm25.k1`` → ``bm25.k1``, ``fusion.weight.dense`` → ``weight.dense``."""
    parts = key.split(".")
    return parts[-1] if len(parts) < 3 else ".".join(parts[-2:])


def describe_choice(params: Mapping[str, Any], baseline: str | None = None) -> str:
    """A trial's choice in one line: ``baseline: bm25-only, defaults`` or ``k1=1.2, b=0.71``."""
    if baseline:
        return f"baseline: {baseline}-only, defaults"
    if not params:
        return "nothing sampled"
    return ", ".join(
        f"{param_label(key)}=" + (f"{value:.3g}" if isinstance(value, float) else str(value))
        for key, value in params.items()
    )


def best_baseline_value(study) -> float | None:
    """Returns the best primary-metric value among the study's finished baseline trials."""
    import optuna

    values = [
        trial.values[0]
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if trial.user_attrs.get(BASELINE_ATTR)
    ]
    return max(values) if values else None


def _same_params_trial(trial):
    """Returns another trial that holds (or is running) exactly these parameters, if any: a finished
    one (complete or pruned), or a running one that started earlier. Baselines are never compared."""
    import optuna

    states = optuna.trial.TrialState
    for other in trial.study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING)):
        if other.number == trial.number or other.user_attrs.get(BASELINE_ATTR) or other.params != trial.params:
            continue
        if other.state != states.RUNNING or other.number < trial.number:
            return other
    return None


class DuplicateConfiguration(StudyError):
    """A trial's parameters are those of another trial: it is not scored, and fails without counting."""


def _refuse_duplicate(trial) -> None:
    """Raises ``DuplicateConfiguration`` when another trial holds or runs this trial's parameters.

    Checked before scoring (so nothing is computed twice) and again after (two workers that drew
    the same point at the same moment: the later trial gives way), so that no two finished trials
    of a study hold the same parameters.
    """
    earlier = _same_params_trial(trial)
    if earlier is not None:
        trial.set_user_attr(DUPLICATE_ATTR, earlier.number)
        trial.set_user_attr(FAIL_ATTR, f"duplicate: the parameters of trial {earlier.number}; not scored again")
        raise DuplicateConfiguration(f"the parameters of trial {earlier.number}")


class _TrialRun:
    """The MLflow child run of one trial (nothing when the objective has no tracker)."""

    def __init__(self, objective: Objective, trial, baseline: str | None):
        self.objective, self.trial, self.baseline = objective, trial, baseline
        self.run_id = None
        if objective.tracker is not None:
            self.run_id = objective.tracker.start_trial(
                trial.number,
                {
                    BASELINE_ATTR: baseline or "none",
                    CORPUS_ATTR: objective.corpus.fingerprint,
                    CODE_VERSION_TAG: code_version(),
                    WORKER_ATTR: worker_label(),
                },
            )
            trial.set_user_attr(MLFLOW_RUN_ATTR, self.run_id)

    def close(self, state: str, tags: dict[str, str]) -> None:
        if self.run_id is not None:
            self.objective.tracker.finish_trial(self.run_id, state, params=dict(self.trial.params), tags=tags)

    def complete(self, config: PipelineConfig, metrics: dict[str, float], worse: bool) -> None:
        """Logs the finished trial's metrics, tags and config file, and closes its run."""
        if self.run_id is None:
            return
        config_path = self.objective.output_dir / "trials" / f"trial-{self.trial.number}.toml"
        save_pipeline_config(config, config_path)
        self.objective.tracker.finish_trial(
            self.run_id,
            "COMPLETE",
            params=dict(self.trial.params) or {"baseline": self.baseline},
            metrics=metrics,
            tags={WORSE_ATTR: str(worse).lower()},
            artifacts=[config_path],
        )


class Objective:
    """Scores one trial: suggest (or take the baseline), build, search the tuning queries, evaluate, log.

    Only the tuning queries (``tune``) are ever searched here.
    """

    def __init__(
        self,
        config: StudyConfig,
        tune: QuerySet,
        resources: Resources,
        tracker: StudyTracker | None,
        output_dir: Path,
        target: int | None = None,
    ):
        self.config = config
        self.target = target
        self.corpus = resources.corpus
        self.resources = resources
        self.tracker = tracker
        self.output_dir = output_dir
        self.metric = parse_metric(config.metric).name
        self.metrics = tuple(dict.fromkeys((self.metric, *DEFAULT_METRICS)))
        self.queries = tune.queries
        self.qrels = tune.qrels
        self._space_size: int | None = None  # 0: no bound worth checking

    def __call__(self, trial) -> float | tuple[float, float]:
        trial.set_user_attr(WORKER_ATTR, worker_label())
        self._refuse_surplus(trial)
        baseline = trial.user_attrs.get(BASELINE_ATTR)
        config = self._pipeline_config(trial, baseline)
        trial.set_user_attr(CONFIG_ATTR, config.to_toml_dict())
        if not baseline:
            _refuse_duplicate(trial)  # a sampler restarted, or another worker, drew this point already
        with self._tracked(trial, baseline) as run:
            values, metrics = self._score(config, trial, prunable=baseline is None)
            if not baseline:
                _refuse_duplicate(trial)
            trial.set_user_attr(METRICS_ATTR, metrics)
            baseline_value = best_baseline_value(trial.study)
            worse = baseline is None and baseline_value is not None and values[0] < baseline_value
            trial.set_user_attr(WORSE_ATTR, worse)
            run.complete(config, metrics, worse)
        return values if len(values) > 1 else values[0]

    def space_exhausted(self, study) -> str | None:
        """Returns why no new configuration can be tried when every configuration of the space has
        finished (a finite space smaller than the budget), else None."""
        import optuna

        if self._space_size is None:
            self._space_size = space_size(self.config.space, limit=max(self.target or 0, self.config.n_trials)) or 0
        if not self._space_size:
            return None  # continuous, or larger than the budget
        states = optuna.trial.TrialState
        tried = {
            tuple(sorted(trial.params.items()))
            for trial in study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED))
            if not trial.user_attrs.get(BASELINE_ATTR)
        }
        if len(tried) < self._space_size:
            return None
        return f"the search space holds {self._space_size} configurations and every one has been tried"

    def _refuse_surplus(self, trial) -> None:
        if self.target is not None and is_surplus(trial.study, trial.number, self.target):
            # Another worker started the last needed trial at the same moment as this one.
            trial.set_user_attr(FAIL_ATTR, f"surplus: the study already has {self.target} trials")
            raise StudyError(f"surplus trial: the study already has {self.target} finished or running trials")

    def _pipeline_config(self, trial, baseline: str | None) -> PipelineConfig:
        name = f"{self.config.name}-trial-{trial.number}"
        if baseline:
            return baseline_config(baseline, self.config.space, name)
        return suggest_pipeline(trial, self.config.space, name)

    @contextmanager
    def _tracked(self, trial, baseline: str | None) -> Iterator[_TrialRun]:
        """The trial's MLflow run: opened here, closed as COMPLETE, PRUNED or FAIL with the reason."""
        import optuna

        run = _TrialRun(self, trial, baseline)
        try:
            yield run
        except optuna.TrialPruned as pruned:
            run.close("PRUNED", {PRUNED_TAG: str(pruned)})
            raise
        except BaseException as error:
            reason = f"{type(error).__name__}: {error}"
            trial.set_user_attr(FAIL_ATTR, reason)
            run.close("FAIL", {FAIL_ATTR: reason[:5000]})
            raise

    def _score(self, config: PipelineConfig, trial, prunable: bool) -> tuple[tuple[float, ...], dict[str, float]]:
        encoding_before = self.resources.seconds_encoding
        started = time.perf_counter()
        pipeline = Pipeline(config, self.resources)
        build_seconds = time.perf_counter() - started
        started = time.perf_counter()
        if self.config.pruner != "none":
            run = self._search_with_pruning(pipeline, trial, prunable)
        else:
            run = pipeline.search(self.queries).run
        search_seconds = time.perf_counter() - started
        evaluation = evaluate(run, self.qrels, self.metrics)
        latency = measure_latency(pipeline, self.queries, self.config.latency_sample)
        metrics = {parse_metric(name).tracking_name: value for name, value in evaluation.means.items()}
        metrics |= latency
        if recalls := pipeline.ann_recall(self.queries):
            trial.set_user_attr(ANN_RECALL_ATTR, recalls)
            metrics |= {f"{ANN_RECALL_METRIC}.{name}": recall for name, recall in recalls.items()}
        metrics |= {
            "index_build_s": build_seconds,
            "encoding_s": self.resources.seconds_encoding - encoding_before,
            "search_s": search_seconds,
        }
        values = (evaluation.means[self.metric],)
        if self.config.second_objective == "latency":
            values += (latency[LATENCY_KEY],)
        return values, metrics

    def _search_with_pruning(self, pipeline: Pipeline, trial, prunable: bool) -> dict:
        """Searches the tuning queries in seeded shuffled batches, reporting to the pruner after each.

        Every trial sees the same order, so the Wilcoxon pruner compares the same queries.
        The median pruner gets the running mean; the Wilcoxon pruner each query's score.
        Baselines report too (the Wilcoxon pruner compares a trial with the best one, often a
        baseline) but are never stopped. Raises ``optuna.TrialPruned`` when the pruner gives up on a
        ``prunable`` trial.
        """
        import optuna

        order = sorted(self.queries)
        random.Random(self.config.seed).shuffle(order)
        position = {query_id: index for index, query_id in enumerate(order)}
        batch_size = -(-len(order) // self.config.pruning_batches)
        run: dict = {}
        for step, start in enumerate(range(0, len(order), batch_size)):
            batch = order[start : start + batch_size]
            batch_run = pipeline.search({query_id: self.queries[query_id] for query_id in batch}).run
            run |= batch_run
            if self.config.pruner == "wilcoxon":
                scores = evaluate(batch_run, {q: self.qrels[q] for q in batch if q in self.qrels}, (self.metric,))
                for query_id, score in scores.per_query[self.metric].items():
                    trial.report(score, step=position[query_id])
            else:
                so_far = {q: self.qrels[q] for q in order[: start + len(batch)] if q in self.qrels}
                trial.report(evaluate(run, so_far, (self.metric,)).means[self.metric], step=step)
            if prunable and start + batch_size < len(order) and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {start + len(batch)} of {len(order)} tuning queries")
        return run
