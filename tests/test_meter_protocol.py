"""The meter interface (``measure.meter.Meter``): every meter implements all of it, and no caller probes a meter
with getattr/hasattr instead of using it."""

from __future__ import annotations

import ast
import inspect
import time
from pathlib import Path

import pytest

import pytest_llmeff
from pytest_llmeff.measure import energy, meters
from pytest_llmeff.measure.conditions import gpu_sharing_warning
from pytest_llmeff.measure.energy import CodeCarbonMeter
from pytest_llmeff.measure.meter import MEMBERS, Measurement, Meter, OffMeter
from pytest_llmeff.measure.nvml import NvmlMeter
from pytest_llmeff.measure.rapl import RaplMeter

METER_CLASSES = (OffMeter, CodeCarbonMeter, RaplMeter, NvmlMeter)
METHODS = ("begin", "end", "gpu_processes", "close")
PACKAGE = Path(pytest_llmeff.__file__).parent


def _fake_powercap(root: Path) -> Path:
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    return root


class _NoDriver:
    """An NVML binding on a machine without the NVIDIA driver."""

    def nvmlInit(self):
        raise RuntimeError("NVML Shared Library Not Found")


def test_members_name_exactly_what_the_protocol_declares():
    declared = {name for name in vars(Meter) if not name.startswith("_")}
    assert declared == set(MEMBERS)
    for name in MEMBERS:  # each member says what it means (units included)
        assert inspect.getdoc(getattr(Meter, name)), name
    assert "seconds" in inspect.getdoc(Meter.resolution_s).lower()


@pytest.mark.parametrize("cls", METER_CLASSES, ids=lambda c: c.__name__)
def test_every_meter_class_defines_every_member_itself(cls):
    missing = [name for name in MEMBERS if name not in vars(cls)]
    assert missing == [], f"{cls.__name__} does not define {missing}"
    for name in METHODS:
        assert callable(vars(cls)[name]), f"{cls.__name__}.{name} is not a method"


def _instances(tmp_path):
    return [OffMeter(), CodeCarbonMeter("USA"), RaplMeter(_fake_powercap(tmp_path / "powercap")),
            NvmlMeter(nvml=_NoDriver())]


def test_every_meter_satisfies_the_runtime_protocol_with_the_documented_types(tmp_path):
    seen = set()
    for meter in _instances(tmp_path):
        try:
            assert isinstance(meter, Meter), type(meter).__name__
            seen.add(type(meter))
            assert isinstance(meter.method, str) and meter.method
            assert isinstance(meter.estimated, bool)
            assert isinstance(meter.resolution_s, float) and meter.resolution_s >= 0
            assert isinstance(meter.fallback_notes, list) and all(isinstance(n, str) for n in meter.fallback_notes)
            assert meter.gpu_processes() == []  # no GPU process here (NVML: no driver)
            start = meter.begin()
            assert isinstance(start, float)
            measured = meter.end(start)
            assert isinstance(measured, Measurement) and measured.duration_s >= 0
        finally:
            meter.close()
        meter.close()  # twice is harmless
    assert seen == set(METER_CLASSES)


def test_a_meter_missing_a_member_is_not_a_meter():
    class NoGpuProcesses:
        method, estimated, resolution_s, fallback_notes = "fake", True, 0.0, []

        def begin(self):
            return time.perf_counter()

        def end(self, start):
            return Measurement()

        def close(self):
            pass

    assert not isinstance(NoGpuProcesses(), Meter)


def test_made_meters_carry_their_resolution_and_fallback_notes(tmp_path):
    off = meters.make_meter("off", "cpu", "USA")
    assert isinstance(off, OffMeter) and off.resolution_s == 0.0 and off.fallback_notes == []
    rapl = meters.make_meter("rapl", "cpu", "USA", str(_fake_powercap(tmp_path / "powercap")))
    assert isinstance(rapl, RaplMeter) and rapl.resolution_s == 0.001 and rapl.estimated is False
    assert RaplMeter(tmp_path / "elsewhere").resolution_s == 0.001  # a class fact, not set by make_meter
    assert NvmlMeter(nvml=_NoDriver()).resolution_s == 0.1 and CodeCarbonMeter().resolution_s == 1.0
    fallback = meters.make_meter("auto", "cpu", "USA", str(tmp_path / "none"))
    assert isinstance(fallback, CodeCarbonMeter)
    assert fallback.fallback_notes == [f"rapl: no powercap directory at {tmp_path / 'none'} (no RAPL driver loaded, "
                                       "not Linux, or a VM or container without it)"]
    fallback.fallback_notes.append("changed by a caller")  # a fresh list: the meter is unchanged
    assert len(fallback.fallback_notes) == 1
    assert CodeCarbonMeter().fallback_notes == []  # not shared between meters


