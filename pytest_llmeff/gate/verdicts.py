"""Regression verdicts: thresholds and limits parsed from text, and a baseline-vs-current comparison.

Pure logic, no pytest hooks. Directions and units come from the one metric table (``metrics.py``).

Thresholds (``"throughput_tok_s:5%,ttft_s:10%,peak_mem_bytes:64MB"``) say how much a metric may worsen against a
baseline. A percentage is a relative change in the metric's worse direction (down for ``higher`` metrics, up for
``lower`` ones); an absolute value carries a unit that fits the metric's unit (see ``UNITS``).

Limits (marker ``limits={"throughput_tok_s": ">= 20", "peak_mem_bytes": "<= 1.5GB"}``) are absolute bounds
checked on the median of one run, with no baseline.

The statistical test: one-sided Mann-Whitney U (``scipy.stats.mannwhitneyu``) on the raw per-round samples.
It is rank based, so it assumes no normality (per-round latencies are skewed, with occasional slow rounds) and
is insensitive to a single outlier; it needs nothing but the samples stored in the run file. The alternative is
"the current samples are worse" (``greater`` for lower-is-better metrics, ``less`` for higher-is-better ones).
scipy picks the exact distribution for small samples without ties and the normal approximation otherwise.

Sample sizes matter: with n baseline and m current samples the smallest one-sided exact p-value is
1 / C(n+m, n) (every current sample worse than every baseline sample). For 5 vs 5 that is 1/252 ~= 0.004, so
alpha = 0.01 is reachable with 5 rounds; for 4 vs 4 it is 1/70 ~= 0.014 and it is not. ``min_rounds_for_alpha``
computes this; a verdict whose sample sizes cannot reach alpha says so in its message.

A regression needs both a median change beyond the threshold in the worse direction and p < alpha: a large
but noisy change, or a significant but small one, is a ``near-miss``, never a failure.

One figure per variant (``MetricSpec.sampling == "once"``: the quality drift, ``ppl``, ``model_bytes``, ``load_s``)
has no rounds to test: ``compare`` and ``compare_paired`` judge it directly against the threshold
(``compare_direct``), labelled ``DIRECT``, with no p-value; beyond the threshold in the worse direction it is
``regressed``.

The false-alarm budget of a run (``FamilyBudget``): ``--llmeff-alpha`` is the chance of at least one false
``regressed`` among all tested comparisons of the run, not per comparison. Verdicts are made test by test while
the tests run, so Holm's step-down over all p-values of the run is not available when the first is judged; each
tested comparison is held at Bonferroni's level alpha / m instead, m being the number of tested comparisons the
run can make, counted before the first test runs (``Baseline.family_size``). By the union bound the chance of
any false alarm is then at most m * alpha / m = alpha, whatever the dependence between the comparisons. A gated
metric that one side did not measure is a ``not-measured`` verdict (``not_measured``), never silence.
"""

from __future__ import annotations

from pytest_llmeff.defaults import DEFAULT_ALPHA
from pytest_llmeff.errors import GateConfigError  # noqa: F401  (its old home; defined in errors.py)

import math
import re
import statistics
from dataclasses import dataclass
from typing import Literal, Mapping, Optional, Sequence

from pytest_llmeff.metrics import METRICS, MetricSpec

Status = Literal["ok", "improved", "near-miss", "regressed", "inconclusive", "not-measured"]
Operator = Literal[">=", "<=", ">", "<"]

# Units an absolute value may carry, by the metric's own unit: factor to the metric's unit.
# KB/MB/GB are decimal (1e3, 1e6, 1e9 bytes); KiB/MiB/GiB binary (2**10, 2**20, 2**30 bytes).
UNITS: dict[str, dict[str, float]] = {
    "B": {"B": 1.0, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 2.0**10, "MiB": 2.0**20, "GiB": 2.0**30},
    "s": {"s": 1.0, "ms": 1e-3, "us": 1e-6},
    "tok/s": {"tok/s": 1.0},
    "J": {"J": 1.0, "mJ": 1e-3, "kJ": 1e3},
    "ratio": {"": 1.0, "ratio": 1.0},
}

