"""pytest-llmeff's hooks, and only hooks: each one hands its work to the room that does it.

Loaded into every pytest run of an environment where the package is installed, so it imports no torch,
transformers, bitsandbytes, accelerate or pydantic, not even indirectly: heavy imports happen inside fixtures.
The usage family of ``errors`` becomes ``pytest.UsageError`` here, in ``pytest_configure``, and nowhere else.
"""

from __future__ import annotations

import pytest

from pytest_llmeff.session import startup
from pytest_llmeff.config.options import add_options
from pytest_llmeff.errors import LlmeffUsageError
from pytest_llmeff.session.fixtures import (RECORDS_KEY, SESSION_KEY, energy_tracker, flops_counter, llm_benchmark,
                                    llm_model, llmeff_variant)
from pytest_llmeff.config.variants import MARKER_HELP, MARKER_NAME, Variant, sanitize_id

__all__ = ["energy_tracker", "flops_counter", "llm_benchmark", "llm_model", "llmeff_variant"]

_BENCH_FIXTURES = ("llm_benchmark", "llm_model", "llmeff_variant")
_RESTORE_KEY = pytest.StashKey[object]()


def pytest_addhooks(pluginmanager):
    from pytest_llmeff import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser):
    add_options(parser)


def _session(config):
    return config.stash.get(SESSION_KEY, None)


class _ReportCollector:
    """Registered at configure time so it sees reports in plain and xdist sessions alike."""

    def __init__(self, config):
        self.config = config

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report):
        session = _session(self.config)
        if session is None or startup.is_worker(self.config):
            return
        if report.when == "teardown":
            session.ending.finished.add(report.nodeid)
        before = len(session.records)
        _gather(session, report)
        if self.config.get_verbosity() > 0:
            from pytest_llmeff.bench.record import one_line

            for record in session.records[before:]:
                session.progress(one_line(record))


def _gather(session, report) -> None:
    """Records and load events carried by a test report (from this process or an xdist worker)."""
    raws, loads = getattr(report, "llmeff_records", None), getattr(report, "llmeff_loads", None)
    if getattr(report, "llmeff_gate", None):
        session.gate_failures.append((report.nodeid, str(report.longrepr)))
    if getattr(report, "llmeff_shard", None) and session.shard_info is None:  # an xdist worker's shard
        from pytest_llmeff.results.schema import ShardInfo

        session.shard_info = ShardInfo.model_validate_json(report.llmeff_shard)
    if not raws and not loads:
        return
    from pytest_llmeff.results.schema import BenchmarkRecord, LoadEvent

    for raw in raws or []:
        record = BenchmarkRecord.model_validate_json(raw)
        record.outcome = report.outcome if report.outcome in ("passed", "failed", "skipped") else "unknown"
        session.records.append(record)
    session.loads.extend(LoadEvent.model_validate_json(raw) for raw in loads or [])


def pytest_configure(config):
    config.addinivalue_line("markers", MARKER_HELP)
    try:
        session = startup.start_session(config)
    except LlmeffUsageError as exc:  # THE place where a bad request becomes a usage error (exit 4)
        raise pytest.UsageError(f"pytest-llmeff: {exc}") from None
    config.stash[SESSION_KEY] = session
    config.stash[_RESTORE_KEY] = startup.catch_sigterm(session) if not startup.is_worker(config) else None
    config.pluginmanager.register(_ReportCollector(config), "llmeff-report-collector")
    if startup.is_worker(config):
        from pytest_llmeff.scale.xdist_gpu import pin

        pin(config.workerinput)  # one GPU per worker, before anything starts CUDA
    elif config.pluginmanager.hasplugin("xdist") and getattr(config.option, "numprocesses", None):
        from pytest_llmeff.scale.xdist_sched import ControllerPlugin  # imports xdist: only when it runs workers

        config.pluginmanager.register(ControllerPlugin(config, session.progress), "llmeff-xdist")


def pytest_unconfigure(config):
    from pytest_llmeff.metrics import reset_user_metrics

    session = _session(config)
    if session is not None:
        startup.close_events(session)
    if session is not None and session.turnstile is not None:
        session.turnstile.finish()  # a session that ended early must not leave its partner waiting
    if session is not None and session.ab is not None:
        session.ab.cleanup()  # --llmeff-ab: no baseline process or worktree outlives the session
    restore = config.stash.get(_RESTORE_KEY, None)
    if restore is not None:
        restore()
    reset_user_metrics()


def pytest_generate_tests(metafunc):
    marks = list(metafunc.definition.iter_markers(MARKER_NAME))
    if not marks:
        return
    from pytest_llmeff.session.marker import expand_markers

    variants = expand_markers([(tuple(m.args), dict(m.kwargs)) for m in marks])
    if "llmeff_variant" not in metafunc.fixturenames:
        metafunc.fixturenames.append("llmeff_variant")
    metafunc.parametrize("llmeff_variant", variants, ids=[v.id for v in variants], indirect=True)


def _variant_of(item):
    callspec = getattr(item, "callspec", None)
    variant = callspec.params.get("llmeff_variant") if callspec is not None else None
    return variant if isinstance(variant, Variant) else None


def _is_benchmark(item) -> bool:
    if item.get_closest_marker(MARKER_NAME) is not None:
        return True
    return any(name in getattr(item, "fixturenames", ()) for name in _BENCH_FIXTURES)


