"""What a comparison found beyond the verdicts, one line each for humans: renamed, new and missing benchmarks,
and what each tested comparison could resolve (its minimum detectable effect, and a WARNING for a threshold
below it). Shared by the plugin's report (``Baseline.comparison_lines``) and the ``llmeff`` commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional

from pytest_llmeff.errors import GateConfigError
from pytest_llmeff.gate.thresholds import parse_thresholds

if TYPE_CHECKING:
    from pytest_llmeff.gate.thresholds import Threshold
    from pytest_llmeff.results.schema import BenchmarkRecord
    from pytest_llmeff.results.storage import Matching


def matching_lines(matching: "Matching") -> list[str]:
    """The renamed, new and missing benchmarks of a comparison, one line each."""
    lines = [f"renamed: {old.nodeid} -> {new.nodeid} (not compared: give it its old name back, or store a new "
             "baseline)" for old, new in matching.renamed]
    lines += [f"new (no baseline): {rec.nodeid}" for rec in matching.new]
    lines += [f"missing (in the baseline only): {rec.nodeid}" for rec in matching.missing]
    return lines


def resolution_lines(records: Iterable["BenchmarkRecord"]) -> list[str]:
    """What each tested comparison could resolve: one line per benchmark with its gated metrics' minimum
    detectable effects (``mde``), and a WARNING for a threshold below it. Figures judged directly are left out."""
    lines = []
    for record in records:
        parts, warns = [], []
        for v in record.verdicts:
            if v.status == "not-measured" or (v.p_value is None and v.mde is None and not v.history_runs):
                continue
            if v.mde is not None:
                source = (f"{v.history_runs} stored sessions, spread {v.spread_rel * 100:.1f}%"
                          if v.history_runs and v.spread_rel is not None else "paired rounds" if v.history_runs is None
                          else f"{v.history_runs} stored sessions")
                parts.append(f"{v.metric} {v.mde * 100:.1f}% ({source})")
                threshold = _threshold_of(v)
                if threshold is not None and threshold.kind == "relative":
                    remedy = ("use --llmeff-ab or store more runs" if v.history_runs else
                              "allow more pairs (--llmeff-max-rounds, --llmeff-max-time) or quiet the machine")
                    if threshold.value < v.mde:
                        warns.append(f"WARNING {record.variant.id} {v.metric}: threshold {v.threshold} is below what "
                                     f"this baseline can resolve (≈ {v.mde * 100:.0f}%): {remedy}")
            elif v.history_runs:
                parts.append(f"{v.metric} unknown (1 stored session)")
        if parts:
            lines.append(f"minimum detectable effect (90% power) {record.variant.id}: {', '.join(parts)}")
        lines += warns
    return lines


def _threshold_of(verdict) -> Optional["Threshold"]:
    """The verdict's threshold, read back by the gate's own parser (None when it cannot be)."""
    try:
        return parse_thresholds(f"{verdict.metric}:{verdict.threshold}").get(verdict.metric)
    except GateConfigError:
        return None
