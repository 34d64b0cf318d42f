"""Will the variant's weights fit in memory? Checked BEFORE loading on CPU, where the kernel's OOM killer ends the
whole pytest process (every result lost) instead of raising an error.

The estimate is honest and cheap: the parameter count from the safetensors headers (a few KB read per file,
no weights touched) times the bytes each parameter takes in the variant's target dtype, with bitsandbytes
8-bit/4-bit and fp8 linears counted as quantized (and their scales), everything else in the precision's
dtype. It is the weights alone: activations and the KV cache come on top, so a variant that passes may still
be tight, but one that fails cannot load. The memory available is ``MemAvailable`` from ``/proc/meminfo``,
or the cgroup's remaining limit when that is lower; ``LLMEFF_MEM_AVAILABLE_BYTES`` overrides both (tests).

No torch import here.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pytest_llmeff.errors import ModelSourceError, VariantTooLarge
from pytest_llmeff.measure.oom import human_bytes
from pytest_llmeff.config.variants import load_id

ENV_AVAILABLE = "LLMEFF_MEM_AVAILABLE_BYTES"

_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
                "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1}
_FLOAT = {"F64", "F32", "F16", "BF16"}
_PRECISION_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
_NOT_LINEAR = ("embed", "wte", "wpe", "norm", "lm_head")  # name parts of weights bitsandbytes/fp8 leave alone


def _count(params: int) -> str:
    """``1.24 B``, ``134.5 M``, ``186,304``."""
    if params >= 10**9:
        return f"{params / 1e9:.2f} B"
    if params >= 10**6:
        return f"{params / 1e6:.1f} M"
    return f"{params:,}"


# --- what is available --------------------------------------------------------------------------------------
def _read_int(path: Path) -> Optional[int]:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup_available() -> Optional[int]:
    """Bytes left under this process's cgroup memory limit (v2 or v1), page cache counted as free; None when
    there is no limit or it cannot be read."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    root = Path("/sys/fs/cgroup")
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        rel = rel.lstrip("/")
        if controllers == "":  # v2
            candidates = [root / rel, root]
            limit_f, usage_f, stat_key = "memory.max", "memory.current", "inactive_file"
        elif "memory" in controllers.split(","):  # v1
            candidates = [root / "memory" / rel, root / "memory"]
            limit_f, usage_f, stat_key = "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"
        else:
            continue
        for folder in candidates:
            limit = _read_int(folder / limit_f)
            usage = _read_int(folder / usage_f)
            if limit is None or usage is None:
                continue
            if limit >= 2**60:  # "no limit" in v1
                break
            return max(0, limit - max(0, usage - _stat_value(folder / "memory.stat", stat_key)))
    return None


def available_bytes() -> tuple[Optional[int], str]:
    """(bytes of memory available to this process, where the figure comes from); (None, why) when unknown."""
    override = os.environ.get(ENV_AVAILABLE)
    if override:
        try:
            return int(float(override)), ENV_AVAILABLE
        except ValueError:
            raise ModelSourceError(f"{ENV_AVAILABLE}={override!r} is not a number of bytes") from None
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                mem = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    group = _cgroup_available()
    if group is not None and (mem is None or group < mem):
        return group, "left under the cgroup memory limit"
    if mem is None:
        return None, "no /proc/meminfo"
    return mem, "MemAvailable"


# --- what the weights need ----------------------------------------------------------------------------------
@dataclass
class Estimate:
    """Weights of one variant as it would be loaded: ``bytes``, ``params`` and how they were counted."""

    bytes: int
    params: int
    how: str


def _header(path: Path) -> dict:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n))


def safetensors_tensors(directory: Path) -> Optional[list[tuple[str, str, int, int]]]:
    """(name, dtype, element count, rows) of every tensor in the directory's safetensors files; None when there are
    none or a header cannot be read (the estimate is then skipped, never guessed)."""
    directory = Path(directory)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    out = []
    try:
        for path in files:
            for name, info in _header(path).items():
                if name == "__metadata__":
                    continue
                count = 1
                for dim in info["shape"]:
                    count *= int(dim)
                out.append((name, str(info["dtype"]), count, int(info["shape"][0]) if info["shape"] else 1))
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
    return out


