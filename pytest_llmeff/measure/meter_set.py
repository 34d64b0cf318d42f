"""The session's energy meters: one per device (``cpu``, ``cuda`` for every visible GPU, ``cuda:N`` for one),
made on first use, each with its idle power measured once when ``--llmeff-idle-s`` asks for it and the meter is
a physical one."""

from __future__ import annotations

import time
from typing import Callable, Optional

from pytest_llmeff.measure.meters import DEFAULT_POWERCAP_ROOT, make_meter


def device_kind(device: str) -> str:
    """The key of a meter and of its idle power: ``cuda:N`` for one GPU (its NVML meter reads that GPU only),
    ``cuda`` for a model spread over every visible GPU, else ``cpu``."""
    return device if device.startswith("cuda") else "cpu"


class MeterSet:
    """Meters by device (``device_kind``).

    ``backend``: ``--llmeff-energy`` (auto, nvml, rapl, codecarbon, off). ``country_iso3``: the grid for CO2.
    ``idle_s``: seconds of idle measurement before the first benchmark on a device (0: none).
    ``progress``: writes one line to the terminal.
    """

    def __init__(self, backend: str, country_iso3: str, powercap_root: str = DEFAULT_POWERCAP_ROOT,
                 idle_s: float = 0.0, progress: Optional[Callable[[str], None]] = None):
        self.backend = backend
        self.country_iso3 = country_iso3
        self.powercap_root = powercap_root
        self.idle_s = idle_s
        self.progress = progress or (lambda message: None)
        self._meters: dict = {}
        self._idle_power_w: dict[str, Optional[float]] = {}

    def for_device(self, device: str):
        """The meter for ``device`` (raises ``MeterUnavailable`` for an explicit backend that cannot be read)."""
        key = device_kind(device)
        if key not in self._meters:
            meter = make_meter(self.backend, device, self.country_iso3, self.powercap_root)
            self._meters[key] = meter
            self._idle_power_w[key] = self._measure_idle(meter)
        return self._meters[key]

    def idle_power_w(self, device: str) -> Optional[float]:
        """Idle power in watts of ``device``'s meter, or None (not asked for, an estimate, or unreadable)."""
        return self._idle_power_w.get(device_kind(device))

    def _measure_idle(self, meter) -> Optional[float]:
        if self.idle_s <= 0 or meter.estimated:
            return None
        self.progress(f"measuring idle power for {self.idle_s:g} s ({meter.method})...")
        start = meter.begin()
        time.sleep(self.idle_s)
        m = meter.end(start)
        if m.energy_j is None or m.duration_s <= 0:
            return None
        power = m.energy_j / m.duration_s
        self.progress(f"idle power {power:.2f} W")
        return power

    def close(self) -> None:
        for meter in self._meters.values():
            meter.close()
