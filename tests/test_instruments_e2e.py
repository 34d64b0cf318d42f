"""Energy backends chosen and forced as users do it, CO2, idle baseline, short windows, FLOPs and warnings."""

from __future__ import annotations

import json
import threading
import time

import pytest

torch = pytest.importorskip("torch")

from pytest_llmeff.bench import runner# noqa: E402
from pytest_llmeff.measure.carbon import UnknownCountry, co2_g, intensity_g_per_kwh  # noqa: E402
from pytest_llmeff.measure.conditions import cpu_governor_warning  # noqa: E402
from pytest_llmeff.measure.meter import Measurement, Meter  # noqa: E402

BENCH = """
import pytest
@pytest.mark.llm_efficiency(model="tiny-random-llama", batch_size=2, max_new_tokens=6, rounds=3, warmup=0)
def test_x(llm_benchmark):
    llm_benchmark()
"""


def _fake_powercap(root, energy_uj=1_000_000, max_range_uj=262_143_328_850):
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    return zone / "energy_uj"


class _Ticker:
    """Advances a fake RAPL counter at a known power while a test runs (a stand-in for the hardware)."""

    def __init__(self, counter, watts: float):
        self.counter, self.watts = counter, watts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import os

        start_uj = int(self.counter.read_text())
        t0 = time.perf_counter()
        tmp = self.counter.with_name(".energy_uj.tmp")
        while not self._stop.is_set():
            tmp.write_text(f"{start_uj + int((time.perf_counter() - t0) * self.watts * 1e6)}\n")
            os.replace(tmp, self.counter)  # readers never see a half-written counter
            time.sleep(0.0005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_co2_is_energy_times_the_country_grid_intensity():
    fra, usa = intensity_g_per_kwh("FRA"), intensity_g_per_kwh("usa")
    assert 0 < fra < usa  # France's grid is mostly nuclear
    assert co2_g(3.6e6, "FRA") == pytest.approx(fra)  # 1 kWh
    assert co2_g(1800.0, "USA") == pytest.approx(usa * 1800.0 / 3.6e6)
    with pytest.raises(UnknownCountry, match="country 'XYZ' is not in CodeCarbon's energy-mix data"):
        intensity_g_per_kwh("XYZ")


def test_forced_codecarbon_is_an_estimate_with_co2_from_the_chosen_grid(llmeff_pytester, run_with_json):
    llmeff_pytester.makepyfile(test_e=BENCH)
    result, data = run_with_json(llmeff_pytester, "--llmeff-energy=codecarbon", "--llmeff-country=FRA")
    result.assert_outcomes(passed=1)
    bench = data["benchmarks"][0]
    assert bench["energy"]["estimated"] is True and bench["energy"]["method"].startswith("codecarbon:")
    assert bench["energy"]["country_iso_code"] == "FRA"
    m = bench["metrics"]
    for e, c in zip(m["energy_j"]["samples"], m["co2_g"]["samples"]):
        assert c == pytest.approx(e / 3.6e6 * intensity_g_per_kwh("FRA"))
    assert "energy_prefill_j" in m and "energy_decode_j_per_tok" in m
    assert "energy_net_j" not in m


def test_off_records_no_energy(llmeff_pytester, run_with_json):
    llmeff_pytester.makepyfile(test_e=BENCH)
    result, data = run_with_json(llmeff_pytester, "--llmeff-energy=off")
    result.assert_outcomes(passed=1)
    bench = data["benchmarks"][0]
    assert not {"energy_j", "co2_g", "energy_j_per_tok"} & set(bench["metrics"])
    assert bench["energy"]["method"].startswith("off") and bench["energy"]["estimated"] is True


def test_forced_rapl_reads_the_counters_exactly_not_estimated(llmeff_pytester, tmp_path):
    counter = _fake_powercap(tmp_path / "powercap")
    llmeff_pytester.makepyfile(test_e=BENCH)
    out = llmeff_pytester.path / "out.json"
    # the session runs in a subprocess: in-process, the ticker thread waits for the GIL behind generate (up to
    # Python's 5 ms switch interval), so the fake counter would lag by up to 0.1 J at 20 W
    with _Ticker(counter, watts=20.0):
        result = llmeff_pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llmeff-energy=rapl",
                                                      f"--llmeff-powercap-root={tmp_path / 'powercap'}",
                                                      "--llmeff-idle-s=0.3", f"--llmeff-json={out}")
    result.assert_outcomes(passed=1)
    bench = json.loads(out.read_text())["benchmarks"][0]
    assert bench["energy"]["estimated"] is False and bench["energy"]["method"].startswith("rapl:")
    m = bench["metrics"]
    # the fake package draws 20 W: energy per generate = 20 W x its window (within the ticker's 0.5 ms steps)
    # the energy window holds the timed generate plus the meter's begin/end; on a loaded 2-core machine the ticker
    # (another process's thread) may add tens of ms, so the bound above is looser than the one below
    for e, lat in zip(m["energy_j"]["samples"], m["latency_s"]["samples"]):
        # (the ticker can also lag behind the clock, so the counter under-reads: CI saw 0.135 J for 0.206 J)
        assert 20.0 * lat * 0.5 - 0.02 <= e <= 20.0 * lat * 1.6 + 0.05, (e, lat)
    # idle power was measured on the same (constant 20 W) meter, so the net energy is ~0; the ticker may lag a few ms
    # behind the clock on a loaded machine (CI saw 4.5 ms = 0.09 J), while a meter that forgot to subtract idle gives
    # net == e and one that subtracted it twice gives net == -e
    for net, e in zip(m["energy_net_j"]["samples"], m["energy_j"]["samples"]):
        assert abs(net) < 0.3 * e + 0.05, (net, e)
    assert not any("estimate" in w for w in bench["warnings"])


