"""Intervals against scipy on known data."""
import numpy as np
import pytest
from scipy import stats

from sublim.stats import bootstrap_interval, difference_interval, t_interval, wilson

DATA = [0.12, 0.31, 0.25, 0.08, 0.4, 0.22]


def test_t_interval_matches_scipy():
    iv = t_interval(DATA, 0.95)
    lo, hi = stats.t.interval(0.95, len(DATA) - 1, loc=np.mean(DATA), scale=stats.sem(DATA))
    assert (iv.mean, iv.low, iv.high, iv.n) == pytest.approx((np.mean(DATA), lo, hi, 6), abs=1e-12)


def test_t_interval_edge_cases():
    assert np.isnan(t_interval([0.3]).low) and t_interval([0.3]).mean == 0.3
    assert t_interval([0.2, 0.2, 0.2]).low == pytest.approx(0.2, abs=1e-12)
    assert t_interval([]).n == 0


def test_wilson_matches_statsmodels_formula():
    iv = wilson(12, 100)
    z = stats.norm.ppf(0.975)
    p, n = 0.12, 100
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (iv.low, iv.high) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert wilson(0, 50).low == pytest.approx(0.0, abs=1e-12) and wilson(0, 50).high > 0


def test_welch_and_paired_difference_match_scipy():
    a, b = [0.10, 0.12, 0.09, 0.11, 0.14], [0.05, 0.04, 0.06, 0.05, 0.03]
    iv = difference_interval(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((ci.low, ci.high), abs=1e-9)
    iv = difference_interval(a, b, paired=True)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    a, b = bootstrap_interval(DATA, seed=1), bootstrap_interval(DATA, seed=1)
    assert a == b and a.low < np.mean(DATA) < a.high
    t = t_interval(DATA)
    assert abs((a.high - a.low) - (t.high - t.low)) < 0.5 * (t.high - t.low)


def test_rate_intervals_are_clipped_to_zero_one_and_differences_are_not():
    from sublim.stats import RATE, t_interval

    near_zero = [0.0, 0.0, 0.2, 0.0, 0.1]
    raw, clipped = t_interval(near_zero), t_interval(near_zero, bounds=RATE)
    assert raw.low < 0 and clipped.low == 0.0 and clipped.high == raw.high and clipped.mean == raw.mean
    near_one = [1.0, 0.8, 1.0, 1.0]
    assert t_interval(near_one).high > 1 and t_interval(near_one, bounds=RATE).high == 1.0
