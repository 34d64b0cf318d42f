"""Choosing the energy meter: ``--llmeff-energy=auto|nvml|rapl|codecarbon|off``.

``auto`` prefers real meters: NVML for a CUDA variant, else RAPL where its counters are readable, else the
CodeCarbon estimate (labelled ``estimated``). An explicitly requested backend that cannot be read is an error
(``MeterUnavailable``); ``auto`` falls back and says why in the method.
Every meter implements ``meter.Meter`` (the interface, with ``Measurement`` and ``OffMeter``, lives in meter.py).
"""

from __future__ import annotations

from typing import Optional

from pytest_llmeff.defaults import DEFAULT_POWERCAP_ROOT
from pytest_llmeff.errors import MeterUnavailable  # noqa: F401  (its old home; defined in errors.py)
from pytest_llmeff.measure.device_set import cuda_indices
from pytest_llmeff.measure.energy import CodeCarbonMeter
from pytest_llmeff.measure.meter import Measurement, Meter, OffMeter  # noqa: F401  (OffMeter's old home)
from pytest_llmeff.measure.nvml import NvmlMeter
from pytest_llmeff.measure.rapl import RaplMeter

BACKENDS = ("auto", "nvml", "rapl", "codecarbon", "off")


def _cuda_index(device: str) -> Optional[int]:
    if not device.startswith("cuda"):
        return None
    return int(device.split(":", 1)[1]) if ":" in device else 0


def check_backend(kind: str, powercap_root: str = DEFAULT_POWERCAP_ROOT) -> Optional[str]:
    """For an explicitly requested backend: None when it can be read, else the reason (for a usage error)."""
    if kind == "rapl":
        ok, why = RaplMeter(powercap_root).available()
        return None if ok else f"--llmeff-energy=rapl cannot read RAPL: {why}"
    if kind == "nvml":
        ok, why = NvmlMeter().available()
        return None if ok else f"--llmeff-energy=nvml cannot read NVML: {why}"
    return None


def make_meter(kind: str, device: str, country_iso3: str, powercap_root: str = DEFAULT_POWERCAP_ROOT) -> Meter:
    """The meter for a variant on ``device``. Raises MeterUnavailable for an explicit backend that fails."""
    if kind not in BACKENDS:
        raise MeterUnavailable(f"--llmeff-energy={kind!r} is not one of {', '.join(BACKENDS)}")
    if kind == "off":
        return OffMeter()
    notes = []
    if kind in ("auto", "nvml"):
        several = cuda_indices(device)  # a device_map model's GPUs (cuda:0+cuda:1): exactly those
        index = _cuda_index(device) if several is None else several[0]
        if index is not None or kind == "nvml":
            meter = NvmlMeter(device_indices=several or (None if index is None else [index]))
            ok, why = meter.available()
            if ok:
                return meter
            if kind == "nvml":
                raise MeterUnavailable(f"--llmeff-energy=nvml cannot read NVML: {why}")
            notes.append(f"nvml: {why}")
    if kind in ("auto", "rapl") and not device.startswith("cuda"):
        meter = RaplMeter(powercap_root)
        ok, why = meter.available()
        if ok:
            return meter
        if kind == "rapl":
            raise MeterUnavailable(f"--llmeff-energy=rapl cannot read RAPL: {why}")
        notes.append(f"rapl: {why}")
    if kind == "rapl":
        raise MeterUnavailable(f"--llmeff-energy=rapl measures the CPU package; device {device!r} is a GPU")
    return CodeCarbonMeter(country_iso3, fallback_notes=notes)