_THRESHOLD_FORM = ("expected METRIC:N% or METRIC:N<unit>, comma separated, "
                   "e.g. throughput_tok_s:5%,peak_mem_bytes:64MB")
_LIMIT_FORM = "expected 'OP VALUE[unit]' with OP one of >=, <=, >, <, e.g. '>= 20' or '<= 1.5GB'"
_NUMBER_AND_UNIT = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(\S*)$")
_LIMIT = re.compile(r"^(>=|<=|>|<)\s*(.+)$")




@dataclass(frozen=True)
class Threshold:
    """How much one metric may worsen against its baseline.

    metric: the metric's name. kind: ``relative`` or ``absolute``.
    value: for ``relative`` a fraction (0.05 for 5%); for ``absolute`` an amount in the metric's own unit
    (bytes for ``peak_mem_bytes``, seconds for ``ttft_s``, ...), always >= 0, measured in the worse direction.
    unit: as written (``%``, ``MB``, ``ms``, ...). text: the value as written (``5%``, ``64MB``).
    """

    metric: str
    kind: Literal["relative", "absolute"]
    value: float
    unit: str
    text: str


@dataclass(frozen=True)
class Limit:
    """An absolute bound on one metric's median.

    op: ``>=``, ``<=``, ``>`` or ``<`` (median OP value must hold). value: in the metric's own unit.
    unit: as written (empty when the number was given in the metric's own unit). text: as written (``<= 1.5GB``).
    """

    metric: str
    op: Operator
    value: float
    unit: str
    text: str


@dataclass(frozen=True)
class LimitResult:
    """A limit checked against one run. median: the metric's median in its own unit (None when not measured)."""

    limit: Limit
    median: Optional[float]
    passed: bool
    message: str


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
    test: str = "one-sided Mann-Whitney U"  # or the paired Wilcoxon test for lockstep rounds, or DIRECT
    correction: str = ""  # how ``alpha`` came from the run's --llmeff-alpha (see FamilyBudget.describe)
    mde: Optional[float] = None  # smallest worsening (fraction) caught 90% of the time at ``alpha`` (drift.py)
    history_runs: int = 0  # stored sessions the verdict was judged against (0: not a stored-baseline verdict)
    spread_rel: Optional[float] = None  # spread of the stored sessions' medians, as a fraction (drift.py)


def units_for(spec: MetricSpec) -> dict[str, float]:
    """Units an absolute value for ``spec`` may carry, with their factor to the metric's own unit."""
    return UNITS.get(spec.unit, {spec.unit: 1.0})


def _allowed_units_text(spec: MetricSpec) -> str:
    return ", ".join(u if u else "(none)" for u in units_for(spec))


def _spec_or_error(name: str, where: str) -> MetricSpec:
    spec = METRICS.get(name)
    if spec is None:
        raise GateConfigError(f"{where}: unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}")
    return spec


def _split_number(text: str) -> Optional[tuple[float, str]]:
    match = _NUMBER_AND_UNIT.match(text.strip())
    if not match:
        return None
    number = float(match.group(1))
    if not math.isfinite(number):
        return None
    return number, match.group(2)


