"""The terminal summary at the end of a session: regressions, the comparison table, and where everything went.

The table (``report/terminal.py``) shows the metric columns of ``--llmeff-columns`` (default: a set that fits
160 characters) and flags the cells whose interval is wider than the precision target (``--llmeff-target-ci``).

``summary_lines`` returns (text, colour) pairs; ``plugin.py`` only writes them.
"""

from __future__ import annotations

from typing import Optional

Line = tuple[str, Optional[str]]  # (text, colour: None, "red" or "yellow")


def regression_lines(gate_failures: list[tuple[str, str]]) -> list[Line]:
    """Each regressed test's node id, then its gate text."""
    lines: list[Line] = []
    for nodeid, text in gate_failures:
        lines.append((nodeid, None))
        lines.append((text, None))
    return lines


def summary_lines(session) -> list[Line]:
    """The llmeff section under ``--llmeff-report`` (or the hint to add it)."""
    if not session.options.report:
        if session.records:
            return [(f"llmeff: {len(session.records)} benchmark(s) measured; add --llmeff-report for the table "
                     "and the JSON file", None)]
        return []
    from pytest_llmeff.report.terminal import render

    options = session.options
    table = render(session.records, columns=options.columns, target_ci_pct=options.target_ci_pct)
    lines: list[Line] = [(table or "no benchmarks were recorded", None)]
    ending = session.ending
    if not ending.complete:
        unfinished = f"; unfinished: {len(ending.unfinished)} benchmark test(s)" if ending.unfinished else ""
        lines.append((f"llmeff: the session did not finish ({ending.reason or 'stopped early'}){unfinished}; "
                      "the run file says so", "yellow"))
    out = session.outputs
    if out is None:
        return lines
    if out.time_s:
        lines.append((f"llmeff: {time_line(out.time_s)}", None))
    if out.json_path is not None:
        lines.append((f"llmeff: results written to {out.json_path}", None))
    lines += [(f"llmeff: {line}", None) for line in out.lines]
    lines += [(f"llmeff: {line}", "yellow") for line in out.notices]
    lines += [(f"llmeff: ERROR {line}", "red") for line in out.errors]
    lines += [(f"llmeff: {line}", None) for line in out.comparison]
    return lines


def time_line(time_s: dict[str, float]) -> str:
    """``where the time went: timed 52.1 s, quality 20.3 s, ... (benchmarks 80.0 s of a 87.1 s session)``: the
    phases by size, so a user sees why a run is slow."""
    phases = sorted(((p, s) for p, s in time_s.items() if p not in ("benchmarks", "session") and s >= 0.05),
                    key=lambda item: -item[1])
    text = ", ".join(f"{p} {s:.1f} s" for p, s in phases)
    return (f"where the time went: {text or 'nothing measured'} (benchmarks {time_s.get('benchmarks', 0):.1f} s "
            f"of a {time_s.get('session', 0):.1f} s session)")