@pytest.hookimpl(tryfirst=True)  # before xdist's loadgroup reads the xdist_group marks
def pytest_collection_modifyitems(session, config, items):
    options = config.stash[SESSION_KEY].options
    if options.only:
        dropped = [i for i in items if not _is_benchmark(i)]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [i for i in items if _is_benchmark(i)]
    if options.skip:
        mark = pytest.mark.skip(reason="benchmarks skipped by --llmeff-skip")
        for item in items:
            if _is_benchmark(item):
                item.add_marker(mark)
    if options.shard is not None:  # before the xdist groups and the order: this shard's tests only
        from pytest_llmeff.scale import shard_session

        shard_session.apply(config.stash[SESSION_KEY], items, _variant_of, _is_benchmark,
                            lambda dropped: config.hook.pytest_deselected(items=dropped))
    if config.pluginmanager.hasplugin("xdist"):
        for item in items:
            variant = _variant_of(item)
            if variant is not None:
                item.add_marker(pytest.mark.xdist_group(name="llmeff-" + sanitize_id(variant.load_key)))
    if options.reorder:
        from pytest_llmeff.session.ordering import reorder

        items[:] = reorder([(item, _variant_of(item)) for item in items])
    if startup.is_worker(config) and config.workerinput.get("llmeff_scopes_dir"):
        from pytest_llmeff.scale.xdist_units import write_units  # for the controller's variant scheduler

        write_units(config.workerinput, items, _variant_of, _is_benchmark)


def pytest_collection_finish(session):
    """The benchmark tests this process will run (after every deselection): what a complete run finishes, and
    the number of comparisons the gate's false-alarm budget is split over."""
    state = _session(session.config)
    if state is None:
        return
    benchmarks = [i for i in session.items if _is_benchmark(i)]
    # the false-alarm budget: every process (xdist workers judge their own tests) learns the run's comparisons
    state.baseline.plan_family([(i.nodeid, _variant_of(i)) for i in benchmarks])
    if not startup.is_worker(session.config):
        state.ending.expected = [i.nodeid for i in benchmarks]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Events emitted while a test runs (its loads, rounds, verdicts) name it and its variant."""
    from pytest_llmeff import events

    variant = _variant_of(item)
    with events.in_test(item.nodeid, variant.id if variant is not None else None):
        return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Under torchrun / accelerate launch the ranks start each benchmark together (data-parallel replicas)."""
    session = _session(item.config)
    if session is not None and session.launch is not None and _is_benchmark(item):
        from pytest_llmeff.scale import ranks

        ranks.barrier()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    session = _session(item.config)
    if session is None:
        return report
    loads = session.take_new_loads()
    if loads:
        report.llmeff_loads = [e.model_dump_json() for e in loads]
    if session.shard_info is not None and startup.is_worker(item.config):
        from pytest_llmeff.scale.shard_session import info_payload

        report.llmeff_shard = info_payload(session)
    records = item.stash.get(RECORDS_KEY, []) if call.when == "call" else []
    if records:
        from pytest_llmeff.bench.record import payload

        report.llmeff_records = payload(records)
        session = _session(item.config)
        strict = session is not None and session.baseline is not None and session.baseline.fails_inconclusive
        failed = [r for r in records if r.gate_failed or (strict and r.gate_inconclusive)]
        if failed and report.passed:
            # a regression, a failed limit, or (under a lockstep pair by default) a comparison that could not
            # resolve its threshold fails the test itself: no traceback, a section, its own letter
            from pytest_llmeff.report.gate_text import failure_text

            text = failure_text(failed, inconclusive=strict)
            report.outcome = "failed"
            report.longrepr = text
            report.sections.append(("llmeff gate", text))
            report.llmeff_gate = "regressed" if any(r.gate_failed for r in failed) else "inconclusive"
    return report


def pytest_report_teststatus(report, config):
    if getattr(report, "llmeff_gate", None) and report.when == "call":
        if report.llmeff_gate == "inconclusive":
            return "inconclusive", "?", ("INCONCLUSIVE", {"red": True})
        return "regressed", "R", ("REGRESSED", {"red": True})
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    state = _session(config)
    if state is None:
        return
    state.close()
    if state.turnstile is not None:
        state.turnstile.finish()  # the partner goes on (or finishes) without waiting for our report
    if state.launch is not None:  # torchrun / accelerate launch: rank 0 gathers every rank's records
        from pytest_llmeff.scale import ranks

        ranks.gather(state, state.launch)
    if startup.is_worker(config) or not state.options.report:
        return
    if exitstatus == pytest.ExitCode.INTERRUPTED and not state.ending.interrupted:
        state.ending.interrupted, state.ending.reason = True, "interrupted (Ctrl-C)"
    elif not state.ending.complete and state.ending.reason is None:
        stopped = session.shouldfail or session.shouldstop
        state.ending.reason = ("collected only (--collect-only)" if config.option.collectonly
                               else f"stopped early: {stopped}" if isinstance(stopped, str) else "stopped early")
    startup.finish_session(state, config)
    if state.shard_info is not None and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK  # a shard left empty by the split (more shards than variants)
    if state.outputs.errors and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)  # the llmeff section comes last, after other plugins' (pytest-benchmark)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = _session(config)
    if state is None or startup.is_worker(config) or (state.launch is not None and state.launch.rank != 0):
        return
    from pytest_llmeff.report.summary import regression_lines, summary_lines

    if state.gate_failures:
        terminalreporter.section("llmeff regressions", red=True)
        for text, _ in regression_lines(state.gate_failures):
            terminalreporter.write_line(text)
    lines = summary_lines(state)
    if state.options.report:
        terminalreporter.section("llmeff")
    for text, colour in lines:
        terminalreporter.write_line(text, **({colour: True} if colour else {}))
