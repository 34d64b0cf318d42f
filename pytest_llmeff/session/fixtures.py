"""The public fixtures: ``llm_model``, ``energy_tracker``, ``flops_counter`` and ``llm_benchmark``.

This module is imported by plugin.py, so it imports nothing heavy at module level. It is where the run family of
``errors`` meets the user: a variant this machine cannot run is a skip with the reason; a model that cannot load,
memory that does not suffice or a meter that cannot be read fails that test with one line, never a traceback.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence

import pytest

from pytest_llmeff.bench import measure as bench
from pytest_llmeff.bench.measure import default_prompts as prompts
from pytest_llmeff.bench.measure import reference_data
from pytest_llmeff.bench.record import Where, build_record, emit_record_events
from pytest_llmeff.engines.transformers.load import resolve_device
from pytest_llmeff.errors import LlmeffRunError, VariantUnsupported
from pytest_llmeff.measure.energy import EnergyTracker
from pytest_llmeff.measure.flops import FlopsCounter
from pytest_llmeff.config.variants import InvalidMarker, Variant

SESSION_KEY = pytest.StashKey["object"]()
RECORDS_KEY = pytest.StashKey[list]()

_JUNIT_METRICS = ("throughput_tok_s", "ttft_s", "tpot_s", "peak_mem_bytes", "energy_j_per_tok")


def default_prompts() -> list[str]:
    """The prompt set shipped with the package (8 short instructions written for this project)."""
    return prompts()


def _session(request):
    return request.config.stash[SESSION_KEY]


@contextlib.contextmanager
def _one_line(nodeid: str, variant_id: str) -> Iterator[None]:
    """Run-family errors become a skip (unsupported) or a one-line failure; raised outside the except block,
    so the report shows no chained traceback."""
    skip = failure = None
    try:
        yield
    except VariantUnsupported as exc:
        skip = f"{variant_id}: {exc}"
    except LlmeffRunError as exc:
        failure = f"{nodeid}: {exc}"
    if skip is not None:
        raise pytest.skip.Exception(skip, allow_module_level=False) from None
    if failure is not None:
        raise pytest.fail.Exception(failure, pytrace=False) from None


@pytest.fixture
def llmeff_variant(request) -> Variant:
    """The variant of this test, from the ``llm_efficiency`` marker expansion."""
    param = getattr(request, "param", None)
    if isinstance(param, InvalidMarker):
        pytest.fail(f"llm_efficiency marker on {request.node.nodeid}: {param.message}", pytrace=False)
    if not isinstance(param, Variant):
        pytest.fail(f"{request.node.nodeid} uses the llmeff fixtures without @pytest.mark.llm_efficiency(model=...)",
                    pytrace=False)
    return param


@pytest.fixture
def llm_model(llmeff_variant, request):
    """The loaded variant (``.model``, ``.tokenizer``, ``.variant``, ``.generate(prompts, max_new_tokens)``).
    Loaded once per session and variant; at most one variant stays loaded per process. A variant this machine
    cannot run (fp8 without a capable GPU, bitsandbytes missing, weights larger than the free memory ...) is
    skipped with the reason."""
    from dataclasses import replace

    session = _session(request)
    variant = llmeff_variant
    if session.options.trust_remote_code and not variant.trust_remote_code:
        variant = replace(variant, trust_remote_code=True)
    with _one_line(request.node.nodeid, variant.id):
        if variant.quality and not variant.is_reference and "llm_benchmark" in request.fixturenames:
            reference_data(session, variant)  # the reference first, so no variant is loaded twice
        loaded = session.models.get(variant)
    # same weights, this test's variant (batch size and generation settings may differ from the loader's)
    return replace(loaded, variant=variant)


class DeviceEnergyTracker:
    """What the ``energy_tracker`` fixture gives: energy windows on the meter of one device.

    ``device``: the default device (see the fixture). ``measure(device=None)``: a context manager yielding a
    ``Measurement`` filled in at the block's end (``energy_j`` J, ``duration_s`` s, ``method``, ``estimated``,
    ``co2_g`` g, ``devices`` J per device); ``device`` ("cpu", "cuda" or "cuda:N") overrides the default for this
    window. ``meter``: the session's meter for the default device."""

    def __init__(self, session, device: str, where: str):
        self._session = session
        self._where = where
        self.device = device

    @property
    def meter(self):
        with _one_line(self._where, "energy_tracker"):
            return self._session.meters.for_device(self.device)

    def measure(self, device: Optional[str] = None):
        device = self.device if device is None else _energy_device(str(device), self._where)
        with _one_line(self._where, "energy_tracker"):
            meter = self._session.meters.for_device(device)
        return EnergyTracker(meter, self._session.options.country_iso_code).measure()


