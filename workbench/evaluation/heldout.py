"""The held-out verdict: the tuned pipeline and both baselines on queries the search never saw.

The queries are a held-out split, or, with k-fold cross-validation, every judged query, each
scored by the config chosen on the other folds. The verdict compares the tuned pipeline with each
baseline on every metric shown; those p-values are corrected together (Holm–Bonferroni), and
the verdict keys on the corrected p of the study metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from workbench.evaluation.metrics import DEFAULT_METRICS, Evaluation, evaluate, parse_metric
from workbench.evaluation.significance import (
    ConfidenceInterval,
    PairedComparison,
    bootstrap_ci,
    holm_adjusted,
    paired_test,
)
from workbench.retrieval.config import PipelineConfig
from workbench.retrieval.pipeline import Pipeline, Resources
from workbench.types import QuerySet

SIGNIFICANCE_LEVEL = 0.05


@dataclass(frozen=True)
class SystemRow:
    """One system's line in every view of a held-out report (terminal, HTML, MLflow, TOML)."""

    key: str  # "tuned", "bm25", "dense"
    label: str  # "tuned", "bm25-only", "dense-only"
    intervals: dict[str, ConfidenceInterval]  # metric → mean and 95% CI
    comparison: PairedComparison | None  # tuned − this system on the primary metric; None for the tuned row
    p_corrected: float | None = None  # the comparison's Holm-corrected p; None for the tuned row


