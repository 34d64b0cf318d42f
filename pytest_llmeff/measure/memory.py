"""True peak memory of a window, and giving freed memory back between variants.

Two figures per window (``reset()`` before it, then ``peak_bytes()`` / ``delta_bytes()`` after it):

- ``peak_bytes()``, the PROCESS peak in bytes. CPU: the process high-water mark VmHWM, reset by writing "5" to
  /proc/self/clear_refs (Linux), which sets it to the resident size at the reset, so it includes everything the
  process holds (torch itself, the loaded weights, and any freed memory the C allocator has not returned).
  CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only, not the caching
  allocator's reserve or the CUDA context).
- ``delta_bytes()``, the WINDOW's own peak in bytes above the memory in use at the reset. CPU: VmHWM at the end
  minus VmHWM right after the reset (= VmRSS at the reset). CUDA: ``max_memory_allocated`` minus
  ``memory_allocated`` at the reset. It does not depend on what the process loaded before.
  On CPU, ``reset()`` first runs glibc ``malloc_trim(0)``: without it, a generate that follows another reuses the
  previous one's freed-but-resident heap pages and VmHWM does not move (measured: delta 0.0-0.1 MiB for a
  SmolLM2 fp32 batch-4 generate; 10-11 MiB with the trim). The trim costs 1-9 ms, outside the timed region;
  the round then faults its ~10-20 MiB of pages in again (as it already does for its large, mmap-backed
  buffers). ``gc.collect()`` is NOT run per round: it costs ~270 ms in a process holding torch and transformers.
  The CPU delta still depends on the heap's layout (where small chunks land): measured 15-25% apart between a
  fresh process and one that held a float32 model first; CUDA's figure counts bytes and does not.

Where neither is possible a figure is None (never a current-usage figure passed off as a peak).

``release_memory()`` gives freed memory back to the system: run it whenever a large object (a variant's model)
has been dropped, so the process peak of what comes next does not carry the freed pages.
"""

from __future__ import annotations

import gc
import sys
from typing import Optional, Sequence

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def _read_status_kb(*fields: str) -> dict[str, int]:
    """The named /proc/self/status fields in KiB (one read, so they are from the same instant); {} on failure."""
    found: dict[str, int] = {}
    try:
        with open(_STATUS) as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                if name in fields:
                    found[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return found


def resident_bytes() -> Optional[int]:
    """The process's resident set size now (VmRSS), in bytes; None off Linux."""
    kb = _read_status_kb("VmRSS").get("VmRSS")
    return None if kb is None else kb * 1024


def cpu_peak_resettable() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as fh:
            fh.write("5")
        return "VmHWM" in _read_status_kb("VmHWM")
    except OSError:
        return False


_LIBC_TRIM = None  # the libc malloc_trim function, False once known to be missing


def _malloc_trim_fn():
    global _LIBC_TRIM
    if _LIBC_TRIM is None:
        _LIBC_TRIM = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes
                import ctypes.util

                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                fn = libc.malloc_trim  # glibc only (musl has none: AttributeError)
                fn.argtypes = [ctypes.c_size_t]  # pad: bytes to leave untrimmed at the top of the heap
                fn.restype = ctypes.c_int
                _LIBC_TRIM = fn
            except (OSError, AttributeError):
                _LIBC_TRIM = False
    return _LIBC_TRIM


def malloc_trim() -> bool:
    """glibc ``malloc_trim(0)``: return the free pages of every malloc arena to the system.

    True if glibc released some memory, False if it released none or there is no glibc ``malloc_trim``."""
    fn = _malloc_trim_fn()
    return bool(fn(0)) if fn else False


def release_memory() -> None:
    """Give freed memory back: ``gc.collect()``, then ``torch.cuda.empty_cache()`` when CUDA is initialised in
    this process (never initialises it), then glibc ``malloc_trim(0)`` where available. Safe no-op elsewhere.

    Cost measured on the 2-core CPU VM holding SmolLM2 in float32 (513 MiB of weights): 340 ms, nearly all of
    it ``gc.collect()`` (270 ms); ``malloc_trim`` alone is 1-9 ms after a generate and 0.02 ms with nothing to
    trim. So the whole release runs where a model is dropped (``ModelCache.release``), and ``PeakMemory.reset()``
    runs only the trim."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_initialized():
                torch.cuda.empty_cache()
        except RuntimeError:  # a CUDA error (a broken context) must not turn freeing memory into an error; the
            pass  # memory then stays reserved, which the next peak reading shows
    malloc_trim()


class PeakMemory:
    """``reset()`` before the window, ``peak_bytes()`` and ``delta_bytes()`` after it (both in bytes).

    method: "cuda_max_allocated", "vmhwm" or "unavailable".
    """

    def __init__(self, device: str, devices: Sequence[str] = ()):
        self.device = device
        # a device_map model over several GPUs: every one of them is reset and read, the peaks summed
        self.cuda_devices = list(devices) if len(devices) > 1 else [device]
        self.per_device: dict[str, int] = {}  # the last peak_bytes() of each GPU, bytes
        self._base_bytes: Optional[int] = None  # memory in use at the last reset, bytes
        if device.startswith("cuda"):
            self.method = "cuda_max_allocated"
        elif cpu_peak_resettable():
            self.method = "vmhwm"
        else:
            self.method = "unavailable"
        # CPU: delta_bytes needs a trim before its window (see reset), so it comes from an untimed window;
        # CUDA's allocator figures are exact and free to read after every timed window
        self.delta_needs_untimed_window = self.method == "vmhwm"

    def reset(self, trim: bool = False) -> None:
        """Start a window: reset the peak and record the memory in use now (the base of ``delta_bytes``).

        ``trim`` (CPU): glibc ``malloc_trim(0)`` first, so freed heap pages leave the resident set and the
        window's reuse of them is counted in ``delta_bytes``. Never before a timed window: the window then pays
        the page faults of memory a steady process would reuse, and how much depends on the process's history
        (the TTFT of a prefill-heavy model rose 11% after other tests had shaped the heap)."""
        self._base_bytes = None
        if self.method == "cuda_max_allocated":
            import torch

            base = 0
            for d in self.cuda_devices:
                torch.cuda.synchronize(d)
                torch.cuda.reset_peak_memory_stats(d)
                base += int(torch.cuda.memory_allocated(d))
            self._base_bytes = base
        elif self.method == "vmhwm":
            if trim:
                malloc_trim()
            with open(_CLEAR_REFS, "w") as fh:
                fh.write("5")
            # VmHWM right after the reset equals the resident size at the reset: the base of the window
            kb = _read_status_kb("VmHWM").get("VmHWM")
            self._base_bytes = None if kb is None else kb * 1024

    def peak_bytes(self) -> Optional[int]:
        """The process peak since the reset, bytes (CPU: VmHWM; CUDA: max_memory_allocated); None if unknown."""
        if self.method == "cuda_max_allocated":
            import torch

            for d in self.cuda_devices:
                torch.cuda.synchronize(d)
                self.per_device[d] = int(torch.cuda.max_memory_allocated(d))
            return sum(self.per_device[d] for d in self.cuda_devices)
        if self.method == "vmhwm":
            kb = _read_status_kb("VmHWM").get("VmHWM")
            return None if kb is None else kb * 1024
        return None

    def delta_bytes(self) -> Optional[int]:
        """The window's own peak above the memory in use at the reset, bytes (>= 0); None if unknown or if
        ``reset()`` was not called."""
        if self._base_bytes is None:
            return None
        peak = self.peak_bytes()
        if peak is None:
            return None
        return max(0, peak - self._base_bytes)
