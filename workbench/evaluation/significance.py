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


def _shared_matrix(per_system: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Returns systems × queries: each system's scores on the queries every system scored, in id order."""
    shared = sorted(set.intersection(*(set(scores) for scores in per_system)))
    if not shared:
        raise ValueError("the systems share no query")
    return np.array([[scores[q] for q in shared] for scores in per_system], dtype=float)


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

    a, b = _shared_matrix([scores_a, scores_b])
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


def win_probability(
    scores_a: Mapping[str, float], scores_b: Mapping[str, float], resamples: int = 2000, seed: int = 0
) -> float:
    """Returns the bootstrap probability that A's mean is above B's: the share of seeded resamples of
    the shared queries (with replacement) where it is, a tie counting half.

    Raises ``ValueError`` when the two systems share no query.
    """
    differences = np.subtract(*_shared_matrix([scores_a, scores_b]))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[picks].mean(axis=1)
    return float(np.mean(means > 0) + 0.5 * np.mean(means == 0))


def split_half_agreement(per_system: Sequence[Mapping[str, float]], splits: int = 50, seed: int = 0) -> float:
    """Returns how alike two halves of the queries rank the systems: Kendall's tau-b (scipy) between the
    systems' means on one seeded random half of the shared queries and on the other, averaged over
    ``splits`` halvings. A halving where either half ties every system counts as 0 (no order to compare).

    Raises ``ValueError`` for fewer than 3 systems or 2 shared queries.
    """
    from scipy.stats import kendalltau

    if len(per_system) < 3:
        raise ValueError(f"{len(per_system)} systems: a ranking agreement needs at least 3")
    matrix = _shared_matrix(per_system)
    count = matrix.shape[1]
    if count < 2:
        raise ValueError("fewer than 2 shared queries cannot be halved")
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(splits):
        order = rng.permutation(count)
        first, second = order[: count // 2], order[count // 2 :]
        tau = kendalltau(matrix[:, first].mean(axis=1), matrix[:, second].mean(axis=1)).statistic
        taus.append(0.0 if np.isnan(tau) else float(tau))
    return float(np.mean(taus))
