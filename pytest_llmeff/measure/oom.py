"""Out of memory during a variant's work -> ONE line, memory freed, the session goes on.

``with translate_oom(variant, device, batch_size):`` turns ``torch.cuda.OutOfMemoryError`` (and the CUDA
"out of memory" RuntimeErrors of kernels, cuBLAS and cuDNN; on CPU torch's allocator failure and ``MemoryError``)
into ``errors.OutOfMemory`` whose message names the variant, the batch size, what the failed allocation asked
for, what the device had at that moment (free/total from ``torch.cuda.mem_get_info``, PyTorch's allocated and
reserved) and a hint. Figures it cannot read are said to be unreadable, never invented.

Before raising it frees what it can: the frames of the failed call are cleared (their tensors, a KV cache or a
half-loaded model, are dropped), the caller's ``release`` runs, then ``gc.collect()`` and
``torch.cuda.empty_cache()``. The original exception is not chained (its traceback would keep those frames
alive), so raise the one-line failure outside an ``except`` block that still holds other references.

Phase ``"loading"`` raises ``LoadOutOfMemory``, which is also a ``ModelSourceError``: the model cache remembers
it and the variant's tests fail with that line, like any other variant that cannot load.

No torch import at module level.
"""

from __future__ import annotations

import gc
import re
import sys
import traceback
from typing import Any, Callable, Optional

from pytest_llmeff.errors import LoadOutOfMemory, OutOfMemory  # noqa: F401  (LoadOutOfMemory: its old home)
from pytest_llmeff.config.variants import load_id

_TRIED = re.compile(r"Tried to allocate ([0-9.]+ (?:[KMGTP]iB|bytes))")  # torch's CUDA allocator
_CPU_TRIED = re.compile(r"you tried to allocate ([0-9]+) bytes")
_CUDA_MARKERS = ("CUDA out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
                 "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE")
_CPU_MARKERS = ("DefaultCPUAllocator: not enough memory", "DefaultCPUAllocator: can't allocate memory")


def human_bytes(n: float) -> str:
    """``1.50 GiB``, ``12.3 MiB``, ``728.0 KiB``, ``1000 bytes``."""
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.1f} MiB"
    if n >= 2**10:
        return f"{n / 2**10:.1f} KiB"
    return f"{int(n)} bytes"


_human = human_bytes


def oom_kind(exc: BaseException) -> Optional[str]:
    """``"cuda"`` or ``"cpu"`` when ``exc`` is an out-of-memory error of that kind, else None."""
    torch = sys.modules.get("torch")
    cuda_oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch is not None else None
    if cuda_oom is not None and isinstance(exc, cuda_oom):
        return "cuda"
    if isinstance(exc, MemoryError):
        return "cpu"
    if isinstance(exc, RuntimeError):
        text = str(exc)
        if any(m in text for m in _CUDA_MARKERS) or ("out of memory" in text and "CUDA" in text):
            return "cuda"
        if any(m in text for m in _CPU_MARKERS):
            return "cpu"
    return None


def _variant_name(variant: Any) -> str:
    if variant is None:
        return "the variant"
    if isinstance(variant, str):
        return variant
    vid = getattr(variant, "id", "") or ""
    if vid:
        return vid

    return load_id(variant.model, variant.precision, variant.quantization)


def _cuda_figures(device: str) -> tuple[Optional[str], Optional[str]]:
    """(what the device has now, None) or (None, why it cannot be read)."""
    try:
        import torch

        index = torch.device(device).index
        if index is None:
            index = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        allocated = torch.cuda.memory_allocated(index)
        reserved = torch.cuda.memory_reserved(index)
    except Exception as exc:  # a CPU build, no driver, a broken context
        why = " ".join(str(exc).split())[:120] or type(exc).__name__
        return None, f"the device memory could not be read ({type(exc).__name__}: {why})"
    return (f"{_human(free)} free of {_human(total)} (PyTorch: {_human(allocated)} allocated, "
            f"{_human(reserved)} reserved)"), None


