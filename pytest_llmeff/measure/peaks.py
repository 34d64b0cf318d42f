"""Peak dense TFLOP/s by GPU and dtype, for MFU. Vendor datasheet figures for dense (not sparse) math.

Only devices listed here (or ``--llmeff-peak-tflops``) get an ``mfu``; no figure is guessed for others.
Names are matched exactly after normalisation (``normalize_gpu_name``), never by substring: "NVIDIA L40" is not an
"L4", "H100 NVL" is not an "H100 SXM".
"""

from __future__ import annotations

import re
from typing import Optional

_HOPPER_SXM = {"bfloat16": 989.0, "float16": 989.0, "fp8": 1979.0, "float32": 67.0}
_HOPPER_NVL = {"bfloat16": 835.0, "float16": 835.0, "fp8": 1671.0, "float32": 60.0}
_A100 = {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5}

# card -> dtype -> dense TFLOP/s (1e12 FLOP/s). Keys are written as the driver names the card, without "NVIDIA ";
# they are normalised like the device name before comparing.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": _HOPPER_SXM,
    "H200 NVL": _HOPPER_NVL,
    "GH200": _HOPPER_SXM,
    "H100 SXM": _HOPPER_SXM,
    "H100 80GB HBM3": _HOPPER_SXM,  # the name the driver gives the H100 SXM5 (memory suffix dropped when matching)
    "H100 PCIe": {"bfloat16": 756.0, "float16": 756.0, "fp8": 1513.0, "float32": 51.0},
    "H100 NVL": _HOPPER_NVL,
    "A100-SXM4-80GB": _A100,
    "A100-SXM4-40GB": _A100,
    "A100-PCIE-40GB": _A100,
    "A100 80GB PCIe": _A100,
    "L40S": {"bfloat16": 362.0, "float16": 362.0, "fp8": 733.0, "float32": 91.6},
    "L4": {"bfloat16": 121.0, "float16": 121.0, "fp8": 242.0, "float32": 30.3},
}

# tokens that only say how much or which memory a card has: "80GB", "141 GB", "HBM3", "HBM3e", "GDDR6X"
_MEMORY_TOKEN = re.compile(r"^(\d+(\.\d+)?\s?[gt]i?b|hbm\d*e?|gddr\d+x?)$")


def normalize_gpu_name(name: str) -> str:
    """A device name reduced to what identifies the card: lower case, no "NVIDIA " prefix, "-" and "_" read as
    spaces, runs of whitespace as one, and memory-size / memory-type tokens ("80GB", "HBM3") dropped (a card's
    peak does not depend on them; the form factor, e.g. "SXM4", "PCIe", "NVL", is kept)."""
    text = re.sub(r"[\s_\-]+", " ", name.strip().lower())
    text = re.sub(r"(\d+(\.\d+)?) (gb|gib|tb)\b", r"\1\3", text)  # "141 GB" -> one token
    tokens = text.split()
    if tokens and tokens[0] == "nvidia":
        tokens = tokens[1:]
    return " ".join(t for t in tokens if not _MEMORY_TOKEN.match(t))


_BY_NAME: dict[str, dict[str, float]] = {normalize_gpu_name(k): v for k, v in PEAK_TFLOPS.items()}


def peak_tflops(device_name: Optional[str], dtype: str) -> Optional[float]:
    """The listed peak (TFLOP/s) for ``device_name`` and ``dtype`` when the normalised name equals a listed card's,
    else None (an unknown card or dtype gets no MFU)."""
    if not device_name:
        return None
    peaks = _BY_NAME.get(normalize_gpu_name(device_name))
    return None if peaks is None else peaks.get(dtype)