@dataclass(frozen=True)
class HeldoutReport:
    split: str
    num_queries: int
    metric: str  # the study's primary metric
    evaluations: dict[str, Evaluation]  # system name ("tuned", "bm25", "dense") → evaluation
    intervals: dict[str, dict[str, ConfidenceInterval]]  # system → metric → CI
    comparisons: dict[str, dict[str, PairedComparison]]  # baseline → metric → tuned − baseline
    tuning_value: float  # the tuned trial's primary metric on the tuning split (with folds: mean over folds)
    folds: int = 0  # k of k-fold cross-validation; 0 for a held-out split
    tuned_baselines: bool = False  # the baselines were searched too (BM25-only and dense-only spaces)
    warnings: tuple[str, ...] = ()  # e.g. too few queries for the verdict to mean much

    @cached_property
    def corrected(self) -> dict[str, dict[str, float]]:
        """Holm-corrected p-values (baseline → metric → p) over every comparison the report shows."""
        keys = [(baseline, metric) for baseline, by_metric in self.comparisons.items() for metric in by_metric]
        adjusted = holm_adjusted([self.comparisons[baseline][metric].p_value for baseline, metric in keys])
        corrected: dict[str, dict[str, float]] = {baseline: {} for baseline in self.comparisons}
        for (baseline, metric), p_value in zip(keys, adjusted):
            corrected[baseline][metric] = p_value
        return corrected

    @property
    def num_comparisons(self) -> int:
        """The size of the family the Holm correction runs over (baselines × metrics)."""
        return sum(len(by_metric) for by_metric in self.comparisons.values())

    @property
    def best_baseline(self) -> str:
        return max(self.comparisons, key=lambda name: self.evaluations[name].means[self.metric])

    @property
    def baseline_above_tuned(self) -> str | None:
        """The baseline with the highest mean on the primary metric when that mean is above the tuned
        pipeline's (significant or not), else None: the baseline a study exports instead."""
        baseline = self.best_baseline
        return baseline if self.mean(baseline) > self.mean("tuned") else None

    def mean(self, system: str) -> float:
        """The system's mean on the primary metric over the held-out queries."""
        return self.evaluations[system].means[self.metric]

    def figures_against(self, baseline: str) -> str:
        """``−0.0560, p 0.027, Holm 0.24``: the tuned pipeline minus ``baseline`` on the primary metric."""
        comparison = self.comparisons[baseline][self.metric]
        return (
            f"{comparison.mean_difference:+.4f}, p {comparison.p_value:.3g}, "
            f"Holm {self.corrected[baseline][self.metric]:.3g}"
        )

    @property
    def scope(self) -> str:
        """How the views name the verdict's scores: "cross-validated" or "held-out"."""
        return "cross-validated" if self.folds else "held-out"

    @property
    def beats_baselines(self) -> bool:
        """True when the tuned pipeline is better than the best baseline on the primary metric, with
        a Holm-corrected p below ``SIGNIFICANCE_LEVEL``."""
        comparison = self.comparisons[self.best_baseline][self.metric]
        return comparison.mean_difference > 0 and self.corrected[self.best_baseline][self.metric] < SIGNIFICANCE_LEVEL

    def label(self, system: str) -> str:
        """How every view names a system: "tuned", "bm25-only", "dense-only, tuned"."""
        if system == "tuned":
            return system
        return f"{system}-only, tuned" if self.tuned_baselines else f"{system}-only"

    @property
    def overfitting_gap(self) -> float:
        """Tuning-split score minus held-out score of the tuned pipeline (positive = optimistic tuning)."""
        return self.tuning_value - self.evaluations["tuned"].means[self.metric]

    def verdict(self) -> str:
        """Returns one plain sentence on whether the tuned pipeline is worth using."""
        baseline = self.best_baseline
        comparison = self.comparisons[baseline][self.metric]
        p_text = (
            f"p = {comparison.p_value:.3g}, Holm-corrected over {self.num_comparisons} comparisons "
            f"{self.corrected[baseline][self.metric]:.3g}"
        )
        scope = self.scope
        if self.beats_baselines:
            return (
                f"the tuned pipeline beats the best baseline ({self.label(baseline)}) on {scope} {self.metric} "
                f"by {comparison.mean_difference:+.4f} ({p_text})"
            )
        if self.baseline_above_tuned:
            return (
                f"WARNING: the tuned pipeline scores BELOW {self.label(baseline)} on {scope} {self.metric} "
                f"({comparison.mean_difference:+.4f}, {p_text})"
            )
        alternative = f"{baseline} alone, tuned," if self.tuned_baselines else f"plain {baseline}"
        return (
            f"WARNING: the tuned pipeline is NOT significantly better than {self.label(baseline)} on {scope} "
            f"{self.metric} ({comparison.mean_difference:+.4f}, {p_text}); {alternative} may serve you as well"
        )

    @property
    def title(self) -> str:
        if self.folds:
            return f"{self.folds}-fold cross-validation over '{self.split}' ({self.num_queries} queries, each held out once)"
        return f"held-out split '{self.split}' ({self.num_queries} queries)"

    def rows(self) -> list[SystemRow]:
        """Returns one row per system, the tuned pipeline first: what every view of the report shows."""
        return [
            SystemRow(
                system,
                self.label(system),
                intervals,
                self.comparisons[system][self.metric] if system in self.comparisons else None,
                self.corrected[system][self.metric] if system in self.comparisons else None,
            )
            for system, intervals in self.intervals.items()
        ]

    def to_metrics(self) -> dict[str, float]:
        """Returns the report's numbers as flat MLflow metric names (no '@')."""
        metrics = {
            "heldout_overfitting_gap": self.overfitting_gap,
            "heldout_beats_baselines": float(self.beats_baselines),
        }
        for row in self.rows():
            for name, ci in row.intervals.items():
                key = parse_metric(name).tracking_name
                metrics[f"heldout_{row.key}_{key}"] = ci.mean
                metrics[f"heldout_{row.key}_{key}_ci_low"] = ci.low
                metrics[f"heldout_{row.key}_{key}_ci_high"] = ci.high
        for baseline, by_metric in self.comparisons.items():
            for name, comparison in by_metric.items():
                key = parse_metric(name).tracking_name
                metrics[f"heldout_p_vs_{baseline}_{key}"] = comparison.p_value
                metrics[f"heldout_p_holm_vs_{baseline}_{key}"] = self.corrected[baseline][name]
        if self.folds:
            metrics["heldout_folds"] = float(self.folds)
        return metrics

    def to_dict(self) -> dict[str, Any]:
        """Returns the report as plain data for TOML provenance and JSON."""
        return {
            "split": self.split,
            "num_queries": self.num_queries,
            "folds": self.folds,
            "metric": self.metric,
            "baselines": "tuned" if self.tuned_baselines else "default",
            "correction": f"holm over {self.num_comparisons} comparisons",
            "warnings": list(self.warnings),
            "tuning_value": self.tuning_value,
            "overfitting_gap": self.overfitting_gap,
            "beats_best_baseline": self.beats_baselines,
            "baseline_above_tuned": self.baseline_above_tuned or "none",
            "verdict": self.verdict(),
            "systems": {
                system: {
                    metric: {"mean": ci.mean, "ci_low": ci.low, "ci_high": ci.high} for metric, ci in intervals.items()
                }
                for system, intervals in self.intervals.items()
            },
            "vs_baselines": {
                baseline: {
                    metric: {
                        "mean_difference": c.mean_difference,
                        "p_value": c.p_value,
                        "p_corrected": self.corrected[baseline][metric],
                        "wins": c.wins,
                        "ties": c.ties,
                        "losses": c.losses,
                    }
                    for metric, c in by_metric.items()
                }
                for baseline, by_metric in self.comparisons.items()
            },
        }


