"""Energy windows: begin, end, and a ``Measurement`` that says how the joules were obtained.

Backed here by CodeCarbon's offline tracker. On a machine without RAPL or NVML it models CPU power from load
and RAM power from its size, so its figures are ESTIMATES and are labelled ``estimated=True`` with the mode in
``method``. A device that cannot be read gives None, never an invented number. ``Measurement`` and the ``Meter``
interface live in ``meter.py`` (``Measurement`` is still importable from here).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Iterator, Optional, Sequence

from pytest_llmeff.defaults import DEFAULT_COUNTRY_ISO3
from pytest_llmeff.measure.carbon import co2_g
from pytest_llmeff.measure.meter import Measurement, Meter  # noqa: F401  (Measurement's old home)

KWH_TO_J = 3.6e6


class CodeCarbonMeter:
    """One OfflineEmissionsTracker for the whole session (its first start costs ~0.4 s); each window is a
    CodeCarbon task. Its figures are estimates; ``resolution_s`` is its power-sampling period.

    fallback_notes: why ``--llmeff-energy=auto`` did not use a physical meter (``make_meter`` passes them)."""

    resolution_s = 1.0  # seconds: CodeCarbon samples power once a second (measure_power_secs=1)
    estimated = True  # CodeCarbon models power here; physical meters are RaplMeter and NvmlMeter

    def __init__(self, country_iso_code: str = DEFAULT_COUNTRY_ISO3, fallback_notes: Sequence[str] = ()):
        self.country_iso_code = country_iso_code
        self._fallback_notes = tuple(fallback_notes)
        self._tracker = None
        self._error: Optional[str] = None
        self._task = 0

    def _ensure(self) -> bool:
        if self._tracker is not None:
            return True
        if self._error is not None:
            return False
        try:
            for name in ("codecarbon",):
                logging.getLogger(name).setLevel(logging.ERROR)
            from codecarbon import OfflineEmissionsTracker

            previous_disable = logging.root.manager.disable
            logging.disable(logging.WARNING)  # CodeCarbon warns about "multiple instances" at every init
            try:
                tracker = OfflineEmissionsTracker(
                    country_iso_code=self.country_iso_code, output_methods=[], log_level="error",
                    measure_power_secs=1, allow_multiple_runs=True,
                )
                tracker.start()
            finally:
                logging.disable(previous_disable)
            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            self._tracker = tracker
            return True
        except Exception as exc:  # CodeCarbon missing or failing must not fail a benchmark
            self._error = f"{type(exc).__name__}: {exc}"
            return False

    @property
    def method(self) -> str:
        if not self._ensure():
            return f"off (codecarbon unavailable: {self._error})"
        modes = []
        for hw in getattr(self._tracker, "_hardware", []):
            kind = type(hw).__name__.lower()
            mode = getattr(hw, "_mode", None) or "constant"
            modes.append(f"{kind}={mode}")
        return "codecarbon:" + ",".join(modes)

    def begin(self) -> float:
        if self._ensure():
            self._task += 1
            start = time.perf_counter()
            self._tracker.start_task(f"llmeff-{self._task}")
            return start
        return time.perf_counter()

    def end(self, start: float) -> Measurement:
        if self._tracker is None:
            return Measurement(duration_s=time.perf_counter() - start, method=self.method, estimated=True)
        data = self._tracker.stop_task()
        duration = time.perf_counter() - start
        energy_j = float(data.energy_consumed) * KWH_TO_J
        devices = {"cpu": float(data.cpu_energy) * KWH_TO_J, "ram": float(data.ram_energy) * KWH_TO_J}
        if self._has_gpu():
            devices["gpu"] = float(data.gpu_energy) * KWH_TO_J
        return Measurement(energy_j=energy_j, duration_s=duration, method=self.method,
                           estimated=True, country_iso_code=self.country_iso_code, devices=devices)

    @property
    def fallback_notes(self) -> list[str]:
        return list(self._fallback_notes)

    def gpu_processes(self) -> list[dict]:
        return []  # CodeCarbon does not list the processes on a GPU

    def _has_gpu(self) -> bool:
        return any(type(hw).__name__.lower() == "gpu" for hw in getattr(self._tracker, "_hardware", []))

    def close(self) -> None:
        if self._tracker is not None:
            with contextlib.suppress(Exception), contextlib.redirect_stdout(None):
                self._tracker.stop()
            self._tracker = None


class EnergyTracker:
    """The ``energy_tracker`` fixture: ``with energy_tracker.measure() as e: ...`` then read ``e.energy_j``,
    ``e.method``, ``e.estimated`` and ``e.co2_g`` after the block.

    ``co2_g`` is energy x the grid intensity of ``country_iso3`` (CodeCarbon's data), whichever meter read the
    energy: the same rule as the benchmark records, so the two agree."""

    def __init__(self, meter: Meter, country_iso3: Optional[str] = None):
        self.meter = meter
        self.country_iso3 = country_iso3

    @contextlib.contextmanager
    def measure(self) -> Iterator[Measurement]:
        result = Measurement()
        start = self.meter.begin()
        try:
            yield result
        finally:
            done = self.meter.end(start)
            result.__dict__.update(done.__dict__)
            if result.energy_j is not None and self.country_iso3:
                result.co2_g = co2_g(result.energy_j, self.country_iso3)
                result.country_iso_code = self.country_iso3
