"""``llmeff``: the command line over stored results.

    llmeff show RUN.json [RUN.json ...]   print the comparison table of stored runs
    llmeff list [DIR]                     list the run files under DIR, recursively (default: the per-session
                                          results in .llmeff/runs and the stored baselines in .llmeff/baselines)
    llmeff compare BASE CURRENT [--fail SPEC] [--alpha P]
                                          verdicts of CURRENT against BASE (exit 1 on a regression)
    llmeff history [--storage DIR] [--benchmark NAME_OR_NODEID] [--metric METRIC] [--machine FP] [--penalty B]
                                          the series of one benchmark's metric over the stored runs of one machine,
                                          with change points (needs the ``history`` extra: ruptures)
    llmeff merge RUN... -o MERGED [--force]  combine shard runs (--llmeff-shard) into one run (merge.py)
    llmeff schema [--write]               print (or rewrite the shipped copy of) the JSON Schema

Exit status: 0 done, 1 a regression (compare) or nothing to list (list), 2 a usage error: a bad option value or
a file that is missing, empty, binary, truncated, malformed or not a run; for history also nothing stored, an
unknown benchmark or metric, or the change point library not installed (a damaged run file among good ones is
skipped with one line on stderr). A usage error is ONE line on stderr,
``llmeff: error: <what>: <problem>``, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn, Optional

from pytest_llmeff.cli import export
from pytest_llmeff.cli import help as cli_help
from pytest_llmeff.cli import init as scaffold
from pytest_llmeff.cli import plot as plot_cmd
from pytest_llmeff.cli import report as report_cmd
from pytest_llmeff.cli import summary as summary_cmd
from pytest_llmeff.defaults import DEFAULT_ALPHA
from pytest_llmeff.errors import GateConfigError, LlmeffError, StorageError
from pytest_llmeff.files import atomic_write_text
from pytest_llmeff.gate.comparison_lines import resolution_lines
from pytest_llmeff.gate.thresholds import parse_thresholds
from pytest_llmeff.measure.machine import machine_info
from pytest_llmeff.results import history
from pytest_llmeff.results.runfile import SCHEMA_FILE, read_run, schema_text, shown_path
from pytest_llmeff.config.options import DEFAULT_COMPARE_HISTORY, DEFAULT_RESULTS_DIR, DEFAULT_STORAGE, LLMEFF_DIR

PROG = "llmeff"
DEFAULT_FAIL = "throughput_tok_s:5%,ttft_s:10%"


def _error(message: str) -> None:
    """A usage error as one line on stderr (the caller exits 2)."""
    print(f"{PROG}: error: {' '.join(str(message).splitlines())}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``llmeff: error: ...``, exit 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        _error(message)
        self.exit(2)


def _open_range(low: float, high: float, allowed: str):
    """An argparse type: a number strictly between ``low`` and ``high``, else one line naming the value and
    ``allowed``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low < value < high:  # NaN fails too
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; {allowed}")
        return value

    return parse


_alpha = _open_range(0, 1, "give a probability between 0 and 1, exclusive (e.g. 0.01)")


def _history_count(text: str) -> int:
    """``--history N``: a whole number >= 1; otherwise argparse's one-line error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give N >= 1 (1: the baseline alone)") \
            from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; give N >= 1 (1: the baseline alone)")
    return value


def _thresholds(text: str):
    try:
        thresholds = parse_thresholds(text)
    except GateConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not thresholds:
        raise argparse.ArgumentTypeError(f"{text!r} gives no threshold; e.g. --fail {DEFAULT_FAIL}")
    return thresholds


def _show(paths: list[str]) -> int:
    from pytest_llmeff.report.terminal import render

    status = 0
    for p in paths:
        try:
            run = read_run(Path(p))
        except StorageError as exc:
            hint = f" (llmeff list {shown_path(p)} lists the run files in it)" if Path(p).is_dir() else ""
            _error(f"{exc}{hint}")
            status = 2
            continue
        print(f"{shown_path(p)}: {run.started_at} .. {run.finished_at}, commit {run.commit.id} "
              f"{'(dirty)' if run.commit.dirty else ''}, {run.machine.cpu}")
        print(render(run.benchmarks) or "no benchmarks in this run")
    return status


def _renamed_line(old, new) -> str:
    """A renamed benchmark, in the words of the plugin's comparison (``comparison_lines.matching_lines``)."""
    return (f"renamed: {old.nodeid} -> {new.nodeid} (not compared: give it its old name back, or store a new "
            "baseline)")


