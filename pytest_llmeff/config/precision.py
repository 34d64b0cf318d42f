"""The precision names, defined once: what ``precision=`` accepts and the short forms used in test ids.

| name | short | meaning |
|---|---|---|
| ``float32`` | ``fp32`` | 32-bit IEEE float weights and activations |
| ``float16`` | ``fp16`` | 16-bit IEEE float |
| ``bfloat16`` | ``bf16`` | 16-bit brain float (float32's exponent range) |
| ``fp8`` | ``fp8`` | 8-bit float weights (e4m3), computing in bfloat16; needs a GPU of compute capability >= 8.9 |

Pure data, imports nothing.
"""

from __future__ import annotations

PRECISION_SHORT: dict[str, str] = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "fp8": "fp8"}
PRECISIONS: tuple[str, ...] = tuple(PRECISION_SHORT)
# dtypes a quantized matmul may compute in (every precision but fp8, which is itself a quantization)
COMPUTE_DTYPES: tuple[str, ...] = tuple(p for p in PRECISIONS if p != "fp8")
