"""``llmeff``: the command line over stored results.

    llmeff show RUN.json [RUN.json ...]   print the comparison table of stored runs
    llmeff list [DIR]                     list the run files under DIR (default .llmeff/runs)
    llmeff compare BASE CURRENT [--fail SPEC] [--alpha P]
                                          verdicts of CURRENT against BASE (exit 1 on a regression)
    llmeff schema [--write]               print (or rewrite the shipped copy of) the JSON Schema
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pytest_llmeff.config import DEFAULT_STORAGE
from pytest_llmeff.results import SCHEMA_FILE, atomic_write_text, read_run, schema_text


def _show(paths: list[str]) -> int:
    from pytest_llmeff.report.terminal import render

    status = 0
    for p in paths:
        try:
            run = read_run(Path(p))
        except ValueError as exc:
            print(f"llmeff: {exc}", file=sys.stderr)
            status = 2
            continue
        print(f"{p}: {run.started_at} .. {run.finished_at}, commit {run.commit.id} "
              f"{'(dirty)' if run.commit.dirty else ''}, {run.machine.cpu}")
        print(render(run.benchmarks) or "no benchmarks in this run")
    return status


def _compare(base_path: str, current_path: str, spec: str, alpha: float) -> int:
    from tabulate import tabulate

    from pytest_llmeff.gate import GateConfigError, compare, compare_paired, parse_thresholds
    from pytest_llmeff.interleave import rounds_pair
    from pytest_llmeff.storage import StorageError, load_run, match_benchmarks, mismatch_warnings

    try:
        thresholds = parse_thresholds(spec)
        base, current = load_run(Path(base_path)), load_run(Path(current_path))
    except (GateConfigError, StorageError) as exc:
        print(f"llmeff: {exc}", file=sys.stderr)
        return 2
    matching = match_benchmarks(base, current)
    # the two sides of one lockstep pair (--llmeff-interleave): rounds compare pair by pair
    lockstep = bool(base.interleave and current.interleave and base.interleave.get("dir") ==
                    current.interleave.get("dir") and base.interleave.get("role") != current.interleave.get("role"))
    rows, regressed = [], 0
    for old, new in matching.pairs:
        for metric, threshold in thresholds.items():
            if metric not in old.metrics or metric not in new.metrics:
                continue
            paired = lockstep and rounds_pair(old, new)
            v = (compare_paired if paired else compare)(metric, old.metrics[metric].samples,
                                                        new.metrics[metric].samples, threshold, alpha=alpha)
            regressed += v.status == "regressed"
            rows.append([new.nodeid, metric, f"{v.baseline_median:.4g}", f"{v.current_median:.4g}",
                         "n/a" if v.change is None else f"{v.change:+.1%}", v.threshold,
                         "n/a" if v.p_value is None else f"{v.p_value:.3g}", "paired" if paired else "two runs",
                         v.status])
    print(tabulate(rows, headers=["benchmark", "metric", "baseline", "current", "change", "threshold", "p", "test",
                                  "verdict"]))
    for rec in matching.new:
        print(f"new (no baseline): {rec.nodeid}")
    for rec in matching.missing:
        print(f"missing (in the baseline only): {rec.nodeid}")
    for w in mismatch_warnings(base, current):
        print(f"WARNING {w}")
    return 1 if regressed else 0


def _list(directory: str) -> int:
    root = Path(directory)
    files = sorted(root.glob("*.json")) if root.is_dir() else []
    if not files:
        print(f"llmeff: no run files in {root}", file=sys.stderr)
        return 1
    for f in files:
        try:
            run = read_run(f)
            print(f"{f}  {run.started_at}  {len(run.benchmarks)} benchmark(s)")
        except ValueError as exc:
            print(f"{f}  unreadable: {exc}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmeff", description="pytest-llmeff stored results")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print the table of one or more run files")
    show.add_argument("paths", nargs="+")
    lst = sub.add_parser("list", help="list stored run files")
    lst.add_argument("directory", nargs="?", default=str(Path(DEFAULT_STORAGE) / "runs"))
    cmp = sub.add_parser("compare", help="verdicts of a run against a baseline run")
    cmp.add_argument("base")
    cmp.add_argument("current")
    cmp.add_argument("--fail", default="throughput_tok_s:5%,ttft_s:10%",
                     help="thresholds, as --llmeff-compare-fail (default throughput_tok_s:5%%,ttft_s:10%%)")
    cmp.add_argument("--alpha", type=float, default=0.01)
    schema = sub.add_parser("schema", help="print the JSON Schema of run files")
    schema.add_argument("--write", action="store_true", help=f"rewrite {SCHEMA_FILE.name} in the package")
    args = parser.parse_args(argv)
    if args.command == "show":
        return _show(args.paths)
    if args.command == "list":
        return _list(args.directory)
    if args.command == "compare":
        return _compare(args.base, args.current, args.fail, args.alpha)
    if args.write:
        atomic_write_text(SCHEMA_FILE, schema_text())
        print(f"wrote {SCHEMA_FILE}")
    else:
        sys.stdout.write(schema_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
