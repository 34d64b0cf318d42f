"""Thresholds and limits: how much a metric may worsen, and absolute bounds, parsed from text.

Pure logic, no pytest. Directions and units come from the one metric table (``metrics.py``).

Thresholds (``"throughput_tok_s:5%,ttft_s:10%,peak_mem_bytes:64MB"``) say how much a metric may worsen against a
baseline. A percentage is a relative change in the metric's worse direction (down for ``higher`` metrics, up for
``lower`` ones); an absolute value carries a unit that fits the metric's unit (see ``UNITS``).

Limits (marker ``limits={"throughput_tok_s": ">= 20", "peak_mem_bytes": "<= 1.5GB"}``) are absolute bounds
checked on the median of one run, with no baseline (``check_limit``). ``shown_value`` writes a value in the unit a
threshold or limit was written in, for the one-line messages of limits and verdicts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, Mapping, Optional

from pytest_llmeff.errors import GateConfigError
from pytest_llmeff.metrics import METRICS, MetricSpec

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


def shown_value(value: float, spec: MetricSpec, unit: str = "") -> str:
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
    shown = shown_value(median, spec, unit)
    bound = shown_value(limit.value, spec, unit)
    if _OPS[limit.op](median, limit.value):
        return LimitResult(limit, median, True, f"{limit.metric} median {shown} {limit.op} {bound}: ok")
    return LimitResult(limit, median, False, f"{limit.metric} median {shown} is not {limit.op} {bound}")