def parse_thresholds(text: str) -> dict[str, Threshold]:
    """Parse ``"metric:5%,metric:64MB"`` into thresholds by metric name; GateConfigError (one line) otherwise.

    Empty pieces (a trailing comma) are ignored; an empty text gives ``{}``. A bare number is refused (it would
    be ambiguous) except for dimensionless ``ratio`` metrics.
    """
    found: dict[str, Threshold] = {}
    for raw in (text or "").split(","):
        piece = raw.strip()
        if not piece:
            continue
        name, sep, value_text = (part.strip() for part in piece.partition(":"))
        if not sep or not name or not value_text:
            raise GateConfigError(f"threshold {piece!r} is malformed; {_THRESHOLD_FORM}")
        where = f"threshold {piece!r}"
        spec = _spec_or_error(name, where)
        if spec.direction == "none":
            gateable = ", ".join(sorted(n for n, s in METRICS.items() if s.direction != "none"))
            raise GateConfigError(f"{where}: {name} has no better direction (a property, not a score) and "
                                  f"cannot be gated; gateable metrics: {gateable}")
        parsed = _split_number(value_text)
        if parsed is None:
            raise GateConfigError(f"threshold {piece!r} is malformed; {_THRESHOLD_FORM}")
        number, unit = parsed
        if number < 0:
            raise GateConfigError(f"{where}: a threshold is a tolerated worsening and must be >= 0")
        if unit == "%":
            threshold = Threshold(name, "relative", number / 100.0, "%", value_text)
        else:
            units = units_for(spec)
            if unit not in units:
                if unit == "":
                    raise GateConfigError(f"{where}: a bare number is ambiguous; write N% for a relative change "
                                          f"or N<unit> with unit one of {_allowed_units_text(spec)}")
                raise GateConfigError(f"{where}: unit {unit!r} does not fit {name} (measured in {spec.unit}); "
                                      f"allowed: %, {_allowed_units_text(spec)}")
            threshold = Threshold(name, "absolute", number * units[unit], unit, value_text)
        if name in found:
            raise GateConfigError(f"{where}: {name} is given twice (first as {found[name].text!r})")
        found[name] = threshold
    return found


def parse_limits(limits: Mapping[str, str]) -> list[Limit]:
    """Parse marker limits ``{"throughput_tok_s": ">= 20", "peak_mem_bytes": "<= 1.5GB"}``.

    A number without a unit is in the metric's own unit. Metrics of direction ``none`` may carry a limit
    (a bound needs no better direction). GateConfigError with one line otherwise.
    """
    if not isinstance(limits, Mapping):
        raise GateConfigError(f"limits={limits!r} must be a dict of metric name to 'OP VALUE', "
                              "e.g. {'throughput_tok_s': '>= 20'}")
    parsed: list[Limit] = []
    for name, raw in limits.items():
        where = f"limit {name}={raw!r}"
        spec = _spec_or_error(str(name), where)
        if not isinstance(raw, str):
            raise GateConfigError(f"{where} is malformed; {_LIMIT_FORM}")
        text = raw.strip()
        match = _LIMIT.match(text)
        number_unit = _split_number(match.group(2)) if match else None
        if match is None or number_unit is None:
            raise GateConfigError(f"{where} is malformed; {_LIMIT_FORM}")
        number, unit = number_unit
        units = units_for(spec)
        if unit == "":
            factor = 1.0
        elif unit in units:
            factor = units[unit]
        else:
            raise GateConfigError(f"{where}: unit {unit!r} does not fit {name} (measured in {spec.unit}); "
                                  f"allowed: {', '.join(u for u in units if u)}, or none for {spec.unit}")
        parsed.append(Limit(str(name), match.group(1), number * factor, unit, text))  # type: ignore[arg-type]
    return parsed


def _fmt(value: float, unit: str) -> str:
    return f"{value:.4g} {unit}".rstrip()


def _display(value: float, spec: MetricSpec, unit: str = "") -> str:
    """``value`` (in the metric's unit) shown in ``unit`` when that is a known unit for it; else in the metric's
    own unit, bytes scaled to the largest binary unit (KiB, MiB, GiB) that keeps the number >= 1."""
    factor = units_for(spec).get(unit) if unit else None
    if factor is not None and unit:
        return _fmt(value / factor, unit)
    if spec.unit == "B":
        for name in ("GiB", "MiB", "KiB"):
            if abs(value) >= UNITS["B"][name]:
                return _fmt(value / UNITS["B"][name], name)
    return _fmt(value, spec.unit if spec.unit != "ratio" else "")


_OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}


def check_limit(limit: Limit, metric) -> LimitResult:
    """Check ``limit`` against a ``results.Metric`` (its median); a missing metric (None) fails."""
    spec = METRICS.get(limit.metric) or MetricSpec(limit.metric, "", "none", "")
    if metric is None:
        return LimitResult(limit, None, False, f"{limit.metric} was not measured; limit {limit.text} not checked")
    median = float(metric.median)
    unit = limit.unit or spec.unit  # as the limit was written: a bare number is in the metric's own unit
    shown = _display(median, spec, unit)
    bound = _display(limit.value, spec, unit)
    if _OPS[limit.op](median, limit.value):
        return LimitResult(limit, median, True, f"{limit.metric} median {shown} {limit.op} {bound}: ok")
    return LimitResult(limit, median, False, f"{limit.metric} median {shown} is not {limit.op} {bound}")


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


