"""Where a session's results go: the JSON run file, the stored baseline, and the CI reports (markdown, CSV,
pytest-benchmark JSON, ``$GITHUB_STEP_SUMMARY``).

Rules (nothing is lost):
- every destination is checked when the session starts (``check_destinations``): a path that is a directory,
  lies under a file, or sits in a folder that cannot be written is a usage error before any benchmark runs;
- the run file's default name is unique across concurrent sessions (UTC stamp to the microsecond, process id,
  a random part), and if writing still fails at the end the run goes to a fallback file whose path is printed;
- a run with no benchmarks, or one that did not finish (Ctrl-C, SIGTERM, ``-x``), is never stored as a baseline:
  the stored one is kept, and the lines say so and where the run file is;
- one report failing does not stop the others; each problem is one line naming the file.
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from pytest_llmeff import events
from pytest_llmeff.errors import StorageError, UsageProblem
from pytest_llmeff.files import atomic_write_text
from pytest_llmeff.config.options import DEFAULT_RESULTS_DIR, LlmeffConfig
from pytest_llmeff.config.variants import sanitize_id

if TYPE_CHECKING:
    from pytest_llmeff.results.schema import Run


@dataclass
class Outputs:
    """What the end of the session wrote. ``json_path``: the run file (None if even the fallback failed);
    ``lines``: what was written where; ``notices``: what was deliberately not done (a baseline kept);
    ``errors``: what failed, one line each (they make the session fail); ``comparison``: the baseline's lines
    (renamed, new and missing benchmarks, mismatches); ``time_s``: the run's time per phase."""

    json_path: Optional[Path] = None
    time_s: dict[str, float] = field(default_factory=dict)
    comparison: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _where(path: Path, rootdir: Path) -> Path:
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else Path(rootdir) / path


def _report_paths(options: LlmeffConfig) -> list[tuple[str, Optional[Path]]]:
    return [("--llmeff-json", options.json_path), ("--llmeff-markdown", options.markdown),
            ("--llmeff-csv", options.csv), ("--llmeff-benchmark-json", options.benchmark_json),
            ("--llmeff-log-json", options.log_json)]


def writable_folder_problem(folder: Path) -> Optional[str]:
    """None when files can be created in ``folder`` (made if missing); else why not."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"the folder {existing} is not writable"
    return None


def check_destinations(options: LlmeffConfig, rootdir: Path) -> None:
    """Raise a usage error (one line naming the option and the path) when a file this session will write
    cannot be written; run at configure time, before any benchmark."""
    for option, path in _report_paths(options) + [("--llmeff-html", options.html)]:
        if path is None:
            continue
        target = _where(path, rootdir)
        if target.is_dir():
            raise UsageProblem(f"{option}={path} is a directory; give a file path")
        problem = writable_folder_problem(target.parent)
        if problem:
            raise UsageProblem(f"{option}={path} cannot be written: {problem}")
    storage = _where(options.storage, rootdir)
    if storage.exists() and not storage.is_dir():
        raise StorageError(f"--llmeff-storage={options.storage} is a file; give a folder for stored runs")
    if options.save or options.autosave:
        problem = writable_folder_problem(storage)
        if problem:
            raise StorageError(f"--llmeff-storage={options.storage} cannot hold stored runs: {problem}")


def default_json_path(run: "Run", rootdir: Path) -> Path:
    """``.llmeff/runs/<UTC stamp to the µs>_<pid>-<random>_<model>.json``, unique across concurrent sessions."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    ident = sanitize_id(run.benchmarks[0].variant.model) if run.benchmarks else "empty"
    folder = _where(Path(DEFAULT_RESULTS_DIR), rootdir)
    while True:
        path = folder / f"{stamp}_{os.getpid()}-{secrets.token_hex(3)}_{ident}.json"
        if not path.exists():
            return path


def fallback_path() -> Path:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return Path(tempfile.gettempdir()) / f"llmeff-results-{stamp}-{os.getpid()}.json"


def _write_run_file(run: "Run", options: LlmeffConfig, rootdir: Path, out: Outputs) -> None:
    from pytest_llmeff.results.runfile import write_run

    path = _where(options.json_path, rootdir) if options.json_path else default_json_path(run, rootdir)
    try:
        out.json_path = write_run(run, path)
        events.emit("output", what="run file", path=str(out.json_path))
        return
    except OSError as exc:
        problem = f"could not write the results file {path}: {exc.strerror or exc}"
    fallback = fallback_path()
    try:
        out.json_path = write_run(run, fallback)
        out.errors.append(f"{problem}; the results were written to {fallback} instead")
        events.emit("output", what="run file", path=str(out.json_path), fallback=True)
    except OSError as exc:
        out.errors.append(f"{problem}; the fallback {fallback} failed too ({exc.strerror or exc}): "
                          "the results are in the table above only")