def test_auto_falls_back_to_the_estimate_and_says_why(llmeff_pytester, run_with_json, tmp_path):
    llmeff_pytester.makepyfile(test_e=BENCH)
    result, data = run_with_json(llmeff_pytester, f"--llmeff-powercap-root={tmp_path / 'none'}",
                                 "--llmeff-idle-s=0.1")
    result.assert_outcomes(passed=1)
    bench = data["benchmarks"][0]
    assert bench["energy"]["estimated"] is True
    warnings = " | ".join(bench["warnings"])
    assert "energy meter fallback: rapl: no powercap directory" in warnings
    assert "idle subtraction is not meaningful for an estimate" in warnings
    result.stdout.fnmatch_lines(["warning: tiny-random-llama-fp32-b2: energy is an estimate*"])


@pytest.mark.parametrize("args, message", [
    (["--llmeff-energy=solar"], "--llmeff-energy='solar' is not allowed; allowed: auto, nvml, rapl, codecarbon, off"),
    (["--llmeff-energy=rapl", "--llmeff-powercap-root=/nonexistent/powercap"],
     "--llmeff-energy=rapl cannot read RAPL: no powercap directory at /nonexistent/powercap"),
    (["--llmeff-country=XYZ"], "country 'XYZ' is not in CodeCarbon's energy-mix data"),
    (["--llmeff-idle-s=-2"], "--llmeff-idle-s=-2 is not allowed; give a number >= 0"),
    (["--llmeff-idle-s=soon"], "--llmeff-idle-s='soon' is not a number"),
    (["--llmeff-peak-tflops=0"], "--llmeff-peak-tflops=0 is not allowed; give a number > 0"),
])
def test_bad_energy_options_are_usage_errors(llmeff_pytester, args, message):
    llmeff_pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = llmeff_pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*pytest-llmeff: {message}*"])


def test_forced_nvml_without_a_gpu_is_a_usage_error(llmeff_pytester):
    from pytest_llmeff.measure.nvml import NvmlMeter

    if NvmlMeter().available()[0]:
        pytest.skip("this machine has a readable NVIDIA GPU")
    llmeff_pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = llmeff_pytester.runpytest_subprocess("--llmeff-energy=nvml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest-llmeff: --llmeff-energy=nvml cannot read NVML*"])


