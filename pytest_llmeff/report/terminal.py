"""The comparison table printed at the end of the session (tabulate), and the cell rules the markdown shares.

One table per (group, model); rows are variants. Four identifying columns (test, precision, quant, batch), the
metric columns, ``vs baseline`` when a record was judged, and the outcome. The ``vs baseline`` column (each gated
metric's change of the median and its mark) is kept only while the table fits ``TABLE_WIDTH``; otherwise each
judged benchmark gets a ``vs baseline: <name>: ...`` line under the table instead.

Metric columns. By default ``DEFAULT_COLUMNS``: throughput, TTFT, inter-token latency, the generation's own peak
memory, energy per token, teacher-forced top-1 agreement with the reference, load time (older runs: TPOT, process
peak and greedy agreement in their place). Six variants with these fit 160 characters; an eighth metric (the KL
divergence) would not. ``--llmeff-columns=a,b,c`` (ini ``llmeff_columns``) picks other metrics, in that order.
A column none of the table's records holds is left out of the default set and kept (all ``-``) when asked for
by name. Every metric stays in the JSON run file, the markdown report and the CSV.

Cells (``cell``), in the display unit the metric table gives (``metrics.MetricSpec.display``):

- a per-round or per-token metric: ``median ±X%``, X the larger half-width of the 95% confidence interval of the
  median (``Metric.ci_rel``) in percent of the median, e.g. ``38.4 ±1.2%``;
  ``?`` after the median: no interval (fewer than 6 samples, so the figure's precision is unknown);
  ``!`` after the interval: imprecise, the interval is wider than the precision target (the record's own stop
  rule target, else ``--llmeff-target-ci``, default 5%);
- a once-per-variant figure (load time, weights, FLOP counts, quality drift): the value alone;
- ``~`` before an energy figure: estimated (no physical meter was read); ``-``: the record has no such metric.

Best in a column (``column_marks``, which is ``analysis.best_marks``), among the passed records, by the metric's direction: ``*`` marks the best
median only when that figure has an interval, is precise, and its interval overlaps no other record's interval
(so every other record has an interval too). When other intervals overlap the leader's, ``=`` marks the leader
and every overlapping record with an interval: tied, the data cannot rank them. No mark when the leader has no
interval or is imprecise, for once-per-variant figures, and for metrics without a direction.

Under each table, its footer: the ``vs baseline`` lines if any, then every warning of its records, one line each,
``warning: <variant id>: <text>``.
"""

from __future__ import annotations

import math
from itertools import groupby
from typing import Optional, Sequence

from tabulate import tabulate

from pytest_llmeff.report.analysis import best_marks as column_marks  # noqa: F401  (the table's name for it)
from pytest_llmeff.report.analysis import precise as _precise
from pytest_llmeff.report.analysis import sampled as _sampled
from pytest_llmeff.report.analysis import target_pct, target_pct_default
from pytest_llmeff.metrics import header_for, is_energy_metric, scale_for, short_label
from pytest_llmeff.results.schema import BenchmarkRecord
from pytest_llmeff.config.engine_catalog import is_default, named_by_weight_type

#: the default metric columns, in order; each entry's first metric the table's records hold is shown (older
#: runs have ``tpot_s`` and ``peak_mem_bytes`` where newer ones have ``itl_s`` and ``peak_mem_delta_bytes``)
DEFAULT_COLUMNS: tuple[tuple[str, ...], ...] = (
    ("throughput_tok_s",),
    ("ttft_s",),
    ("itl_s", "tpot_s"),
    ("peak_mem_delta_bytes", "peak_mem_bytes"),
    ("energy_j_per_tok",),
    ("top1_agreement", "token_agreement"),
    ("load_s",),
)

TABLE_WIDTH = 160  #: the width, in characters, the default table is designed to fit

VERDICT_MARK = {"improved": "+", "near-miss": "~", "regressed": "!", "inconclusive": "?", "ok": "",
                "not-measured": "not measured"}
NO_INTERVAL = "?"  #: after a median: no interval (too few samples)
IMPRECISE = "!"  #: after an interval: wider than the precision target
from pytest_llmeff.report.analysis import BEST, TIED  # noqa: E402  (the marks, defined with their rule)
ESTIMATED = "~"  #: before an energy figure: estimated, no meter read


def _decimals(value: float) -> int:
    """Decimals that show 3 significant digits of ``value`` (0 for values >= 100)."""
    a = abs(value)
    if a == 0 or a >= 100 or not math.isfinite(a):
        return 0
    return max(0, 2 - int(math.floor(math.log10(a))))


