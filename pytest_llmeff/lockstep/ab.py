"""``--llmeff-ab=GITREF``: lockstep A/B in one command.

This run is the candidate. The baseline is the same test selection run from a temporary ``git worktree`` of
GITREF, started here as a subprocess, taking turns with this run round by round through the lockstep turnstile
(``interleave.py``), which then judges each benchmark pair by pair (``baseline.py``).

- The baseline imports GITREF's code: the worktree (and its ``src/`` when there is one) goes first on the
  baseline's ``PYTHONPATH``, so an editable install of the user's package cannot leak the candidate's code into it.
- It runs under ``--llmeff-ab-python`` when given (another venv, e.g. to gate a dependency upgrade), else under
  this interpreter.
- Its output goes to a log file under ``.llmeff/ab/<stamp>/`` (the path is printed), with its run file beside it.
  If it fails or selects no benchmarks, the candidate's report says so with the log's last lines; benchmarks
  without a partner are not judged (no verdict on missing pairs).
- The options that write files or gate (``--llmeff-json``, ``--llmeff-save``, ``--llmeff-compare-fail``,
  ``--junitxml``, ...) are not passed to the baseline; the options that change what is measured are.
- The worktree is removed at the end of the session, whatever happened.

Raises ``UsageProblem`` (one line) for what the user must change: not a git repository, an unknown ref, a
working directory outside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from pytest_llmeff.errors import UsageProblem

LOG_TAIL_LINES = 15
BASELINE_EXIT_WAIT_S = 120.0  # how long the candidate waits at its end for the baseline process to exit
# options of this plugin (and pytest) that write files, gate or pair: never handed to the baseline
_NOT_FOR_THE_BASELINE = ("--llmeff-ab", "--llmeff-ab-python", "--llmeff-json", "--llmeff-markdown", "--llmeff-csv",
                         "--llmeff-benchmark-json", "--llmeff-log-json", "--llmeff-save", "--llmeff-autosave",
                         "--llmeff-compare",
                         "--llmeff-compare-fail", "--llmeff-alpha", "--llmeff-interleave", "--llmeff-role",
                         "--llmeff-storage", "--junitxml", "--junit-xml", "--basetemp", "--result-log")
_FLAGS = ("--llmeff-autosave",)  # of the above, the ones that take no value
_OPTIONAL_VALUE = ("--llmeff-compare",)  # takes a value only in the --opt=VALUE form


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def baseline_args(args: Sequence[str]) -> list[str]:
    """The candidate's command-line arguments without those that write files, gate or pair (see
    ``_NOT_FOR_THE_BASELINE``), in both ``--opt=VALUE`` and ``--opt VALUE`` forms."""
    out: list[str] = []
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
            continue
        name = arg.split("=", 1)[0]
        if name in _NOT_FOR_THE_BASELINE:
            if "=" not in arg and name not in _FLAGS and name not in _OPTIONAL_VALUE:
                skip_next = True
            continue
        out.append(arg)
    return out


@dataclass
class AbRun:
    """The baseline side of one ``--llmeff-ab`` session: its worktree, pair directory, log and process."""

    ref: str
    commit: str
    repo: Path
    tmp: Path
    worktree: Path
    pair_dir: Path
    log_path: Path
    json_path: Path
    process: Optional[subprocess.Popen] = None
    _log_handle: Optional[object] = None

    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None

    def finish(self, hurry: bool = False) -> tuple[list[str], list[str]]:
        """Wait for the baseline to exit (at once when ``hurry``: the candidate did not finish; else up to
        ``BASELINE_EXIT_WAIT_S``), remove the worktree, and return ``(lines, problems)`` for the report."""
        lines: list[str] = []
        problems: list[str] = []
        if self.process is not None:
            try:
                rc = self.process.wait(timeout=1.0 if hurry else BASELINE_EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                rc = self.process.wait()
                problems.append(f"ab: the baseline ({self.ref}) was stopped: it had not exited "
                                f"{1.0 if hurry else BASELINE_EXIT_WAIT_S:g} s after the candidate ended")
            if self._log_handle is not None:
                self._log_handle.close()
                self._log_handle = None
            if rc in (0, 1) or problems:  # 1: some baseline test failed, which its pairs already show
                lines.append(f"ab: baseline {self.ref} = {self.commit[:12]} ran in lockstep; log {self.log_path}, "
                             f"run file {self.json_path}")
            else:
                what = "selected no tests" if rc == 5 else f"exited with code {rc}"
                problems.append(f"ab: the baseline ({self.ref} = {self.commit[:12]}) {what}; benchmarks without "
                                f"a baseline pair are not judged; its log: {self.log_path}")
                problems += [f"ab:   {line}" for line in _tail(self.log_path)]
            self.process = None
        self.cleanup()
        return lines, problems

    def cleanup(self) -> None:
        """Stop the baseline if it still runs and remove the worktree and the pair directory (idempotent)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.worktree.exists():
            _git(self.repo, "worktree", "remove", "--force", str(self.worktree))
        shutil.rmtree(self.tmp, ignore_errors=True)
        _git(self.repo, "worktree", "prune")


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def prepare(ref: str, rootdir: Path, invocation_dir: Path, results_dir: Path) -> AbRun:
    """Check the ref and check it out into a temporary worktree. Raises ``UsageProblem`` with one line."""
    if shutil.which("git") is None:
        raise UsageProblem(f"--llmeff-ab={ref} needs git on PATH")
    top = _git(rootdir, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise UsageProblem(f"--llmeff-ab={ref}: {rootdir} is not inside a git repository; run from a checkout")
    repo = Path(top.stdout.strip()).resolve()
    commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if commit.returncode != 0 or not commit.stdout.strip():
        raise UsageProblem(f"--llmeff-ab={ref} is not a commit of {repo} (a branch, tag or commit, e.g. "
                           "origin/main or HEAD~1; fetch it first in a shallow CI checkout)")
    try:
        Path(invocation_dir).resolve().relative_to(repo)
    except ValueError:
        raise UsageProblem(f"--llmeff-ab={ref}: run pytest from inside the repository {repo} (now in "
                           f"{invocation_dir}), so the baseline can run the same paths in its worktree") from None
    tmp = Path(tempfile.mkdtemp(prefix="llmeff-ab-"))
    worktree = tmp / "tree"
    added = _git(repo, "worktree", "add", "--detach", str(worktree), commit.stdout.strip())
    if added.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UsageProblem(f"--llmeff-ab={ref}: git could not check it out: {' '.join(added.stderr.split())[:200]}")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"_{os.getpid()}"
    out_dir = Path(results_dir) / "ab" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    return AbRun(ref=ref, commit=commit.stdout.strip(), repo=repo, tmp=tmp, worktree=worktree,
                 pair_dir=tmp / "pair", log_path=out_dir / "baseline.log", json_path=out_dir / "baseline.json")


def start_baseline(ab: AbRun, args: Sequence[str], invocation_dir: Path, python: Optional[str] = None) -> None:
    """Start the baseline pytest run in the worktree (same selection, measurement options kept), logging to
    ``ab.log_path``. It joins the pair as ``baseline`` in ``ab.pair_dir``."""
    cwd = ab.worktree / Path(invocation_dir).resolve().relative_to(ab.repo)
    if not cwd.is_dir():
        cwd = ab.worktree
    env = dict(os.environ)
    first = [str(ab.worktree)] + ([str(ab.worktree / "src")] if (ab.worktree / "src").is_dir() else [])
    env["PYTHONPATH"] = os.pathsep.join(first + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("PYTEST_XDIST_WORKER", None)
    command = [python or sys.executable, "-m", "pytest", *baseline_args(args), "-p", "no:cacheprovider",
               f"--llmeff-interleave={ab.pair_dir}", "--llmeff-role=baseline", f"--llmeff-json={ab.json_path}"]
    handle = open(ab.log_path, "w")
    handle.write("$ " + " ".join(command) + f"\n(in {cwd})\n")
    handle.flush()
    ab._log_handle = handle
    try:
        ab.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
    except OSError as exc:
        handle.close()
        ab.cleanup()
        raise UsageProblem(f"--llmeff-ab={ab.ref}: the baseline could not start: {exc}") from None
