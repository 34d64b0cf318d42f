"""The set of devices a variant uses, as one key: ``cuda:0`` for one GPU, ``cuda:0+cuda:1`` for a model that
``device_map`` spread over two, so its meter and its peak memory cover exactly those GPUs (not the first GPU
alone, not every visible GPU). Pure."""

from __future__ import annotations

from typing import Iterable, Optional

SEPARATOR = "+"


def devices_key(devices: Iterable[str]) -> str:
    """One key for a set of devices: sorted by CUDA ordinal, joined by ``+``; a single device unchanged."""
    unique = sorted(set(devices), key=lambda d: (not d.startswith("cuda:"), _ordinal(d) or 0, d))
    return SEPARATOR.join(unique)


def split_key(key: str) -> list[str]:
    return [d for d in key.split(SEPARATOR) if d]


def _ordinal(device: str) -> Optional[int]:
    if device.startswith("cuda:"):
        try:
            return int(device.split(":", 1)[1])
        except ValueError:
            return None
    return None


def cuda_indices(key: str) -> Optional[list[int]]:
    """CUDA ordinals of a key of several GPUs (``cuda:0+cuda:1`` -> [0, 1]); None for anything else."""
    parts = split_key(key)
    if len(parts) < 2 or not all(p.startswith("cuda:") for p in parts):
        return None
    ordinals = [_ordinal(p) for p in parts]
    return None if any(o is None for o in ordinals) else ordinals


def model_devices(model) -> tuple[str, ...]:
    """The CUDA devices a loaded model's parameters sit on (``hf_device_map`` placement), in ordinal order."""
    found = {str(p.device) for p in model.parameters() if str(p.device).startswith("cuda")}
    return tuple(split_key(devices_key(found))) if found else ()