def _one_sided_p(current: list[float], baseline: list[float], alternative: str) -> float:
    from scipy.stats import mannwhitneyu  # heavy import, only when comparing

    p = float(mannwhitneyu(current, baseline, alternative=alternative).pvalue)
    return 1.0 if math.isnan(p) else p  # all samples equal: no evidence either way


def _pct(fraction: float) -> str:
    if math.isinf(fraction):
        return "+inf%" if fraction > 0 else "-inf%"
    return f"{fraction * 100:+.1f}%"


MANN_WHITNEY = "one-sided Mann-Whitney U"
WILCOXON_PAIRED = "one-sided Wilcoxon signed-rank, paired rounds"


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


def _checked_samples(metric_name: str, threshold: Threshold, alpha: float, baseline_samples, current_samples):
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


def _relative_change(base_med: float, cur_med: float) -> float:
    if base_med != 0:
        return (cur_med - base_med) / abs(base_med)
    return 0.0 if cur_med == 0 else math.copysign(math.inf, cur_med)


def compare(metric_name: str, baseline_samples: Sequence[float], current_samples: Sequence[float],
            threshold: Threshold, alpha: float = DEFAULT_ALPHA, min_samples: int = 3) -> Verdict:
    """Compare the current samples of ``metric_name`` with the baseline's (see the module docstring for rules).

    ``threshold.metric`` must be ``metric_name``. Samples are raw per-round values in the metric's unit. The
    effect is the change of the medians; the test is one-sided Mann-Whitney U on the two sets of rounds. A metric
    measured once per variant is judged directly (``compare_direct``).
    """
    spec, base, cur = _checked_samples(metric_name, threshold, alpha, baseline_samples, current_samples)
    if spec.sampling == "once":
        return compare_direct(metric_name, base, cur, threshold, alpha=alpha)
    base_med = statistics.median(base) if base else None
    cur_med = statistics.median(cur) if cur else None
    change = None if base_med is None or cur_med is None else _relative_change(base_med, cur_med)
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
    return decide(spec, threshold, alpha, base, cur, base_med, cur_med, change, worse_abs, p_worse, p_better,
                   cannot, short, MANN_WHITNEY)


def _one_sided_p_paired(differences: list[float], alternative: str) -> float:
    from scipy.stats import wilcoxon  # heavy import, only when comparing

    if not any(differences):
        return 1.0  # every pair equal: no evidence either way
    p = float(wilcoxon(differences, alternative=alternative).pvalue)
    return 1.0 if math.isnan(p) else p


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
    spec, base, cur = _checked_samples(metric_name, threshold, alpha, baseline_samples, current_samples)
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
            change = _relative_change(base_med, base_med + worse_abs)
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
    return decide(spec, threshold, alpha, base, cur, base_med, cur_med, change, worse_abs, p_worse, p_better,
                   cannot, short, WILCOXON_PAIRED)