def _compare(base_path: str, current_path: str, thresholds: dict, alpha: float, history: int = 1,
             storage: str = DEFAULT_STORAGE) -> int:
    from tabulate import tabulate

    from pytest_llmeff.gate.compare_runs import compare_runs
    from pytest_llmeff.results.storage import mismatch_warnings

    current = read_run(Path(current_path))  # StorageError: main() says it
    comparison = compare_runs(base_path, current, thresholds, alpha, history, storage)
    base, matching, budget = comparison.base, comparison.matching, comparison.budget
    for line in comparison.skipped:
        print(f"{PROG}: history: skipped {line}", file=sys.stderr)
    rows, regressed = [], 0
    for new, judged in comparison.judged:
        for v in judged:
            regressed += v.status == "regressed"
            rows.append([new.nodeid, v.metric, "-" if v.baseline_median is None else f"{v.baseline_median:.4g}",
                         "-" if v.current_median is None else f"{v.current_median:.4g}",
                         "n/a" if v.change is None else f"{v.change:+.1%}", v.threshold,
                         "n/a" if v.p_value is None else f"{v.p_value:.3g}", v.test or "-", v.status])
    print(tabulate(rows, headers=["benchmark", "metric", "baseline", "current", "change", "threshold", "p", "test",
                                  "verdict"]))
    for old, new in matching.renamed:
        print(_renamed_line(old, new))
    for rec in matching.new:
        print(f"new (no baseline): {rec.nodeid}")
    for rec in matching.missing:
        print(f"missing (in the baseline only): {rec.nodeid}")
    for w in mismatch_warnings(base, current):
        print(f"WARNING {w}")
    k = comparison.sessions
    print(f"baseline: {shown_path(Path(base_path))}" + (f" and the {k - 1} stored run{'s' if k != 2 else ''} before "
                                                      "it (the spread between sessions)" if k > 1 else " alone"))
    for line in resolution_lines(current.benchmarks):
        print(line)
    print(f"false-alarm budget: {budget.describe()}")
    return 1 if regressed else 0


