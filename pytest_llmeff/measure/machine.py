"""Where a run happened: machine, library versions and git commit. No heavy imports (versions come from
package metadata, GPUs from NVML when the driver is present).

An NVML that fails (other than "no driver") never reads as "no GPU": the machine info then says
``GPU: unreadable (reason)`` in its ``gpu_unreadable`` field, and the machine fingerprint is marked with it."""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Mapping, Optional

VERSIONED = ("pytest-llmeff", "torch", "transformers", "accelerate", "bitsandbytes", "codecarbon", "pytest",
             "pytest-benchmark", "pydantic", "llama-cpp-python", "ctranslate2", "onnxruntime-genai", "onnxruntime")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_bytes() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


#: NVML's answers to ``nvmlInit`` that mean "no NVIDIA driver here", so no NVIDIA GPU: NVML_ERROR_DRIVER_NOT_LOADED
#: (9) and NVML_ERROR_LIBRARY_NOT_FOUND (12). Any other failure means GPUs may be there but cannot be read.
NO_DRIVER_CODES = frozenset({9, 12})

#: the machine-info key that says why the GPUs could not be read (absent when they were, or when there are none)
GPU_UNREADABLE = "gpu_unreadable"


@dataclass(frozen=True)
class GpuInventory:
    """The NVIDIA GPUs NVML sees.

    gpus: one dict per GPU: ``index``, ``name``, ``memory_bytes`` (total memory in bytes).
    unreadable: None when the list is the truth (``[]``: no driver, or pynvml not installed); otherwise why NVML
    failed (``"NVMLError_NoPermission: Insufficient Permissions"``), and ``gpus`` is then what was read before the
    failure, possibly nothing: not evidence of a GPU-less machine.
    """

    gpus: list[dict[str, Any]] = field(default_factory=list)
    unreadable: Optional[str] = None


def _nvml_reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_gpus(nvml: Any = None) -> GpuInventory:
    """The GPUs visible to NVML (``nvml``: the pynvml module; None imports it). pynvml missing or no NVIDIA
    driver: an empty, readable inventory. Any other NVML error, at init or while listing: ``unreadable`` says it."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return GpuInventory()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        if getattr(exc, "value", None) in NO_DRIVER_CODES:
            return GpuInventory()
        return GpuInventory(unreadable=f"NVML init failed: {_nvml_reason(exc)}")
    found: list[dict[str, Any]] = []
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(handle)
            found.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                          "memory_bytes": int(nvml.nvmlDeviceGetMemoryInfo(handle).total)})
    except nvml.NVMLError as exc:
        return GpuInventory(found, f"NVML could not list GPU {len(found)}: {_nvml_reason(exc)}")
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass  # the list is read; a failing shutdown changes nothing in it
    return GpuInventory(found)


def gpus() -> list[dict[str, Any]]:
    """NVIDIA GPUs visible to NVML (name, memory); [] when there is no driver or they cannot be read (use
    ``read_gpus`` or ``machine_info`` to know which)."""
    return read_gpus().gpus


def gpu_line(machine: Mapping[str, Any]) -> str:
    """What the machine info says of its GPUs, for the user: ``GPU: unreadable (reason)``, ``GPU: none`` or
    ``GPU: 2 x NVIDIA H100 80GB HBM3``."""
    reason = machine.get(GPU_UNREADABLE)
    if reason:
        return f"GPU: unreadable ({reason})"
    names = [str(g.get("name", "?")) if isinstance(g, Mapping) else str(g) for g in machine.get("gpus") or []]
    if not names:
        return "GPU: none"
    return "GPU: " + ", ".join(f"{names.count(n)} x {n}" for n in dict.fromkeys(names))


def machine_info(nvml: Any = None) -> dict[str, Any]:
    """The run's machine description (``results.MachineInfo``). When NVML fails, ``gpu_unreadable`` holds the
    reason; ``results.storage.machine_fingerprint`` then marks the fingerprint, so the run is never filed as a
    GPU-less machine's. ``nvml``: the pynvml module to use (tests pass a fake)."""
    inventory = read_gpus(nvml)
    info: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cores_logical": os.cpu_count(),
        "ram_bytes": _ram_bytes(),
        "gpus": inventory.gpus,
        "os": platform.platform(),
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
    }
    if inventory.unreadable is not None:
        info[GPU_UNREADABLE] = inventory.unreadable
    return info


def versions() -> dict[str, Optional[str]]:
    found: dict[str, Optional[str]] = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def commit_info() -> dict[str, Any]:
    """git commit id, dirty flag and branch, through pytest-benchmark's helper."""
    from pytest_benchmark.utils import get_commit_info

    info = get_commit_info()
    return {"id": info.get("id"), "dirty": info.get("dirty"), "branch": info.get("branch")}
