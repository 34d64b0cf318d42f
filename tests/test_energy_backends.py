"""The real energy meters: RAPL against fake powercap trees, NVML against a fake pynvml (and a real GPU if any)."""

from __future__ import annotations

import os
import pathlib
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_llmeff.measure.nvml import NvmlMeter, integrate_power_j, nvml_available, parse_cuda_visible_devices
from pytest_llmeff.measure.rapl import RaplMeter, counter_delta_uj, discover_zones, rapl_available

RANGE_UJ = 262_143_328_850  # a typical max_energy_range_uj


# --- RAPL: fake powercap trees -----------------------------------------------------------------------------
def make_zone(directory: Path, name: str, energy_uj: int, max_range_uj: int = RANGE_UJ, **files) -> Path:
    directory.mkdir(parents=True)
    (directory / "name").write_text(name + "\n")
    (directory / "energy_uj").write_text(f"{energy_uj}\n")
    (directory / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    for file_name, value in files.items():
        (directory / file_name).write_text(f"{value}\n")
    return directory


def set_uj(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def intel_tree(tmp_path):
    """The sysfs layout: zones nested in the control-type dir intel-rapl/, and symlinked at the top."""
    root = tmp_path / "powercap"
    control = root / "intel-rapl"
    control.mkdir(parents=True)
    zones = {
        "pkg": make_zone(control / "intel-rapl:0", "package-0", 1_000_000),
        "core": make_zone(control / "intel-rapl:0" / "intel-rapl:0:0", "core", 5_000_000),
        "uncore": make_zone(control / "intel-rapl:0" / "intel-rapl:0:1", "uncore", 7_000_000),
        "dram": make_zone(control / "intel-rapl:0" / "intel-rapl:0:2", "dram", 2_000_000),
        "psys": make_zone(control / "intel-rapl:1", "psys", 9_000_000),
    }
    for link, target in [("intel-rapl:0", "intel-rapl/intel-rapl:0"),
                         ("intel-rapl:0:0", "intel-rapl/intel-rapl:0/intel-rapl:0:0"),
                         ("intel-rapl:0:1", "intel-rapl/intel-rapl:0/intel-rapl:0:1"),
                         ("intel-rapl:0:2", "intel-rapl/intel-rapl:0/intel-rapl:0:2"),
                         ("intel-rapl:1", "intel-rapl/intel-rapl:1")]:
        (root / link).symlink_to(target)
    return root, zones


def test_rapl_counts_package_and_dram_exactly_not_core_uncore_psys(intel_tree):
    root, z = intel_tree
    meter = RaplMeter(root)
    assert meter.available() == (True, "rapl: package-0, package-0/dram")
    assert [zone.key for zone in meter.zones] == [
        "package-0", "package-0/core", "package-0/uncore", "package-0/dram", "psys"]  # symlinks deduplicated
    start = meter.begin()
    set_uj(z["pkg"], 13_500_000)      # +12.5 J
    set_uj(z["dram"], 5_250_000)      # +3.25 J
    set_uj(z["core"], 905_000_000)    # +900 J, inside the package: must not be added
    set_uj(z["uncore"], 707_000_000)  # +700 J, inside the package
    set_uj(z["psys"], 509_000_000)    # +500 J, the platform: contains the package
    m = meter.end(start)
    assert m.devices == {"package-0": 12.5, "package-0/dram": 3.25}
    assert m.energy_j == 15.75
    assert m.method == "rapl:package-0,package-0/dram"
    assert m.estimated is False
    assert m.co2_g is None
    assert m.duration_s > 0


def test_rapl_wraparound(tmp_path):
    pkg = make_zone(tmp_path / "intel-rapl:0", "package-0", 262_143_000_000)
    meter = RaplMeter(tmp_path)
    start = meter.begin()
    set_uj(pkg, 1_000_000)  # wrapped: 328_850 uJ to the top, then 1_000_000 uJ
    m = meter.end(start)
    assert m.devices == {"package-0": 1.32885}
    assert m.energy_j == 1.32885
    assert m.estimated is False


def test_counter_delta_uj():
    assert counter_delta_uj(100, 350, 1000) == 250
    assert counter_delta_uj(900, 100, 1000) == 200
    assert counter_delta_uj(900, 100, None) is None  # backwards with no known range: unknowable
    assert counter_delta_uj(5, 5, None) == 0


def test_rapl_sample_catches_two_wraps(tmp_path):
    pkg = make_zone(tmp_path / "intel-rapl:0", "package-0", 9_000_000, max_range_uj=10_000_000)
    meter = RaplMeter(tmp_path)
    start = meter.begin()
    set_uj(pkg, 1_000_000)  # one wrap: +2 J
    meter.sample()
    set_uj(pkg, 500_000)    # another wrap: +9.5 J
    m = meter.end(start)
    assert m.energy_j == 11.5  # without the sample() in between this would read as a single wrap: 1.5 J


def test_rapl_amd_flat_layout_two_packages(tmp_path):
    """amd-rapl naming, subzones only at the top level (no nesting): parents come from the names."""
    p0 = make_zone(tmp_path / "amd-rapl:0", "package-0", 0)
    p1 = make_zone(tmp_path / "amd-rapl:1", "package-1", 0)
    core = make_zone(tmp_path / "amd-rapl:0:0", "core", 0)
    meter = RaplMeter(tmp_path)
    assert {z.key: z.counted for z in meter.zones} == {"package-0": True, "package-1": True, "package-0/core": False}
    start = meter.begin()
    set_uj(p0, 2_000_000)
    set_uj(p1, 3_000_000)
    set_uj(core, 1_500_000)
    m = meter.end(start)
    assert m.devices == {"package-0": 2.0, "package-1": 3.0}
    assert m.energy_j == 5.0
    assert m.method == "rapl:package-0,package-1"


def test_rapl_mmio_duplicate_is_not_counted(tmp_path):
    pkg = make_zone(tmp_path / "intel-rapl:0", "package-0", 0)
    mmio = make_zone(tmp_path / "intel-rapl-mmio:0", "package-0", 0)
    meter = RaplMeter(tmp_path)
    start = meter.begin()
    set_uj(pkg, 4_000_000)
    set_uj(mmio, 4_000_000)
    m = meter.end(start)
    assert m.devices == {"package-0": 4.0}
    assert m.energy_j == 4.0
    skipped = [z for z in meter.zones if not z.counted]
    assert len(skipped) == 1 and "duplicate" in skipped[0].reason


def test_rapl_max_window_s(tmp_path):
    make_zone(tmp_path / "intel-rapl:0", "package-0", 0, constraint_0_power_limit_uw=100_000_000,
              constraint_1_power_limit_uw=150_000_000)
    assert RaplMeter(tmp_path).max_window_s == pytest.approx(RANGE_UJ / 150_000_000)
    make_zone(tmp_path / "intel-rapl:1", "package-1", 0, constraint_0_max_power_uw=200_000_000)
    assert RaplMeter(tmp_path).max_window_s == pytest.approx(RANGE_UJ / 200_000_000)  # the shortest bound


def test_rapl_unreadable_counter_at_end_gives_none_not_a_number(tmp_path):
    pkg = make_zone(tmp_path / "intel-rapl:0", "package-0", 0)
    dram = make_zone(tmp_path / "intel-rapl:0" / "intel-rapl:0:2", "dram", 0)
    meter = RaplMeter(tmp_path)
    start = meter.begin()
    set_uj(pkg, 1_000_000)
    (dram / "energy_uj").write_text("garbage\n")
    m = meter.end(start)
    assert m.devices == {"package-0": 1.0, "package-0/dram": None}
    assert m.energy_j is None
    assert m.estimated is True


def test_rapl_unavailable_reasons(tmp_path, monkeypatch):
    ok, why = rapl_available(tmp_path / "missing")
    assert not ok and "no powercap directory" in why
    ok, why = rapl_available(tmp_path)
    assert not ok and "no RAPL zones" in why
    make_zone(tmp_path / "intel-rapl:1", "psys", 0)
    ok, why = rapl_available(tmp_path)
    assert not ok and "no package or dram zone" in why

    make_zone(tmp_path / "intel-rapl:0", "package-0", 0)
    assert rapl_available(tmp_path)[0] is True
    real_read_text = pathlib.Path.read_text

    def denied(self, *args, **kwargs):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", denied)
    ok, why = rapl_available(tmp_path)
    assert not ok and "PermissionError" in why and "root" in why
    meter = RaplMeter(tmp_path)
    m = meter.end(meter.begin())  # nothing crashes; nothing is invented
    assert m.energy_j is None and m.devices == {}
    assert m.method.startswith("off (rapl unavailable: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_rapl_root_only_counter_is_unavailable(tmp_path):
    pkg = make_zone(tmp_path / "intel-rapl:0", "package-0", 0)
    (pkg / "energy_uj").chmod(0o000)
    ok, why = rapl_available(tmp_path)
    assert not ok and "PermissionError" in why


def test_discover_zones_on_missing_root(tmp_path):
    assert discover_zones(tmp_path / "nope") == []


# --- NVML: a fake pynvml -----------------------------------------------------------------------------------
class FakeNVMLError(Exception):
    def __init__(self, value):
        super().__init__(value)
        self.value = value


class FakeNotSupported(FakeNVMLError):
    def __init__(self):
        super().__init__(3)


class FakeGpu:
    def __init__(self, index, energy_mj=0, power_mw=50_000.0, processes=()):
        self.index = index
        self.uuid = f"GPU-{'abc'[index % 3] * 3}{index}-fake"
        self.name = "Fake GPU"
        self.energy_mj = energy_mj  # None: no energy counter (NotSupported)
        self.power_mw = power_mw    # number, callable, or None: unreadable
        self.processes = list(processes)


class FakeNvml:
    NVMLError = FakeNVMLError
    NVMLError_NotSupported = FakeNotSupported
    NVML_ERROR_NOT_SUPPORTED = 3

    def __init__(self, gpus, driver=True):
        self.gpus = gpus
        self.driver = driver
        self.inits = self.shutdowns = self.power_calls = 0

    def nvmlInit(self):
        if not self.driver:
            raise FakeNVMLError(12)
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        if not 0 <= i < len(self.gpus):
            raise FakeNVMLError(2)
        return self.gpus[i]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
        raise FakeNVMLError(6)

    def nvmlDeviceGetIndex(self, handle):
        return handle.index

    def nvmlDeviceGetUUID(self, handle):
        return handle.uuid

    def nvmlDeviceGetName(self, handle):
        return handle.name.encode()

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if handle.energy_mj is None:
            raise FakeNotSupported()
        return handle.energy_mj

    def nvmlDeviceGetPowerUsage(self, handle):
        self.power_calls += 1
        if handle.power_mw is None:
            raise FakeNotSupported()
        return handle.power_mw() if callable(handle.power_mw) else handle.power_mw

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in handle.processes]

    def nvmlSystemGetProcessName(self, pid):
        return b"python"


@pytest.fixture
def no_cvd(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


def test_nvml_counter_difference_mj_to_j(no_cvd):
    gpu = FakeGpu(0, energy_mj=1_000_000)
    fake = FakeNvml([gpu])
    meter = NvmlMeter(nvml=fake)
    assert meter.available()[0] is True
    start = meter.begin()
    gpu.energy_mj = 1_012_345
    m = meter.end(start)
    assert m.devices == {"cuda:0": 12.345}
    assert m.energy_j == 12.345
    assert m.method == "nvml:energy-counter"
    assert m.estimated is False and m.co2_g is None
    assert fake.power_calls == 0  # no polling thread (nor power probe) for a GPU with the counter
    meter.close()
    assert fake.shutdowns == fake.inits == 1


def test_nvml_cuda_visible_devices_index_maps_to_that_gpu_only(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    gpus = [FakeGpu(i, energy_mj=0) for i in range(3)]
    meter = NvmlMeter(nvml=FakeNvml(gpus))
    start = meter.begin()
    for gpu, added_mj in zip(gpus, (1_000, 2_000, 4_000), strict=True):
        gpu.energy_mj += added_mj
    m = meter.end(start)
    assert m.devices == {"cuda:0": 2.0}
    assert m.energy_j == 2.0
    assert [(d.key, d.nvml_index) for d in meter.devices] == [("cuda:0", 1)]


def test_nvml_cuda_visible_devices_uuids_and_device_indices(monkeypatch):
    gpus = [FakeGpu(i, energy_mj=0) for i in range(3)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{gpus[2].uuid},{gpus[0].uuid[:6]}")  # full UUID, unique prefix
    meter = NvmlMeter(device_indices=[1], nvml=FakeNvml(gpus))
    start = meter.begin()
    for gpu, added_mj in zip(gpus, (1_000, 2_000, 4_000), strict=True):
        gpu.energy_mj += added_mj
    m = meter.end(start)
    assert m.devices == {"cuda:1": 1.0}  # cuda:1 is the second entry: NVML GPU 0
    all_visible = NvmlMeter(nvml=FakeNvml(gpus))
    assert [(d.key, d.nvml_index) for d in all_visible.devices] == [("cuda:0", 2), ("cuda:1", 0)]


def test_nvml_cuda_visible_devices_stops_at_invalid_entry(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,7,0")
    meter = NvmlMeter(nvml=FakeNvml([FakeGpu(i) for i in range(3)]))
    assert [d.nvml_index for d in meter.devices] == [2]
    assert any("7" in note for note in meter.notes)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    ok, why = NvmlMeter(nvml=FakeNvml([FakeGpu(0)])).available()
    assert not ok and "no GPU visible" in why


def test_parse_cuda_visible_devices():
    assert parse_cuda_visible_devices(None) is None
    assert parse_cuda_visible_devices("") == []
    assert parse_cuda_visible_devices("1, 0") == [1, 0]
    assert parse_cuda_visible_devices("GPU-abc,3") == ["GPU-abc", 3]


def test_nvml_device_index_out_of_range(no_cvd):
    ok, why = nvml_available([3], nvml=FakeNvml([FakeGpu(0)]))
    assert not ok and "cuda:3 does not exist" in why


class StepClock:
    """A stand-in for ``time.perf_counter`` in ``measure/nvml.py``: every read returns 20 ms more than the last
    (0.0 first), so the window's start, each power sample's stamp and the window's end fall on a fixed grid
    whatever the machine's load. ``last`` is the latest value read: a power reading made before its stamp sees the
    previous stamp. Thread-safe: the poller thread reads it too."""

    STEP_S = 0.02

    def __init__(self):
        self.last = None
        self._reads = 0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.last = self._reads * self.STEP_S
            self._reads += 1
            return self.last


@pytest.fixture
def step_clock(monkeypatch):
    import pytest_llmeff.measure.nvml as nvml_module

    clock = StepClock()
    monkeypatch.setattr(nvml_module, "time", SimpleNamespace(perf_counter=clock))
    return clock


def _wait_for(condition, what: str, timeout_s: float = 60.0) -> None:
    """Wait (real time) until ``condition()``: the poller thread runs when the scheduler lets it, so the tests wait
    for its samples instead of sleeping a fixed time; the generous timeout only catches a poller that never runs."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.005)


def test_nvml_power_polling_constant_100_w(no_cvd, step_clock):
    fake = FakeNvml([FakeGpu(0, energy_mj=None, power_mw=100_000.0)])
    meter = NvmlMeter(nvml=fake)
    start = meter.begin()
    calls_at_begin = fake.power_calls  # the probe and the first sample
    _wait_for(lambda: fake.power_calls >= calls_at_begin + 5, "5 power polls from the poller thread")
    m = meter.end(start)
    meter.close()
    assert start == 0.0 and m.duration_s >= 0.02 * 8  # first sample, >= 5 polls, the last: >= 7 stamps, then end
    assert m.energy_j == pytest.approx(100.0 * m.duration_s, rel=1e-9)  # held to the window's edges
    assert m.method == "nvml:power-polling(20ms trapezoid; no energy counter)"
    assert m.estimated is False


def test_nvml_power_polling_follows_a_step(no_cvd, step_clock):
    """50 W until the clock reads 0.1 s, then 200 W. On the 20 ms grid of StepClock the readings stamped 0.02 ..
    0.10 s are 50 W and those from 0.12 s on 200 W: the trapezoid is exact for a step at 0.11 s, so the energy is
    0.11 x 50 + (duration - 0.11) x 200 J to rounding. The endpoints alone would say 125 W x duration."""
    gpu = FakeGpu(0, energy_mj=None, power_mw=lambda: 50_000.0 if step_clock.last < 0.1 else 200_000.0)
    fake = FakeNvml([gpu])
    meter = NvmlMeter(nvml=fake)
    start = meter.begin()
    calls_at_begin = fake.power_calls
    _wait_for(lambda: fake.power_calls >= calls_at_begin + 20, "20 power polls from the poller thread")
    m = meter.end(start)
    meter.close()
    assert start == 0.0 and m.duration_s >= 0.02 * 22
    expected_j = 0.11 * 50.0 + (m.duration_s - 0.11) * 200.0
    assert m.energy_j == pytest.approx(expected_j, rel=1e-9)
    assert abs(m.energy_j - 125.0 * m.duration_s) > 15.0  # 75 W x duration - 16.5 J, duration >= 0.44 s


def test_integrate_power_j_exact():
    # held 0 mW over [0.5, 1], ramps to 100 W over [1, 2] (50 J), 100 W over [2, 3] and held over [3, 3.5]
    assert integrate_power_j([1.0, 2.0, 3.0], [0.0, 100_000.0, 100_000.0], 0.5, 3.5) == 200.0


def test_nvml_mixed_counter_and_polling(no_cvd):
    gpus = [FakeGpu(0, energy_mj=0), FakeGpu(1, energy_mj=None, power_mw=10_000.0)]
    meter = NvmlMeter(nvml=FakeNvml(gpus))
    start = meter.begin()
    gpus[0].energy_mj = 3_000
    time.sleep(0.05)
    m = meter.end(start)
    meter.close()
    assert m.method == "nvml:energy-counter+power-polling(cuda:1: 20ms trapezoid; no energy counter)"
    assert m.devices["cuda:0"] == 3.0
    assert m.devices["cuda:1"] == pytest.approx(10.0 * m.duration_s, rel=1e-6)
    assert m.energy_j == pytest.approx(3.0 + 10.0 * m.duration_s, rel=1e-6)


def test_nvml_read_failure_gives_none(no_cvd):
    gpu = FakeGpu(0, energy_mj=0)
    fake = FakeNvml([gpu])
    meter = NvmlMeter(nvml=fake)
    start = meter.begin()
    fake.nvmlDeviceGetTotalEnergyConsumption = lambda handle: (_ for _ in ()).throw(FakeNVMLError(15))  # GPU lost
    m = meter.end(start)
    assert m.devices == {"cuda:0": None}
    assert m.energy_j is None and m.estimated is True


def test_nvml_unreadable_gpu_is_unavailable(no_cvd):
    ok, why = nvml_available(nvml=FakeNvml([FakeGpu(0, energy_mj=None, power_mw=None)]))
    assert not ok and "cuda:0" in why


def test_nvml_without_driver_is_unavailable_and_harmless(no_cvd):
    meter = NvmlMeter(nvml=FakeNvml([FakeGpu(0)], driver=False))
    ok, why = meter.available()
    assert not ok and "NVML did not start" in why
    m = meter.end(meter.begin())
    assert m.energy_j is None and m.devices == {}
    assert m.method.startswith("off (nvml unavailable: ")
    assert meter.gpu_processes() == []
    meter.close()


def test_real_pynvml_without_driver():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("an NVIDIA driver is present")
    meter = NvmlMeter()
    assert meter.available()[0] is False
    assert meter.end(meter.begin()).energy_j is None
    meter.close()


def test_nvml_gpu_processes_excludes_our_own(no_cvd):
    gpu = FakeGpu(0, processes=[(os.getpid(), 1 << 20), (4242, 2 << 30)])
    meter = NvmlMeter(nvml=FakeNvml([gpu]))
    assert meter.gpu_processes() == [
        {"device": "cuda:0", "pid": 4242, "used_memory_bytes": 2 << 30, "name": "python"}]


def _real_nvidia_gpu() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return False
    try:
        return pynvml.nvmlDeviceGetCount() > 0
    finally:
        pynvml.nvmlShutdown()


@pytest.mark.skipif(not _real_nvidia_gpu(), reason="needs a real NVIDIA GPU with its driver")
def test_real_gpu_energy_counter_agrees_with_power_polling():
    counter = NvmlMeter(device_indices=[0])
    polling = NvmlMeter(device_indices=[0], force_power_polling=True)
    try:
        if counter.method != "nvml:energy-counter":
            pytest.skip(f"GPU 0 has no energy counter: {counter.method}")
        outer = counter.begin()
        inner = polling.begin()
        deadline = time.perf_counter() + 1.0
        while time.perf_counter() < deadline:  # busy loop: one second of steady work
            pass
        by_polling = polling.end(inner)
        by_counter = counter.end(outer)
    finally:
        polling.close()
        counter.close()
    assert by_counter.energy_j is not None and by_polling.energy_j is not None
    assert by_counter.energy_j == pytest.approx(by_polling.energy_j, rel=0.05)