def _fmt(value: float, decimals: Optional[int] = None) -> str:
    d = _decimals(value) if decimals is None else decimals
    return f"{value:.{d}f}"


def interval_text(ci_rel: float) -> str:
    """``ci_rel`` (a fraction) as ``±X%``: one decimal below 10%, none from 10% up, ``±>999%`` from 1000% up
    (a median near zero, e.g. the memory a tiny model's generation adds)."""
    pct = ci_rel * 100
    if round(pct) > 999:
        return "±>999%"
    return f"±{pct:.0f}%" if round(pct, 1) >= 10 else f"±{pct:.1f}%"


def cell(record: BenchmarkRecord, metric: str, target_ci_pct: Optional[float] = None, mark: str = "") -> str:
    """One metric cell of ``record`` in its display unit, with its precision marks and ``mark`` (best/tied)."""
    m = record.metrics.get(metric)
    if m is None:
        return "-"
    scale = scale_for(metric)
    text = _fmt(m.median * scale)
    if _sampled(metric):
        if not m.has_interval:
            text += f" {NO_INTERVAL}"
        elif m.ci_rel is not None:
            precise = _precise(m, target_pct(record, target_ci_pct))
            text += f" {interval_text(m.ci_rel)}" + ("" if precise else IMPRECISE)
        else:  # a zero median: the half-width in the display unit
            half = max(abs(m.median - m.ci_low), abs(m.ci_high - m.median)) * scale
            text += f" ±{_fmt(half)}"
    if is_energy_metric(metric) and record.energy is not None and record.energy.estimated:
        text = ESTIMATED + text
    return f"{text} {mark}" if mark else text


def table_metrics(rows: Sequence[BenchmarkRecord], columns: Optional[Sequence[str]] = None) -> list[str]:
    """The metric columns of one table: ``columns`` as given (in order, even those no record holds), or the
    default set's first alternative that some record of ``rows`` holds."""
    if columns is not None:
        return list(columns)
    held = {name for r in rows for name in r.metrics}
    chosen = []
    for alternatives in DEFAULT_COLUMNS:
        found = next((name for name in alternatives if name in held), None)
        if found is not None:
            chosen.append(found)
    return chosen


def verdict_cell(record: BenchmarkRecord) -> str:
    """Change against the baseline per gated metric with its mark (+ improved, ~ near-miss, ! regressed,
    ? inconclusive, ``not measured``), then failed limits; ``-`` when there are none."""
    parts = []
    for v in record.verdicts:
        if v.status == "not-measured":
            parts.append(f"{short_label(v.metric)} {VERDICT_MARK[v.status]}")
            continue
        change = "n/a" if v.change is None else f"{v.change:+.1%}"
        parts.append(f"{short_label(v.metric)} {change} {VERDICT_MARK.get(v.status, '?')}".rstrip())
    for lim in record.limits:
        if not lim.passed:
            parts.append(f"{short_label(lim.metric)} limit {lim.limit} !")
    return ", ".join(parts) or "-"


def row_label(record: BenchmarkRecord) -> str:
    """The test column: the test's name with the record's own params (``test_gen[batch=4]``)."""
    name = record.name.split("[", 1)[0]
    extra = ",".join(f"{k}={v}" for k, v in record.params.items())
    return f"{name}[{extra}]" if extra else name


def warning_lines(records: list[BenchmarkRecord]) -> list[str]:
    """The table's footer: each warning once, ``warning: <who>: <text>``, in first-seen order. ``who`` names the
    variants that raised it (``all N variants`` when every row did); a variant with several rows (two tests, or
    named benchmarks) is named with its benchmark, so no two records' warnings are confused."""
    ids = [r.variant.id for r in records]
    shared = {i for i in ids if ids.count(i) > 1}
    by_text: dict[str, list[str]] = {}
    for r in records:
        who = f"{r.variant.id} ({r.name.split('[', 1)[0]})" if r.variant.id in shared else r.variant.id
        for w in r.warnings:
            names = by_text.setdefault(w, [])
            if who not in names:
                names.append(who)
    rows = len({(r.variant.id, r.name) for r in records})
    return [f"warning: {f'all {rows} variants' if len(names) == rows > 1 else ', '.join(names)}: {text}"
            for text, names in by_text.items()]