def _cpu_figures() -> str:
    try:
        for line in open("/proc/meminfo").read().splitlines():
            if line.startswith("MemAvailable:"):
                return f"{_human(int(line.split()[1]) * 1024)} available (MemAvailable)"
    except (OSError, ValueError, IndexError):
        pass
    return "the available memory could not be read"


def _free_cuda() -> Optional[int]:
    """gc + empty_cache; the bytes PyTorch still holds allocated on the current device afterwards, or None."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            return int(torch.cuda.memory_allocated())
    except RuntimeError:  # a CUDA error (the context broken by the OOM): what is held is unknown, said as None
        pass
    return None


class translate_oom:
    """Context manager: ``with translate_oom(variant, device, batch_size, phase="generating"):``.

    variant: a Variant or an id string. device: where the work runs (``cuda``, ``cuda:1``, ``cpu``).
    batch_size: named in the message (None: left out, e.g. while loading). phase: ``"generating"`` (default),
    ``"loading"`` (raises LoadOutOfMemory), or any short verb phrase. release: called before the memory is
    collected, to drop references the caller holds (a model being replaced, a batch).
    After an OOM: ``.error`` is the raised error and ``.allocated_after`` what PyTorch still held (bytes)."""

    def __init__(self, variant: Any = None, device: str = "cuda", batch_size: Optional[int] = None, *,
                 phase: str = "generating", release: Optional[Callable[[], None]] = None):
        self.variant = variant
        self.device = str(device)
        self.batch_size = batch_size
        self.phase = phase
        self.release = release
        self.error: Optional[OutOfMemory] = None
        self.allocated_after: Optional[int] = None

    def __enter__(self) -> "translate_oom":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            return False
        kind = oom_kind(exc)
        if kind is None:
            return False
        text = str(exc)
        # what the device had when the allocation failed (read before anything is freed)
        if kind == "cuda":
            had, unreadable = _cuda_figures(self.device if self.device.startswith("cuda") else "cuda")
        else:
            had, unreadable = _cpu_figures(), None
        # drop the failed call's frames (their locals hold the tensors) and the exception's hold on them
        traceback.clear_frames(tb)
        exc.__traceback__ = None
        exc.__context__ = None
        exc.__cause__ = None
        del exc, tb
        if self.release is not None:
            self.release()
        self.allocated_after = _free_cuda()

        tried = _TRIED.search(text)
        cpu_tried = _CPU_TRIED.search(text)
        if tried:
            asked = f"tried to allocate {tried.group(1)}"
        elif cpu_tried:
            asked = f"tried to allocate {_human(int(cpu_tried.group(1)))}"
        else:
            asked = "the size of the failed allocation is not in the error"
        where = self.device if kind == "cuda" and self.device.startswith("cuda") else ("cuda" if kind == "cuda"
                                                                                        else "cpu")
        head = _variant_name(self.variant)
        if self.batch_size is not None:
            head += f" batch_size={self.batch_size}"
        what = "CUDA out of memory" if kind == "cuda" else "out of memory"
        state = f"the device had {had}" if had else unreadable
        if kind == "cuda" and self.allocated_after is not None:
            freed = f"memory released ({_human(self.allocated_after)} still allocated by PyTorch)"
        else:
            freed = "memory released"
        if self.phase == "loading":
            hint = ("use a smaller precision or a quantization (float16/bfloat16, int8, nf4) or free the device"
                    if kind == "cuda" else "use a smaller precision or a quantization, or free memory")
        else:
            hint = "lower batch_size or max_new_tokens, or quantize (int8, nf4)"
        message = f"{head}: {what} on {where} while {self.phase}: {asked}; {state}; {freed}. Hint: {hint}"
        cls = LoadOutOfMemory if self.phase == "loading" else OutOfMemory
        self.error = cls(message)
        raise self.error from None
