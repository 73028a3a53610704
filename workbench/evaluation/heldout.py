"""The held-out verdict: the tuned pipeline and both baselines on queries the search never saw."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.evaluation.metrics import DEFAULT_METRICS, Evaluation, evaluate, parse_metric
from workbench.evaluation.significance import ConfidenceInterval, PairedComparison, bootstrap_ci, paired_test
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


@dataclass(frozen=True)
class HeldoutReport:
    split: str
    num_queries: int
    metric: str  # the study's primary metric
    evaluations: dict[str, Evaluation]  # system name ("tuned", "bm25", "dense") → evaluation
    intervals: dict[str, dict[str, ConfidenceInterval]]  # system → metric → CI
    comparisons: dict[str, dict[str, PairedComparison]]  # baseline → metric → tuned − baseline
    tuning_value: float  # the tuned trial's primary metric on the tuning split

    @property
    def best_baseline(self) -> str:
        return max(self.comparisons, key=lambda name: self.evaluations[name].means[self.metric])

    @property
    def beats_baselines(self) -> bool:
        """True when the tuned pipeline is significantly better than the best baseline on the primary metric."""
        comparison = self.comparisons[self.best_baseline][self.metric]
        return comparison.mean_difference > 0 and comparison.p_value < SIGNIFICANCE_LEVEL

    @property
    def overfitting_gap(self) -> float:
        """Tuning-split score minus held-out score of the tuned pipeline (positive = optimistic tuning)."""
        return self.tuning_value - self.evaluations["tuned"].means[self.metric]

    def verdict(self) -> str:
        """Returns one plain sentence on whether the tuned pipeline is worth using."""
        baseline = self.best_baseline
        comparison = self.comparisons[baseline][self.metric]
        if self.beats_baselines:
            return (
                f"the tuned pipeline beats the best baseline ({baseline}-only) on {self.metric} "
                f"by {comparison.mean_difference:+.4f} (p = {comparison.p_value:.3g})"
            )
        return (
            f"WARNING: the tuned pipeline is NOT significantly better than {baseline}-only on held-out "
            f"{self.metric} ({comparison.mean_difference:+.4f}, p = {comparison.p_value:.3g}); "
            f"plain {baseline} may serve you as well"
        )

    @property
    def title(self) -> str:
        return f"held-out split '{self.split}' ({self.num_queries} queries)"

    def rows(self) -> list[SystemRow]:
        """Returns one row per system, the tuned pipeline first: what every view of the report shows."""
        return [
            SystemRow(
                system,
                system if system == "tuned" else f"{system}-only",
                intervals,
                self.comparisons[system][self.metric] if system in self.comparisons else None,
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
                metrics[f"heldout_p_vs_{baseline}_{parse_metric(name).tracking_name}"] = comparison.p_value
        return metrics

    def to_dict(self) -> dict[str, Any]:
        """Returns the report as plain data for TOML provenance and JSON."""
        return {
            "split": self.split,
            "num_queries": self.num_queries,
            "metric": self.metric,
            "tuning_value": self.tuning_value,
            "overfitting_gap": self.overfitting_gap,
            "beats_best_baseline": self.beats_baselines,
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
                        "wins": c.wins,
                        "ties": c.ties,
                        "losses": c.losses,
                    }
                    for metric, c in by_metric.items()
                }
                for baseline, by_metric in self.comparisons.items()
            },
        }


def evaluate_heldout(
    tuned: PipelineConfig,
    baselines: dict[str, PipelineConfig],
    heldout: QuerySet,
    resources: Resources,
    metric: str,
    tuning_value: float,
    seed: int = 0,
) -> HeldoutReport:
    """Runs the tuned config and the baselines on the held-out queries; returns CIs and paired tests."""
    metrics = tuple(dict.fromkeys((metric, *DEFAULT_METRICS)))
    systems = {"tuned": tuned, **baselines}
    evaluations = {
        name: evaluate(Pipeline(config, resources).search(heldout.queries).run, heldout.qrels, metrics)
        for name, config in systems.items()
    }
    intervals = {
        name: {m: bootstrap_ci(evaluation.per_query[m], seed=seed) for m in metrics}
        for name, evaluation in evaluations.items()
    }
    comparisons = {
        name: {
            m: paired_test(evaluations["tuned"].per_query[m], evaluations[name].per_query[m], seed=seed)
            for m in metrics
        }
        for name in baselines
    }
    return HeldoutReport(
        heldout.name,
        evaluations["tuned"].num_queries,
        metric,
        evaluations,
        intervals,
        comparisons,
        tuning_value,
    )


def interval_text(ci: ConfidenceInterval) -> str:
    """``mean [low, high]``, as every view prints a confidence interval."""
    return f"{ci.mean:.4f} [{ci.low:.3f}, {ci.high:.3f}]"


def comparison_text(comparison: PairedComparison | None) -> str:
    """``Δ, p, W/T/L`` of the tuned pipeline against one system, or "" for the tuned row."""
    if comparison is None:
        return ""
    c = comparison
    return f"{c.mean_difference:+.4f}, p={c.p_value:.3g}, {c.wins}/{c.ties}/{c.losses}"