def legend_lines(records: Sequence[BenchmarkRecord], target_ci_pct: Optional[float] = None,
                 code: str = "") -> list[str]:
    """The explanation of the cell marks (``code``: a quote to put around each mark, e.g. a markdown backtick)."""
    def q(mark: str) -> str:
        return f"{code}{mark}{code}"

    targets = sorted({target_pct(r, target_ci_pct) for r in records}) or [target_pct_default(target_ci_pct)]
    target = "/".join(f"±{t:g}%" for t in targets)

    return [
        f"median {q('±X%')}: 95% interval of the median, larger half-width in % of it; {q(NO_INTERVAL)} no "
        f"interval (under 6 samples); {q(IMPRECISE)} imprecise (wider than the {target} target)",
        f"{q(BEST)} best, its interval clear of all others; {q(TIED)} tied for best (intervals overlap); "
        f"{q(ESTIMATED)} estimated energy (no meter read); bare values: measured once per variant",
    ]


def simple_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """tabulate's ``simple`` layout (a header, a dashed rule, left-aligned text columns two spaces apart)
    without its two extra characters in every column whose header is its widest cell."""
    text_rows = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in text_rows]) for i, h in enumerate(headers)]
    rule = ["-" * w for w in widths]
    return tabulate([list(headers), rule] + text_rows, tablefmt="plain", disable_numparse=True)


def precision_cell(r: BenchmarkRecord) -> str:
    """The precision cell: a GGUF run in its own weight type shows that type (``q4_1``), not the marker's
    default ``float32``."""
    if named_by_weight_type(r.variant.engine) and r.variant.engine_type:
        return r.variant.engine_type
    return r.variant.precision


def render(records: list[BenchmarkRecord], columns: Optional[Sequence[str]] = None,
           target_ci_pct: Optional[float] = None) -> str:
    """The whole report as text (empty string when there is nothing to show).

    columns: the metric columns, in order (None: ``DEFAULT_COLUMNS``). target_ci_pct: the precision target in
    percent for records whose stop rule names none (None: ``DEFAULT_TARGET_CI_PCT``); a cell whose interval is
    wider than its record's target is flagged imprecise and never marked best.
    """
    if not records:
        return ""

    def key(r: BenchmarkRecord):
        return (r.group or "", r.variant.model)

    out = []
    for (group, model), rows_iter in groupby(sorted(records, key=key), key=key):
        rows = list(rows_iter)
        metrics = table_metrics(rows, columns)
        marks = {m: column_marks(rows, m, target_ci_pct) for m in metrics}
        engines = not all(is_default(r.variant.engine) for r in rows)  # an engine column only when it varies
        ranked = any(r.rank is not None for r in rows)  # torchrun / accelerate launch: which rank measured it
        headers = (["test"] + (["rank"] if ranked else []) + (["engine"] if engines else [])
                   + ["precision", "quant", "batch"] + [header_for(m) for m in metrics] + ["outcome"])
        table = [[row_label(r)] + ([r.rank if r.rank is not None else "-"] if ranked else [])
                 + ([r.variant.engine] if engines else [])
                 + [precision_cell(r), r.variant.quantization or "-", r.variant.batch_size]
                 + [cell(r, m, target_ci_pct, marks[m].get(i, "")) for m in metrics]
                 + [r.outcome if r.outcome != "passed" else "ok"] for i, r in enumerate(rows)]
        text = simple_table(headers, table)
        footer = []
        gated = [r for r in rows if r.verdicts or r.limits]
        if gated:
            with_verdicts = simple_table(headers[:-1] + ["vs baseline"] + headers[-1:],
                                         [row[:-1] + [verdict_cell(r)] + row[-1:] for row, r in zip(table, rows)])
            if max(len(line) for line in with_verdicts.splitlines()) <= TABLE_WIDTH:
                text = with_verdicts
            else:  # too wide with the column: one line per judged benchmark under the table
                footer = [f"vs baseline: {r.name}: {verdict_cell(r)}" for r in gated]
        title = f"model: {model}" + (f"   group: {group}" if group else "")
        out += [title, text] + footer + warning_lines(rows) + [""]
    legend = legend_lines(records, target_ci_pct)
    if any(r.verdicts or r.limits for r in records):
        legend.append("vs baseline: + improved, ~ near-miss, ! regressed or limit failed, ? inconclusive "
                      "(too little evidence: too few rounds, or one stored session)")
    energy_methods = sorted({r.energy.method for r in records if r.energy is not None})
    if energy_methods:
        legend.append("energy: " + "; ".join(energy_methods))
    out.extend(legend)
    return "\n".join(out)
