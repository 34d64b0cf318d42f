"""The comparison table printed at the end of the session (tabulate).

One table per (group, model). Rows are variants; each metric cell is ``median ± stdev`` in a display unit.
``*`` marks the best median of a column (by the metric's direction in the one table); ``~`` marks estimated
energy. Failed or skipped benchmarks are flagged in the outcome column. Under each table, its footer: every
warning of its records, one line each, ``warning: <variant id>: <text>``.
"""

from __future__ import annotations

import math
from itertools import groupby
from typing import Optional

from tabulate import tabulate

from pytest_llmeff.metrics import spec_for
from pytest_llmeff.results import BenchmarkRecord

# (metric, column header, multiply the stored value by this for display)
COLUMNS: tuple[tuple[str, str, float], ...] = (
    ("throughput_tok_s", "tok/s", 1.0),
    ("ttft_s", "TTFT ms", 1e3),
    ("tpot_s", "TPOT ms", 1e3),
    ("latency_s", "e2e s", 1.0),
    ("peak_mem_bytes", "peak MiB", 1 / 2**20),
    ("model_bytes", "model MiB", 1 / 2**20),
    ("energy_j_per_tok", "J/tok", 1.0),
    ("flops_per_tok", "GFLOP/tok", 1e-9),
    ("tflops", "TFLOP/s", 1.0),
    ("load_s", "load s", 1.0),
    ("token_agreement", "agree", 1.0),
    ("ppl_ratio", "ppl ratio", 1.0),
)


def _decimals(value: float) -> int:
    """Decimals that show 3 significant digits of ``value`` (0 for values >= 100)."""
    a = abs(value)
    if a == 0 or a >= 100:
        return 0
    return max(0, 2 - int(math.floor(math.log10(a))))


def _fmt(value: float, decimals: Optional[int] = None) -> str:
    d = _decimals(value) if decimals is None else decimals
    return f"{value:.{d}f}"


def _best(records: list[BenchmarkRecord], metric: str) -> Optional[float]:
    direction = spec_for(metric).direction
    values = [r.metrics[metric].median for r in records if metric in r.metrics and r.outcome == "passed"]
    if direction == "none" or len(values) < 2 or len(set(values)) < 2:
        return None
    return max(values) if direction == "higher" else min(values)


def _cell(record: BenchmarkRecord, metric: str, scale: float, best: Optional[float]) -> str:
    m = record.metrics.get(metric)
    if m is None:
        return "-"
    median = m.median * scale
    d = _decimals(median)
    text = _fmt(median, d)
    if m.n > 1:
        text += f" ± {_fmt(m.stdev * scale, d)}"
    if metric.startswith("energy") and record.energy is not None and record.energy.estimated:
        text = "~" + text
    if best is not None and m.median == best:
        text += " *"
    return text


VERDICT_MARK = {"improved": "+", "near-miss": "~", "regressed": "!", "inconclusive": "?", "ok": ""}
_HEADER = {m: h for m, h, _ in COLUMNS}


def verdict_cell(record: BenchmarkRecord) -> str:
    """Change against the baseline per gated metric with its mark (+ improved, ~ near-miss, ! regressed,
    ? inconclusive), then failed limits."""
    parts = []
    for v in record.verdicts:
        change = "n/a" if v.change is None else f"{v.change:+.1%}"
        parts.append(f"{_HEADER.get(v.metric, v.metric)} {change} {VERDICT_MARK[v.status]}".rstrip())
    for lim in record.limits:
        if not lim.passed:
            parts.append(f"{_HEADER.get(lim.metric, lim.metric)} limit {lim.limit} !")
    return ", ".join(parts) or "-"


def _label(record: BenchmarkRecord) -> str:
    name = record.name.split("[", 1)[0]
    extra = ",".join(f"{k}={v}" for k, v in record.params.items())
    return f"{name}[{extra}]" if extra else name


def warning_lines(records: list[BenchmarkRecord]) -> list[str]:
    """The table's footer: each record's warnings, one line each, prefixed with the variant id (a line that
    repeats exactly, e.g. two benchmarks of one variant, is shown once)."""
    lines: list[str] = []
    for r in records:
        for w in r.warnings:
            line = f"warning: {r.variant.id}: {w}"
            if line not in lines:
                lines.append(line)
    return lines


def render(records: list[BenchmarkRecord]) -> str:
    """The whole report as text (empty string when there is nothing to show)."""
    if not records:
        return ""

    def key(r: BenchmarkRecord):
        return (r.group or "", r.variant.model)

    out = []
    for (group, model), rows_iter in groupby(sorted(records, key=key), key=key):
        rows = list(rows_iter)
        metrics = [(m, h, s) for m, h, s in COLUMNS if any(m in r.metrics for r in rows)]
        best = {m: _best(rows, m) for m, _, _ in metrics}
        gated = any(r.verdicts or r.limits for r in rows)
        headers = (["test", "precision", "quant", "batch"] + [h for _, h, _ in metrics]
                   + (["vs baseline"] if gated else []) + ["outcome"])
        table = []
        for r in rows:
            table.append([_label(r), r.variant.precision, r.variant.quantization or "-", r.variant.batch_size]
                         + [_cell(r, m, s, best[m]) for m, _, s in metrics]
                         + ([verdict_cell(r)] if gated else [])
                         + [r.outcome if r.outcome != "passed" else "ok"])
        title = f"model: {model}" + (f"   group: {group}" if group else "")
        out.append(title)
        out.append(tabulate(table, headers=headers, tablefmt="simple", disable_numparse=True))
        out.extend(warning_lines(rows))
        out.append("")
    legend = "median ± stdev over timed rounds; * best in column; ~ estimated (no meter read)"
    if any(r.verdicts or r.limits for r in records):
        legend += "\nvs baseline: + improved, ~ near-miss, ! regressed or limit failed, ? inconclusive (too few rounds)"
    energy_methods = sorted({r.energy.method for r in records if r.energy is not None})
    if energy_methods:
        legend += "\nenergy: " + "; ".join(energy_methods)
    out.append(legend)
    return "\n".join(out)
