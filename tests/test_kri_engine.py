"""The KRI engine's own rules, on small hand-made input: zero denominators dropped, degenerate
rates, thresholds closed on the left, accrual masking, Poisson and Fisher, bad definitions."""

import math

import numpy as np
import pytest

from sdv.kri import (
    KriInputError,
    KriMethod,
    binomial_interval,
    kri_flag,
    kri_from_groups,
    kri_from_subjects,
    site_risk_score,
)

RATE = KriMethod(analysis="normal_rate", thresholds=(-3, -2, 2, 3))


def test_a_group_with_a_zero_denominator_is_dropped_and_named():
    result = kri_from_groups(groups=["1", "2", "3"], numerator=[1, 0, 3], denominator=[10, 0, 20], method=RATE)
    assert list(result.groups) == ["1", "3"] and result.dropped == ["2"]


def test_all_zero_denominators_and_missing_ones_are_reported_not_crashed():
    with pytest.raises(KriInputError, match="every denominator is 0"):
        kri_from_groups(groups=["1"], numerator=[1], denominator=[0], method=RATE)
    with pytest.raises(KriInputError, match="no denominator"):
        kri_from_groups(groups=["1", "2"], numerator=[1, 2], denominator=[3, math.nan], method=RATE)
    with pytest.raises(KriInputError, match="no subjects"):
        kri_from_subjects(codes=np.array([], dtype=int), groups=[], numerator=np.array([]),
                          denominator=np.array([]), method=RATE)


def test_no_events_anywhere_scores_zero_not_nan():
    result = kri_from_groups(groups=["1", "2"], numerator=[0, 0], denominator=[10, 20], method=RATE)
    assert list(result.score) == [0, 0] and list(result.flag) == [0, 0]


def test_a_score_equal_to_a_threshold_goes_to_the_bucket_above():
    flags = kri_flag(np.array([-3.0, -2.5, -2.0, 0.0, 2.0, 2.9, 3.0, math.nan]), RATE)
    assert flags[:7].tolist() == [-1, -1, 0, 0, 1, 1, 2] and math.isnan(flags[7])


def test_accrual_masks_score_flag_and_weight_below_the_threshold():
    method = KriMethod(analysis="normal_binary", thresholds=(2, 3), flags=(0, 1, 2), weights=(0, 1, 2),
                       accrual_threshold=3, accrual_metric="numerator")
    result = kri_from_groups(groups=list("abcd"), numerator=[2, 30, 5, 40], denominator=[50, 60, 70, 80],
                             method=method)
    assert math.isnan(result.score[0]) and math.isnan(result.flag[0]) and math.isnan(result.weight[0])
    assert not np.isnan(result.score[1:]).any()


def test_poisson_scores_are_deviance_residuals_of_the_pooled_rate():
    method = KriMethod(analysis="poisson", thresholds=(-5, -3, 3, 5))
    result = kri_from_groups(groups=list("abc"), numerator=[0, 10, 30], denominator=[100, 100, 100], method=method)
    mu = 100 * 40 / 300
    assert result.score[0] == pytest.approx(-math.sqrt(2 * mu))
    assert result.score[2] == pytest.approx(math.sqrt(2 * (30 * math.log(30 / mu) - (30 - mu))))


def test_fisher_gives_the_exact_two_sided_p_value():
    method = KriMethod(analysis="fisher", thresholds=(0.01, 0.05), flags=(2, 1, 0))
    # Site a: 8 of 10 against 2 of 20 elsewhere. The p-value by enumerating the hypergeometric
    # tables with math.comb: every table no more likely than the observed one.
    result = kri_from_groups(groups=["a", "b"], numerator=[8, 2], denominator=[10, 20], method=method)
    tables = [math.comb(10, k) * math.comb(20, 10 - k) / math.comb(30, 10) for k in range(11)]
    assert result.score[0] == pytest.approx(sum(p for p in tables if p <= tables[8] * (1 + 1e-7)), rel=1e-12)
    assert result.flag[0] == 2


def test_identity_can_score_the_numerator():
    method = KriMethod(analysis="identity", thresholds=(1.5, 2.5), flags=(0, 1, 2), score_of="numerator")
    result = kri_from_groups(groups=["a", "b"], numerator=[3, 1], denominator=[5, 5], method=method)
    assert result.score.tolist() == [3, 1] and result.flag.tolist() == [2, 0]


@pytest.mark.parametrize("kwargs, message", [
    ({"analysis": "magic", "thresholds": (2, 3)}, "unknown analysis"),
    ({"analysis": "normal_rate", "thresholds": (2, 3), "flags": (0, 1)}, "need 3 flags"),
    ({"analysis": "normal_rate", "thresholds": (2, 3), "weights": (1,)}, "weights"),
    ({"analysis": "normal_rate", "thresholds": (2, 3), "accrual_metric": "volume"}, "accrual metric"),
    ({"analysis": "normal_rate", "thresholds": ("two", 3)}, "'two' is not a number"),
    ({"analysis": "normal_rate", "thresholds": "2,3"}, "must be a list of numbers"),
    ({"analysis": "normal_rate", "thresholds": ()}, "at least one threshold"),
    ({"analysis": "normal_rate", "thresholds": (2, 3), "weights": (0, "x", 2)}, "'x' is not a number"),
    ({"analysis": "identity", "thresholds": (2, 3), "score_of": "denominator"}, "score_of"),
])
def test_a_definition_that_cannot_be_computed_says_why(kwargs, message):
    with pytest.raises(KriInputError, match=message):
        KriMethod(**kwargs)


def test_site_risk_score_counts_only_the_kris_a_site_has_a_result_for():
    weights = np.array([[32, 2, np.nan], [0, 0, 0]], dtype="float64")
    scores = site_risk_score(weights, np.array([32, 2, 16], dtype="float64"))
    assert scores.tolist() == [100.0, 0.0]


def test_the_exact_binomial_interval_at_its_edges():
    # Closed forms: x = 0 gives (0, 1 - (alpha/2)^(1/n)); x = n gives ((alpha/2)^(1/n), 1).
    assert binomial_interval(0, 10) == pytest.approx((0.0, 1 - 0.025 ** 0.1), abs=1e-12)
    assert binomial_interval(10, 10) == pytest.approx((0.025 ** 0.1, 1.0), abs=1e-12)
    low, high = binomial_interval(3, 7)
    # Each bound leaves exactly alpha/2 in its tail (the definition, summed with math.comb).
    tail = sum(math.comb(7, k) * low**k * (1 - low) ** (7 - k) for k in range(3, 8))
    assert tail == pytest.approx(0.025, abs=1e-12)
    head = sum(math.comb(7, k) * high**k * (1 - high) ** (7 - k) for k in range(0, 4))
    assert head == pytest.approx(0.025, abs=1e-12)
    with pytest.raises(KriInputError):
        binomial_interval(5, 3)
