"""NVIDIA GPU energy from NVML (``pynvml``, the nvidia-ml-py package).

Per GPU, one of two readings:

- ``energy-counter``: ``nvmlDeviceGetTotalEnergyConsumption``, a cumulative counter in millijoules (Volta and
  newer); the window's energy is end minus begin. The counter updates about every 100 ms
  (``NvmlMeter.resolution_s``), so windows much shorter than that are coarse.
- ``power-polling``, for GPUs without the counter (``NVMLError_NotSupported``): a background thread reads
  ``nvmlDeviceGetPowerUsage`` (milliwatts) every ``poll_interval_s`` (20 ms) and the samples are integrated with
  the trapezoid rule over the window, the first and last readings held to the window's edges. Still a meter
  reading (``estimated=False``), but coarser: on recent GPUs the power reading is itself a ~1 s average.

Which GPUs: those CUDA would use. ``CUDA_VISIBLE_DEVICES`` (comma-separated NVML indices or GPU UUIDs, full or a
unique prefix) is mapped to NVML handles in its order, so ``cuda:0`` is its first entry; as CUDA does, the list
ends at the first entry that names no GPU. Unset means every GPU. ``device_indices`` then picks CUDA ordinals
(the N in torch's ``cuda:N``) among those. NVML numbers GPUs in PCI bus order; CUDA does the same only with
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (its default, FASTEST_FIRST, can differ on machines mixing GPU models; a note
says so).

The energy is each whole GPU's, every process on it included: ``gpu_processes()`` lists the other processes using
the measured GPUs so that a caller can warn. Without the NVIDIA driver nothing fails: ``available()`` is
(False, why) and windows measure nothing (``energy_j=None``).
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from pytest_llmeff.measure.meter import Measurement

MJ_PER_J = 1000.0  # millijoules per joule (and mW*s per J)

COUNTER = "energy-counter"
POLLING = "power-polling"
UNREADABLE = "unreadable"


def parse_cuda_visible_devices(value: Optional[str]) -> Optional[list[Any]]:
    """``CUDA_VISIBLE_DEVICES`` as a list of entries: int NVML indices or str UUIDs (``GPU-...``/``MIG-...``).

    None when unset (every GPU). Empty entries are dropped; an empty value gives [] (no GPU visible).
    """
    if value is None:
        return None
    entries: list[Any] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            entries.append(int(entry))
        except ValueError:
            entries.append(entry)
    return entries


def integrate_power_j(times_s: Sequence[float], power_mw: Sequence[float], t_start_s: float,
                      t_end_s: float) -> float:
    """Joules over [t_start_s, t_end_s] from power samples (milliwatts at perf_counter seconds), by the trapezoid
    rule; the first sample's power is held back to t_start_s and the last one's forward to t_end_s."""
    if not times_s:
        raise ValueError("no power samples")
    energy_mj = power_mw[0] * max(0.0, times_s[0] - t_start_s)
    for i in range(1, len(times_s)):
        energy_mj += (times_s[i] - times_s[i - 1]) * (power_mw[i] + power_mw[i - 1]) / 2.0
    energy_mj += power_mw[-1] * max(0.0, t_end_s - times_s[-1])
    return energy_mj / MJ_PER_J


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class GpuDevice:
    """One measured GPU. key: ``cuda:N`` (the CUDA ordinal); nvml_index, uuid, name: as NVML reports them
    (None if NVML would not say); mode: ``energy-counter``, ``power-polling`` or ``unreadable``."""

    key: str
    handle: Any
    nvml_index: Optional[int]
    uuid: Optional[str]
    name: Optional[str]
    mode: str


class _PowerPoller:
    """Polls the power of some GPUs every ``interval_s`` on a daemon thread. ``samples`` holds
    (perf_counter seconds, [milliwatts or None per GPU]); the first sample is taken at start, the last at stop."""

    def __init__(self, nvml: Any, handles: list[Any], interval_s: float):
        self._nvml = nvml
        self._handles = handles
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.samples: list[tuple[float, list[Optional[float]]]] = []
        self._thread = threading.Thread(target=self._run, name="llmeff-nvml-power", daemon=True)

    def _sample(self) -> None:
        power_mw: list[Optional[float]] = []
        for handle in self._handles:
            try:
                power_mw.append(float(self._nvml.nvmlDeviceGetPowerUsage(handle)))
            except self._nvml.NVMLError:  # a missed sample: the window's energy integrates the samples it has
                power_mw.append(None)
        self.samples.append((time.perf_counter(), power_mw))

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


class _Window:
    def __init__(self, counter_mj: dict[str, Optional[int]], poller: Optional[_PowerPoller], polled: list[str]):
        self.counter_mj = counter_mj
        self.poller = poller
        self.polled = polled


class NvmlMeter:
    """Energy windows from NVML, with the interface of ``CodeCarbonMeter``.

    device_indices: CUDA ordinals to measure (``[0]`` for ``cuda:0``), among the GPUs that CUDA_VISIBLE_DEVICES
        leaves visible; None for all of them.
    nvml: the NVML binding module (default: ``import pynvml``); tests pass a fake.
    force_power_polling: poll power even where the energy counter exists (to cross-check the two).
    poll_interval_s: seconds between power readings when polling.

    ``begin()`` returns a ``time.perf_counter()`` start; ``end(start)`` returns a ``Measurement`` with joules per
    GPU in ``devices`` (keys ``cuda:N``; None for a GPU that could not be read) and their sum in ``energy_j`` (None
    unless every GPU was read). Several windows may be open at once. ``co2_g`` is left None. NVML is initialised
    on first use and shut down by ``close()``. Implements ``meter.Meter``.
    """

    resolution_s = 0.1  # the NVML energy counter updates about every 100 ms
    estimated = False  # a reading of the GPU's own sensor (a Measurement is estimated if a GPU was unreadable)

    def __init__(self, device_indices: Optional[Sequence[int]] = None, nvml: Any = None, *,
                 force_power_polling: bool = False, poll_interval_s: float = 0.02):
        self.device_indices = None if device_indices is None else [int(i) for i in device_indices]
        self.force_power_polling = force_power_polling
        self.poll_interval_s = poll_interval_s
        self.notes: list[str] = []
        self._nvml = nvml
        self._initialized = False
        self._error: Optional[str] = None
        self._devices: list[GpuDevice] = []
        self._windows: dict[float, _Window] = {}

    # -- set-up -------------------------------------------------------------------------------------------------

    def _ensure(self) -> bool:
        if self._initialized:
            return True
        if self._error is not None:
            return False
        self.notes = []
        if self._nvml is None:
            try:
                self._nvml = importlib.import_module("pynvml")
            except ImportError as exc:
                self._error = f"pynvml (nvidia-ml-py) is not installed: {exc}"
                return False
        try:
            self._nvml.nvmlInit()
        except Exception as exc:
            self._error = f"NVML did not start ({type(exc).__name__}: {exc}); no NVIDIA driver here?"
            return False
        self._initialized = True
        try:
            self._devices = self._resolve_devices()
        except Exception as exc:
            self._error = str(exc) if isinstance(exc, LookupError) else f"{type(exc).__name__}: {exc}"
            self._shutdown()
            return False
        return True

    def _shutdown(self) -> None:
        if self._initialized:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:  # the meter is done with NVML either way
                pass
            self._initialized = False

    def _call(self, name: str, *args: Any) -> Any:
        return getattr(self._nvml, name)(*args)

    def _try(self, name: str, *args: Any) -> Any:
        try:
            return self._call(name, *args)
        except self._nvml.NVMLError:  # an optional query (UUID, index, process list): None means "NVML did not say"
            return None

    def _is_not_supported(self, exc: Exception) -> bool:
        cls = getattr(self._nvml, "NVMLError_NotSupported", None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
        code = getattr(self._nvml, "NVML_ERROR_NOT_SUPPORTED", 3)
        return getattr(exc, "value", None) == code

    def _visible_handles(self) -> list[tuple[Any, Optional[int]]]:
        """(handle, NVML index or None) per GPU CUDA would see, in CUDA ordinal order."""
        count = int(self._call("nvmlDeviceGetCount"))
        entries = parse_cuda_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
        if entries is None:
            return [(self._call("nvmlDeviceGetHandleByIndex", i), i) for i in range(count)]
        handles: list[tuple[Any, Optional[int]]] = []
        seen: set[str] = set()
        for position, entry in enumerate(entries):
            found = self._lookup(entry, count)
            if found is None:
                rest = entries[position:]
                self.notes.append(f"CUDA_VISIBLE_DEVICES entry {entry!r} names no GPU; as CUDA does, it and the "
                                  f"entries after it are ignored: {rest!r}")
                break
            handle, index = found
            identity = str(index) if index is not None else _text(self._try("nvmlDeviceGetUUID", handle))
            if identity in seen:
                continue
            seen.add(identity)
            handles.append((handle, index))
        return handles

    def _lookup(self, entry: Any, count: int) -> Optional[tuple[Any, Optional[int]]]:
        if isinstance(entry, int):
            if 0 <= entry < count:
                return self._call("nvmlDeviceGetHandleByIndex", entry), entry
            return None
        try:
            handle = self._call("nvmlDeviceGetHandleByUUID", entry)
            index = self._try("nvmlDeviceGetIndex", handle)
            return handle, (None if index is None else int(index))
        except self._nvml.NVMLError:  # not a full UUID: try it as a prefix, as CUDA does
            pass
        matches = []  # CUDA also accepts a unique UUID prefix
        for i in range(count):
            handle = self._call("nvmlDeviceGetHandleByIndex", i)
            uuid = self._try("nvmlDeviceGetUUID", handle)
            if uuid is not None and _text(uuid).startswith(entry):
                matches.append((handle, i))
        return matches[0] if len(matches) == 1 else None

    def _probe_mode(self, handle: Any) -> str:
        if not self.force_power_polling:
            try:
                self._call("nvmlDeviceGetTotalEnergyConsumption", handle)
                return COUNTER
            except Exception as exc:
                if not self._is_not_supported(exc):
                    self.notes.append(f"energy counter read failed ({type(exc).__name__}: {exc}); polling power")
        try:
            self._call("nvmlDeviceGetPowerUsage", handle)
            return POLLING
        except self._nvml.NVMLError:  # said in the meter's method as unreadable
            return UNREADABLE

    def _resolve_devices(self) -> list[GpuDevice]:
        visible = self._visible_handles()
        if not visible:
            raise LookupError("no GPU visible to CUDA" + (
                f" (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r})"
                if "CUDA_VISIBLE_DEVICES" in os.environ else ""))
        ordinals = list(range(len(visible))) if self.device_indices is None else self.device_indices
        devices = []
        for ordinal in ordinals:
            if not 0 <= ordinal < len(visible):
                raise LookupError(f"cuda:{ordinal} does not exist: {len(visible)} GPU(s) visible to CUDA")
            handle, index = visible[ordinal]
            name = self._try("nvmlDeviceGetName", handle)
            uuid = self._try("nvmlDeviceGetUUID", handle)
            devices.append(GpuDevice(key=f"cuda:{ordinal}", handle=handle, nvml_index=index,
                                     uuid=None if uuid is None else _text(uuid),
                                     name=None if name is None else _text(name), mode=self._probe_mode(handle)))
        models = {_text(n) for n in (self._try("nvmlDeviceGetName", h) for h, _ in visible) if n is not None}
        if os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID" and len(models) > 1:
            self.notes.append("GPUs of different models and CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA may number "
                              "them differently from NVML; set CUDA_DEVICE_ORDER=PCI_BUS_ID or list UUIDs in "
                              "CUDA_VISIBLE_DEVICES")
        return devices

    # -- the meter interface ------------------------------------------------------------------------------------

    @property
    def devices(self) -> list[GpuDevice]:
        """The GPUs measured (empty when NVML is unavailable)."""
        return list(self._devices) if self._ensure() else []

    def available(self) -> tuple[bool, str]:
        """(True, what is read per GPU) when every selected GPU can be read here; else (False, why)."""
        if not self._ensure():
            return False, self._error or "NVML unavailable"
        unreadable = [d.key for d in self._devices if d.mode == UNREADABLE]
        if unreadable:
            return False, (f"neither the energy counter nor the power of {', '.join(unreadable)} can be read "
                           f"through NVML")
        return True, "nvml: " + "; ".join(
            f"{d.key} ({d.name or 'GPU'}, nvml {d.nvml_index if d.nvml_index is not None else d.uuid}) {d.mode}"
            for d in self._devices)

    @property
    def method(self) -> str:
        """``nvml:energy-counter``, ``nvml:power-polling(20ms trapezoid; no energy counter)``, a mix naming the
        polled GPUs, or ``off (nvml unavailable: why)``."""
        ok, reason = self.available()
        if not ok:
            return f"off (nvml unavailable: {reason})"
        polled = [d.key for d in self._devices if d.mode == POLLING]
        detail = f"{self.poll_interval_s * 1000:g}ms trapezoid; " + (
            "forced" if self.force_power_polling else "no energy counter")
        if not polled:
            return f"nvml:{COUNTER}"
        if len(polled) == len(self._devices):
            return f"nvml:{POLLING}({detail})"
        return f"nvml:{COUNTER}+{POLLING}({','.join(polled)}: {detail})"

    def _read_counters_mj(self) -> dict[str, Optional[int]]:
        readings: dict[str, Optional[int]] = {}
        for d in self._devices:
            if d.mode != COUNTER:
                continue
            try:
                readings[d.key] = int(self._call("nvmlDeviceGetTotalEnergyConsumption", d.handle))
            except self._nvml.NVMLError:  # a lost GPU: the window's reading says it is missing
                readings[d.key] = None
        return readings

    def begin(self) -> float:
        """Open a window: returns its ``time.perf_counter()`` start (pass it to ``end``)."""
        start = time.perf_counter()
        if not self.available()[0]:
            return start
        while start in self._windows:  # keep each open window's key unique
            start = time.perf_counter()
        polled = [d for d in self._devices if d.mode == POLLING]
        poller = None
        if polled:
            poller = _PowerPoller(self._nvml, [d.handle for d in polled], self.poll_interval_s)
            poller.start()
        self._windows[start] = _Window(self._read_counters_mj(), poller, [d.key for d in polled])
        return start

    def end(self, start: float) -> Measurement:
        """Close the window opened by ``begin()`` that returned ``start``: joules per GPU and in total."""
        window = self._windows.pop(start, None)
        if window is None:
            return Measurement(duration_s=time.perf_counter() - start, method=self.method, estimated=True)
        end_mj = self._read_counters_mj()
        if window.poller is not None:
            window.poller.stop()
        t_end = time.perf_counter()
        duration_s = t_end - start
        devices: dict[str, Optional[float]] = {}
        for key, begin_mj in window.counter_mj.items():
            stop_mj = end_mj.get(key)
            ok = begin_mj is not None and stop_mj is not None and stop_mj >= begin_mj  # backwards: driver reload
            devices[key] = (stop_mj - begin_mj) / MJ_PER_J if ok else None
        if window.poller is not None:
            samples = window.poller.samples
            for column, key in enumerate(window.polled):
                power_mw = [p[column] for _, p in samples]
                if any(p is None for p in power_mw):
                    devices[key] = None
                else:
                    devices[key] = integrate_power_j([t for t, _ in samples], power_mw, start, t_end)
        devices = {d.key: devices.get(d.key) for d in self._devices}  # the GPUs' own order
        complete = all(v is not None for v in devices.values())
        energy_j = sum(devices.values()) if complete else None
        return Measurement(energy_j=energy_j, duration_s=duration_s, method=self.method,
                           estimated=not complete, devices=devices)

    @property
    def fallback_notes(self) -> list[str]:
        return []  # NVML is the first choice for a GPU: no meter was skipped (its own notes are in ``notes``)

    def gpu_processes(self) -> list[dict]:
        """Other processes computing on the measured GPUs (our own PID left out), for a measurement warning:
        dicts with ``device`` (``cuda:N``), ``pid``, ``used_memory_bytes`` (None if NVML does not say) and
        ``name`` (None if unknown). Inside a container NVML may report host PIDs, so our own process can appear."""
        if not self._ensure():
            return []
        own_pid = os.getpid()
        found = []
        for d in self._devices:
            for proc in self._try("nvmlDeviceGetComputeRunningProcesses", d.handle) or []:
                pid = getattr(proc, "pid", None)
                if pid is None or pid == own_pid:
                    continue
                name = self._try("nvmlSystemGetProcessName", pid)
                found.append({"device": d.key, "pid": int(pid),
                              "used_memory_bytes": getattr(proc, "usedGpuMemory", None),
                              "name": None if name is None else _text(name)})
        return found

    def close(self) -> None:
        """Stop any polling thread, drop open windows and shut NVML down (the meter can start again later)."""
        for window in self._windows.values():
            if window.poller is not None:
                window.poller.stop()
        self._windows.clear()
        self._shutdown()
        self._devices = []


def nvml_available(device_indices: Optional[Sequence[int]] = None, nvml: Any = None) -> tuple[bool, str]:
    """Whether NVML can measure those GPUs here, and why not."""
    meter = NvmlMeter(device_indices, nvml)
    try:
        return meter.available()
    finally:
        meter.close()
