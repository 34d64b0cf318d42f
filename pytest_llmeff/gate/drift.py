"""The stored-baseline gate that knows the noise between sessions, and what a comparison can resolve.

Rounds of one session are close to each other; sessions are not. On a shared machine the median of a whole
session moves by tens of percent between two runs of the same code (other tenants, frequency, memory layout),
so testing this session's rounds against one stored session's rounds (Mann-Whitney U) calls that drift a
regression about once in four comparisons. This module judges a session against the *history* of stored
sessions instead: the spread of their medians is the noise the current median is compared with.

The test (a prediction test). Let ``x_1..x_K`` be the log medians of K stored sessions of this benchmark on this
machine fingerprint and ``y`` the current session's log median. If the current session is one more draw of the
same sessions (normal on the log scale, i.e. log-normal session effects), then
``(y - mean(x)) / (s * sqrt(1 + 1/K))`` follows Student's t with K - 1 degrees of freedom, ``s`` the standard
deviation of the ``x``. The one-sided p-value in the worse direction is that t's tail (``scipy.stats.t``). The
standard error is never taken below the current session's own (from its median interval), so K identical stored
medians cannot make a one-round wobble significant. Metrics with a value <= 0 are tested on the linear scale.

The spread is never taken below 5% (``SPREAD_FLOOR``). Real session effects are not normal: a machine that is fast
most of the time and sometimes slow makes a few stored sessions agree closely, and the plain t test then called a
slow unchanged session a regression (2.9% of A/A comparisons at K = 3 on the development VM). A floor only widens
the test, so where the normal model holds it adds no false alarms; the price is resolution on a machine whose
sessions really agree within 5% (there, --llmeff-ab resolves more). A prior pooled with the spread (a moderated
t) was tried and rejected: with a fixed prior it shrinks a large true spread and false-alarms (15% of simulated
A/A comparisons with a 20% spread at K = 2).

Minimum detectable effect (MDE): the smallest worsening this comparison catches with 90% probability at its
level: ``delta = (t_{1-alpha, K-1} + t_{0.90, K-1}) * se`` on the log scale, reported as a fraction worse
(``1 - exp(-delta)`` for higher-is-better metrics, ``exp(delta) - 1`` for lower-is-better ones). It needs K >= 2;
with one stored session the spread between sessions is unknown, nothing beyond the rounds of one session can be
resolved, and a verdict that would say ``regressed`` or ``improved`` says ``inconclusive`` (``cap_single``).

For lockstep rounds (pairs taken in turns, ``two_sample.compare_paired``) the same formula on the per-pair log ratios,
with n pairs and ``se = sd / sqrt(n)``, gives the MDE of the paired test (``paired_mde``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from typing import Optional, Sequence

from pytest_llmeff.defaults import DEFAULT_ALPHA
from pytest_llmeff.gate.thresholds import Threshold
from pytest_llmeff.gate.two_sample import compare
from pytest_llmeff.gate.verdicts import Evidence, Verdict, decide
from pytest_llmeff.metrics import METRICS
from pytest_llmeff.stats.intervals import median_ci

MIN_HISTORY = 2  # stored sessions needed to estimate the spread between sessions (one degree of freedom)
# The smallest spread between sessions the test believes (log units: 5%). A few stored sessions that happen to agree
# closely (three fast sessions on a machine that is sometimes 20% slow) gave the plain t test a tiny spread, and it
# called a slow session of unchanged code a regression: 7 false alarms in 240 A/A comparisons at K = 3 on the
# development VM (benchmarks/gate_quality.py). A floor only widens the test, so it never adds false alarms.
SPREAD_FLOOR = 0.05
POWER = 0.90  # the detection probability the minimum detectable effect is quoted at
SESSIONS_TEST = "one-sided t prediction test over stored session medians (log scale)"
SESSIONS_TEST_LINEAR = "one-sided t prediction test over stored session medians"


@dataclass(frozen=True)
class SessionSpread:
    """What K stored sessions say about one metric of one benchmark.

    runs: K, the stored sessions with this metric. center: their geometric mean (arithmetic on the linear scale),
    in the metric's unit. sd: the standard deviation of their log medians (natural-log units; on the linear scale,
    in the metric's unit), 0.0 when K == 1. log_scale: whether every median was > 0 (the log scale was used).
    """

    runs: int
    center: float
    sd: float
    log_scale: bool

    @property
    def spread_rel(self) -> Optional[float]:
        """The session-to-session spread as a fraction of the center (``exp(sd) - 1`` on the log scale)."""
        if self.runs < MIN_HISTORY:
            return None
        if self.log_scale:
            return math.expm1(self.sd)
        return self.sd / abs(self.center) if self.center else None


def session_spread(medians: Sequence[float]) -> SessionSpread:
    """The spread of stored session medians (K >= 1, finite numbers)."""
    values = [float(v) for v in medians]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"session medians must be finite numbers, got {values!r}")
    log_scale = all(v > 0 for v in values)
    scaled = [math.log(v) for v in values] if log_scale else values
    center = statistics.fmean(scaled)
    sd = statistics.stdev(scaled) if len(scaled) >= 2 else 0.0
    return SessionSpread(len(values), math.exp(center) if log_scale else center, sd, log_scale)


def _worse_fraction(delta: float, direction: str) -> float:
    """A worsening of ``delta`` log units as a fraction of the metric (positive)."""
    return -math.expm1(-delta) if direction == "higher" else math.expm1(delta)


def mde_from_se(se: float, dof: int, alpha: float, direction: str, log_scale: bool = True,
                center: float = 1.0) -> float:
    """The minimum detectable worsening (a fraction) of a one-sided t test at ``alpha`` with standard error ``se``
    and ``dof`` degrees of freedom, at 90% power. On the linear scale ``se`` is in the metric's unit and the
    result is relative to ``center``."""
    from scipy.stats import t

    delta = (float(t.ppf(1.0 - alpha, dof)) + float(t.ppf(POWER, dof))) * se
    if log_scale:
        return _worse_fraction(delta, direction)
    return delta / abs(center) if center else math.inf


def _own_se(samples: Sequence[float], log_scale: bool) -> float:
    """The standard error of a session's median from its own rounds (its 95% median interval / 3.92); 0.0 when
    there are too few rounds for an interval."""
    interval = median_ci(list(samples))
    if interval is None:
        return 0.0
    low, high = interval
    if log_scale:
        if low <= 0 or high <= 0:
            return 0.0
        return (math.log(high) - math.log(low)) / 3.92
    return (high - low) / 3.92


def compare_sessions(metric_name: str, history_medians: Sequence[float], current_samples: Sequence[float],
                     threshold: Threshold, alpha: float = DEFAULT_ALPHA) -> Verdict:
    """Judge the current session's rounds of ``metric_name`` against K >= 2 stored session medians (newest
    first or any order) with the prediction test of the module docstring. The verdict carries ``mde``,
    ``history_runs`` and ``spread_rel``; a threshold below the MDE is said in its message."""
    spec = METRICS[metric_name]
    cur = [float(v) for v in current_samples]
    if len(history_medians) < MIN_HISTORY:
        raise ValueError(f"{metric_name}: {len(history_medians)} stored sessions; the prediction test needs "
                         f">= {MIN_HISTORY}")
    if not cur:
        raise ValueError(f"{metric_name}: the current session has no samples")
    cur_med = statistics.median(cur)
    spread = session_spread(history_medians)
    log_scale = spread.log_scale and cur_med > 0
    if not log_scale and spread.log_scale:
        spread = SessionSpread(spread.runs, statistics.fmean(history_medians),
                               statistics.stdev(history_medians), False)
    k = spread.runs
    floor = SPREAD_FLOOR if log_scale else SPREAD_FLOOR * abs(spread.center)
    dof = k - 1
    se = max(max(spread.sd, floor) * math.sqrt(1.0 + 1.0 / k), _own_se(cur, log_scale))
    y = math.log(cur_med) if log_scale else cur_med
    x = math.log(spread.center) if log_scale else spread.center
    sign = 1.0 if spec.direction == "lower" else -1.0  # +1 when an increase is worse
    worse = sign * (y - x)
    from scipy.stats import t

    if se > 0:
        p_worse, p_better = float(t.sf(worse / se, dof)), float(t.sf(-worse / se, dof))
    else:  # identical stored medians and no interval of its own: any change is beyond the noise seen
        p_worse, p_better = (0.0, 1.0) if worse > 0 else (1.0, 0.0) if worse < 0 else (1.0, 1.0)
    change = (math.expm1(y - x) if log_scale else ((cur_med - x) / abs(x) if x else 0.0))
    base_med = spread.center
    test = SESSIONS_TEST if log_scale else SESSIONS_TEST_LINEAR
    verdict = decide(Evidence(spec, threshold, alpha, len(history_medians), len(cur), base_med, cur_med, change,
                              cur_med - base_med, p_worse, p_better, "", None, test))
    mde = mde_from_se(se, dof, alpha, spec.direction, log_scale, spread.center)
    rel = spread.spread_rel
    extra = (f"; {k} stored sessions, spread between sessions {rel * 100:.1f}%, "
             f"minimum detectable effect {mde * 100:.1f}%" if rel is not None else "")
    extra += below_mde_note(threshold, mde)
    return replace(verdict, message=verdict.message + extra, mde=mde, history_runs=k, spread_rel=rel)


def below_mde_note(threshold: Threshold, mde: Optional[float]) -> str:
    """``"; threshold 5% is below what this baseline can resolve (≈ 38%) ..."`` when it is; else ``""``."""
    if mde is None or threshold.kind != "relative" or threshold.value >= mde:
        return ""
    return (f"; threshold {threshold.text} is below what this baseline can resolve (≈ {mde * 100:.0f}%): use "
            "--llmeff-ab or store more runs")


def cap_single(verdict: Verdict, runs: int = 1) -> Verdict:
    """A verdict against ONE stored session (Mann-Whitney U on the rounds of two sessions): the spread between
    sessions is unknown, so ``regressed``/``improved`` become ``inconclusive`` with the reason; the MDE is
    unknown (None)."""
    if verdict.status not in ("regressed", "improved"):
        note = ("; one stored session: the spread between sessions is unknown, so no minimum detectable effect "
                "(store more runs or use --llmeff-ab)") if verdict.status != "not-measured" else ""
        return replace(verdict, message=verdict.message + note, history_runs=runs)
    word = "a regression" if verdict.status == "regressed" else "an improvement"
    return replace(verdict, status="inconclusive", history_runs=runs,
                   message=(f"{verdict.message}; INCONCLUSIVE: {word} against {runs} stored session cannot be "
                            f"told from the drift between sessions (need >= {MIN_HISTORY} stored runs of this "
                            "benchmark on this machine: store more runs with --llmeff-autosave, or use "
                            "--llmeff-ab)"))


def paired_mde(base: Sequence[float], cur: Sequence[float], alpha: float, direction: str) -> Optional[float]:
    """The MDE of the paired (lockstep) comparison: t on the per-pair log ratios (None with < 3 pairs or a
    value <= 0)."""
    if len(base) != len(cur) or len(base) < 3 or not all(v > 0 for v in list(base) + list(cur)):
        return None
    ratios = [math.log(c / b) for b, c in zip(base, cur)]
    sd = statistics.stdev(ratios)
    return mde_from_se(sd / math.sqrt(len(ratios)), len(ratios) - 1, alpha, direction)


def judge_stored(metric_name: str, history: Sequence[Sequence[float]], current_samples: Sequence[float],
                 threshold: Threshold, alpha: float) -> Verdict:
    """One round-sampled metric against stored sessions: ``history`` holds each stored session's samples, the
    chosen baseline first. K >= 2: ``compare_sessions`` on their medians. K == 1: Mann-Whitney U against that
    session's rounds, capped (``cap_single``)."""
    if METRICS[metric_name].sampling == "once":  # one figure per variant: judged directly, against the baseline
        return compare(metric_name, history[0] if history else [], current_samples, threshold, alpha)
    if len(history) >= MIN_HISTORY:
        medians = [statistics.median(s) for s in history if s]
        if len(medians) >= MIN_HISTORY:
            return compare_sessions(metric_name, medians, current_samples, threshold, alpha)
    return cap_single(compare(metric_name, history[0] if history else [], current_samples, threshold, alpha))
