"""``llmeff export RUN.json --format FORMAT [-o PATH]``: a stored run in another format, through the same writers
the plugin uses at the end of a session (``report/csv_table.py``, ``report/markdown.py``,
``report/benchmark_json.py``, ``report/html.py``), so a file exported later equals the one ``--llmeff-csv`` & co.
would have written (html: the report of ``llmeff report`` without a baseline; needs the ``report`` extra).

Without ``-o`` the text goes to stdout. Errors are ``LlmeffError`` s with one line naming the file (the CLI prints
them and exits 2): a run file that is missing, corrupt or not a run (``results.read_run``), an output path that
cannot be written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional

from pytest_llmeff.cli.report import check_output
from pytest_llmeff.errors import StorageError
from pytest_llmeff.files import atomic_write_text
from pytest_llmeff.report.outputs import verdicts_by_benchmark

EXAMPLES = """examples:
  llmeff export .llmeff/runs/run.json --format csv -o results.csv
  llmeff export run.json --format markdown >> "$GITHUB_STEP_SUMMARY"
  llmeff export run.json --format pytest-benchmark -o bench.json   # github-action-benchmark, Bencher
  llmeff export run.json --format html -o report.html   # as llmeff report (which also takes --baseline)

exit status: 0 written; 2 a missing, corrupt or foreign run file, an unknown format or an unwritable -o PATH
(one line on stderr)."""


def _markdown(run, source: str) -> str:
    from pytest_llmeff.report.markdown import render_markdown

    return render_markdown(run.benchmarks, verdicts=verdicts_by_benchmark(run))


def _csv(run, source: str) -> str:
    from pytest_llmeff.report.csv_table import render_csv

    return render_csv(run.benchmarks, verdicts=verdicts_by_benchmark(run))


def _pytest_benchmark(run, source: str) -> str:
    from pytest_llmeff.report.benchmark_json import render_pytest_benchmark_json

    return render_pytest_benchmark_json(run)


def _html(run, source: str) -> str:
    from pytest_llmeff.report.html import render_html  # what llmeff report and --llmeff-html write

    return render_html(run, source=source)


# format name -> (run, the run file's name) -> text
FORMATS: dict[str, Callable[..., str]] = {"csv": _csv, "markdown": _markdown, "pytest-benchmark": _pytest_benchmark,
                                          "html": _html}


def render(run_path: Path, fmt: str) -> str:
    """The run file at ``run_path`` as ``fmt`` text. Raises StorageError (one line) for a bad run file."""
    from pytest_llmeff.results.runfile import read_run, shown_path

    return FORMATS[fmt](read_run(Path(run_path)), shown_path(run_path))


def export(run_path: Path, fmt: str, out: Optional[Path]) -> Optional[Path]:
    """Write the run as ``fmt`` to ``out`` atomically (stdout when None); return the path written."""
    from pytest_llmeff.results.runfile import shown_path

    if out is not None:
        out = Path(out).expanduser()
        check_output(out)  # before rendering: a bad path costs nothing
    text = render(run_path, fmt)
    if out is None:
        sys.stdout.write(text)
        return None
    try:
        atomic_write_text(out, text)
    except OSError as exc:
        raise StorageError(f"-o {shown_path(out)}: cannot be written ({exc.strerror or exc})") from None
    return out


def register(sub) -> None:
    """Add the ``export`` command to the CLI's subparsers."""
    p = sub.add_parser("export", help="write a run file as CSV, markdown, pytest-benchmark JSON or HTML",
                       description="Write a stored run in another format, with the writers the plugin uses "
                                   "(--llmeff-csv, --llmeff-markdown, --llmeff-benchmark-json, --llmeff-html).",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN.json", help="a run file (.llmeff/runs/*.json or a stored baseline)")
    p.add_argument("--format", "-f", required=True, choices=sorted(FORMATS), help="the output format")
    p.add_argument("-o", "--output", metavar="PATH", default=None, help="write here (default: stdout)")
    p.set_defaults(handler=run)


def run(args) -> int:
    written = export(Path(args.run), args.format, Path(args.output) if args.output else None)
    if written is not None:
        print(f"{args.format} written to {written}", file=sys.stderr)
    return 0
