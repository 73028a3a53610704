"""How sure we are: bootstrap confidence intervals and paired tests over per-query scores (scipy),
and Holm–Bonferroni correction across the comparisons of one verdict (statsmodels)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConfidenceInterval:
    mean: float
    low: float
    high: float
    level: float


@dataclass(frozen=True)
class PairedComparison:
    """System A against system B over the same queries (A − B)."""

    mean_difference: float
    p_value: float  # two-sided paired randomisation test
    wins: int  # queries where A scores higher
    ties: int
    losses: int


def bootstrap_ci(
    scores: Mapping[str, float], resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> ConfidenceInterval:
    """Returns the mean of per-query ``scores`` with a seeded percentile bootstrap interval.

    Raises ``ValueError`` when there are no scores.
    """
    from scipy.stats import bootstrap

    values = np.array(list(scores.values()), dtype=float)
    if len(values) == 0:
        raise ValueError("no per-query scores to bootstrap")
    if len(values) == 1 or np.all(values == values[0]):
        return ConfidenceInterval(float(values.mean()), float(values.mean()), float(values.mean()), level)
    result = bootstrap(
        (values,),
        np.mean,
        n_resamples=resamples,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return ConfidenceInterval(float(values.mean()), float(interval.low), float(interval.high), level)


def paired_test(
    scores_a: Mapping[str, float], scores_b: Mapping[str, float], resamples: int = 10_000, seed: int = 0
) -> PairedComparison:
    """Returns A − B with a two-sided paired randomisation (sign-flip) test over shared queries.

    Raises ``ValueError`` when the two systems share no query.
    """
    from scipy.stats import permutation_test

    query_ids = sorted(scores_a.keys() & scores_b.keys())
    if not query_ids:
        raise ValueError("the two systems share no query")
    a = np.array([scores_a[q] for q in query_ids], dtype=float)
    b = np.array([scores_b[q] for q in query_ids], dtype=float)
    differences = a - b
    if np.all(differences == 0):
        p_value = 1.0
    else:
        result = permutation_test(
            (a, b),
            lambda x, y, axis: np.mean(x - y, axis=axis),
            permutation_type="samples",
            alternative="two-sided",
            n_resamples=resamples,
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
        p_value = float(result.pvalue)
    return PairedComparison(
        mean_difference=float(differences.mean()),
        p_value=p_value,
        wins=int(np.sum(differences > 0)),
        ties=int(np.sum(differences == 0)),
        losses=int(np.sum(differences < 0)),
    )


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Returns Holm–Bonferroni adjusted p-values (statsmodels' ``multipletests``), in the order given.

    Holm controls the chance of any false "significant" among the family at the level chosen,
    and rejects at least what Bonferroni does. An empty family gives an empty list.
    """
    if not p_values:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(list(p_values), method="holm")[1]]
