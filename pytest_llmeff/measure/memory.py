"""True peak memory of a window.

CPU: the process high-water mark VmHWM, reset by writing "5" to /proc/self/clear_refs (Linux) before the window.
CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
Where neither is possible the peak is None (never a current-usage figure passed off as a peak).
"""

from __future__ import annotations

from typing import Optional

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def _read_status_kb(field: str) -> Optional[int]:
    try:
        with open(_STATUS) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_peak_resettable() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as fh:
            fh.write("5")
        return _read_status_kb("VmHWM") is not None
    except OSError:
        return False


class PeakMemory:
    """``reset()`` before the window, ``peak_bytes()`` after it.

    method: "cuda_max_allocated", "vmhwm" or "unavailable".
    """

    def __init__(self, device: str):
        self.device = device
        if device.startswith("cuda"):
            self.method = "cuda_max_allocated"
        elif cpu_peak_resettable():
            self.method = "vmhwm"
        else:
            self.method = "unavailable"

    def reset(self) -> None:
        if self.method == "cuda_max_allocated":
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.method == "vmhwm":
            with open(_CLEAR_REFS, "w") as fh:
                fh.write("5")

    def peak_bytes(self) -> Optional[int]:
        if self.method == "cuda_max_allocated":
            import torch

            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        if self.method == "vmhwm":
            kb = _read_status_kb("VmHWM")
            return None if kb is None else kb * 1024
        return None
