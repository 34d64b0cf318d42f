"""The two-sample tests of the gate: a metric's rounds against a baseline's, as two runs or as paired rounds.

``compare``: one-sided Mann-Whitney U (``scipy.stats.mannwhitneyu``) on the raw per-round samples. It is rank
based, so it assumes no normality (per-round latencies are skewed, with occasional slow rounds) and is
insensitive to a single outlier; it needs nothing but the samples stored in the run file. The alternative is "the
current samples are worse" (``greater`` for lower-is-better metrics, ``less`` for higher-is-better ones). scipy
picks the exact distribution for small samples without ties and the normal approximation otherwise.

``compare_paired``: rounds that ran in lockstep, compared pair by pair with the one-sided Wilcoxon signed-rank test.

Sample sizes matter: with n baseline and m current samples the smallest one-sided exact p-value is
1 / C(n+m, n) (every current sample worse than every baseline sample). For 5 vs 5 that is 1/252 ~= 0.004, so
alpha = 0.01 is reachable with 5 rounds; for 4 vs 4 it is 1/70 ~= 0.014 and it is not. ``min_rounds_for_alpha``
computes this (``min_pairs_for_alpha`` for pairs: 1 / 2**n); a verdict whose sample sizes cannot reach alpha says
so in its message.

Both hand their effect and p-values to ``verdicts.decide`` as one ``verdicts.Evidence``; a metric measured once
per variant goes to ``verdicts.compare_direct`` instead. scipy is imported only when a test runs.
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

from pytest_llmeff.defaults import DEFAULT_ALPHA
from pytest_llmeff.gate.thresholds import Threshold
from pytest_llmeff.gate.verdicts import (MANN_WHITNEY, WILCOXON_PAIRED, Evidence, Verdict, checked_samples,
                                         compare_direct, decide, relative_change)


def min_exact_p(n_baseline: int, n_current: int) -> float:
    """Smallest one-sided exact Mann-Whitney p-value for these sample sizes: 1 / C(n+m, n)."""
    return 1.0 / math.comb(n_baseline + n_current, n_baseline)


def min_rounds_for_alpha(alpha: float) -> int:
    """Smallest n such that n baseline vs n current samples can give an exact one-sided p < ``alpha``.

    That is the smallest n with 1 / C(2n, n) < alpha: 5 for alpha = 0.01 (1/252), 4 for alpha = 0.05 (1/70).
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha={alpha!r} must be in (0, 1]")
    n = 1
    while min_exact_p(n, n) >= alpha:
        n += 1
    return n


def min_exact_p_paired(n_pairs: int) -> float:
    """Smallest one-sided exact Wilcoxon signed-rank p-value for ``n_pairs`` pairs: 1 / 2**n."""
    return 0.5 ** n_pairs


