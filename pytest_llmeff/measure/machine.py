"""Where a run happened: machine, library versions and git commit. No heavy imports (versions come from
package metadata, GPUs from NVML when the driver is present)."""

from __future__ import annotations

import os
import platform
import socket
from importlib import metadata
from typing import Any, Optional

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


def gpus() -> list[dict[str, Any]]:
    """NVIDIA GPUs visible to NVML (name, memory); [] when there is no driver."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:
        return []
    found = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            found.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                          "memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)})
    finally:
        pynvml.nvmlShutdown()
    return found


def machine_info() -> dict[str, Any]:
    return {
        "cpu": _cpu_name(),
        "cores_logical": os.cpu_count(),
        "ram_bytes": _ram_bytes(),
        "gpus": gpus(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
    }


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
