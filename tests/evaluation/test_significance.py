import math

import numpy as np
import pytest

from workbench.evaluation.significance import (
    bootstrap_ci,
    holm_adjusted,
    paired_test,
    split_half_agreement,
    win_probability,
)


def test_bootstrap_ci_matches_the_normal_approximation_on_a_known_sample():
    # 100 queries scoring 0 or 1 half the time: mean 0.5, standard error 0.05.
    scores = {str(i): float(i % 2) for i in range(100)}
    ci = bootstrap_ci(scores, resamples=5000, seed=1)
    assert ci.mean == 0.5
    half_width = 1.96 * 0.5 / math.sqrt(100)
    assert ci.low == pytest.approx(0.5 - half_width, abs=0.02)
    assert ci.high == pytest.approx(0.5 + half_width, abs=0.02)


def test_bootstrap_ci_is_seeded():
    scores = {str(i): float(np.sin(i)) for i in range(40)}
    assert bootstrap_ci(scores, seed=7) == bootstrap_ci(scores, seed=7)


def test_bootstrap_ci_of_a_constant_is_a_point():
    ci = bootstrap_ci({"a": 0.3, "b": 0.3})
    assert ci.low == ci.high == ci.mean == 0.3


def test_paired_test_exact_sign_flip_case_checked_by_hand():
    # Differences 1, 2, 3, 4: of the 2^4 sign flips only all-plus and all-minus reach |mean| >= 2.5,
    # so the two-sided p-value is 2 / 16.
    a = {"q1": 1.0, "q2": 2.0, "q3": 3.0, "q4": 4.0}
    b = dict.fromkeys(a, 0.0)
    result = paired_test(a, b)
    assert result.p_value == pytest.approx(2 / 16)
    assert (result.wins, result.ties, result.losses) == (4, 0, 0)
    assert result.mean_difference == 2.5


def test_paired_test_counts_ties_and_losses_over_shared_queries_only():
    a = {"q1": 0.5, "q2": 0.2, "q3": 0.9, "only_a": 1.0}
    b = {"q1": 0.5, "q2": 0.4, "q3": 0.1, "only_b": 0.0}
    result = paired_test(a, b)
    assert (result.wins, result.ties, result.losses) == (1, 1, 1)
    assert result.mean_difference == pytest.approx((0.0 - 0.2 + 0.8) / 3)


def test_identical_systems_are_not_different():
    scores = {str(i): i / 10 for i in range(10)}
    assert paired_test(scores, scores).p_value == 1.0


def test_paired_test_needs_shared_queries():
    with pytest.raises(ValueError):
        paired_test({"a": 1.0}, {"b": 1.0})


def test_holm_case_checked_by_hand():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> raised to 0.06 (monotone).
    assert holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjusted([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm_adjusted([0.02]) == pytest.approx([0.02])  # a family of one is not corrected
    assert holm_adjusted([]) == []


def _holm_by_definition(p_values: list[float]) -> list[float]:
    """The textbook step-down: the i-th smallest p times (m - i), never below an earlier one, at most 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda index: p_values[index])
    adjusted, running = [0.0] * m, 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def test_holm_matches_the_textbook_definition():
    rng = np.random.default_rng(3)
    for size in (2, 5, 10, 31):
        p_values = list(rng.uniform(0, 0.2, size))
        assert holm_adjusted(p_values) == pytest.approx(_holm_by_definition(p_values))


def test_win_probability_of_a_system_always_above_is_one_and_of_itself_a_half():
    rng = np.random.default_rng(1)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.random(30))}
    above = {q: v + 0.01 for q, v in base.items()}
    assert win_probability(above, base) == 1.0 and win_probability(base, above) == 0.0
    assert win_probability(base, base) == 0.5  # every resample ties


def test_win_probability_matches_a_plain_loop_over_the_same_resamples():
    rng = np.random.default_rng(2)
    a = {f"q{i}": float(v) for i, v in enumerate(rng.random(12))}
    b = {f"q{i}": float(v) for i, v in enumerate(rng.random(12))}
    b["extra"] = 1.0  # not shared: left out
    shared = sorted(a)
    picks = np.random.default_rng(7).integers(0, len(shared), size=(500, len(shared)))
    wins = 0.0
    for row in picks:
        difference = sum(a[shared[i]] - b[shared[i]] for i in row) / len(row)
        wins += 1.0 if difference > 0 else 0.5 if difference == 0 else 0.0
    assert win_probability(a, b, resamples=500, seed=7) == pytest.approx(wins / 500)
    assert win_probability(a, b, seed=3) + win_probability(b, a, seed=3) == pytest.approx(1.0)


def test_split_half_agreement_is_one_for_a_fixed_order_and_near_zero_for_noise():
    rng = np.random.default_rng(3)
    difficulty = rng.random(40)
    ordered = [{f"q{i}": float(d + 0.1 * rank) for i, d in enumerate(difficulty)} for rank in range(6)]
    assert split_half_agreement(ordered, splits=20, seed=1) == pytest.approx(1.0)
    noise = [{f"q{i}": float(v) for i, v in enumerate(rng.random(40))} for _ in range(8)]
    assert abs(split_half_agreement(noise, splits=50, seed=1)) < 0.3
    ties = [{f"q{i}": 0.5 for i in range(10)} for _ in range(3)]
    assert split_half_agreement(ties) == 0.0  # no order to compare
    with pytest.raises(ValueError, match="at least 3"):
        split_half_agreement(ordered[:2])