def _why_not_stored(run: "Run") -> Optional[str]:
    if not run.benchmarks:
        return "the run measured no benchmark"
    if not run.complete:
        n = len(run.unfinished)
        return f"the run did not finish ({run.stop_reason or 'stopped early'}; {n} benchmark test(s) unfinished)"
    return None


def _store(run: "Run", options: LlmeffConfig, storage, out: Outputs) -> None:
    """Store the run as a baseline (``--llmeff-save`` / ``--llmeff-autosave``), unless it is empty or partial."""
    wanted = ([f"as {options.save!r}"] if options.save else []) + (["by --llmeff-autosave"] if options.autosave
                                                                  else [])
    if not wanted:
        return
    why = _why_not_stored(run)
    if why is not None:
        kept = f"; the stored {options.save!r} is kept" if options.save else ""
        where = f"; this run is in {out.json_path}" if out.json_path else ""
        out.notices.append(f"not stored {' and '.join(wanted)}: {why}{kept}{where}")
        return
    try:
        for wanted_here, store in ((options.save, lambda: storage.save(run, options.save)),
                                   (options.autosave, lambda: storage.autosave(run))):
            if wanted_here:
                stored = store()
                out.lines.append(f"stored as {stored}")
                events.emit("output", what="stored baseline", path=str(stored))
    except (StorageError, OSError) as exc:
        out.errors.append(f"could not store the run: {exc}")


def verdicts_by_benchmark(run: "Run") -> dict:
    """(nodeid, name) -> {metric: verdict} from the records, as the report writers take them."""
    return {(r.nodeid, r.name): {v.metric: v for v in r.verdicts} for r in run.benchmarks if r.verdicts}


def _write_reports(run: "Run", options: LlmeffConfig, rootdir: Path, comparison: list[str], out: Outputs) -> None:
    from pytest_llmeff.report.benchmark_json import write_pytest_benchmark_json
    from pytest_llmeff.report.csv_table import write_csv
    from pytest_llmeff.report.html import write_html
    from pytest_llmeff.report.markdown import STEP_SUMMARY_ENV, append_github_step_summary, render_markdown

    markdown = None
    if options.markdown is not None:
        markdown = render_markdown(run.benchmarks, verdicts=verdicts_by_benchmark(run), warnings=comparison)
    writers = [
        ("markdown", options.markdown, lambda p: atomic_write_text(p, markdown)),
        ("CSV", options.csv, lambda p: write_csv(p, run.benchmarks, verdicts=verdicts_by_benchmark(run))),
        ("pytest-benchmark JSON", options.benchmark_json, lambda p: write_pytest_benchmark_json(p, run)),
        ("HTML", options.html, lambda p: write_html(  # the report extra: Plotly is imported only here
            p, run, objectives=options.pareto, weights=dict(options.score_weights or ()) or None,
            target_ci_pct=options.target_ci_pct, notes=comparison)),
    ]
    for label, path, write in writers:
        if path is None:
            continue
        target = _where(path, rootdir)
        try:
            write(target)
            out.lines.append(f"{label} written to {target}")
            events.emit("output", what=label, path=str(target))
        except Exception as exc:  # one report failing must not lose the others
            out.errors.append(f"could not write the {label} report {target}: {type(exc).__name__}: {exc}")
    if options.markdown is not None:
        try:
            summary = append_github_step_summary(markdown)
        except OSError as exc:
            out.errors.append(f"could not append to ${STEP_SUMMARY_ENV} ({os.environ.get(STEP_SUMMARY_ENV)}): "
                              f"{exc.strerror or exc}")
        else:
            if summary is not None:
                out.lines.append(f"markdown appended to {summary}")


def write_outputs(run: "Run", options: LlmeffConfig, rootdir: Path, storage, comparison: list[str]) -> Outputs:
    """Write everything the options ask for; never raises for a file that cannot be written (see ``Outputs``).
    ``storage``: a ``storage.Storage``; ``comparison``: the baseline's comparison lines, for the markdown."""
    out = Outputs()
    _write_run_file(run, options, rootdir, out)
    _store(run, options, storage, out)
    _write_reports(run, options, rootdir, comparison, out)
    for line in out.errors:
        events.emit("error", message=line)
    return out
