"""RAPL energy counters read from the Linux powercap sysfs (Intel, and AMD through the same driver).

The kernel exposes one directory per RAPL zone, e.g. ``/sys/class/powercap/intel-rapl:0`` (a package) with
subzones ``intel-rapl:0:0`` (``core``), ``intel-rapl:0:1`` (``uncore``), ``intel-rapl:0:2`` (``dram``). Each holds

- ``name``: ``package-0``, ``core``, ``uncore``, ``dram``, ``psys``;
- ``energy_uj``: a cumulative counter in microjoules that wraps around to 0;
- ``max_energy_range_uj``: the counter's range in microjoules (where it wraps).

Zones are discovered by scanning for directories that hold ``energy_uj`` (so ``intel-rapl``, ``amd-rapl`` or any
other prefix works), not by their names.

What is counted, so that nothing is counted twice:

- every top-level zone (``package-N``) except ``psys``: the platform zone already contains the packages (and more);
- ``dram`` subzones: DRAM is outside the package domain;
- NOT ``core`` or ``uncore`` subzones: both are parts of their package's energy.
- a top-level zone whose name repeats one already seen through a ``*-mmio`` directory (``intel-rapl-mmio:0`` is a
  second door to the same package counter) is skipped.

The figures are the whole socket's and DRAM's energy, all processes included, read from a hardware counter:
``estimated=False``.

Wraparound: when the end reading is below the start reading the counter wrapped once, and the delta is
``end + max_energy_range_uj - start`` (the true modulus is one counter unit larger, ~15-61 uJ; negligible). Only
ONE wrap per interval can be recognised: an interval longer than ``max_energy_range_uj / max power`` is ambiguous
(``RaplMeter.max_window_s`` estimates that bound from the zones' power constraints; typically tens of minutes).
For longer windows call ``RaplMeter.sample()`` periodically: it folds the counters into every open window so that
each interval between samples needs to survive at most one wrap.

Since Linux 5.10 ``energy_uj`` is readable by root only (CVE-2020-8694, "Platypus"); ``available()`` then says so.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from pytest_llmeff.defaults import DEFAULT_POWERCAP_ROOT
from pytest_llmeff.measure.meter import Measurement

UJ_PER_J = 1_000_000

_MAX_DEPTH = 6  # zones nest at most package -> subzone; the bound only guards against sysfs symlink loops


@dataclass(frozen=True)
class RaplZone:
    """One powercap zone.

    key: device key in ``Measurement.devices``: ``package-0``, or ``package-0/dram`` for a subzone.
    name: contents of the zone's ``name`` file.
    path: the zone directory.
    parent_key: the key of the enclosing zone, None for a top-level zone.
    counted: whether its energy is part of the total (see the module docstring for the rules).
    reason: why it is not counted ("" when counted).
    max_energy_range_uj: the counter's range in microjoules, None if unreadable (a wrap cannot be undone then).
    max_power_uw: the largest power constraint of the zone in microwatts (``constraint_*_max_power_uw``, else
        ``constraint_*_power_limit_uw``), None if there is none; used only for ``max_window_s``.
    """

    key: str
    name: str
    path: Path
    parent_key: Optional[str]
    counted: bool
    reason: str
    max_energy_range_uj: Optional[int]
    max_power_uw: Optional[int]


def counter_delta_uj(start_uj: int, end_uj: int, max_energy_range_uj: Optional[int]) -> Optional[int]:
    """Microjoules between two readings of one counter, undoing at most one wraparound.

    Returns None when the counter went backwards and its range is unknown (the delta cannot be known).
    """
    if end_uj >= start_uj:
        return end_uj - start_uj
    if max_energy_range_uj is None or max_energy_range_uj <= 0:
        return None
    return end_uj + max_energy_range_uj - start_uj


def _natural_key(path: Path) -> tuple:
    """Sort ``*-mmio`` directories last (duplicates of the MSR zones), and ``:10`` after ``:9``."""
    parts = re.split(r"(\d+)", path.name)
    return ("mmio" in path.name, [int(p) if p.isdigit() else p for p in parts])


def _read_int(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_name(zone_dir: Path) -> str:
    try:
        return (zone_dir / "name").read_text().strip() or zone_dir.name
    except OSError:
        return zone_dir.name


def _max_power_uw(zone_dir: Path) -> Optional[int]:
    for pattern in ("constraint_*_max_power_uw", "constraint_*_power_limit_uw"):
        values = [v for v in (_read_int(p) for p in zone_dir.glob(pattern)) if v and v > 0]
        if values:
            return max(values)
    return None


def _zone_dirs(root: Path) -> list[Path]:
    """Every directory holding ``energy_uj`` under ``root``: zones at the top level, inside a control-type
    directory one level down (``intel-rapl/``), and their subzones nested inside them. Deduplicated by real path
    (sysfs lists each zone both as a symlink at the top and nested in its parent)."""
    found: list[Path] = []
    seen: set[str] = set()

    def visit(directory: Path, depth: int) -> None:
        if depth > _MAX_DEPTH:
            return
        try:
            children = sorted((c for c in directory.iterdir() if c.is_dir()), key=_natural_key)
        except OSError:
            return
        for child in children:
            real = os.path.realpath(child)
            if real in seen:
                continue
            if (child / "energy_uj").exists():
                seen.add(real)
                found.append(child)
                visit(child, depth + 1)
            elif depth == 0:  # a control-type directory such as intel-rapl/ holding the zones
                seen.add(real)
                visit(child, depth + 1)

    visit(root, 0)
    return found


def discover_zones(root: Union[str, Path] = DEFAULT_POWERCAP_ROOT) -> list[RaplZone]:
    """All RAPL zones under ``root``, counted or not, parents before their subzones."""
    root = Path(root)
    if not root.is_dir():
        return []
    dirs = _zone_dirs(root)
    real_to_dir = {os.path.realpath(d): d for d in dirs}
    by_dirname = {d.name: d for d in dirs}

    def parent_of(d: Path) -> Optional[Path]:
        parent = real_to_dir.get(os.path.dirname(os.path.realpath(d)))
        if parent is not None:
            return parent
        match = re.fullmatch(r"(.+:\d+):\d+", d.name)  # flat layout: intel-rapl:0:2 belongs to intel-rapl:0
        return by_dirname.get(match.group(1)) if match else None

    zones: list[RaplZone] = []
    key_of: dict[str, str] = {}  # real path -> key
    skipped_dirs: set[str] = set()
    for d in dirs:  # parents come before subzones: visit() appends a zone before descending into it
        real = os.path.realpath(d)
        name = _read_name(d)
        parent = parent_of(d)
        common = dict(name=name, path=d, max_energy_range_uj=_read_int(d / "max_energy_range_uj"),
                      max_power_uw=_max_power_uw(d))
        if parent is None:
            key = name
            taken = key in key_of.values()
            if taken and "mmio" in d.name:
                skipped_dirs.add(real)
                zones.append(RaplZone(key=f"{name}@{d.name}", parent_key=None, counted=False,
                                      reason=f"duplicate of {name} (MMIO interface to the same counter)", **common))
                key_of[real] = f"{name}@{d.name}"
                continue
            if taken:
                key = f"{name}@{d.name}"
            if name == "psys":
                counted, reason = False, "psys (platform) contains the packages: counting it would double count"
            else:
                counted, reason = True, ""
            zones.append(RaplZone(key=key, parent_key=None, counted=counted, reason=reason, **common))
        else:
            parent_real = os.path.realpath(parent)
            parent_key = key_of[parent_real]
            key = f"{parent_key}/{name}"
            if parent_real in skipped_dirs:
                counted, reason = False, f"inside {parent_key}, which is skipped"
            elif name == "dram":
                counted, reason = True, ""
            else:
                counted, reason = False, f"{name} is part of {parent_key}: counting it would double count"
            zones.append(RaplZone(key=key, parent_key=parent_key, counted=counted, reason=reason, **common))
        key_of[real] = key
    return zones


class _Window:
    """Running state of one open window: per zone key, the last reading and the microjoules so far
    (both None once a reading failed)."""

    def __init__(self, readings_uj: dict[str, Optional[int]]):
        self.last_uj: dict[str, Optional[int]] = dict(readings_uj)
        self.total_uj: dict[str, Optional[int]] = {k: (0 if v is not None else None) for k, v in readings_uj.items()}


class RaplMeter:
    """Energy windows from RAPL counters (the ``meter.Meter`` interface).

    ``begin()`` returns a ``time.perf_counter()`` start and opens a window; ``end(start)`` closes it and returns a
    ``Measurement`` whose ``devices`` gives joules per counted zone (None for a zone whose counter could not be
    read or went backwards with no known range); ``energy_j`` is their sum, None unless every counted zone was
    read. Several windows may be open at once (each ``begin()`` returns its own start). ``co2_g`` is left None.
    Implements ``meter.Meter``.
    """

    estimated = False  # the CPU's own energy counters (a Measurement is estimated if a zone was unreadable)
    resolution_s = 0.001  # seconds: the counters update about every millisecond

    def __init__(self, root: Union[str, Path] = DEFAULT_POWERCAP_ROOT):
        self.root = Path(root)
        self.zones: list[RaplZone] = discover_zones(self.root)
        self._windows: dict[float, _Window] = {}
        self._available: Optional[tuple[bool, str]] = None

    @property
    def counted_zones(self) -> list[RaplZone]:
        """The zones whose energy makes the total (packages and their DRAM)."""
        return [z for z in self.zones if z.counted]

    def available(self) -> tuple[bool, str]:
        """(True, what is read) when every counted zone's ``energy_uj`` can be read here; else (False, why).

        Checked afresh at each call; ``begin()`` uses the first answer for the meter's lifetime.
        """
        if not self.root.is_dir():
            return False, (f"no powercap directory at {self.root} (no RAPL driver loaded, not Linux, or a VM or "
                           f"container without it)")
        if not self.zones:
            return False, f"no RAPL zones (directories holding energy_uj) under {self.root}"
        counted = self.counted_zones
        if not counted:
            return False, f"no package or dram zone under {self.root}: only " + ", ".join(z.key for z in self.zones)
        for zone in counted:
            counter = zone.path / "energy_uj"
            try:
                int(counter.read_text().strip())
            except PermissionError:
                return False, (f"{counter} is not readable (PermissionError): since Linux 5.10 the RAPL energy "
                               f"counters are readable by root only (CVE-2020-8694); run as root or grant read "
                               f"access (e.g. a udev rule or chmod a+r on energy_uj)")
            except (OSError, ValueError) as exc:
                return False, f"{counter} could not be read ({type(exc).__name__}: {exc})"
        return True, "rapl: " + ", ".join(z.key for z in counted)

    def _usable(self) -> bool:
        if self._available is None:
            self._available = self.available()
        return self._available[0]

    @property
    def method(self) -> str:
        """``rapl:package-0,package-0/dram,...`` (the counted zone keys), or ``off (rapl unavailable: why)``."""
        if not self._usable():
            return f"off (rapl unavailable: {self._available[1]})"
        return "rapl:" + ",".join(z.key for z in self.counted_zones)

    @property
    def max_window_s(self) -> Optional[float]:
        """Estimated longest interval (seconds) between two readings that still has at most one wrap:
        min over counted zones of ``max_energy_range_uj / max_power_uw``. None when no zone states both.
        An estimate: short bursts may exceed a power limit. ``sample()`` more often than this for long windows.
        """
        bounds = [z.max_energy_range_uj / z.max_power_uw for z in self.counted_zones
                  if z.max_energy_range_uj and z.max_power_uw]
        return min(bounds) if bounds else None

    def _read_counters_uj(self) -> dict[str, Optional[int]]:
        return {z.key: _read_int(z.path / "energy_uj") for z in self.counted_zones}

    def _fold(self, window: _Window, readings_uj: dict[str, Optional[int]]) -> None:
        ranges = {z.key: z.max_energy_range_uj for z in self.counted_zones}
        for key, now_uj in readings_uj.items():
            last_uj = window.last_uj.get(key)
            if last_uj is None or now_uj is None or window.total_uj.get(key) is None:
                window.last_uj[key] = None
                window.total_uj[key] = None
                continue
            delta_uj = counter_delta_uj(last_uj, now_uj, ranges[key])
            window.total_uj[key] = None if delta_uj is None else window.total_uj[key] + delta_uj
            window.last_uj[key] = now_uj if delta_uj is not None else None

    def begin(self) -> float:
        """Open a window: returns its ``time.perf_counter()`` start (pass it to ``end``)."""
        start = time.perf_counter()
        if not self._usable():
            return start
        while start in self._windows:  # keep each open window's key unique
            start = time.perf_counter()
        self._windows[start] = _Window(self._read_counters_uj())
        return start

    def sample(self) -> None:
        """Fold the current counters into every open window (call at least every ``max_window_s`` for long
        windows, so that no interval between readings holds more than one wrap)."""
        if not self._windows:
            return
        readings_uj = self._read_counters_uj()
        for window in self._windows.values():
            self._fold(window, readings_uj)

    def end(self, start: float) -> Measurement:
        """Close the window opened by ``begin()`` that returned ``start``: joules per counted zone and in total."""
        window = self._windows.pop(start, None)
        if window is not None:
            self._fold(window, self._read_counters_uj())
        duration_s = time.perf_counter() - start
        if window is None:
            return Measurement(duration_s=duration_s, method=self.method, estimated=True)
        devices = {key: (None if uj is None else uj / UJ_PER_J) for key, uj in window.total_uj.items()}
        complete = all(uj is not None for uj in window.total_uj.values())
        energy_j = sum(window.total_uj.values()) / UJ_PER_J if complete else None  # one division: exact sums
        return Measurement(energy_j=energy_j, duration_s=duration_s, method=self.method,
                           estimated=not complete, devices=devices)

    @property
    def fallback_notes(self) -> list[str]:
        return []  # RAPL is what auto falls back *to* on a CPU; it skips nothing itself

    def gpu_processes(self) -> list[dict]:
        return []  # RAPL measures the CPU packages and DRAM, no GPU

    def close(self) -> None:
        """Drop open windows (nothing else is held)."""
        self._windows.clear()


def rapl_available(root: Union[str, Path] = DEFAULT_POWERCAP_ROOT) -> tuple[bool, str]:
    """Whether RAPL counters can be read under ``root`` here, and why not."""
    return RaplMeter(root).available()
