"""pytest-llmeff's hooks, and only hooks.

Loaded into every pytest run of an environment where the package is installed, so it imports no torch,
transformers, bitsandbytes or accelerate, not even indirectly: heavy imports happen inside fixtures.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

from pytest_llmeff import config as llmeff_config
from pytest_llmeff.fixtures import (RECORDS_KEY, SESSION_KEY, energy_tracker, flops_counter, llm_benchmark,
                                    llm_model, llmeff_variant)
from pytest_llmeff.variants import MARKER_HELP, MARKER_NAME, InvalidMarker, Variant, expand, sanitize_id

__all__ = ["energy_tracker", "flops_counter", "llm_benchmark", "llm_model", "llmeff_variant"]

_BENCH_FIXTURES = ("llm_benchmark", "llm_model", "llmeff_variant")
MACHINE_KEY = pytest.StashKey[dict]()


def pytest_addhooks(pluginmanager):
    from pytest_llmeff import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser):
    llmeff_config.add_options(parser)


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def _progress_writer(config):
    """A line for the terminal at once, also from inside a test (output capture suspended); before the terminal
    reporter exists (at configure time), to stderr."""

    def write(message: str) -> None:
        if _is_worker(config):
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


def _controller_logreport(config, report) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is None or _is_worker(config):
        return
    before = len(session.records)
    session.add_report_payload(report)
    if getattr(report, "llmeff_gate", None):
        session.gate_failures.append((report.nodeid, str(report.longrepr)))
    if config.get_verbosity() > 0 and len(session.records) > before:
        from pytest_llmeff.session import one_line

        for record in session.records[before:]:
            session.progress(one_line(record))


class _ReportCollector:
    """Registered at configure time so it sees reports in plain and xdist sessions alike."""

    def __init__(self, config):
        self.config = config

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report):
        _controller_logreport(self.config, report)


def pytest_configure(config):
    config.addinivalue_line("markers", MARKER_HELP)
    try:
        options = llmeff_config.resolve(config)
    except llmeff_config.UsageProblem as exc:
        raise pytest.UsageError(f"pytest-llmeff: {exc}") from None
    if options.skip and options.only:
        raise pytest.UsageError("pytest-llmeff: --llmeff-skip and --llmeff-only exclude each other; give one")
    if options.energy in ("rapl", "nvml") and not _is_worker(config):
        from pytest_llmeff.measure.meters import check_backend

        problem = check_backend(options.energy, options.powercap_root)
        if problem:
            raise pytest.UsageError(f"pytest-llmeff: {problem}")
    if options.country_explicit:
        from pytest_llmeff.measure.carbon import UnknownCountry, intensity_g_per_kwh

        try:
            intensity_g_per_kwh(options.country_iso_code)
        except UnknownCountry as exc:
            raise pytest.UsageError(f"pytest-llmeff: {exc}") from None
    from pytest_llmeff.metrics import register_metric
    from pytest_llmeff.session import LlmeffSession

    for specs in config.hook.pytest_llmeff_metric_specs(config=config):
        for spec in specs or []:
            try:
                register_metric(spec)
            except ValueError as exc:
                raise pytest.UsageError(f"pytest-llmeff: {exc}") from None
    state = LlmeffSession(options, _progress_writer(config), Path(config.rootpath))
    if options.compare or options.save or options.role == "candidate":
        from pytest_llmeff.gate import GateConfigError
        from pytest_llmeff.storage import StorageError, check_name

        try:
            if options.save:
                check_name(options.save)
            state.load_baseline(_machine_info(config))
        except (GateConfigError, StorageError) as exc:
            raise pytest.UsageError(f"pytest-llmeff: {exc}") from None
    if options.interleave is not None:
        _start_interleave(config, state)
    config.stash[SESSION_KEY] = state
    config.pluginmanager.register(_ReportCollector(config), "llmeff-report-collector")


def _start_interleave(config, state) -> None:
    """Join the lockstep pair (blocks the candidate until the baseline's first round is done)."""
    from pytest_llmeff.interleave import InterleaveError, Turnstile

    if _is_worker(config) or config.getoption("numprocesses", None):
        raise pytest.UsageError("pytest-llmeff: --llmeff-interleave takes turns between two single processes; "
                                "run it without pytest-xdist's -n")
    timeout_s = state.options.interleave_timeout_s
    turnstile = Turnstile(state.options.interleave, state.options.role, start_timeout_s=timeout_s,
                          notify=state.progress)
    if turnstile.role == "candidate":
        state.progress(f"interleave: waiting for the baseline's first round in {turnstile.directory} (going on "
                       f"alone if it has not started within {timeout_s:g} s)")
    try:
        turnstile.start()
    except InterleaveError as exc:
        raise pytest.UsageError(f"pytest-llmeff: {exc}") from None
    state.turnstile = turnstile


def pytest_unconfigure(config):
    from pytest_llmeff.metrics import reset_user_metrics

    state = config.stash.get(SESSION_KEY, None)
    if state is not None and state.turnstile is not None:
        state.turnstile.finish()  # a session that ended early must not leave its partner waiting

    reset_user_metrics()


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker(MARKER_NAME)
    if marker is None:
        return
    variants = expand(dict(marker.kwargs), tuple(marker.args))
    if isinstance(variants, InvalidMarker):
        variants = [variants]
    if "llmeff_variant" not in metafunc.fixturenames:
        metafunc.fixturenames.append("llmeff_variant")
    metafunc.parametrize("llmeff_variant", variants, ids=[v.id for v in variants], indirect=True)


def _variant_of(item):
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    return callspec.params.get("llmeff_variant")


def _is_benchmark(item) -> bool:
    if item.get_closest_marker(MARKER_NAME) is not None:
        return True
    return any(name in getattr(item, "fixturenames", ()) for name in _BENCH_FIXTURES)


@pytest.hookimpl(tryfirst=True)  # before xdist's loadgroup reads the xdist_group marks
def pytest_collection_modifyitems(session, config, items):
    options = config.stash[SESSION_KEY].options
    if options.only:
        keep = [i for i in items if _is_benchmark(i)]
        dropped = [i for i in items if not _is_benchmark(i)]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep
    if options.skip:
        mark = pytest.mark.skip(reason="benchmarks skipped by --llmeff-skip")
        for item in items:
            if _is_benchmark(item):
                item.add_marker(mark)
    with_xdist = config.pluginmanager.hasplugin("xdist")
    for item in items:
        variant = _variant_of(item)
        if with_xdist and isinstance(variant, Variant):
            item.add_marker(pytest.mark.xdist_group(name="llmeff-" + sanitize_id(variant.load_key)))
    if options.reorder:
        # group each variant's tests together (stable: first appearance order), so each loads once; a model's
        # quality reference runs before the variants compared against it, so it is not loaded twice
        first_seen: dict[str, int] = {}
        for index, item in enumerate(items):
            variant = _variant_of(item)
            if isinstance(variant, Variant):
                first_seen.setdefault(variant.load_key, index)

        def position(pair):
            index, item = pair
            variant = _variant_of(item)
            if not isinstance(variant, Variant):
                return (index, 0, index, index)
            own = first_seen[variant.load_key]
            ref_key = variant.reference().load_key
            anchor = min(own, first_seen.get(ref_key, own))
            return (anchor, 0 if variant.load_key == ref_key else 1, own, index)

        items[:] = [item for _, item in sorted(enumerate(items), key=position)]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    session = item.config.stash.get(SESSION_KEY, None)
    if session is None:
        return report
    loads = session.take_new_loads()
    if loads:
        report.llmeff_loads = [e.model_dump_json() for e in loads]
    if call.when == "call":
        from pytest_llmeff.session import payload

        records = item.stash.get(RECORDS_KEY, [])
        if records:
            report.llmeff_records = payload(records)
            failed = [r for r in records if r.gate_failed]
            if failed and report.passed:
                # a regression or a failed limit fails the test itself: no traceback, a section, its own letter
                from pytest_llmeff.report.gate_text import failure_text

                text = failure_text(failed)
                report.outcome = "failed"
                report.longrepr = text
                report.sections.append(("llmeff gate", text))
                report.llmeff_gate = "regressed"
    return report


def pytest_report_teststatus(report, config):
    if getattr(report, "llmeff_gate", None) and report.when == "call":
        return "regressed", "R", ("REGRESSED", {"red": True})
    return None


def _machine_info(config) -> dict:
    """The machine description, gathered once per session (hooks included): the fingerprint used to find a
    baseline at start and the run file written at the end describe the same machine."""
    info = config.stash.get(MACHINE_KEY, None)
    if info is None:
        from pytest_llmeff.measure.machine import machine_info

        info = config.hook.pytest_llmeff_generate_machine_info(config=config)
        if info is None:
            info = machine_info()
        config.hook.pytest_llmeff_update_machine_info(config=config, machine_info=info)
        config.stash[MACHINE_KEY] = info
    return info


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    state = config.stash.get(SESSION_KEY, None)
    if state is None:
        return
    state.close()
    if state.turnstile is not None:
        state.turnstile.finish()  # the partner goes on (or finishes) without waiting for our report
    if _is_worker(config) or not state.options.report:
        return
    from pytest_llmeff.measure.machine import commit_info, versions

    try:
        run = state.build_run(_machine_info(config), versions(), commit_info(), list(config.invocation_params.args))
        state.write(run, Path(config.rootpath))
    except Exception as exc:  # a results file that cannot be written must be said, not crash the session
        state.write_error = f"{type(exc).__name__}: {exc}"
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    for problem in state.write_outputs(run, Path(config.rootpath)):
        state.output_errors.append(problem)
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = config.stash.get(SESSION_KEY, None)
    if state is None or _is_worker(config):
        return
    if state.gate_failures:
        terminalreporter.section("llmeff regressions", red=True)
        for nodeid, text in state.gate_failures:
            terminalreporter.write_line(f"{nodeid}", bold=True)
            terminalreporter.write_line(text)
    if not state.options.report:
        if state.records:
            terminalreporter.write_line(f"llmeff: {len(state.records)} benchmark(s) measured; "
                                        "add --llmeff-report for the table and the JSON file")
        return
    from pytest_llmeff.report.terminal import render

    terminalreporter.section("llmeff")
    text = render(state.records)
    terminalreporter.write_line(text or "no benchmarks were recorded")
    if state.json_written is not None:
        terminalreporter.write_line(f"llmeff: results written to {state.json_written}")
    if state.write_error is not None:
        terminalreporter.write_line(f"llmeff: ERROR could not write the results file: {state.write_error}", red=True)
    for line in state.outputs:
        terminalreporter.write_line(f"llmeff: {line}")
    for line in state.output_errors:
        terminalreporter.write_line(f"llmeff: ERROR {line}", red=True)
    for line in state.comparison_lines():
        terminalreporter.write_line(f"llmeff: {line}")
