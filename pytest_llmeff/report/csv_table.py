"""The results as one flat CSV table: one row per (benchmark, metric), for spreadsheets and dashboards.

Columns (``CSV_COLUMNS``): the benchmark's identity (nodeid, name, group, variant id, model, precision,
quantization, batch size), the metric with its unit and direction (from the one metric table), its summary
statistics in the metric's own unit (seconds, bytes, tok/s, ...): ``median``, ``ci_low``/``ci_high`` (the 95%
distribution-free interval of the median, same unit; empty with fewer than 6 samples), ``ci_rel`` (the interval's
larger half-width as a fraction of the median, 0.05 = ±5%), ``mean`` (total work / total time for a rate),
``stdev``, ``min``, ``max``, ``p90``/``p99`` (empty below 10/100 samples); then, on rows of energy metrics
(``metrics.is_energy_metric``: figures computed from the energy meter's joules), ``energy_method`` (how the joules were
obtained, e.g. ``codecarbon:cpu=cpu_load,ram=constant`` or ``rapl:package-0``) and ``estimated`` (``true`` when
no physical meter was read: a model of power, not a measurement; ``false`` for RAPL/NVML), both empty on other
rows; and, with regression verdicts, the baseline median (same unit), the change in percent (signed, +20 = 20%
larger), the verdict status and the one-sided Mann-Whitney p-value. Empty cells mean "none" (no group, no
quantization, no interval, no verdict, not an energy figure).

Floats are written with full precision (``repr``), except ``change_pct``, rounded to 1e-6 percent. Lines end
with ``\\n``. The file is written atomically (``files.atomic_write_text``).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from pytest_llmeff.gate.verdicts import Verdict
from pytest_llmeff.files import atomic_write_text
from pytest_llmeff.metrics import METRICS, is_energy_metric, spec_for
from pytest_llmeff.results.schema import BenchmarkRecord, Metric

CSV_COLUMNS: tuple[str, ...] = (
    "nodeid", "name", "group", "variant_id", "model", "precision", "quantization", "batch_size",
    "metric", "unit", "direction", "n", "median", "ci_low", "ci_high", "ci_rel", "mean", "stdev", "min", "max",
    "p90", "p99", "energy_method", "estimated",
    "baseline_median", "change_pct", "verdict", "p_value",
)

Verdicts = Mapping[tuple[str, str], Mapping[str, Verdict]]


def _cell(value: Any) -> str:
    """A CSV cell: empty for None, ``repr`` for floats (full precision, ``inf``/``nan`` spelled out)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _energy_cells(record: BenchmarkRecord, name: str) -> list[Any]:
    """``[energy_method, estimated]`` for an energy metric of a record with energy info, else two empty cells."""
    if record.energy is None or not is_energy_metric(name):
        return [None, None]
    return [record.energy.method, "true" if record.energy.estimated else "false"]


def _metric_order(names: Sequence[str]) -> list[str]:
    """Metric names in the order of the metric table; names it does not declare come last, sorted."""
    position = {name: i for i, name in enumerate(METRICS)}
    return sorted(names, key=lambda n: (position.get(n, len(position)), n))


def _unit_and_direction(name: str, metric: Metric) -> tuple[str, str]:
    """Unit and direction from the metric table; a user metric that is not registered in this process (a run
    file read later, without the plugin that declared it) falls back to what its record stored."""
    try:
        spec = spec_for(name)
    except KeyError:
        return metric.unit, metric.direction
    return spec.unit, spec.direction


def _change_pct(change: Optional[float]) -> Optional[float]:
    if change is None:
        return None
    if math.isinf(change):
        return change
    return round(change * 100.0, 6)


def rows(records: Sequence[BenchmarkRecord], verdicts: Optional[Verdicts] = None) -> list[list[str]]:
    """The table's rows (without the header) as strings, in record order, metrics in table order."""
    out: list[list[str]] = []
    for record in records:
        by_metric = (verdicts or {}).get((record.nodeid, record.name), {})
        v = record.variant
        for name in _metric_order(list(record.metrics)):
            metric = record.metrics[name]
            unit, direction = _unit_and_direction(name, metric)
            verdict = by_metric.get(name)
            values: list[Any] = [
                record.nodeid, record.name, record.group, v.id, v.model, v.precision, v.quantization, v.batch_size,
                name, unit, direction, metric.n, metric.median, metric.ci_low, metric.ci_high, metric.ci_rel,
                metric.mean, metric.stdev, metric.min, metric.max, metric.p90, metric.p99,
                *_energy_cells(record, name),
            ]
            if verdict is None:
                values += [None, None, None, None]
            else:
                values += [verdict.baseline_median, _change_pct(verdict.change), verdict.status, verdict.p_value]
            out.append([_cell(x) for x in values])
    return out


def render_csv(records: Sequence[BenchmarkRecord], verdicts: Optional[Verdicts] = None) -> str:
    """The whole CSV text: header line, then one line per (benchmark, metric)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows(records, verdicts))
    return buffer.getvalue()


def write_csv(path: Path, records: Sequence[BenchmarkRecord], verdicts: Optional[Verdicts] = None) -> Path:
    """Write the CSV table to ``path`` atomically (parents created) and return the path.

    verdicts: ``{(nodeid, name): {metric: gate.Verdict}}`` or None (the last four columns stay empty).
    """
    path = Path(path)
    atomic_write_text(path, render_csv(records, verdicts))
    return path
