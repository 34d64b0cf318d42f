"""``llmeff summary RUN.json``: the run's analysis in the terminal (``analysis.py``), per group of benchmarks:

- rankings per metric, best first by the metric's direction, each cell as in the table (``median ±X%``) with
  ``*`` for a best whose interval is clear of all others and ``=`` for those tied with the leader;
- the Pareto front over the chosen objectives (``--pareto``; default ``analysis.default_objectives``), who
  dominates the rest, and who is not ranked for lack of an objective;
- the efficiency score with its weights (``--weights``; default ``analysis.DEFAULT_WEIGHTS``);
- the outlier rounds (MAD) of each benchmark;
- the spread of each metric across the variants.

Errors (an unreadable run file, a bad objective or weight) are one line from ``cli.main``, exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pytest_llmeff.errors import UsageProblem
from pytest_llmeff.metrics import METRICS, header_for, scale_for
from pytest_llmeff.report import analysis

EXAMPLES = """examples:
  llmeff summary .llmeff/runs/RUN.json
  llmeff summary RUN.json --pareto throughput_tok_s,peak_mem_bytes,ppl_ratio
  llmeff summary RUN.json --weights throughput_tok_s:2,ppl_ratio:1 --metrics throughput_tok_s,ttft_s"""


def _argtype(parse, what: str):
    """An argparse type from a parser raising UsageProblem (its one line becomes argparse's error)."""
    def convert(text: str):
        try:
            return parse(text, what)
        except UsageProblem as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{what}: ")) from None

    return convert


objectives_type = _argtype(analysis.parse_objectives, "--pareto")
weights_type = _argtype(analysis.parse_weights, "--weights")


def _metric_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for n in names:
        if n not in METRICS:
            raise argparse.ArgumentTypeError(f"{n!r} is not a metric; known: {', '.join(sorted(METRICS))}")
    return names


def add_analysis_options(parser: argparse.ArgumentParser) -> None:
    """``--pareto`` and ``--weights``, shared with ``llmeff report``."""
    parser.add_argument("--pareto", type=objectives_type, default=None, metavar="A,B",
                        help="Pareto objectives: two or more metrics with a direction (default "
                             f"{','.join(analysis.DEFAULT_PARETO)}; kld_mean_nat, else peak_mem_bytes, when the run "
                             "has no ppl_ratio)")
    parser.add_argument("--weights", type=weights_type, default=None, metavar="SPEC",
                        help="efficiency score weights, metric:weight comma separated (default "
                             + ",".join(f"{m}:{w:g}" for m, w in analysis.DEFAULT_WEIGHTS.items()) + ")")


def register(sub) -> None:
    p = sub.add_parser("summary", help="rankings, Pareto front, efficiency score and outliers of a run",
                       description="The run's analysis in the terminal: rankings that never rank noise, the Pareto "
                                   "front, the efficiency score, outlier rounds and the spread across variants.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN.json")
    add_analysis_options(p)
    p.add_argument("--metrics", type=_metric_list, default=None, metavar="A,B",
                   help="rank only these metrics (default: every metric with a direction the run holds)")
    p.set_defaults(handler=run)


def _section_lines(rows, objectives, weights, metrics) -> list[str]:
    from tabulate import tabulate

    from pytest_llmeff.report.terminal import cell

    full = {id(r): analysis.label(r) for r in rows}
    prefix = analysis.common_prefix(rows)

    def name(record) -> str:
        return full[id(record)][len(prefix):]

    out = [f"benchmarks are named without their common prefix {prefix!r}"] if prefix else []
    out += ["rankings (best first; * best, its interval clear of all others; = tied for best, intervals overlap; "
           "once-per-variant figures are unmarked):"]
    table = []
    for rk in analysis.rankings(rows, metrics):
        order = "  >  ".join(f"{name(e.record)} {cell(e.record, rk.metric, mark=e.mark)}"
                             for e in rk.entries)
        table.append([rk.metric, rk.direction, order])
    out.append(tabulate(table, headers=["metric", "better", "order"], tablefmt="simple") if table else "  (none)")

    objs = tuple(objectives) if objectives else analysis.default_objectives(rows)
    pareto = analysis.pareto_front(rows, objs)
    words = ", ".join(f"{o} ({analysis.direction(o)})" for o in objs)
    out.append("")
    out.append(f"Pareto front over {words}: " + (", ".join(name(rows[i]) for i in pareto.front) or "none"))
    for i, by in pareto.dominated.items():
        out.append(f"  dominated: {name(rows[i])} (by {', '.join(name(rows[j]) for j in by)})")
    for i, lacks in pareto.missing.items():
        out.append(f"  not ranked: {name(rows[i])} (lacks {', '.join(lacks)})")

    scores = analysis.efficiency_scores(rows, weights)
    used = ", ".join(f"{m}:{w:g}" for m, w in scores.weights.items()) or "none usable"
    out.append("")
    out.append(f"efficiency score (100 = best in every weighted metric; weighted geometric mean of ratios to the "
               f"best median; weights {used}):")
    for m, why in scores.dropped.items():
        out.append(f"  left out {m}: {why}")
    ranked = sorted(scores.scores.items(), key=lambda kv: -kv[1])
    out.append(tabulate([[n + 1, name(rows[i]), f"{s:.0f}"] for n, (i, s) in enumerate(ranked)],
                        headers=["#", "benchmark", "score"], tablefmt="simple") if ranked else "  (none)")
    for i, lacks in scores.missing.items():
        out.append(f"  no score: {name(rows[i])} (lacks {', '.join(lacks)})")

    out.append("")
    flagged = [(r, analysis.outliers_of(r)) for r in rows]
    flagged = [(r, o) for r, o in flagged if o]
    out.append(f"outlier rounds (modified z-score > {analysis.OUTLIER_Z:g}, MAD; rounds from 0): "
               + ("none" if not flagged else ""))
    for r, o in flagged:
        rounds = sorted({i for found in o.values() for i in found})
        shown = {m: o[m] for m in ("latency_s", "ttft_s", "peak_mem_bytes") if m in o}
        others = len(o) - len(shown)
        out.append(f"  {name(r)}: rounds {rounds}" + (" (" + "; ".join(f"{m} {v}" for m, v in shown.items())
                                                      if shown else " (") + (f"; {others} other metric(s)" if others
                                                                             else "") + ")")
    if flagged:
        out.append("  (the medians and their intervals are robust to them; nothing was removed)")

    spreads = analysis.spread(rows, metrics)
    if spreads:
        out.append("")
        out.append("across variants (display units):")
        out.append(tabulate(
            [[header_for(s.metric), s.n, f"{s.low * scale_for(s.metric):.4g} ({name(rows[s.low_index])})",
              f"{s.median * scale_for(s.metric):.4g}",
              f"{s.high * scale_for(s.metric):.4g} ({name(rows[s.high_index])})",
              "-" if s.ratio is None else f"{s.ratio:.3g}", "-" if s.cv is None else f"{s.cv:.1%}"]
             for s in spreads],
            headers=["metric", "n", "lowest", "median", "highest", "max/min", "CV"], tablefmt="simple"))
    return out


def render(run, objectives=None, weights=None, metrics=None, source: str = "") -> str:
    """The summary of ``run`` as text."""
    head = (f"{source}: " if source else "") + (f"{run.started_at}, commit {run.commit.id or 'unknown'}"
                                                f"{' (dirty)' if run.commit.dirty else ''}, {run.machine.cpu}")
    out = [head]
    if not run.benchmarks:
        out.append("no benchmarks in this run")
    for group, rows in analysis.sections(run.benchmarks):
        out.append("")
        out.append(f"== {'group ' + group if group else 'benchmarks'}: {len(rows)} ==")
        out += _section_lines(rows, objectives, weights, metrics)
    return "\n".join(out)


def run(args) -> int:
    from pytest_llmeff.results.runfile import read_run, shown_path

    loaded = read_run(Path(args.run))  # StorageError: one line from cli.main
    print(render(loaded, args.pareto, args.weights, args.metrics, shown_path(args.run)))
    return 0
