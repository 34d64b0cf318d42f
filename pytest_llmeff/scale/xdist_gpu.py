"""One GPU per pytest-xdist worker: which device a worker gets, decided on the controller and applied in the
worker as ``CUDA_VISIBLE_DEVICES`` before CUDA starts (the plugin imports no torch; CUDA reads the variable when
it initialises). Pure: the environment and the /proc root are passed in.

The GPUs are the controller's ``CUDA_VISIBLE_DEVICES`` when set (its entries, ids or UUIDs, kept as written),
else one per ``/proc/driver/nvidia/gpus/*`` entry (the driver's list, read without starting CUDA). Worker
``gwN`` gets GPU ``N mod count``; more workers than GPUs share them round robin, and the controller warns.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, MutableMapping, Optional

CUDA_ENV = "CUDA_VISIBLE_DEVICES"
WORKER_KEY = "llmeff_cuda_visible_devices"  # the worker's device, in xdist's workerinput
PROC_GPUS = "/proc/driver/nvidia/gpus"


def visible_gpus(environ: Mapping[str, str], proc_gpus: str = PROC_GPUS) -> list[str]:
    """The GPUs the workers may be given (see the module doc); [] on a machine without NVIDIA GPUs."""
    if CUDA_ENV in environ:
        return [d.strip() for d in environ[CUDA_ENV].split(",") if d.strip() and d.strip() != "-1"]
    root = Path(proc_gpus)
    try:
        return [str(i) for i in range(sum(1 for p in root.iterdir() if p.is_dir()))]
    except OSError:
        return []


def worker_index(worker_id: str) -> Optional[int]:
    """``gw3`` -> 3; None for an id xdist would not give."""
    match = re.fullmatch(r"gw(\d+)", worker_id or "")
    return int(match.group(1)) if match else None


def device_for(worker_id: str, gpus: list[str]) -> Optional[str]:
    """The ``CUDA_VISIBLE_DEVICES`` value of worker ``worker_id`` (one GPU), or None (no GPUs, odd id)."""
    index = worker_index(worker_id)
    if not gpus or index is None:
        return None
    return gpus[index % len(gpus)]


def sharing_warning(workers: int, gpus: list[str]) -> Optional[str]:
    """A line when ``workers`` exceed the GPUs (workers then share a GPU and disturb each other's timings)."""
    if not gpus or workers <= len(gpus):
        return None
    return (f"WARNING -n {workers} with {len(gpus)} GPU(s): workers share GPUs round robin (gw{len(gpus)} with "
            f"gw0, ...), so their timings and energy disturb each other; use -n {len(gpus)} for one GPU each")


def pin(workerinput: Mapping, environ: MutableMapping[str, str] = os.environ) -> Optional[str]:
    """In a worker: set ``CUDA_VISIBLE_DEVICES`` to the device the controller chose; returns it (None: none)."""
    device = workerinput.get(WORKER_KEY) if workerinput else None
    if device:
        environ[CUDA_ENV] = str(device)
    return device