def _is_quantized_linear(name: str, count: int, skip: tuple[str, ...]) -> bool:
    if not name.endswith(".weight") or count < 2:
        return False
    parts = name[: -len(".weight")].split(".")
    if any(s in name for s in skip):
        return False
    return not any(marker in part for part in parts for marker in _NOT_LINEAR)


def estimate(variant, directory: Path) -> Optional[Estimate]:
    """Bytes of the variant's weights once loaded (see the module doc); None when it cannot be counted."""
    tensors = safetensors_tensors(directory)
    if tensors is None:
        return None
    q = variant.quantization
    method = q.method if q is not None else None
    precision = "bfloat16" if variant.precision == "fp8" else variant.precision
    if method == "dynamic-int8":  # loaded in float32 first, quantized in place after: the peak is float32
        precision, method = "float32", None
    unit = _PRECISION_BYTES.get(precision, 4)
    quantized = {"int8": 1.0, "nf4": 0.5, "fp4": 0.5}.get(method or "")
    if variant.precision == "fp8" and method is None:
        quantized = 1.0 + 4 / (128 * 128)  # e4m3 values plus one float32 scale per 128x128 block
    if method in ("nf4", "fp4"):
        # one absmax per 64 values: float32, or with double quantization uint8 plus a float32 per 256 blocks
        quantized += (1 / 64 + 4 / (64 * 256)) if q.double_quant else 4 / 64
    skip = tuple(q.skip_modules) if q is not None and q.skip_modules else ("lm_head",)
    total = 0.0
    params = 0
    for name, dtype, count, rows in tensors:
        params += count
        if dtype not in _FLOAT:
            total += count * _DTYPE_BYTES.get(dtype, 4)
        elif quantized is not None and _is_quantized_linear(name, count, skip):
            total += count * quantized
            if method == "int8":
                total += 4 * rows  # LLM.int8: a float32 scale per output row
        else:
            total += count * unit
    what = precision if quantized is None else (f"{q.label} linears, {precision} elsewhere" if q is not None
                                                else f"fp8 linears, {precision} elsewhere")
    return Estimate(bytes=int(total), params=params, how=what)


def check_fits(variant, directory: Path, device: str) -> Optional[Estimate]:
    """On CPU: raise VariantTooLarge (a skip, remembered by the model cache) when the variant's weights exceed
    the memory available; returns the estimate (None when it could not be made or the device is not CPU)."""
    if not device.startswith("cpu"):
        return None
    est = estimate(variant, directory)
    if est is None:
        return None
    available, source = available_bytes()
    if available is None or est.bytes <= available:
        return est

    name = load_id(variant.model, variant.precision, variant.quantization)
    raise VariantTooLarge(
        f"{name}: its weights alone need ~{human_bytes(est.bytes)} ({_count(est.params)} parameters as "
        f"{est.how}) but only {human_bytes(available)} of memory is available ({source}); loading it on CPU "
        "would get the process killed. Use a smaller precision or quantization (bfloat16, int8, nf4) or free "
        "memory"
    )


def gguf_params(gguf_path: Path) -> Optional[int]:
    """Parameter count of a GGUF file (its tensor shapes; the ``gguf`` package reads the header only); None when
    the ``gguf`` package is missing or the file is not a readable GGUF: the caller then says what it used instead
    (the shard planner: the file size), or leaves the check to the conversion, which names the file and why."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(gguf_path), "r")
        return int(sum(int(t.n_elements) for t in reader.tensors))
    except (ImportError, OSError, ValueError, KeyError, IndexError):
        return None


def check_conversion_fits(gguf_path: Path) -> None:
    """Before the one-time GGUF conversion (always on CPU): it holds the dequantized float32 weights twice (the
    GGUF-loaded model and the plain copy it saves). VariantTooLarge when that exceeds the memory available."""
    available, source = available_bytes()
    if available is None:
        return
    params = gguf_params(gguf_path)
    if params is None:
        return
    need = params * 4 * 2
    if need > available:
        raise VariantTooLarge(
            f"{Path(gguf_path).name}: converting it ({_count(params)} parameters, float32 twice while "
            f"copying) needs ~{human_bytes(need)} but only {human_bytes(available)} of memory is available "
            f"({source}); free memory, or convert it once on a bigger machine and share --llmeff-cache-dir"
        )