def decide(spec: MetricSpec, threshold: Threshold, alpha: float, base: list[float], cur: list[float],
            base_med: Optional[float], cur_med: Optional[float], change: Optional[float],
            diff: Optional[float], p_worse: Optional[float], p_better: Optional[float], cannot: str,
            short: Optional[str], test: str) -> Verdict:
    """The verdict from an effect (``change`` relative, ``diff`` absolute, signed in the metric's sense) and the
    two one-sided p-values; ``short`` says why there are too few samples (then: inconclusive)."""
    metric_name = spec.name
    # sign: +1 when an increase is worse (lower is better), -1 when a decrease is worse (higher is better)
    sign = 1.0 if spec.direction == "lower" else -1.0
    worse_by = None if change is None else sign * change
    common = dict(metric=metric_name, threshold=threshold.text, unit=spec.unit, n_baseline=len(base),
                  n_current=len(cur), alpha=alpha, baseline_median=base_med, current_median=cur_med, test=test)
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
        amount = _display(abs(worse_abs), spec, threshold.unit)
    sig_worse = p_worse < alpha
    sig_better = p_better < alpha

    shown_unit = threshold.unit if threshold.kind == "absolute" else ""
    medians = (f"median {_display(base_med, spec, shown_unit)} -> {_display(cur_med, spec, shown_unit)} "
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


DIRECT = "direct: one figure per variant, no statistical test"


def compare_direct(metric_name: str, baseline_samples: Sequence[float], current_samples: Sequence[float],
                   threshold: Threshold, alpha: float = DEFAULT_ALPHA) -> Verdict:
    """Judge a figure measured once per variant (``sampling == "once"``) directly against ``threshold``.

    There is one figure per side (the median, should a side hold several), so there is no test and no p-value:
    worse than the baseline by more than the threshold is ``regressed``, better by more is ``improved``, anything
    else ``ok``; a side without a figure is ``inconclusive``. ``alpha`` is only recorded. The figure must be
    deterministic for this to be fair (the quality drift, ``ppl``, ``model_bytes``); ``load_s`` is one timing, so
    its threshold has to cover its own noise.
    """
    spec, base, cur = _checked_samples(metric_name, threshold, alpha, baseline_samples, current_samples)
    common = dict(metric=metric_name, threshold=threshold.text, unit=spec.unit, n_baseline=len(base),
                  n_current=len(cur), alpha=alpha, test=DIRECT, p_value=None)
    if not base or not cur:
        return Verdict(status="inconclusive", baseline_median=statistics.median(base) if base else None,
                       current_median=statistics.median(cur) if cur else None, change=None, worse_by=None,
                       message=f"{metric_name} inconclusive: {len(base)} baseline and {len(cur)} current figures; "
                               "need one each", **common)
    base_val, cur_val = statistics.median(base), statistics.median(cur)
    change = _relative_change(base_val, cur_val)
    sign = 1.0 if spec.direction == "lower" else -1.0
    worse_by = sign * change
    worse_abs = sign * (cur_val - base_val)
    if threshold.kind == "relative":
        beyond_worse, beyond_better = worse_by > threshold.value, -worse_by > threshold.value
        amount = f"{abs(worse_by) * 100:.1f}%"
    else:
        beyond_worse, beyond_better = worse_abs > threshold.value, -worse_abs > threshold.value
        amount = _display(abs(worse_abs), spec, threshold.unit)
    shown_unit = threshold.unit if threshold.kind == "absolute" else ""
    values = f"{_display(base_val, spec, shown_unit)} -> {_display(cur_val, spec, shown_unit)} ({_pct(change)})"
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


@dataclass(frozen=True)
class FamilyBudget:
    """The run's false-alarm budget split over its tested comparisons (Bonferroni).

    alpha: the chance of at least one false ``regressed`` in the whole run (``--llmeff-alpha``), in (0, 1).
    comparisons: m, the number of tested (benchmark, gated metric) comparisons the run can make, >= 1.
    scope: what m counts, for humans (``"the run"``, or ``"this test only"`` when the run's size is unknown).
    """

    alpha: float
    comparisons: int
    scope: str = "the run"

    def __post_init__(self) -> None:
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1):
            raise ValueError(f"alpha={self.alpha!r} must be a number in (0, 1)")
        if isinstance(self.comparisons, bool) or not isinstance(self.comparisons, int) or self.comparisons < 1:
            raise ValueError(f"comparisons={self.comparisons!r} must be a whole number >= 1")

    @property
    def level(self) -> float:
        """The per-comparison significance level: alpha / m."""
        return self.alpha / self.comparisons

    def describe(self) -> str:
        """One phrase: which correction, over how many comparisons, and the per-comparison level."""
        return (f"Bonferroni: alpha {self.alpha:g} over {self.comparisons} tested comparison"
                f"{'s' if self.comparisons != 1 else ''} of {self.scope} -> {self.level:.3g} each")