class _SlowMeter:
    """A real-meter stand-in with a coarse resolution and a known constant power (a full ``Meter``)."""

    resolution_s = 0.05
    estimated = False
    method = "fake:50ms"

    def __init__(self, watts=10.0):
        self.watts = watts
        self.windows = 0

    @property
    def fallback_notes(self):
        return []

    def gpu_processes(self):
        return []

    def begin(self):
        self.windows += 1
        return time.perf_counter()

    def end(self, start):
        duration = time.perf_counter() - start
        return Measurement(energy_j=self.watts * duration, duration_s=duration, method=self.method,
                           estimated=False, devices={"pkg": self.watts * duration})

    def close(self):
        pass


def test_short_windows_are_repeated_until_the_meter_can_resolve_them(tiny_model):
    import statistics

    inputs = tiny_model.encode(["hello there"])
    one = []
    for _ in range(3):
        t0 = time.perf_counter()
        tiny_model.generate_ids(inputs, 3, fixed_length=True)
        one.append(time.perf_counter() - t0)
    meter = _SlowMeter()
    assert isinstance(meter, Meter)
    meter.resolution_s = 3 * statistics.median(one)  # one generate is a third of what the meter resolves
    spec = runner.RunSpec(("hello there",), batch_size=1, max_new_tokens=3, rounds=3, warmup=1, count_flops=False)
    measured = runner.run(tiny_model, spec, meter, energy_ctx=runner.EnergyContext(country_iso3="USA"))
    assert measured.energy_repeats >= 2
    assert any(f"energy measured over {measured.energy_repeats} generates per window" in w
               for w in measured.warnings)
    # energy per generate = power x the repeated window's time / repeats, not x the whole window: exact on the last
    # window (the record keeps it), whatever the load did to the timed rounds
    last = measured.energy
    assert measured.samples["energy_j"][-1] == pytest.approx(10.0 * last.duration_s / measured.energy_repeats)
    # and each window holds about one generate per repeat (loose: a loaded machine stretches single rounds)
    median_latency = statistics.median(measured.samples["latency_s"])
    for e in measured.samples["energy_j"]:
        assert 10.0 * median_latency / 8 < e < 10.0 * median_latency * 8, (e, median_latency)
    assert len(measured.samples["energy_prefill_j"]) == 3
    assert statistics.median(measured.samples["energy_prefill_j"]) < statistics.median(measured.samples["energy_j"])


def test_flops_counted_and_analytic_agree_and_mfu_uses_the_given_peak(llmeff_pytester, run_with_json):
    llmeff_pytester.makepyfile(test_e=BENCH)
    result, data = run_with_json(llmeff_pytester, "--llmeff-peak-tflops=0.5", "--llmeff-energy=off")
    result.assert_outcomes(passed=1)
    m = data["benchmarks"][0]["metrics"]
    assert m["flops_counted"]["median"] == pytest.approx(m["flops_analytic"]["median"], rel=0.02)
    assert m["flops_per_tok"]["median"] == pytest.approx(m["flops_counted"]["median"] / 12)
    for mfu, tflops in zip(m["mfu"]["samples"], m["tflops"]["samples"]):
        assert mfu == pytest.approx(tflops / 0.5)


def test_no_mfu_is_guessed_for_an_unknown_device(llmeff_pytester, run_with_json):
    llmeff_pytester.makepyfile(test_e=BENCH)
    result, data = run_with_json(llmeff_pytester, "--llmeff-energy=off")
    result.assert_outcomes(passed=1)
    assert "mfu" not in data["benchmarks"][0]["metrics"]


def test_governor_warning_reads_sysfs(tmp_path):
    for cpu, gov in (("cpu0", "performance"), ("cpu1", "powersave")):
        d = tmp_path / cpu / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_governor").write_text(gov + "\n")
    assert "governor is powersave, not 'performance'" in cpu_governor_warning(str(tmp_path))
    (tmp_path / "cpu1" / "cpufreq" / "scaling_governor").write_text("performance\n")
    assert cpu_governor_warning(str(tmp_path)) is None
    assert cpu_governor_warning(str(tmp_path / "missing")) is None
