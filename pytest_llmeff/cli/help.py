"""The ``llmeff`` command's help texts: what ``llmeff --help`` says and each command's examples (an argparse
epilog). Commands that live in their own module (``export``, ``init`` ...) bring their own; this file holds the
words for the commands defined in ``cli.py`` and the overview, so cli.py keeps only the parsing."""

from __future__ import annotations

import argparse

OVERVIEW = """commands (llmeff COMMAND --help for each one's options and examples):
  llmeff init --model smollm2-135m              scaffold benchmarks/test_llm.py, the ini section, a CI workflow
  llmeff show .llmeff/runs/*.json                the comparison table of stored runs
  llmeff list                                    run files and stored baselines
  llmeff compare BASE.json CURRENT.json          verdicts (exit 1 on a regression)
  llmeff history --benchmark test_generation     a metric over the stored runs, with change points
  llmeff summary RUN.json                       rankings, Pareto front, efficiency score, outlier rounds
  llmeff report RUN.json -o report.html         the self-contained HTML report (--baseline BASE.json)
  llmeff plot RUN.json --x M --y M -o c.svg     one chart: SVG, PNG, PDF or HTML
  llmeff export RUN.json --format csv -o r.csv   CSV, markdown, pytest-benchmark JSON or HTML
  llmeff schema                                  the JSON Schema of run files

Run the benchmarks themselves with pytest: pytest benchmarks/ --llmeff-report
exit status: 0 done, 1 a regression (compare) or nothing found, 2 a usage error: ONE line on stderr, never a
traceback."""

EXAMPLES = {
    "show": """examples:
  llmeff show .llmeff/runs/*.json
  llmeff show .llmeff/baselines/*/0001_*.json""",
    "list": """examples:
  llmeff list                      # .llmeff/runs and .llmeff/baselines
  llmeff list ci-artifacts/        # any folder, searched recursively""",
    "compare": """examples:
  llmeff compare base.json current.json
  llmeff compare base.json current.json --fail throughput_tok_s:5%,ttft_s:10%,peak_mem_bytes:64MB --alpha 0.01
exit status: 0 no regression, 1 a regression, 2 a bad file or option.""",
    "history": """examples:
  llmeff history
  llmeff history --benchmark test_generation --metric ttft_s
  llmeff history --storage ci-cache/.llmeff/baselines --penalty 5""",
    "merge": """examples:
  llmeff merge shard-*/.llmeff/runs/*.json -o merged.json
  llmeff merge a.json b.json -o merged.json --force""",
    "schema": """examples:
  llmeff schema > run-1.schema.json
  llmeff schema | python -m json.tool | less""",
}


def add_help(parser: argparse.ArgumentParser, subparsers) -> None:
    """Give ``parser`` the overview and each command of ``subparsers`` that has no epilog its examples."""
    listed = {line.split()[1] for line in OVERVIEW.splitlines() if line.startswith("  llmeff ")}
    others = [f"  llmeff {a.dest:<40} {a.help}" for a in subparsers._choices_actions if a.dest not in listed]
    head, tail = OVERVIEW.split("\n\nRun the benchmarks", 1)
    parser.epilog = "\n".join([head, *others]) + "\n\nRun the benchmarks" + tail
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for name, sub in subparsers.choices.items():
        if name in EXAMPLES and not sub.epilog:
            sub.epilog = EXAMPLES[name]
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
