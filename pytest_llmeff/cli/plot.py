"""``llmeff plot RUN.json --x M --y M -o chart.svg|png``: one chart of a run, as a static file.

The chart is the HTML report's scatter (``figures.scatter_figure``: medians with 95% interval bars, the Pareto
front of the two metrics drawn when both have a direction, dominated benchmarks dimmed). It is exported by
Kaleido, Plotly's own static exporter, so the file looks like the report's chart. Kaleido 1.x renders in a
headless Chrome or Chromium that it finds on the machine (Debian's ``chromium`` works; ``plotly_get_chrome``
downloads one where the network allows). Without one, ``.html`` still works (Plotly embedded, no browser
needed to write it), and the error says so. Chosen over Vega-Lite + vl-convert (no browser needed) so that the
report and the CLI draw with one library; see ARCHITECTURE.md.

Errors are one line from ``cli.main``, exit 2: an unreadable run file, a metric the run does not hold, an
output suffix other than .svg/.png/.pdf/.html, an output path that cannot be written, no browser for Kaleido.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pytest_llmeff.cli.report import check_output
from pytest_llmeff.errors import StorageError, UsageProblem
from pytest_llmeff.metrics import METRICS

SUFFIXES = (".svg", ".png", ".pdf", ".html")

EXAMPLES = """examples:
  llmeff plot RUN.json --x ppl_ratio --y throughput_tok_s -o drift.svg
  llmeff plot RUN.json --x peak_mem_bytes --y throughput_tok_s -o memory.png
  llmeff plot RUN.json --x throughput_tok_s --y energy_j_per_tok --group smollm2 -o energy.html"""


def register(sub) -> None:
    p = sub.add_parser("plot", help="one chart of a run (--y against --x) as SVG, PNG, PDF or HTML",
                       description="One scatter of a run's benchmarks at their medians with 95% interval bars and "
                                   "the Pareto front of the two metrics.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN.json")
    p.add_argument("--x", required=True, metavar="METRIC", help="the metric on the horizontal axis")
    p.add_argument("--y", required=True, metavar="METRIC", help="the metric on the vertical axis")
    p.add_argument("-o", "--output", required=True, metavar="chart.svg",
                   help="the file to write: .svg, .png or .pdf (Kaleido, needs Chrome/Chromium) or .html")
    p.add_argument("--group", default=None, help="only the benchmarks of this group (default: all)")
    p.set_defaults(handler=run)


def _export(fig, out: Path) -> None:
    from pytest_llmeff.results.runfile import shown_path

    if out.suffix.lower() == ".html":
        fig.write_html(str(out), include_plotlyjs=True, full_html=True)
        return
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise UsageProblem(f"{shown_path(out)}: static export needs Kaleido: pip install \"pytest-llmeff[report]\" "
                           "(or write .html)") from None
    try:
        fig.write_image(str(out))
    except OSError as exc:
        raise StorageError(f"{shown_path(out)}: cannot be written ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - Kaleido's own errors (no browser, a browser that died) are one line
        text = " ".join(str(exc).split())[:300]
        hint = ("Kaleido needs Chrome or Chromium on this machine: apt-get install chromium (or plotly_get_chrome)"
                if "chrome" in text.lower() or "browser" in text.lower() else "Kaleido failed")
        raise UsageProblem(f"{shown_path(out)}: {hint}: {type(exc).__name__}: {text} (or write .html)") from None


def run(args) -> int:
    from pytest_llmeff.report.figures import require_plotly, scatter_figure
    from pytest_llmeff.results.runfile import read_run, shown_path

    out = Path(args.output)
    if out.suffix.lower() not in SUFFIXES:
        raise UsageProblem(f"-o {shown_path(out)}: the suffix {out.suffix or '(none)'!r} is not allowed; give "
                           f"{', '.join(SUFFIXES)}")
    check_output(out)
    require_plotly()
    loaded = read_run(Path(args.run))
    records = [r for r in loaded.benchmarks if args.group is None or r.group == args.group]
    if not records:
        groups = sorted({r.group or "(none)" for r in loaded.benchmarks})
        raise UsageProblem(f"{shown_path(args.run)}: no benchmark in group {args.group!r}; groups: "
                           f"{', '.join(groups) or 'none'}")
    held = sorted({m for r in records for m in r.metrics})
    for option, metric in (("--x", args.x), ("--y", args.y)):
        if metric not in held:
            what = "is not a metric" if metric not in METRICS else "is not in this run"
            raise UsageProblem(f"{shown_path(args.run)}: {option} {metric!r} {what}; the run holds: "
                               f"{', '.join(held)}")
    fig = scatter_figure(records, args.x, args.y)
    _export(fig, out)
    print(f"wrote {shown_path(out)}")
    return 0
