"""The energy meter interface: ``Meter`` (a ``typing.Protocol``), the ``Measurement`` a window gives, and
``OffMeter``.

Every meter the plugin builds (``meters.make_meter``: ``NvmlMeter``, ``RaplMeter``, ``CodeCarbonMeter``,
``OffMeter``) implements every member of ``Meter`` explicitly, so callers (``runner``, ``conditions``, the
session) use the members directly and never probe a meter with ``getattr``. ``MEMBERS`` names them all; a test
checks each meter class against it.

A window: ``start = meter.begin()`` ... work ... ``measurement = meter.end(start)``. Several windows may be open
at once on one meter (each ``begin()`` returns its own start). A meter that cannot read anything still opens and
closes windows: its ``Measurement`` says ``energy_j=None`` and why in ``method``, never an invented number.

On Python < 3.12, ``isinstance(x, Meter)`` reads every member with ``hasattr``, properties included (for
``CodeCarbonMeter`` that starts its tracker, for ``NvmlMeter`` it starts NVML); the plugin itself never does it.

This module imports nothing from the package (every layer may import it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Protocol, runtime_checkable


@dataclass
class Measurement:
    """One energy window.

    energy_j: joules over the window (None when no backend could measure).
    duration_s: wall seconds of the window.
    method: how: e.g. ``codecarbon:cpu=cpu_load,ram=constant`` or ``off``.
    estimated: True unless a physical meter was read for every device counted.
    co2_g: grams of CO2-equivalent (energy x grid intensity of ``country_iso_code``), None without energy.
    devices: joules per device (``cpu``, ``ram``, ``gpu``); None for a device that could not be read.
    """

    energy_j: Optional[float] = None
    duration_s: float = 0.0
    method: str = "off"
    estimated: bool = True
    co2_g: Optional[float] = None
    country_iso_code: Optional[str] = None
    devices: dict[str, Optional[float]] = field(default_factory=dict)


@runtime_checkable
class Meter(Protocol):
    """What every energy meter offers. Attributes may be plain class attributes or read-only properties."""

    @property
    def method(self) -> str:
        """How energy is obtained, for records and warnings: ``nvml:energy-counter``, ``rapl:package-0,...``,
        ``codecarbon:cpu=cpu_load,ram=constant``; ``off (why)`` when this meter cannot read anything here."""
        ...

    @property
    def estimated(self) -> bool:
        """False for a physical meter (an energy counter or a power sensor of the device: RAPL, NVML); True for a
        model of power (CodeCarbon) or no meter at all. A single ``Measurement`` may still say ``estimated=True``
        when a physical meter could not read one of its devices."""
        ...

    @property
    def resolution_s(self) -> float:
        """Seconds: the shortest window the meter resolves (its counter's update period, or its power-sampling
        period). A window shorter than twice this is re-measured over repeated work (``runner``). 0.0: no limit,
        or nothing measured."""
        ...

    @property
    def fallback_notes(self) -> list[str]:
        """Why better meters were not used (``--llmeff-energy=auto`` fell back to this one), one line per meter
        tried, e.g. ``rapl: no powercap directory at ...``; empty when nothing was skipped. Each becomes a record
        warning ``energy meter fallback: <note>``. A fresh list: changing it changes nothing."""
        ...

    def begin(self) -> float:
        """Open a window; returns its start, a ``time.perf_counter()`` value in seconds, to pass to ``end``."""
        ...

    def end(self, start: float) -> Measurement:
        """Close the window opened by the ``begin()`` that returned ``start``: joules (``energy_j``, per device in
        ``devices``), wall seconds (``duration_s``), ``method`` and ``estimated``. ``co2_g`` is left to the caller
        (energy x grid intensity, the same rule for every meter)."""
        ...

    def gpu_processes(self) -> list[dict]:
        """Other processes computing on the measured GPUs (this process left out), whose work lands in the
        energy: one dict each with ``device`` (``cuda:N``), ``pid`` (int), ``used_memory_bytes`` (int bytes or
        None) and ``name`` (str or None). ``[]`` when there are none, or when this meter does not measure GPUs or
        cannot see their processes."""
        ...

    def close(self) -> None:
        """Release what the meter holds (a tracker, NVML, polling threads, open windows). Safe to call twice."""
        ...


#: every member of ``Meter``; each meter class defines all of them itself (a test checks it)
MEMBERS: tuple[str, ...] = ("method", "estimated", "resolution_s", "fallback_notes", "begin", "end",
                            "gpu_processes", "close")


class OffMeter:
    """``--llmeff-energy=off``: no energy figures at all (windows still give their duration)."""

    method: str = "off (--llmeff-energy=off)"
    estimated = True  # nothing is read
    resolution_s = 0.0  # nothing to resolve: windows are never repeated for this meter

    def __init__(self, reason: str = "off (--llmeff-energy=off)"):
        self.method = reason

    @property
    def fallback_notes(self) -> list[str]:
        return []  # "off" is only ever asked for, never fallen back to

    def begin(self) -> float:
        return time.perf_counter()

    def end(self, start: float) -> Measurement:
        return Measurement(energy_j=None, duration_s=time.perf_counter() - start, method=self.method)

    def gpu_processes(self) -> list[dict]:
        return []  # measures no GPU

    def close(self) -> None:
        pass