def combine_evaluations(parts: Sequence[Evaluation]) -> Evaluation:
    """Returns one evaluation over the queries of several disjoint ones (e.g. the folds of cross-validation).

    Raises ``ValueError`` when two parts score the same query or their metrics differ.
    """
    metrics = list(parts[0].per_query)
    per_query: dict[str, dict[str, float]] = {metric: {} for metric in metrics}
    for part in parts:
        if list(part.per_query) != metrics:
            raise ValueError(f"evaluations over different metrics: {metrics} and {list(part.per_query)}")
        if shared := per_query[metrics[0]].keys() & part.per_query[metrics[0]].keys():
            raise ValueError(f"{len(shared)} queries scored twice, e.g. {sorted(shared)[:3]}")
        for metric in metrics:
            per_query[metric] |= part.per_query[metric]
    count = len(per_query[metrics[0]])
    means = {metric: math.fsum(scores.values()) / count for metric, scores in per_query.items()}
    return Evaluation(per_query=per_query, means=means, num_queries=count)


def build_report(
    split: str,
    evaluations: dict[str, Evaluation],
    metric: str,
    tuning_value: float,
    seed: int = 0,
    folds: int = 0,
    tuned_baselines: bool = False,
    warnings: Sequence[str] = (),
) -> HeldoutReport:
    """Returns the report over ``evaluations`` ("tuned" plus each baseline, on the same queries):
    bootstrap CIs per system and metric, paired tests of the tuned pipeline against each baseline."""
    metrics = list(evaluations["tuned"].per_query)
    intervals = {
        name: {m: bootstrap_ci(evaluation.per_query[m], seed=seed) for m in metrics}
        for name, evaluation in evaluations.items()
    }
    comparisons = {
        name: {
            m: paired_test(evaluations["tuned"].per_query[m], evaluations[name].per_query[m], seed=seed)
            for m in metrics
        }
        for name in evaluations
        if name != "tuned"
    }
    return HeldoutReport(
        split,
        evaluations["tuned"].num_queries,
        metric,
        evaluations,
        intervals,
        comparisons,
        tuning_value,
        folds=folds,
        tuned_baselines=tuned_baselines,
        warnings=tuple(warnings),
    )


def report_metrics(metric: str) -> tuple[str, ...]:
    """The metrics a report shows: the study metric first, then the defaults."""
    return tuple(dict.fromkeys((metric, *DEFAULT_METRICS)))


def evaluate_heldout(
    tuned: PipelineConfig,
    baselines: dict[str, PipelineConfig],
    heldout: QuerySet,
    resources: Resources,
    metric: str,
    tuning_value: float,
    seed: int = 0,
    tuned_baselines: bool = False,
    warnings: Sequence[str] = (),
) -> HeldoutReport:
    """Runs the tuned config and the baselines on the held-out queries; returns CIs and paired tests."""
    metrics = report_metrics(metric)
    systems = {"tuned": tuned, **baselines}
    evaluations = {
        name: evaluate(Pipeline(config, resources).search(heldout.queries).run, heldout.qrels, metrics)
        for name, config in systems.items()
    }
    return build_report(
        heldout.name, evaluations, metric, tuning_value, seed, tuned_baselines=tuned_baselines, warnings=warnings
    )


def interval_text(ci: ConfidenceInterval) -> str:
    """``mean [low, high]``, as every view prints a confidence interval."""
    return f"{ci.mean:.4f} [{ci.low:.3f}, {ci.high:.3f}]"


def comparison_text(comparison: PairedComparison | None, p_corrected: float | None = None) -> str:
    """``Δ, p (Holm p), W/T/L`` of the tuned pipeline against one system, or "" for the tuned row."""
    if comparison is None:
        return ""
    c = comparison
    corrected = f" (Holm {p_corrected:.3g})" if p_corrected is not None else ""
    return f"{c.mean_difference:+.4f}, p={c.p_value:.3g}{corrected}, W/T/L {c.wins}/{c.ties}/{c.losses}"


def row_comparison_text(row: SystemRow) -> str:
    """The comparison column of one row, as every view prints it."""
    return comparison_text(row.comparison, row.p_corrected)