def test_old_homes_still_import():
    assert energy.Measurement is Measurement and meters.Measurement is Measurement
    assert meters.OffMeter is OffMeter
    from pytest_llmeff.errors import MeterUnavailable

    assert meters.MeterUnavailable is MeterUnavailable


# --- no probing ---------------------------------------------------------------------------------------------
PROBES = {"getattr", "hasattr", "setattr", "delattr"}


def meter_probes(source: str, filename: str = "<source>") -> list[str]:
    """``file:line: call`` for each getattr/hasattr/setattr/delattr whose object is a meter (its expression names
    a meter: ``meter``, ``self.meter``, ``session.meters.for_device(d)`` ...)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in PROBES
                and node.args and "meter" in ast.unparse(node.args[0]).lower()):
            found.append((node.lineno, node.col_offset, f"{filename}:{node.lineno}: {ast.unparse(node)}"))
    return [text for _, _, text in sorted(found)]


def test_the_probe_finder_finds_the_old_probes():
    old = ('resolution = float(getattr(meter, "resolution_s", 0.0) or 0.0)\n'
           'for note in getattr(meter, "fallback_notes", []) or []:\n    pass\n'
           'lister = getattr(meter, "gpu_processes", None)\n'
           'ok = hasattr(self.meter, "close")\n'
           'x = getattr(self._nvml, "nvmlInit")\n')  # not a meter
    assert [line.split(": ", 1)[1] for line in meter_probes(old)] == [
        "getattr(meter, 'resolution_s', 0.0)", "getattr(meter, 'fallback_notes', [])",
        "getattr(meter, 'gpu_processes', None)", "hasattr(self.meter, 'close')"]


def test_no_module_probes_a_meter_with_getattr():
    files = sorted(PACKAGE.rglob("*.py"))
    names = {str(f.relative_to(PACKAGE)) for f in files}
    assert {"bench/runner.py", "measure/conditions.py", "measure/meters.py"} <= names  # the callers are scanned
    probes = [p for f in files for p in meter_probes(f.read_text(encoding="utf-8"), str(f.relative_to(PACKAGE)))]
    assert probes == [], "use the Meter interface instead of probing:\n" + "\n".join(probes)


# --- callers use the interface ---------------------------------------------------------------------------------
class _SharedGpuMeter:
    """A meter that sees another process on its GPU (or fails to list them)."""

    method, estimated, resolution_s = "fake:gpu", False, 0.1

    def __init__(self, processes=None, error=None):
        self._processes, self._error = processes or [], error

    @property
    def fallback_notes(self) -> list[str]:
        return []

    def begin(self) -> float:
        return time.perf_counter()

    def end(self, start: float) -> Measurement:
        return Measurement(duration_s=time.perf_counter() - start, method=self.method, estimated=False)

    def gpu_processes(self) -> list[dict]:
        if self._error:
            raise self._error
        return list(self._processes)

    def close(self) -> None:
        pass


def test_gpu_sharing_warning_asks_the_meter():
    other = {"device": "cuda:0", "pid": 4242, "used_memory_bytes": 2**30, "name": "python"}
    meter = _SharedGpuMeter([other])
    assert isinstance(meter, Meter)
    assert gpu_sharing_warning(meter) == ("other processes use the measured GPU(s) (pids 4242): timings and energy "
                                          "include their load")
    assert gpu_sharing_warning(_SharedGpuMeter()) is None
    failed = gpu_sharing_warning(_SharedGpuMeter(error=RuntimeError("driver gone")))
    assert failed is not None and "(RuntimeError: driver gone)" in failed  # said, not silently "no sharing"
    assert gpu_sharing_warning(OffMeter()) is None
    assert gpu_sharing_warning(None) is None


def test_each_gpu_gets_its_own_meter_and_the_cpu_one_meter():
    """A cuda:1 variant must not be metered by the cuda:0 meter (each NVML meter reads its own GPU)."""
    from pytest_llmeff.measure.meter_set import MeterSet

    meters = MeterSet("off", "USA")
    assert meters.for_device("cuda:0") is meters.for_device("cuda:0")
    assert meters.for_device("cuda:0") is not meters.for_device("cuda:1")
    assert meters.for_device("cuda") is not meters.for_device("cuda:0")  # device_map=auto: every visible GPU
    assert meters.for_device("cpu") is meters.for_device("cpu")
