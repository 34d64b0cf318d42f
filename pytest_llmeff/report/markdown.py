"""The comparison report as GitHub-flavoured markdown (a PR comment, ``$GITHUB_STEP_SUMMARY``, an artifact).

The terminal report's tables (``report/terminal.py``: one table per group and model, variant rows), rendered with
tabulate's ``github`` format, with the same cells and marks (``median ±X%`` with the 95% interval of the median,
``?`` no interval, ``!`` imprecise, ``*`` best, ``=`` tied, ``~`` estimated energy; see ``terminal.cell`` and
``terminal.column_marks``) but wider: a markdown table scrolls, so it has a column for every metric any record of
the table holds, in the order of the metric table (``metrics.py``; user metrics after), whatever
``--llmeff-columns`` says. With regression verdicts, each gated metric gets a ``Δ`` column: the signed change
of the median against the baseline in percent, followed by a mark:

    ``+`` improved, ``~`` near-miss, ``!`` regressed, ``?`` inconclusive, nothing when within the threshold.

Warnings: the session's (the baseline comparison's lines) first, then each record's prefixed with its variant
id, as in the terminal's footer.

Units and directions come only from the one metric table (``metrics.spec_for``). This module imports no
plugin, fixture or session code.
"""

from __future__ import annotations

import math
import os
from itertools import groupby
from pathlib import Path
from typing import Mapping, Optional, Sequence

from tabulate import tabulate

from pytest_llmeff.gate.verdicts import Verdict
from pytest_llmeff.metrics import METRICS, header_for, spec_for
from pytest_llmeff.report.terminal import row_label, precision_cell, cell, column_marks, legend_lines
from pytest_llmeff.results.schema import BenchmarkRecord
from pytest_llmeff.config.engine_catalog import is_default

# verdicts as the gate gives them: (nodeid, benchmark name) -> {metric name -> Verdict}
Verdicts = Mapping[tuple[str, str], Mapping[str, Verdict]]

# the mark written after the change, by verdict status (an empty mark: within the threshold)
MARKS: dict[str, str] = {"improved": "+", "near-miss": "~", "regressed": "!", "ok": "", "inconclusive": "?"}

TITLE = "## LLM inference efficiency (pytest-llmeff)"
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def _escape(text: str) -> str:
    """A table cell's text with the characters that would break a GFM table row escaped."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _pct_text(change: Optional[float]) -> str:
    """``change`` (a fraction, +0.2 = 20% larger) as a signed percentage with one decimal."""
    if change is None:
        return "n/a"
    if math.isinf(change):
        return "+inf%" if change > 0 else "-inf%"
    return f"{change * 100:+.1f}%"


def delta_cell(verdict: Optional[Verdict]) -> str:
    """The ``Δ`` cell for one verdict: signed % change of the median, then the status mark (``-`` if none)."""
    if verdict is None:
        return "-"
    mark = MARKS.get(verdict.status, "?")
    if verdict.change is None:
        return mark or "n/a"
    return f"{_pct_text(verdict.change)} {mark}".rstrip()


def _verdicts_for(verdicts: Optional[Verdicts], record: BenchmarkRecord) -> Mapping[str, Verdict]:
    if not verdicts:
        return {}
    return verdicts.get((record.nodeid, record.name), {})


def _direction_words(metric: str) -> str:
    spec = spec_for(metric)
    if spec.direction == "none":
        return spec.unit
    return f"{spec.unit}, {spec.direction} is better"


def table_metrics(rows: Sequence[BenchmarkRecord]) -> list[str]:
    """Every metric some record of ``rows`` holds: in the metric table's order, then unknown names sorted."""
    held = {name for r in rows for name in r.metrics}
    order = list(METRICS)
    return [m for m in order if m in held] + sorted(held - set(order))


def _table(rows: list[BenchmarkRecord], verdicts: Optional[Verdicts],
           target_ci_pct: Optional[float] = None) -> tuple[str, list[str]]:
    """One group/model table and the gated metrics that got a ``Δ`` column (in column order)."""
    shown = [(m, header_for(m)) for m in table_metrics(rows)]
    shown_names = {m for m, _ in shown}
    gated: list[str] = []
    for r in rows:
        for metric in _verdicts_for(verdicts, r):
            if metric not in gated:
                gated.append(metric)
    # a gated metric without a display column gets its Δ column at the end, headed by its name
    extra_gated = [m for m in gated if m not in shown_names]
    marks = {m: column_marks(rows, m, target_ci_pct) for m, _ in shown}

    engines = not all(is_default(r.variant.engine) for r in rows)  # an engine column only when it varies
    headers = ["test"] + (["engine"] if engines else []) + ["precision", "quant", "batch"]
    for metric, header in shown:
        headers.append(header)
        if metric in gated:
            headers.append(f"Δ {header}")
    headers += [f"Δ {m}" for m in extra_gated] + ["outcome"]

    table = []
    for i, r in enumerate(rows):
        mine = _verdicts_for(verdicts, r)
        line = ([row_label(r)] + ([r.variant.engine] if engines else [])
                + [precision_cell(r), r.variant.quantization or "-", str(r.variant.batch_size)])
        for metric, _ in shown:
            line.append(cell(r, metric, target_ci_pct, marks[metric].get(i, "")))
            if metric in gated:
                line.append(delta_cell(mine.get(metric)))
        line += [delta_cell(mine.get(m)) for m in extra_gated]
        line.append(r.outcome if r.outcome != "passed" else "ok")
        table.append([_escape(str(c)) for c in line])
    text = tabulate(table, headers=[_escape(h) for h in headers], tablefmt="github", disable_numparse=True)
    ordered_gated = [m for m, _ in shown if m in gated] + extra_gated
    return text, ordered_gated


