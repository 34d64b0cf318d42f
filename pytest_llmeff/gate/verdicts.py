"""Regression verdicts: the rules that turn an effect and its p-values into ok, near-miss, regressed ...

Pure logic, no pytest hooks. Directions and units come from the one metric table (``metrics.py``); thresholds
from ``gate/thresholds.py``; the tests that produce the evidence live in ``gate/two_sample.py`` (two runs,
paired rounds) and ``gate/drift.py`` (stored sessions), which all end in ``decide``.

A regression needs both a median change beyond the threshold in the worse direction and p < alpha: a large
but noisy change, or a significant but small one, is a ``near-miss``, never a failure.

One figure per variant (``MetricSpec.sampling == "once"``: the quality drift, ``ppl``, ``model_bytes``, ``load_s``)
has no rounds to test: it is judged directly against the threshold (``compare_direct``), labelled ``DIRECT``, with
no p-value; beyond the threshold in the worse direction it is ``regressed``. A gated metric that one side did not
measure is a ``not-measured`` verdict (``not_measured``), never silence.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

from pytest_llmeff.defaults import DEFAULT_ALPHA
from pytest_llmeff.errors import GateConfigError
from pytest_llmeff.gate.thresholds import Threshold, shown_value
from pytest_llmeff.metrics import METRICS, MetricSpec

Status = Literal["ok", "improved", "near-miss", "regressed", "inconclusive", "not-measured"]

#: the names of the tests a ``Verdict.test`` records
MANN_WHITNEY = "one-sided Mann-Whitney U"
WILCOXON_PAIRED = "one-sided Wilcoxon signed-rank, paired rounds"
DIRECT = "direct: one figure per variant, no statistical test"


@dataclass(frozen=True)
class Verdict:
    """One metric of one benchmark compared with its baseline.

    baseline_median, current_median: in the metric's unit (``unit``); None when that side has no samples.
    change: (current - baseline) / baseline, signed, in the metric's natural sense (+0.2 = 20% larger);
    +-inf when the baseline median is 0 and the current is not; None when a median is missing.
    worse_by: the relative change in the worse direction, positive when worse (-change for higher-is-better).
    p_value: one-sided Mann-Whitney p-value of the tested direction (worse, unless the verdict is ``improved`` or
    the median moved in the better direction); None when inconclusive.
    threshold: the threshold as written (``5%``, ``64MB``). message: one line for humans.
    """

    metric: str
    status: Status
    baseline_median: Optional[float]
    current_median: Optional[float]
    change: Optional[float]
    worse_by: Optional[float]
    p_value: Optional[float]
    threshold: str
    message: str
    unit: str = ""
    n_baseline: int = 0
    n_current: int = 0
    alpha: float = DEFAULT_ALPHA  # the level p_value was held against (per comparison, after the run's correction)
    test: str = MANN_WHITNEY  # or the paired Wilcoxon test for lockstep rounds, or DIRECT
    correction: str = ""  # how ``alpha`` came from the run's --llmeff-alpha (see FamilyBudget.describe)
    mde: Optional[float] = None  # smallest worsening (fraction) caught 90% of the time at ``alpha`` (drift.py)
    history_runs: int = 0  # stored sessions the verdict was judged against (0: not a stored-baseline verdict)
    spread_rel: Optional[float] = None  # spread of the stored sessions' medians, as a fraction (drift.py)


@dataclass(frozen=True)
class Evidence:
    """What a test found about one metric of one benchmark: everything ``decide`` needs for a verdict.

    spec: the metric (its name, unit and better direction). threshold: how much it may worsen. alpha: the
    per-comparison significance level the p-values are held against (after the run's correction), in (0, 1).
    n_baseline, n_current: how many samples (rounds, pairs, or stored sessions) each side had.
    baseline_median, current_median: the two medians in the metric's unit (the baseline's is the stored
    sessions' centre for the stored-baseline test); None when a side has no samples.
    change: the relative effect, (current - baseline) / baseline, signed in the metric's natural sense (+0.2 =
    20% larger; for paired rounds the median per-pair ratio - 1). diff: the absolute effect in the metric's unit,
    signed the same way (current - baseline, or the median per-pair difference).
    p_worse, p_better: the one-sided p-values of "the current side is worse" and "... is better"; None when the
    test did not run. unreachable: why these sample sizes cannot reach p < alpha (``"; 4 vs 4 samples cannot
    ..."``), appended to the message of a non-significant verdict; ``""`` when they can. too_few: why there are
    too few samples to test (then the verdict is inconclusive); None when there are enough. test: the test's
    name, as ``Verdict.test`` records it (``MANN_WHITNEY``, ``WILCOXON_PAIRED``, the stored-session test).
    """

    spec: MetricSpec
    threshold: Threshold
    alpha: float
    n_baseline: int
    n_current: int
    baseline_median: Optional[float]
    current_median: Optional[float]
    change: Optional[float]
    diff: Optional[float]
    p_worse: Optional[float]
    p_better: Optional[float]
    unreachable: str
    too_few: Optional[str]
    test: str


def _pct(fraction: float) -> str:
    if math.isinf(fraction):
        return "+inf%" if fraction > 0 else "-inf%"
    return f"{fraction * 100:+.1f}%"


def checked_samples(metric_name: str, threshold: Threshold, alpha: float, baseline_samples, current_samples):
    """(the metric's spec, the baseline samples, the current samples) as float lists, after checking that the
    metric is known and gateable, that ``threshold`` is its own, that ``alpha`` is in (0, 1) and that every
    sample is finite: ``GateConfigError`` for a metric that cannot be gated, ``ValueError`` otherwise."""
    spec = METRICS.get(metric_name)
    if spec is None:
        raise GateConfigError(f"unknown metric {metric_name!r}; known metrics: {', '.join(sorted(METRICS))}")
    if spec.direction == "none":
        raise GateConfigError(f"{metric_name} has no better direction (a property, not a score) and cannot be gated")
    if threshold.metric != metric_name:
        raise ValueError(f"threshold for {threshold.metric!r} given to compare {metric_name!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} must be in (0, 1)")
    base = [float(v) for v in baseline_samples]
    cur = [float(v) for v in current_samples]
    if not all(math.isfinite(v) for v in base + cur):
        raise ValueError(f"{metric_name}: samples must be finite numbers")
    return spec, base, cur


def relative_change(base_med: float, cur_med: float) -> float:
    """(current - baseline) / |baseline| as a fraction; 0 when both are 0, +-inf when only the baseline is."""
    if base_med != 0:
        return (cur_med - base_med) / abs(base_med)
    return 0.0 if cur_med == 0 else math.copysign(math.inf, cur_med)


def decide(evidence: Evidence) -> Verdict:
    """The verdict from the evidence of a test: an effect (``change`` relative, ``diff`` absolute, signed in the
    metric's sense) and the two one-sided p-values; ``too_few`` says why there are too few samples (then:
    inconclusive)."""
    e = evidence
    spec, threshold, alpha, test = e.spec, e.threshold, e.alpha, e.test
    base_med, cur_med, change, diff = e.baseline_median, e.current_median, e.change, e.diff
    p_worse, p_better, cannot, short = e.p_worse, e.p_better, e.unreachable, e.too_few
    metric_name = spec.name
    # sign: +1 when an increase is worse (lower is better), -1 when a decrease is worse (higher is better)
    sign = 1.0 if spec.direction == "lower" else -1.0
    worse_by = None if change is None else sign * change
    common = dict(metric=metric_name, threshold=threshold.text, unit=spec.unit, n_baseline=e.n_baseline,
                  n_current=e.n_current, alpha=alpha, baseline_median=base_med, current_median=cur_med, test=test)
    if short is not None or p_worse is None or p_better is None:
        return Verdict(status="inconclusive", change=change, worse_by=worse_by, p_value=None,
                       message=f"{metric_name} inconclusive: {short}", **common)
    assert base_med is not None and cur_med is not None and change is not None and worse_by is not None
    assert diff is not None

    worse_abs = sign * diff  # in the metric's unit, positive when worse
    if threshold.kind == "relative":
        beyond_worse = worse_by > threshold.value
        beyond_better = -worse_by > threshold.value
        amount = f"{abs(worse_by) * 100:.1f}%"
    else:
        beyond_worse = worse_abs > threshold.value
        beyond_better = -worse_abs > threshold.value
        amount = shown_value(abs(worse_abs), spec, threshold.unit)
    sig_worse = p_worse < alpha
    sig_better = p_better < alpha

    shown_unit = threshold.unit if threshold.kind == "absolute" else ""
    medians = (f"median {shown_value(base_med, spec, shown_unit)} -> {shown_value(cur_med, spec, shown_unit)} "
               f"({_pct(change)}{' paired' if test == WILCOXON_PAIRED else ''})")

    if beyond_worse and sig_worse:
        status: Status = "regressed"
        p = p_worse
        detail = f"worse by {amount} > {threshold.text}, p={p:.3g} < {alpha:g}"
    elif beyond_worse:
        status, p = "near-miss", p_worse
        detail = f"worse by {amount} > {threshold.text} but not significant (p={p:.3g} >= {alpha:g}){cannot}"
    elif sig_worse:
        status, p = "near-miss", p_worse
        detail = f"significantly worse (p={p:.3g} < {alpha:g}) but within {threshold.text}"
    elif beyond_better and sig_better:
        status, p = "improved", p_better
        detail = f"better by {amount} > {threshold.text}, p={p:.3g} < {alpha:g}"
    else:
        status = "ok"
        p = p_worse if worse_by >= 0 else p_better
        if beyond_better:
            detail = f"better by {amount} but not significant (p={p:.3g} >= {alpha:g}){cannot}"
        else:
            detail = f"within {threshold.text} (p={p:.3g})"
    label = status.replace("-", " ")
    return Verdict(status=status, change=change, worse_by=worse_by, p_value=p,
                   message=f"{metric_name} {label}: {medians}, {detail}", **common)


def compare_direct(metric_name: str, baseline_samples: Sequence[float], current_samples: Sequence[float],
                   threshold: Threshold, alpha: float = DEFAULT_ALPHA) -> Verdict:
    """Judge a figure measured once per variant (``sampling == "once"``) directly against ``threshold``.

    There is one figure per side (the median, should a side hold several), so there is no test and no p-value:
    worse than the baseline by more than the threshold is ``regressed``, better by more is ``improved``, anything
    else ``ok``; a side without a figure is ``inconclusive``. ``alpha`` is only recorded. The figure must be
    deterministic for this to be fair (the quality drift, ``ppl``, ``model_bytes``); ``load_s`` is one timing, so
    its threshold has to cover its own noise.
    """
    spec, base, cur = checked_samples(metric_name, threshold, alpha, baseline_samples, current_samples)
    common = dict(metric=metric_name, threshold=threshold.text, unit=spec.unit, n_baseline=len(base),
                  n_current=len(cur), alpha=alpha, test=DIRECT, p_value=None)
    if not base or not cur:
        return Verdict(status="inconclusive", baseline_median=statistics.median(base) if base else None,
                       current_median=statistics.median(cur) if cur else None, change=None, worse_by=None,
                       message=f"{metric_name} inconclusive: {len(base)} baseline and {len(cur)} current figures; "
                               "need one each", **common)
    base_val, cur_val = statistics.median(base), statistics.median(cur)
    change = relative_change(base_val, cur_val)
    sign = 1.0 if spec.direction == "lower" else -1.0
    worse_by = sign * change
    worse_abs = sign * (cur_val - base_val)
    if threshold.kind == "relative":
        beyond_worse, beyond_better = worse_by > threshold.value, -worse_by > threshold.value
        amount = f"{abs(worse_by) * 100:.1f}%"
    else:
        beyond_worse, beyond_better = worse_abs > threshold.value, -worse_abs > threshold.value
        amount = shown_value(abs(worse_abs), spec, threshold.unit)
    shown_unit = threshold.unit if threshold.kind == "absolute" else ""
    values = f"{shown_value(base_val, spec, shown_unit)} -> {shown_value(cur_val, spec, shown_unit)} ({_pct(change)})"
    if beyond_worse:
        status: Status = "regressed"
        detail = f"worse by {amount} > {threshold.text}"
    elif beyond_better:
        status, detail = "improved", f"better by {amount} > {threshold.text}"
    else:
        status, detail = "ok", f"within {threshold.text}"
    return Verdict(status=status, baseline_median=base_val, current_median=cur_val, change=change,
                   worse_by=worse_by, message=f"{metric_name} {status}: {values}, {detail} (judged directly: one "
                                              "figure per variant, no statistical test)", **common)


def not_measured(metric_name: str, threshold: Threshold, side: str) -> Verdict:
    """The verdict of a gated metric that ``side`` (``this run``, ``the baseline`` or ``either run``) did not
    measure: visible as ``not-measured``, never a failure and never silence."""
    spec = METRICS.get(metric_name) or MetricSpec(metric_name, "", "none", "")
    return Verdict(metric=metric_name, status="not-measured", baseline_median=None, current_median=None,
                   change=None, worse_by=None, p_value=None, threshold=threshold.text, unit=spec.unit, test="",
                   message=f"{metric_name} not measured in {side}: threshold {threshold.text} not checked")


def is_tested(metric_name: str) -> bool:
    """True when a gated ``metric_name`` is judged by a statistical test (it has rounds), so it spends part of
    the run's false-alarm budget; False for figures measured once per variant (judged directly)."""
    spec = METRICS.get(metric_name)
    return spec is None or spec.sampling != "once"