def min_pairs_for_alpha(alpha: float) -> int:
    """Smallest n such that n pairs can give an exact one-sided p < ``alpha``: 7 for 0.01 (1/128), 5 for 0.05."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha={alpha!r} must be in (0, 1]")
    n = 1
    while min_exact_p_paired(n) >= alpha:
        n += 1
    return n


def _one_sided_p(current: list[float], baseline: list[float], alternative: str) -> float:
    from scipy.stats import mannwhitneyu  # heavy import, only when comparing

    p = float(mannwhitneyu(current, baseline, alternative=alternative).pvalue)
    return 1.0 if math.isnan(p) else p  # all samples equal: no evidence either way


def _one_sided_p_paired(differences: list[float], alternative: str) -> float:
    from scipy.stats import wilcoxon  # heavy import, only when comparing

    if not any(differences):
        return 1.0  # every pair equal: no evidence either way
    p = float(wilcoxon(differences, alternative=alternative).pvalue)
    return 1.0 if math.isnan(p) else p


def compare(metric_name: str, baseline_samples: Sequence[float], current_samples: Sequence[float],
            threshold: Threshold, alpha: float = DEFAULT_ALPHA, min_samples: int = 3) -> Verdict:
    """Compare the current samples of ``metric_name`` with the baseline's (see the module docstring for rules).

    ``threshold.metric`` must be ``metric_name``. Samples are raw per-round values in the metric's unit. The
    effect is the change of the medians; the test is one-sided Mann-Whitney U on the two sets of rounds. A metric
    measured once per variant is judged directly (``compare_direct``).
    """
    spec, base, cur = checked_samples(metric_name, threshold, alpha, baseline_samples, current_samples)
    if spec.sampling == "once":
        return compare_direct(metric_name, base, cur, threshold, alpha=alpha)
    base_med = statistics.median(base) if base else None
    cur_med = statistics.median(cur) if cur else None
    change = None if base_med is None or cur_med is None else relative_change(base_med, cur_med)
    enough = len(base) >= min_samples and len(cur) >= min_samples
    worse_alt = "greater" if spec.direction == "lower" else "less"
    p_worse = p_better = None
    if enough:
        better_alt = "less" if worse_alt == "greater" else "greater"
        p_worse, p_better = _one_sided_p(cur, base, worse_alt), _one_sided_p(cur, base, better_alt)
    worse_abs = None if base_med is None or cur_med is None else cur_med - base_med
    cannot = ""
    if enough and min_exact_p(len(base), len(cur)) >= alpha:
        cannot = (f"; {len(base)} vs {len(cur)} samples cannot reach p < {alpha:g} "
                  f"(use >= {min_rounds_for_alpha(alpha)} rounds)")
    short = (f"{len(base)} baseline and {len(cur)} current samples; need at least {min_samples} each"
             if not enough else None)
    return decide(Evidence(spec, threshold, alpha, len(base), len(cur), base_med, cur_med, change, worse_abs,
                           p_worse, p_better, cannot, short, MANN_WHITNEY))


def compare_paired(metric_name: str, baseline_samples: Sequence[float], current_samples: Sequence[float],
                   threshold: Threshold, alpha: float = DEFAULT_ALPHA, min_samples: int = 3) -> Verdict:
    """Compare rounds that ran in lockstep (``interleave.py``): current round i with baseline round i.

    Drift of the machine hits both rounds of a pair alike, so the comparison is made pair by pair. The effect is
    the median of the per-pair ratios current/baseline (``change`` = that median - 1) for a relative threshold,
    or the median of the per-pair differences for an absolute one. The test is the one-sided Wilcoxon
    signed-rank test (scipy) on the per-pair log-ratios (relative; differences when a sample is <= 0) or
    differences (absolute). The two sides must have the same number of rounds (ValueError otherwise). A metric
    measured once per variant is judged directly (``compare_direct``), paired or not.
    """
    spec, base, cur = checked_samples(metric_name, threshold, alpha, baseline_samples, current_samples)
    if spec.sampling == "once":
        return compare_direct(metric_name, base, cur, threshold, alpha=alpha)
    if len(base) != len(cur):
        raise ValueError(f"{metric_name}: paired comparison needs as many current rounds as baseline rounds "
                         f"({len(cur)} vs {len(base)})")
    base_med = statistics.median(base) if base else None
    cur_med = statistics.median(cur) if cur else None
    positive = all(v > 0 for v in base + cur)
    differences = [c - b for b, c in zip(base, cur)]
    change = worse_abs = None
    if base:
        worse_abs = statistics.median(differences)
        if positive:
            change = statistics.median([c / b for b, c in zip(base, cur)]) - 1.0
        else:
            change = relative_change(base_med, base_med + worse_abs)
    enough = len(base) >= min_samples
    worse_alt = "greater" if spec.direction == "lower" else "less"
    p_worse = p_better = None
    if enough:
        tested = [math.log(c / b) for b, c in zip(base, cur)] if positive and threshold.kind == "relative" \
            else differences
        better_alt = "less" if worse_alt == "greater" else "greater"
        p_worse, p_better = _one_sided_p_paired(tested, worse_alt), _one_sided_p_paired(tested, better_alt)
    cannot = ""
    if enough and min_exact_p_paired(len(base)) >= alpha:
        cannot = f"; {len(base)} pairs cannot reach p < {alpha:g} (use >= {min_pairs_for_alpha(alpha)} rounds)"
    short = f"{len(base)} paired rounds; need at least {min_samples}" if not enough else None
    return decide(Evidence(spec, threshold, alpha, len(base), len(cur), base_med, cur_med, change, worse_abs,
                           p_worse, p_better, cannot, short, WILCOXON_PAIRED))