def _gate_summary(verdicts: Verdicts) -> str:
    counts = {status: 0 for status in MARKS}
    for by_metric in verdicts.values():
        for verdict in by_metric.values():
            counts[verdict.status] = counts.get(verdict.status, 0) + 1
    order = ("regressed", "near-miss", "improved", "inconclusive", "ok")
    return "**Gate:** " + ", ".join(f"{counts.get(s, 0)} {s}" for s in order)


def _flagged(records: Sequence[BenchmarkRecord], verdicts: Verdicts) -> list[str]:
    """One bullet per verdict that is not ``ok`` (worst first), with the gate's own message."""
    rank = {"regressed": 0, "near-miss": 1, "inconclusive": 2, "improved": 3}
    lines = []
    for r in records:
        for metric, verdict in _verdicts_for(verdicts, r).items():
            if verdict.status == "ok":
                continue
            mark = MARKS.get(verdict.status, "?")
            lines.append((rank.get(verdict.status, 9), f"- `{mark}` `{row_label(r)}` ({r.variant.id}): "
                                                        f"{verdict.message}"))
    return [text for _, text in sorted(lines, key=lambda pair: pair[0])]


def warning_items(records: Sequence[BenchmarkRecord], warnings: Optional[Sequence[str]] = None) -> list[str]:
    """The session's ``warnings`` in their order, then each record's as ``<variant id>: <text>``; each line once."""
    items: list[str] = []
    for line in list(warnings or ()) + [f"{r.variant.id}: {w}" for r in records for w in r.warnings]:
        if line not in items:
            items.append(line)
    return items


def render_markdown(records: Sequence[BenchmarkRecord], verdicts: Optional[Verdicts] = None,
                    warnings: Optional[Sequence[str]] = None, target_ci_pct: Optional[float] = None) -> str:
    """The whole report as GitHub-flavoured markdown; empty string when there are no records and no warnings.

    records: the session's benchmark records. verdicts: ``{(nodeid, name): {metric: gate.Verdict}}`` from a
    baseline comparison, or None (no ``Δ`` columns). warnings: session-level warnings, listed before the
    records' own warnings (each prefixed with its variant id). target_ci_pct: the precision target in percent
    for records whose stop rule names none (None: the default, as in ``terminal.render``).
    """
    records = list(records)
    all_warnings = warning_items(records, warnings)
    if not records and not all_warnings:
        return ""
    out = [TITLE, ""]
    if verdicts:
        out += [_gate_summary(verdicts), ""]

    def key(r: BenchmarkRecord):
        return (r.group or "", r.variant.model)

    gated_all: list[str] = []
    for (group, model), rows_iter in groupby(sorted(records, key=key), key=key):
        rows = list(rows_iter)
        title = f"### model: `{model}`" + (f" · group: `{group}`" if group else "")
        table, gated = _table(rows, verdicts, target_ci_pct)
        gated_all += [m for m in gated if m not in gated_all]
        out += [title, "", table, ""]

    if records:
        legend = legend_lines(records, target_ci_pct, code="`")
        if gated_all:
            legend.append("Δ: change of the median against the baseline; `+` improved, `~` near-miss, "
                          "`!` regressed, `?` inconclusive, no mark: within the threshold")
            legend.append("gated: " + ", ".join(f"`{m}` ({_direction_words(m)})" for m in gated_all))
        energy_methods = sorted({r.energy.method for r in records if r.energy is not None})
        if energy_methods:
            legend.append("energy: " + "; ".join(f"`{m}`" for m in energy_methods))
        out += ["  \n".join(legend), ""]

    if verdicts:
        flagged = _flagged(records, verdicts)
        if flagged:
            out += ["### Verdicts", ""] + flagged + [""]

    if all_warnings:
        out += ["### Warnings", ""] + [f"- {w}" for w in all_warnings] + [""]
    return "\n".join(out).rstrip("\n") + "\n"


def append_github_step_summary(text: str, environ: Mapping[str, str] = os.environ) -> Optional[Path]:
    """Append ``text`` to the file named by ``$GITHUB_STEP_SUMMARY`` (created if missing) and return its path.

    None when the variable is unset or empty (not on GitHub Actions). A blank line separates the text from what
    the file already holds, so that markdown blocks from earlier steps stay intact.
    """
    target = environ.get(STEP_SUMMARY_ENV)
    if not target:
        return None
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    separator = ""
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            separator = "\n" if fh.read(1) == b"\n" else "\n\n"
    body = text if text.endswith("\n") else text + "\n"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(separator + body)
    return path
