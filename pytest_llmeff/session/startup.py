"""Starting a session: options, checks, the baseline and the lockstep pair, SIGTERM; and the session's end
products (the run, its outputs). The pytest-facing layer just under ``plugin.py``: it reads the pytest config,
but raises only ``errors`` (``plugin.py`` turns the usage family into ``pytest.UsageError`` in one place).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Optional

import pytest

from pytest_llmeff import events
from pytest_llmeff.bench.record import run_time_s
from pytest_llmeff.errors import UsageProblem
from pytest_llmeff.gate.baseline import Baseline
from pytest_llmeff.lockstep import ab
from pytest_llmeff.lockstep.turnstile import Turnstile
from pytest_llmeff.measure.carbon import intensity_g_per_kwh
from pytest_llmeff.measure.machine import GPU_UNREADABLE, commit_info, gpu_line, versions
from pytest_llmeff.measure.machine import machine_info as gather
from pytest_llmeff.measure.meters import check_backend
from pytest_llmeff.metrics import register_metric
from pytest_llmeff.report.outputs import Outputs, check_destinations, write_outputs
from pytest_llmeff.report.progress import ProgressLines
from pytest_llmeff.scale.launcher import detect
from pytest_llmeff.scale.ranks import check, quiet_options, start
from pytest_llmeff.scale.shard_session import load_costs
from pytest_llmeff.session.state import LlmeffSession, utc_now
from pytest_llmeff.config.options import LLMEFF_DIR, resolve


def is_worker(config) -> bool:
    """True in a pytest-xdist worker (it measures; the controller reports)."""
    return hasattr(config, "workerinput")


def progress_writer(config) -> Callable[[str], None]:
    """A line for the terminal at once, also from inside a test (output capture suspended); before the terminal
    reporter exists (at configure time), to stderr. Silent on xdist workers."""

    def write(message: str) -> None:
        if is_worker(config):
            return
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            if reporter is not None:
                reporter.write_line(f"llmeff: {message}")
            else:
                sys.stderr.write(f"llmeff: {message}\n")
                sys.stderr.flush()

    return write


MACHINE_KEY = pytest.StashKey[dict]()


def machine_info(config) -> dict:
    """The machine description, gathered once per session (hooks included): the fingerprint used to find a
    baseline at start and the run file written at the end describe the same machine. GPUs NVML could not read
    are said on the terminal once (``GPU: unreadable (reason)``); the run file keeps the reason."""
    info = config.stash.get(MACHINE_KEY, None)
    if info is None:
        info = config.hook.pytest_llmeff_generate_machine_info(config=config)
        if info is None:
            info = gather()
        config.hook.pytest_llmeff_update_machine_info(config=config, machine_info=info)
        config.stash[MACHINE_KEY] = info
        if info.get(GPU_UNREADABLE):
            progress_writer(config)(f"{gpu_line(info)}; this machine's baselines are filed under a fingerprint "
                                    "marked gpu-unreadable, not under its GPU one")
    return info


def storage_for(session: LlmeffSession, machine: Optional[dict]):
    """The ``Storage`` of the session's ``--llmeff-storage`` root, searching ``machine``'s fingerprint first."""
    from pytest_llmeff.results.storage import Storage, machine_fingerprint

    root = session.options.storage
    root = root if root.is_absolute() else session.rootdir / root
    return Storage(root, machine_fingerprint(machine) if machine is not None else None)


def start_session(config) -> LlmeffSession:
    """Resolve and check every option, load the baseline, join the lockstep pair. Raises ``LlmeffUsageError``
    (one line) for anything the user must change; nothing has run yet then."""
    options = resolve(config)
    launch = _launch(config, options)
    if launch is not None:
        options = quiet_options(options, launch)  # rank 0 alone writes
    worker = is_worker(config)
    if options.energy in ("rapl", "nvml") and not worker:
        problem = check_backend(options.energy, options.powercap_root)
        if problem:
            raise UsageProblem(problem)
    if options.country_explicit:
        intensity_g_per_kwh(options.country_iso_code)  # raises UnknownCountry
    for specs in config.hook.pytest_llmeff_metric_specs(config=config):
        for spec in specs or []:
            try:
                register_metric(spec)
            except ValueError as exc:
                raise UsageProblem(str(exc)) from None
    rootdir = Path(config.rootpath)
    if not worker:
        check_destinations(options, rootdir)
    ab_run = None
    if options.ab and not worker:
        ab_run, options = _start_ab(config, options, rootdir)
    session = LlmeffSession(options, progress_writer(config) if launch is None or launch.rank == 0
                            else (lambda message: None), rootdir)  # rank 0 alone prints
    session.launch = launch
    session.ab = ab_run
    try:
        open_events(session, config)
    except BaseException:
        if session.ab is not None:
            session.ab.cleanup()
        raise
    if options.compare or options.save or options.role == "candidate":
        from pytest_llmeff.results.storage import check_name

        if options.save:
            check_name(options.save)
        session.baseline = Baseline.from_options(options, storage_for(session, machine_info(config)))
    if launch is not None:
        start(session, launch)  # pins this rank's GPU, joins the process group, shares the meters
    if options.shard is not None:
        session.shard_previous = load_costs(options, rootdir)
    if options.interleave is not None:
        try:
            session.turnstile = session.baseline.turnstile = _join_pair(config, session)
        except BaseException:
            if session.ab is not None:
                session.ab.cleanup()
            raise
    return session


def open_events(session: LlmeffSession, config) -> None:
    """Open the session's event stream: the live progress lines (not on xdist workers) and the JSON lines file
    of ``--llmeff-log-json`` (emptied by the session's first process, appended to by pytest-xdist workers)."""
    worker = is_worker(config)
    listeners: list = [] if worker else [ProgressLines(session.progress, verbose=config.get_verbosity() > 0)]
    path = session.options.log_json
    if path is not None:
        path = path if path.is_absolute() else session.rootdir / path
        try:
            listeners.append(events.JsonLines(path, fresh=not worker))
        except OSError as exc:
            raise UsageProblem(f"--llmeff-log-json={session.options.log_json} cannot be written: "
                               f"{exc.strerror or exc}") from None
    session.events = events.EventLog(listeners)
    events.install(session.events)
    if not worker:
        events.emit("session_start", args=list(config.invocation_params.args), rootdir=str(session.rootdir),
                    started_at=session.started_at, log_json=str(path) if path else None)


def close_events(session: LlmeffSession) -> None:
    """The last event (``session_end``) and the log closed; a log file that failed to write says so once."""
    log = session.events
    if log is None:
        return
    ending = session.ending
    events.emit("session_end", records=len(session.records), interrupted=ending.interrupted,
                complete=ending.complete, reason=ending.reason,
                json_path=str(session.outputs.json_path) if session.outputs and session.outputs.json_path else None)
    problems = [p for p in (getattr(listener, "problem", None) for listener in log.listeners) if p]
    log.close()
    events.install(None)
    session.events = None
    for problem in problems:
        session.progress(problem)


def _launch(config, options):
    """This process's rank under torchrun / accelerate launch (``launcher.Launch``), or None. UsageProblem for
    a launch combined with pytest-xdist or a lockstep pair."""
    import os

    launch = detect(os.environ)
    if launch is None:
        if options.parallel == "tensor":
            raise UsageProblem("--llmeff-parallel=tensor splits each model over the ranks of a launch, and this "
                               "is a single process (WORLD_SIZE is not set, or 1); start it with torchrun "
                               "--nproc-per-node N -m pytest ... (N >= 2) or accelerate launch")
        return None

    check(config, launch)
    if options.ab or options.interleave:
        raise UsageProblem(f"{launch.launcher} runs every benchmark on {launch.world_size} ranks at once; a "
                           "lockstep pair (--llmeff-ab, --llmeff-interleave) takes turns between two single "
                           "processes: run it without the launcher")
    return launch


def _start_ab(config, options, rootdir: Path):
    """``--llmeff-ab``: check out the ref, start the baseline run there, and make this run the candidate of the
    pair. Returns ``(AbRun, options)``."""
    import dataclasses

    if config.getoption("numprocesses", None):
        raise UsageProblem(f"--llmeff-ab={options.ab} takes turns between two single processes; run it without "
                           "pytest-xdist's -n")
    params = config.invocation_params
    run = ab.prepare(options.ab, rootdir, Path(params.dir), rootdir / LLMEFF_DIR)
    ab.start_baseline(run, list(params.args), Path(params.dir), options.ab_python)
    progress_writer(config)(f"ab: baseline {options.ab} = {run.commit[:12]} started in {run.worktree} "
                            f"(log {run.log_path})")
    return run, dataclasses.replace(options, interleave=run.pair_dir, role="candidate")


def _join_pair(config, session: LlmeffSession):
    """Join the lockstep pair (blocks the candidate until the baseline's first round is done)."""
    if is_worker(config) or config.getoption("numprocesses", None):
        raise UsageProblem("--llmeff-interleave takes turns between two single processes; run it without "
                           "pytest-xdist's -n")
    timeout_s = session.options.interleave_timeout_s
    turnstile = Turnstile(session.options.interleave, session.options.role, start_timeout_s=timeout_s,
                          notify=session.progress, partner_pid=session.ab.pid() if session.ab else None)
    if turnstile.role == "candidate":
        session.progress(f"interleave: waiting for the baseline's first round in {turnstile.directory} (going on "
                         f"alone if it has not started within {timeout_s:g} s)")
    turnstile.start()
    return turnstile


def catch_sigterm(session: LlmeffSession) -> Callable[[], None]:
    """Turn the first SIGTERM (what CI runners send on a timeout) into KeyboardInterrupt, so pytest ends the
    session as on Ctrl-C (exit 2) and the finished benchmarks are written. Only where nobody else handles
    SIGTERM and only in the main thread. Returns the function that restores the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        return lambda: None

    def on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        session.ending.interrupted = True
        session.ending.reason = "interrupted (SIGTERM)"
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    return restore


def build_run(session: LlmeffSession, config):
    """The session's ``Run``: what finished, and how the session ended."""
    from datetime import datetime

    from pytest_llmeff.results.schema import CommitInfo, MachineInfo, Run

    t = session.turnstile
    ending = session.ending
    finished_at = utc_now()
    session_s = (datetime.fromisoformat(finished_at) - datetime.fromisoformat(session.started_at)).total_seconds()
    return Run(
        started_at=session.started_at, finished_at=finished_at, time_s=run_time_s(session.records, session_s), machine=MachineInfo(**machine_info(config)),
        versions=versions(), commit=CommitInfo(**commit_info()), pytest_args=list(config.invocation_params.args),
        loads=session.loads, baseline=session.baseline.label(),
        interleave=None if t is None else {"dir": str(t.directory), "role": t.role, "turns": t.turns,
                                           "alone_reason": t.alone_reason},
        benchmarks=session.records, interrupted=ending.interrupted, complete=ending.complete,
        stop_reason=ending.reason if not ending.complete else None, unfinished=ending.unfinished,
        shard=session.shard_info, distributed=session.distributed,
    )


def finish_session(session: LlmeffSession, config) -> None:
    """Build the run and write everything the options ask for into ``session.outputs`` (never raises for a
    file that cannot be written: the problem is one line there)."""
    ab_lines, ab_problems = session.ab.finish(hurry=not session.ending.complete) if session.ab else ([], [])
    try:
        run = build_run(session, config)
    except Exception as exc:  # a run that cannot be built must be said, not crash the session
        session.outputs = Outputs(errors=[f"could not build the run: {type(exc).__name__}: {exc}"])
        return
    comparison = session.baseline.comparison_lines(run)
    storage = storage_for(session, run.machine.model_dump())
    session.outputs = write_outputs(run, session.options, session.rootdir, storage, comparison)
    session.outputs.comparison = comparison
    session.outputs.time_s = dict(run.time_s) if run.benchmarks else {}
    session.outputs.lines += ab_lines
    session.outputs.notices += ab_problems