def _energy_device(device: str, where: str) -> str:
    """``device`` checked and made explicit: ``cpu`` or ``cuda:N``. An unknown name fails the test in one line; a
    CUDA device this machine does not have skips it in one line."""
    import re

    if device == "cpu":
        return device
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match is None:
        pytest.fail(f"{where}: energy_tracker cannot measure device {device!r}: use 'cpu', 'cuda' or 'cuda:N'",
                    pytrace=False)
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if match.group(1) is not None:
        index = int(match.group(1))
    else:
        index = torch.cuda.current_device() if count and torch.cuda.is_initialized() else 0
    if index >= count:
        have = "no CUDA device (torch.cuda.is_available() is False)" if count == 0 else f"{count} CUDA device(s)"
        pytest.skip(f"{where}: energy_tracker cannot measure {device!r}: this machine has {have}")
    return f"cuda:{index}"


def _default_energy_device(request) -> str:
    """The device of the test's variant (``auto`` resolved as the loader does), else the current CUDA device
    when this process has initialised CUDA, else ``cpu``."""
    import sys

    callspec = getattr(request.node, "callspec", None)
    variant = callspec.params.get("llmeff_variant") if callspec is not None else None
    if isinstance(variant, Variant):
        if variant.device != "auto":
            return variant.device

        return resolve_device(variant.device)
    torch = sys.modules.get("torch")  # never imported just to find out
    if torch is not None and torch.cuda.is_initialized() and torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()}"
    return "cpu"


@pytest.fixture
def energy_tracker(request) -> DeviceEnergyTracker:
    """``with energy_tracker.measure() as e:`` -> ``e.energy_j`` (J), ``e.duration_s`` (s), ``e.method``,
    ``e.estimated``, ``e.co2_g`` (g), ``e.devices`` (J per device), read after the block.

    It measures the device the work runs on, with the session's meter for that device kind (``--llmeff-energy``:
    NVML for CUDA, RAPL or the CodeCarbon estimate for the CPU):
    - ``energy_tracker.measure(device="cuda:0")`` names the device of one window ("cpu", "cuda", "cuda:N");
    - otherwise ``energy_tracker.device``: the device of the test's ``llm_efficiency`` variant (``auto`` is CUDA
      when available, as the loader resolves it); in a test without the marker, the current CUDA device when
      this process has already initialised CUDA (``torch.cuda.is_initialized()``), else ``cpu``.
    A CUDA device this machine does not have skips the test with one line; an unknown device name, or an
    explicit ``--llmeff-energy`` backend that cannot read the device, fails it with one line.
    Function scope (it follows each test's variant); the meters are made once per session and shared.
    """
    where = request.node.nodeid
    default = _default_energy_device(request)
    return DeviceEnergyTracker(_session(request), _energy_device(default, where), where)


@pytest.fixture(scope="session")
def flops_counter():
    """``with flops_counter.count() as f:`` -> ``f.flops`` (FlopCounterMode plus formulas for missed ops)."""
    return FlopsCounter()


@pytest.fixture
def llm_benchmark(llm_model, request):
    """Run the standard protocol on this test's variant and record it: ``result = llm_benchmark()``.

    Keyword arguments: ``prompts`` (list of str), ``max_new_tokens``, ``name`` (required from the second call on
    in one test: each benchmark of a test needs its own name). Returns the ``BenchmarkRecord``
    (``result.metrics["throughput_tok_s"].median``). Three steps: measure, record, judge.
    """
    session = _session(request)
    item = request.node
    records = item.stash.setdefault(RECORDS_KEY, [])
    params = {k: v for k, v in item.callspec.params.items() if k != "llmeff_variant"} \
        if hasattr(item, "callspec") else {}

    def run(prompts: Optional[Sequence[str]] = None, *, max_new_tokens: Optional[int] = None,
            name: Optional[str] = None):
        variant: Variant = llm_model.variant
        where = Where(item.nodeid, name or item.name, params, session.options.country_iso_code)
        if any(r.name == where.name for r in records):
            pytest.fail(f"{item.nodeid}: llm_benchmark() already recorded a benchmark named {where.name!r} in this "
                        "test; give each call its own name=, e.g. llm_benchmark(name='long-prompts'), so that no "
                        "two measurements share one key in the run file and the gate", pytrace=False)
        try:
            plan = bench.plan(session.options, variant, prompts, max_new_tokens)
        except ValueError as exc:
            pytest.fail(f"{item.nodeid}: {exc}", pytrace=False)
        with _one_line(item.nodeid, variant.id):
            measured, extra = bench.measure(session, llm_model, plan, _custom_metrics(request.config), where)
        record = build_record(where, variant, plan, llm_model, measured, extra)
        record.interleaved = session.turnstile is not None and not session.turnstile.alone
        session.baseline.judge(record, variant)
        emit_record_events(record)
        for metric in _JUNIT_METRICS:
            if metric in record.metrics:  # junit-xml properties
                item.user_properties.append((f"llmeff_{record.variant.id}_{metric}", record.metrics[metric].median))
        if record.energy is not None:  # how the energy figures above were obtained; "true": a model, not a meter
            item.user_properties.append((f"llmeff_{record.variant.id}_energy_method", record.energy.method))
            item.user_properties.append((f"llmeff_{record.variant.id}_energy_estimated",
                                         "true" if record.energy.estimated else "false"))
        records.append(record)
        return record

    return run


def _custom_metrics(config):
    def call(**kwargs):
        return config.hook.pytest_llmeff_custom_metrics(config=config, **kwargs)

    return call
