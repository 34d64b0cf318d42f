"""Analysis of a run's benchmarks: who is best (never on noise), the Pareto front, an efficiency score, outlier
rounds and the spread across variants. Used by the table (best marks), the HTML report and ``llmeff summary``.

Every comparison here respects the 95% intervals of the medians (``results.Metric.ci_low``/``ci_high``):

- **Best marks** (``best_marks``; the terminal, markdown and HTML tables use them): in one metric, ``*`` marks
  the best median only when it has an interval, is precise (within its record's precision target) and its
  interval is clear of every other passed record's; otherwise ``=`` marks the leader and every record whose
  interval overlaps it (tied: the data cannot rank them). No mark for once-per-variant figures (no interval)
  and for metrics without a direction.
- **Clearly better** (``clearly_better``): for a per-round or per-token metric, both intervals exist and are
  disjoint in the better direction; for a once-per-variant figure (quality drift, weights, load time) the
  figure itself is better. A sampled figure without an interval is never clearly better or worse.
- **Pareto dominance** (``pareto_front``): A dominates B when A is clearly better than B in at least one
  objective and clearly worse in none. So a variant is dimmed only when another beats it beyond noise; with
  no intervals at all this is ordinary dominance on the figures. Default objectives: ``DEFAULT_PARETO``
  (throughput against perplexity drift), ``--llmeff-pareto`` / ``llmeff summary --pareto`` choose others: any
  metric with a direction, two or more.
- **Efficiency score** (``efficiency_scores``): per variant, the weighted geometric mean
  (``scipy.stats.gmean``) of its ratio to the best median of each weighted metric (best/value for "lower is
  better", value/best for "higher"), times 100: 100 is best in every weighted metric, 50 is half as good on
  the weighted average of logs. Default weights ``DEFAULT_WEIGHTS`` (throughput, process peak memory, energy
  per token and perplexity drift, 1 each); ``--llmeff-score-weights`` / ``--weights`` set others
  (``metric:weight,...``). Metrics no record holds are dropped (and said); a record lacking a weighted metric
  that others hold gets no score. The score is a summary of medians and carries no interval: read the table.
- **Outlier rounds** (``outlier_rounds``): per per-round metric with at least ``stats.MIN_CI_SAMPLES`` rounds,
  the rounds whose modified z-score ``|x - median| / MAD`` exceeds ``OUTLIER_Z`` (3.5, Iglewicz & Hoaglin),
  MAD from ``scipy.stats.median_abs_deviation(scale="normal")`` (so comparable with a standard deviation). A
  MAD of 0 flags nothing. Stored in the record's ``outliers`` (0-based round indices); the median and its
  interval are robust to them, so nothing is removed.
- **Spread across variants** (``spread``): per metric, the lowest and highest median and who has them, the
  median of the medians, max/min, and the coefficient of variation of the medians (``scipy.stats.variation``).

Pure functions on ``BenchmarkRecord`` lists; scipy is imported inside the functions that use it. The objectives'
and weights' defaults and parsers live in ``objectives.py`` (floor 0: ``config.py`` validates the options with them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from pytest_llmeff.metrics import METRICS
from pytest_llmeff.config.objectives import (DEFAULT_PARETO, DEFAULT_WEIGHTS, parse_objectives,  # noqa: F401
                                      parse_weights)
from pytest_llmeff.stats.intervals import MIN_CI_SAMPLES
from pytest_llmeff.stats.stop_rule import DEFAULT_TARGET_CI_PCT

if TYPE_CHECKING:  # the records are only read here: importing pydantic is left to whoever made them, so that the
    from pytest_llmeff.results.schema import BenchmarkRecord, Metric  # option parsers below stay light (config.py)

OUTLIER_Z = 3.5  #: modified z-score above which a round is an outlier (Iglewicz & Hoaglin)

BEST = "*"  #: the best median, its interval clear of every other
TIED = "="  #: a leader whose interval overlaps another's, and those others


def direction(metric: str) -> str:
    """``higher``, ``lower`` or ``none`` (an unknown metric, e.g. from a newer file: ``none``)."""
    spec = METRICS.get(metric)
    return spec.direction if spec is not None else "none"


def sampled(metric: str) -> bool:
    """True for a per-round or per-token metric (an unknown name is treated as sampled)."""
    spec = METRICS.get(metric)
    return spec is None or spec.sampling != "once"


def precise(m: Metric, target_ci_pct: float) -> bool:
    """An interval exists and its relative half-width is within the target (a zero median: any interval)."""
    if not m.has_interval:
        return False
    return m.ci_rel is None or m.ci_rel * 100 <= target_ci_pct


def target_pct_default(default: Optional[float]) -> float:
    return DEFAULT_TARGET_CI_PCT if default is None else default


def target_pct(record: BenchmarkRecord, default: Optional[float]) -> float:
    """The precision target (percent) ``record`` is judged by: its own stop rule's target when it has one (a
    marker may set it per test), else ``default``, else ``DEFAULT_TARGET_CI_PCT``."""
    if record.stop is not None and record.stop.target_ci_rel is not None:
        return record.stop.target_ci_rel * 100
    return target_pct_default(default)


def best_marks(rows: Sequence[BenchmarkRecord], metric: str,
               target_ci_pct: Optional[float] = None) -> dict[int, str]:
    """The best/tied marks of one metric among ``rows``: ``{index in rows: mark}`` (rule in the module doc)."""
    if direction(metric) == "none" or not sampled(metric):
        return {}
    candidates = [(i, r.metrics[metric]) for i, r in enumerate(rows)
                  if r.outcome == "passed" and metric in r.metrics]
    if len(candidates) < 2:
        return {}
    higher = direction(metric) == "higher"
    leader_index, leader = (max if higher else min)(candidates, key=lambda pair: pair[1].median)
    if not precise(leader, target_pct(rows[leader_index], target_ci_pct)):
        return {}
    others = [(i, m) for i, m in candidates if i != leader_index]

    def clear_of_leader(m: Metric) -> bool:
        return m.has_interval and (m.ci_high < leader.ci_low or m.ci_low > leader.ci_high)

    contenders = [(i, m) for i, m in others if not clear_of_leader(m)]
    if not contenders:
        return {leader_index: BEST}
    marks = {leader_index: TIED}
    marks.update({i: TIED for i, m in contenders if m.has_interval})
    return marks


def clearly_better(a: Metric, b: Metric, metric: str) -> bool:
    """Whether ``a`` beats ``b`` in ``metric`` beyond noise (see the module docstring); False without a direction."""
    way = direction(metric)
    if way == "none":
        return False
    higher = way == "higher"
    if not sampled(metric):
        return a.median > b.median if higher else a.median < b.median
    if not (a.has_interval and b.has_interval):
        return False
    return a.ci_low > b.ci_high if higher else a.ci_high < b.ci_low


def label(record: BenchmarkRecord) -> str:
    """A record's name for people: its variant id, with the benchmark name when that is not the test's own."""
    test = record.nodeid.rsplit("::", 1)[-1].split("[", 1)[0]
    name = record.name.split("[", 1)[0]
    return record.variant.id if name == test else f"{record.variant.id} ({name})"


def common_prefix(records: Sequence[BenchmarkRecord]) -> str:
    """The start all the records' labels share, cut after its last ``-`` (``smollm2-135m-``), so that charts and
    the terminal can name them short; empty when there are fewer than two different labels."""
    import os.path

    names = [label(r) for r in records]
    if len(set(names)) < 2:
        return ""
    prefix = os.path.commonprefix(names)
    return prefix[:prefix.rfind("-") + 1] if "-" in prefix else ""


# --- rankings ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ranked:
    """One record's place in a ranking: ``index`` in the records given, its ``median`` (the metric's unit), its
    interval (None without one) and ``mark`` (``*`` best, ``=`` tied for best, ``""``)."""

    index: int
    record: BenchmarkRecord
    median: float
    ci_low: Optional[float]
    ci_high: Optional[float]
    mark: str = ""


@dataclass(frozen=True)
class Ranking:
    """The passed records holding ``metric``, best median first (by ``direction``). ``best``: the clear winner
    (``*``), or None when the leader is tied or imprecise; ``tied``: the records marked ``=``."""

    metric: str
    direction: str
    entries: tuple[Ranked, ...]

    @property
    def best(self) -> Optional[Ranked]:
        return next((e for e in self.entries if e.mark == BEST), None)

    @property
    def tied(self) -> tuple[Ranked, ...]:
        return tuple(e for e in self.entries if e.mark == TIED)


def rank(records: Sequence[BenchmarkRecord], metric: str, target_ci_pct: Optional[float] = None
         ) -> Optional[Ranking]:
    """The ranking of ``metric``, or None when it has no direction or fewer than two passed records hold it."""
    way = direction(metric)
    if way == "none":
        return None
    held = [(i, r) for i, r in enumerate(records) if r.outcome == "passed" and metric in r.metrics]
    if len(held) < 2:
        return None
    marks = best_marks(records, metric, target_ci_pct)
    ordered = sorted(held, key=lambda pair: pair[1].metrics[metric].median, reverse=way == "higher")
    entries = tuple(Ranked(i, r, r.metrics[metric].median, r.metrics[metric].ci_low, r.metrics[metric].ci_high,
                           marks.get(i, "")) for i, r in ordered)
    return Ranking(metric, way, entries)


def rankings(records: Sequence[BenchmarkRecord], metrics: Optional[Sequence[str]] = None,
             target_ci_pct: Optional[float] = None) -> list[Ranking]:
    """Every ranking of ``metrics`` (default: each metric with a direction some record holds, in the metric
    table's order)."""
    if metrics is None:
        held = {m for r in records for m in r.metrics}
        metrics = [m for m in METRICS if m in held]
    return [r for r in (rank(records, m, target_ci_pct) for m in metrics) if r is not None]


# --- Pareto front ------------------------------------------------------------------------------------------------
def dominates(a: BenchmarkRecord, b: BenchmarkRecord, objectives: Sequence[str]) -> bool:
    """Whether ``a`` is clearly better than ``b`` in one objective and clearly worse in none (both hold all)."""
    better = False
    for metric in objectives:
        ma, mb = a.metrics[metric], b.metrics[metric]
        if clearly_better(mb, ma, metric):
            return False
        better = better or clearly_better(ma, mb, metric)
    return better


@dataclass(frozen=True)
class Pareto:
    """The front of ``objectives`` over the records given (indices into them): ``front`` the records no other
    dominates, ``dominated`` each other ranked record with the indices of those that dominate it, ``missing``
    the passed records left out with the objectives they lack."""

    objectives: tuple[str, ...]
    front: tuple[int, ...]
    dominated: dict[int, tuple[int, ...]] = field(default_factory=dict)
    missing: dict[int, tuple[str, ...]] = field(default_factory=dict)


def pareto_front(records: Sequence[BenchmarkRecord], objectives: Sequence[str]) -> Pareto:
    """The Pareto front of the passed records over ``objectives`` (dominance as in ``dominates``)."""
    objectives = tuple(objectives)
    ranked, missing = [], {}
    for i, r in enumerate(records):
        if r.outcome != "passed":
            continue
        lacks = tuple(m for m in objectives if m not in r.metrics)
        if lacks:
            missing[i] = lacks
        else:
            ranked.append(i)
    dominated = {}
    for i in ranked:
        by = tuple(j for j in ranked if j != i and dominates(records[j], records[i], objectives))
        if by:
            dominated[i] = by
    front = tuple(i for i in ranked if i not in dominated)
    return Pareto(objectives, front, dominated, missing)


def default_objectives(records: Sequence[BenchmarkRecord]) -> tuple[str, ...]:
    """``DEFAULT_PARETO`` with quality drift as the run has it: ``ppl_ratio``, else ``kld_mean_nat``, else
    ``peak_mem_bytes`` (a run without the quality probe)."""
    held = {m for r in records for m in r.metrics}
    for drift in ("ppl_ratio", "kld_mean_nat", "peak_mem_bytes"):
        if drift in held:
            return ("throughput_tok_s", drift)
    return DEFAULT_PARETO


# --- efficiency score --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scores:
    """Efficiency scores (0-100, 100 best) per record index; ``weights`` the ones used, ``dropped`` the weighted
    metrics left out with why, ``missing`` the records without a score and the weighted metrics they lack."""

    weights: dict[str, float]
    scores: dict[int, float]
    dropped: dict[str, str] = field(default_factory=dict)
    missing: dict[int, tuple[str, ...]] = field(default_factory=dict)


def efficiency_scores(records: Sequence[BenchmarkRecord], weights: Optional[Mapping[str, float]] = None) -> Scores:
    """The weighted geometric mean of each passed record's ratios to the best median (module docstring)."""
    import numpy as np
    from scipy.stats import gmean

    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    passed = [(i, r) for i, r in enumerate(records) if r.outcome == "passed"]
    used, dropped = {}, {}
    for metric, w in weights.items():
        values = [r.metrics[metric].median for _, r in passed if metric in r.metrics]
        if w <= 0:
            continue
        if not values:
            dropped[metric] = "no benchmark holds it"
        elif min(values) <= 0:
            dropped[metric] = "a median is 0 or below, so ratios are undefined"
        else:
            used[metric] = w
    scores, missing = {}, {}
    for i, r in passed:
        lacks = tuple(m for m in used if m not in r.metrics)
        if lacks or not used:
            if lacks:
                missing[i] = lacks
            continue
        ratios, ws = [], []
        for metric, w in used.items():
            values = [rr.metrics[metric].median for _, rr in passed if metric in rr.metrics]
            value = r.metrics[metric].median
            ratios.append(value / max(values) if direction(metric) == "higher" else min(values) / value)
            ws.append(w)
        scores[i] = float(100 * gmean(np.asarray(ratios), weights=np.asarray(ws)))
    return Scores(used, scores, dropped, missing)


# --- outliers ----------------------------------------------------------------------------------------------------
def outlier_rounds(metrics: Mapping[str, Metric], z: float = OUTLIER_Z) -> dict[str, list[int]]:
    """Per per-round metric with at least ``MIN_CI_SAMPLES`` rounds, the 0-based rounds whose modified z-score
    (distance from the median over the normal-scaled MAD) exceeds ``z``; metrics without any are left out."""
    import numpy as np
    from scipy.stats import median_abs_deviation

    flagged: dict[str, list[int]] = {}
    for name, m in metrics.items():
        spec = METRICS.get(name)
        if spec is None or spec.sampling != "round" or len(m.samples) < MIN_CI_SAMPLES:
            continue
        x = np.asarray(m.samples, dtype=float)
        mad = float(median_abs_deviation(x, scale="normal"))
        if mad == 0 or not np.isfinite(mad):
            continue
        scores = np.abs(x - np.median(x)) / mad
        rounds = [int(i) for i in np.flatnonzero(scores > z)]
        if rounds:
            flagged[name] = rounds
    return flagged


def outliers_of(record: BenchmarkRecord) -> dict[str, list[int]]:
    """The record's stored outlier rounds, or computed now for a run file written before they were stored."""
    return dict(record.outliers) if record.outliers is not None else outlier_rounds(record.metrics)


# --- spread across variants --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spread:
    """One metric across the passed records holding it: ``n`` records, lowest and highest median (the metric's
    unit) with the record indices, the median of the medians, ``ratio`` = max/min (None when min <= 0) and
    ``cv`` = the coefficient of variation of the medians (stdev / mean, population form, scipy)."""

    metric: str
    n: int
    low: float
    low_index: int
    median: float
    high: float
    high_index: int
    ratio: Optional[float]
    cv: Optional[float]


def spread(records: Sequence[BenchmarkRecord], metrics: Optional[Sequence[str]] = None) -> list[Spread]:
    """The spread of each metric held by two or more passed records (default: the metric table's order)."""
    import numpy as np
    from scipy.stats import variation

    if metrics is None:
        held = {m for r in records for m in r.metrics}
        metrics = [m for m in METRICS if m in held]
    out = []
    for metric in metrics:
        pairs = [(i, r.metrics[metric].median) for i, r in enumerate(records)
                 if r.outcome == "passed" and metric in r.metrics]
        if len(pairs) < 2:
            continue
        values = np.asarray([v for _, v in pairs])
        lo, hi = min(pairs, key=lambda p: p[1]), max(pairs, key=lambda p: p[1])
        cv = float(variation(values)) if values.mean() != 0 else None
        out.append(Spread(metric, len(pairs), lo[1], lo[0], float(np.median(values)), hi[1], hi[0],
                          hi[1] / lo[1] if lo[1] > 0 else None, cv))
    return out


def sections(records: Sequence[BenchmarkRecord]) -> list[tuple[Optional[str], list[BenchmarkRecord]]]:
    """The records by ``group`` (first-seen order; None for ungrouped): the sets that are compared with each
    other. Unlike the terminal table (one per group and model, for width), models of one group are compared."""
    out: dict[Optional[str], list[BenchmarkRecord]] = {}
    for r in records:
        out.setdefault(r.group, []).append(r)
    return list(out.items())
