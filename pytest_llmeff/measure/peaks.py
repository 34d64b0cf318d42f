"""Peak dense TFLOP/s by GPU and dtype, for MFU. Vendor datasheet figures for dense (not sparse) math.

Only devices listed here (or ``--llmeff-peak-tflops``) get an ``mfu``; no figure is guessed for others.
"""

from __future__ import annotations

from typing import Optional

# name fragment (matched case-insensitively against the NVML/torch device name) -> dtype -> TFLOP/s
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bfloat16": 989.0, "float16": 989.0, "fp8": 1979.0, "float32": 67.0},
    "H100 SXM": {"bfloat16": 989.0, "float16": 989.0, "fp8": 1979.0, "float32": 67.0},
    "H100 PCIe": {"bfloat16": 756.0, "float16": 756.0, "fp8": 1513.0, "float32": 51.0},
    "H100 NVL": {"bfloat16": 835.0, "float16": 835.0, "fp8": 1671.0, "float32": 60.0},
    "H100 80GB HBM3": {"bfloat16": 989.0, "float16": 989.0, "fp8": 1979.0, "float32": 67.0},
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5},
    "L40S": {"bfloat16": 362.0, "float16": 362.0, "fp8": 733.0, "float32": 91.6},
    "L4": {"bfloat16": 121.0, "float16": 121.0, "fp8": 242.0, "float32": 30.3},
}


def peak_tflops(device_name: Optional[str], dtype: str) -> Optional[float]:
    """The listed peak for ``device_name`` and ``dtype`` (longest matching name fragment wins), else None."""
    if not device_name:
        return None
    name = device_name.lower()
    matches = [k for k in PEAK_TFLOPS if k.lower() in name]
    if not matches:
        return None
    return PEAK_TFLOPS[max(matches, key=len)].get(dtype)
