"""Summary statistics of sampled figures: the median's confidence interval, honest percentiles, rate means.

Pure functions on lists of floats; scipy does the statistics (imported inside the functions, so that the plugin
module stays light).

- Confidence interval of the median: Hettmansperger-Sheather interpolated order statistics
  (``scipy.stats.mstats.median_cihs``). Distribution-free: no normality is assumed, so skewed and heavy-tailed
  round times are covered at close to the nominal level (see ``tests/test_stats.py``). It needs at least
  ``MIN_CI_SAMPLES`` samples; with fewer there is no interval (None), and the figure is imprecise.
- Percentiles: p90 only with at least 10 samples, p99 only with at least 100 (an interpolated p99 of 5 samples is
  the maximum in disguise); otherwise None and the reason.
- Mean of a rate (unit ending ``/s``): every round does the same work, so the mean rate is total work / total
  time, which is the harmonic mean of the per-round rates (``scipy.stats.hmean``), not their arithmetic mean.
"""

from __future__ import annotations

from typing import Optional, Sequence

CONFIDENCE = 0.95  #: level of every interval the plugin reports
MIN_CI_SAMPLES = 6  #: fewest samples for which a distribution-free 95% interval of the median exists
PERCENTILE_MIN_SAMPLES = {0.90: 10, 0.99: 100}  #: fewest samples for a percentile to be reported


def median_ci(samples: Sequence[float], confidence: float = CONFIDENCE) -> Optional[tuple[float, float]]:
    """The ``confidence`` interval (low, high) of the population median, in the samples' unit; None when there
    are fewer than ``MIN_CI_SAMPLES`` samples. All-equal samples give a zero-width interval."""
    values = [float(v) for v in samples]
    if len(values) < MIN_CI_SAMPLES:
        return None
    if min(values) == max(values):
        return values[0], values[0]
    import numpy as np
    from scipy.stats.mstats import median_cihs

    low, high = median_cihs(np.asarray(values), alpha=1.0 - confidence)
    return float(low), float(high)


def relative_half_width(median: float, ci: Optional[tuple[float, float]]) -> Optional[float]:
    """The larger distance from ``median`` to an end of ``ci``, as a fraction of ``|median|`` (0.05 = ±5%);
    None without an interval or with a zero median."""
    if ci is None or median == 0:
        return None
    return max(median - ci[0], ci[1] - median) / abs(median)


def percentile(samples: Sequence[float], q: float) -> tuple[Optional[float], Optional[str]]:
    """``(value, None)``: the ``q`` quantile (0 < q < 1, linear interpolation) when there are enough samples for it
    (``PERCENTILE_MIN_SAMPLES``, else at least 1/(1-q)); ``(None, reason)`` otherwise."""
    import numpy as np

    need = PERCENTILE_MIN_SAMPLES.get(q, int(round(1.0 / (1.0 - q))))
    if len(samples) < need:
        return None, f"p{q * 100:g} needs at least {need} samples, there are {len(samples)}"
    return float(np.quantile(np.asarray(samples, dtype=float), q)), None


def mean(samples: Sequence[float], unit: str) -> float:
    """The mean of ``samples``: harmonic for a rate (``unit`` ending in ``/s``: total work / total time when each
    sample did the same work), arithmetic otherwise."""
    values = [float(v) for v in samples]
    if unit.endswith("/s") and all(v > 0 for v in values):
        from scipy.stats import hmean

        return float(hmean(values))
    return sum(values) / len(values)
