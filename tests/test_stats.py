"""The statistics every figure carries, checked against known truth: the 95% interval of the median covers the
true median in 93-97% of 1,000 draws (normal, skewed, heavy-tailed), percentiles only with enough samples, and
rate means as total work / total time."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from pytest_llmeff.stats import intervals as stats

DISTRIBUTIONS = {
    # name: (draw n samples, the true median)
    "normal": (lambda rng, n: rng.normal(40.0, 3.0, n), 40.0),
    "lognormal (skewed)": (lambda rng, n: rng.lognormal(0.0, 0.8, n), 1.0),
    "cauchy (heavy tails)": (lambda rng, n: 5.0 + rng.standard_cauchy(n), 5.0),
}


@pytest.mark.parametrize("n", [6, 12, 40])
@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_the_median_interval_covers_the_true_median_95_percent_of_the_time(name, n):
    draw, true_median = DISTRIBUTIONS[name]
    rng = np.random.default_rng(zlib.crc32(f"{name}/{n}".encode()))  # fixed: the same draws every run
    covered = 0
    for _ in range(1000):
        low, high = stats.median_ci(draw(rng, n))
        covered += low <= true_median <= high
    assert 930 <= covered <= 970, (name, n, covered / 1000)


def test_no_interval_below_six_samples_and_a_zero_width_one_for_constant_data():
    assert stats.median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) is None
    assert stats.median_ci([7.0] * 6) == (7.0, 7.0)
    assert stats.relative_half_width(10.0, (9.0, 10.5)) == pytest.approx(0.1)
    assert stats.relative_half_width(10.0, None) is None


def test_percentiles_need_enough_samples():
    # the example: an interpolated p99 of [1, 2, 3, 4, 100] is 96.2, the maximum in disguise
    assert stats.percentile([1, 2, 3, 4, 100], 0.99) == (None, "p99 needs at least 100 samples, there are 5")
    assert stats.percentile(list(range(9)), 0.90)[0] is None
    value, why = stats.percentile(list(range(1, 101)), 0.99)
    assert why is None and value == pytest.approx(np.quantile(np.arange(1, 101), 0.99))


def test_the_mean_of_a_rate_is_total_work_over_total_time():
    # three rounds of 30 tokens in 1.0 s, 1.0 s and 3.0 s: 90 tokens in 5 s = 18 tok/s (the mean of rates is 23.3)
    assert stats.mean([30.0, 30.0, 10.0], "tok/s") == pytest.approx(18.0)
    assert stats.mean([1.0, 1.0, 3.0], "s") == pytest.approx(5 / 3)