def _run_files(root: Path) -> list[Path]:
    """Every ``*.json`` under ``root``, recursively (a storage root holds its runs one level down, in fingerprint
    folders), in path order; hidden files and folders below ``root`` (temp files, reservations, ``.git``) are
    skipped, except the ``.llmeff`` folder itself; symlinked folders are not followed."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") or d == LLMEFF_DIR)
        found += [Path(folder) / f for f in files if f.endswith(".json") and not f.startswith(".")]
    return sorted(found)


def _list(directory: Optional[str]) -> int:
    if directory is None:
        roots = [Path(DEFAULT_RESULTS_DIR), Path(DEFAULT_STORAGE)]
    else:
        root = Path(directory)
        if not root.is_dir():
            problem = ("is a file, not a directory (llmeff show prints it)" if root.exists()
                       else "no such directory")
            _error(f"{shown_path(root)}: {problem}")
            return 2
        roots = [root]
    files = [f for root in roots if root.is_dir() for f in _run_files(root)]
    if not files:
        print(f"{PROG}: no run files in {' or '.join(shown_path(r) for r in roots)}", file=sys.stderr)
        return 1
    for f in files:
        try:
            run = read_run(f)
        except StorageError as exc:
            print(f"{shown_path(f)}  unreadable: {getattr(exc, 'problem', exc)}")
            continue
        print(f"{shown_path(f)}  {run.started_at}  {len(run.benchmarks)} benchmark(s)")
    return 0


_penalty = _open_range(0, 1000, "give a positive number (default 3; smaller finds more change points and more "
                                "false ones)")


def _current_fingerprint() -> str:
    """This machine's fingerprint (marked ``gpu-unreadable`` when NVML fails: never a GPU-less machine's)."""
    from pytest_llmeff.results.storage import machine_fingerprint

    return machine_fingerprint(machine_info())


def _history(storage: str, benchmark: Optional[str], metric: str, machine: Optional[str], penalty: float) -> int:
    history.require_library()  # one line naming the extra when ruptures is missing
    series = history.load_history(Path(storage).expanduser(), benchmark, metric, machine=machine,
                                  current_fingerprint=_current_fingerprint)
    for line in series.skipped:
        print(f"{PROG}: skipped unreadable run file {line}", file=sys.stderr)
    print(history.render(history.detect(series, penalty)))
    return 0


def _parser() -> _Parser:
    parser = _Parser(prog=PROG, description="pytest-llmeff stored results")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print the table of one or more run files")
    show.add_argument("paths", nargs="+")
    lst = sub.add_parser("list", help="list run files (default: .llmeff/runs and .llmeff/baselines)")
    lst.add_argument("directory", nargs="?", default=None,
                     help=f"searched recursively (default: {DEFAULT_RESULTS_DIR} and {DEFAULT_STORAGE})")

    summary_cmd.register(sub)
    report_cmd.register(sub, _thresholds, _alpha, _history_count, DEFAULT_FAIL)
    plot_cmd.register(sub)
    cmp = sub.add_parser("compare", help="verdicts of a run against a baseline run")
    cmp.add_argument("base")
    cmp.add_argument("current")
    cmp.add_argument("--fail", default=DEFAULT_FAIL, type=_thresholds,
                     help=f"thresholds, as --llmeff-compare-fail (default {DEFAULT_FAIL.replace('%', '%%')})")
    cmp.add_argument("--alpha", type=_alpha, default=DEFAULT_ALPHA,
                     help="chance of any false 'regressed' in the whole comparison, 0 < P < 1 "
                          f"(default {DEFAULT_ALPHA:g})")
    cmp.add_argument("--history", type=_history_count, default=DEFAULT_COMPARE_HISTORY, metavar="N",
                     help=f"judge against BASE and the runs stored before it in its machine folder under --storage, "
                          f"N in all (default {DEFAULT_COMPARE_HISTORY}; 1: BASE alone)")
    cmp.add_argument("--storage", default=DEFAULT_STORAGE, metavar="DIR",
                     help=f"storage root that BASE's history is looked up in (default {DEFAULT_STORAGE})")
    hist = sub.add_parser("history", help="one benchmark's metric over the stored runs, with change points")
    hist.add_argument("--storage", default=DEFAULT_STORAGE, metavar="DIR",
                      help=f"storage root, one folder per machine (default {DEFAULT_STORAGE})")
    hist.add_argument("--benchmark", default=None, metavar="NAME_OR_NODEID",
                      help="node id or benchmark name (needed when more than one benchmark is stored)")
    hist.add_argument("--metric", default="throughput_tok_s", help="metric name (default throughput_tok_s)")
    hist.add_argument("--machine", default=None, metavar="FINGERPRINT",
                      help="the machine folder under DIR (default: this machine's, or the only one)")
    hist.add_argument("--penalty", type=_penalty, default=3.0,
                      help="change point penalty multiplier (default 3; see pytest_llmeff/results/history.py)")
    mrg = sub.add_parser("merge", help="combine the shard runs of one collection into one run")
    mrg.add_argument("paths", nargs="+", metavar="RUN")
    mrg.add_argument("-o", "--output", required=True, metavar="MERGED.json", help="the merged run file")
    mrg.add_argument("--force", action="store_true",
                     help="merge runs of different collections, splits or commits (never overlapping ones)")
    schema = sub.add_parser("schema", help="print the JSON Schema of run files")
    schema.add_argument("--write", action="store_true", help=f"rewrite {SCHEMA_FILE.name} in the package")
    export.register(sub)
    scaffold.register(sub)
    cli_help.add_help(parser, sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if getattr(args, "handler", None) is not None:  # a command defined in its own module
            return args.handler(args)
        if args.command == "show":
            return _show(args.paths)
        if args.command == "list":
            return _list(args.directory)
        if args.command == "compare":
            return _compare(args.base, args.current, args.fail, args.alpha, args.history, args.storage)
        if args.command == "merge":
            from pytest_llmeff.results.merge import write_merged

            return write_merged(args.paths, args.output, args.force)
        if args.command == "history":
            return _history(args.storage, args.benchmark, args.metric, args.machine, args.penalty)
        if args.write:
            try:
                atomic_write_text(SCHEMA_FILE, schema_text())
            except OSError as exc:
                raise StorageError(f"{SCHEMA_FILE}: cannot be written ({exc.strerror or exc})") from None
            print(f"wrote {SCHEMA_FILE}")
        else:
            sys.stdout.write(schema_text())
        return 0
    except LlmeffError as exc:  # every error raised on purpose is one line for the user
        _error(str(exc))
        return 2
    except BrokenPipeError:  # `llmeff list | head`: the reader went away; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
