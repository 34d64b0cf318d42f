"""``llmeff report RUN.json [--baseline BASE.json] -o report.html``: the HTML report (``report/html.py``) of a
stored run, after the fact. With ``--baseline``, the run is judged against BASE exactly as ``llmeff compare``
judges it (``compare_runs.compare_runs``: the same thresholds, false-alarm budget and stored-session history), and
the report shows those deltas and verdicts in place of the records' own; renamed, new and missing benchmarks
and machine or version mismatches are noted at the top.

Errors are one line from ``cli.main``, exit 2: a missing, corrupt or foreign file (``read_run``), a bad option
value, an output path that cannot be written, Plotly not installed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pytest_llmeff.cli.summary import add_analysis_options
from pytest_llmeff.defaults import DEFAULT_ALPHA
from pytest_llmeff.errors import StorageError
from pytest_llmeff.gate.comparison_lines import matching_lines
from pytest_llmeff.report.outputs import writable_folder_problem
from pytest_llmeff.config.options import DEFAULT_COMPARE_HISTORY, DEFAULT_STORAGE

EXAMPLES = """examples:
  llmeff report .llmeff/runs/RUN.json -o report.html
  llmeff report RUN.json --baseline .llmeff/baselines/<fingerprint>/0001_main.json -o report.html
  llmeff report RUN.json --pareto throughput_tok_s,peak_mem_bytes --weights throughput_tok_s:2,ppl_ratio:1 -o r.html"""


def register(sub, thresholds, alpha, history, default_fail: str) -> None:
    """Register ``report``; ``thresholds``, ``alpha`` and ``history`` are ``llmeff compare``'s argument types."""
    p = sub.add_parser("report", help="write the HTML report of a run (optionally against a baseline)",
                       description="One self-contained HTML file (opens offline): provenance, the sortable table, "
                                   "Pareto plots, distributions, baseline deltas, warnings.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN.json")
    p.add_argument("-o", "--output", required=True, metavar="report.html", help="the HTML file to write")
    p.add_argument("--baseline", default=None, metavar="BASE.json", help="judge the run against this run file")
    p.add_argument("--fail", default=thresholds(default_fail), type=thresholds,
                   help=f"with --baseline: thresholds as in llmeff compare (default {default_fail.replace('%', '%%')})")
    p.add_argument("--alpha", type=alpha, default=DEFAULT_ALPHA,
                   help="with --baseline: chance of any false 'regressed' in the whole comparison "
                        f"(default {DEFAULT_ALPHA:g})")
    p.add_argument("--history", type=history, default=DEFAULT_COMPARE_HISTORY, metavar="N",
                   help=f"with --baseline: as in llmeff compare (default {DEFAULT_COMPARE_HISTORY})")
    p.add_argument("--storage", default=DEFAULT_STORAGE, metavar="DIR",
                   help=f"with --baseline: the storage root BASE's history is read from (default {DEFAULT_STORAGE})")
    add_analysis_options(p)
    p.set_defaults(handler=run)


def check_output(path: Path) -> None:
    """A StorageError (one line naming the file) when ``path`` cannot be written: a directory, under a file, or
    in a folder that is not writable."""
    from pytest_llmeff.results.runfile import shown_path

    if path.is_dir():
        raise StorageError(f"{shown_path(path)}: is a directory; give a file path")
    problem = writable_folder_problem(path.parent if str(path.parent) else Path("."))
    if problem:
        raise StorageError(f"{shown_path(path)}: cannot be written: {problem}")


def run(args) -> int:
    from pytest_llmeff.report.figures import require_plotly
    from pytest_llmeff.report.html import write_html
    from pytest_llmeff.results.runfile import read_run, shown_path

    out = Path(args.output)
    check_output(out)
    require_plotly()
    current = read_run(Path(args.run))
    verdicts, notes, label = None, [], None
    if args.baseline is not None:
        from pytest_llmeff.gate.compare_runs import compare_runs
        from pytest_llmeff.results.storage import mismatch_warnings

        comparison = compare_runs(args.baseline, current, args.fail, args.alpha, args.history, args.storage)
        verdicts = {(r.nodeid, r.name): list(r.verdicts) for r, _ in comparison.judged}
        notes = matching_lines(comparison.matching) + [f"WARNING {w}" for w in
                                                       mismatch_warnings(comparison.base, current)]
        notes.append(f"false-alarm budget: {comparison.budget.describe()}")
        k = comparison.sessions
        label = shown_path(args.baseline) + (f" and the {k - 1} stored run(s) before it" if k > 1 else "")
    try:
        write_html(out, current, source=shown_path(args.run), verdicts=verdicts, baseline_label=label,
                   objectives=args.pareto, weights=args.weights, notes=notes)
    except OSError as exc:
        raise StorageError(f"{shown_path(out)}: cannot be written ({exc.strerror or exc})") from None
    print(f"wrote {shown_path(out)} ({out.stat().st_size / 2**20:.1f} MiB, self-contained)")
    return 0
