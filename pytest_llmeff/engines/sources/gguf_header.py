"""Read a GGUF file's weight type (``general.file_type``) from its header, in pure Python.

Used at collection time to name a llama.cpp variant by the type it really runs (``smollm2-135m-llamacpp-q4_1``),
so it imports nothing heavy. Only the key/value header is read, stopping at the key.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Optional

#: llama.cpp's ``llama_ftype`` values (include/llama.h), as the lower-case names used in ids
FILE_TYPES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1", 10: "q2_k",
              11: "q3_k_s", 12: "q3_k_m", 13: "q3_k_l", 14: "q4_k_s", 15: "q4_k_m", 16: "q5_k_s", 17: "q5_k_m",
              18: "q6_k", 19: "iq2_xxs", 20: "iq2_xs", 21: "q2_k_s", 22: "iq3_xs", 23: "iq3_xxs", 24: "iq1_s",
              25: "iq4_nl", 26: "iq3_s", 27: "iq3_m", 28: "iq2_s", 29: "iq2_m", 30: "iq4_xs", 31: "iq1_m",
              32: "bf16", 36: "tq1_0", 37: "tq2_0", 38: "mxfp4_moe"}
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_MAX_KV = 100_000


def _read(fh: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _skip_value(fh: BinaryIO, vtype: int) -> None:
    if vtype in _SCALARS:
        fh.seek(struct.calcsize(_SCALARS[vtype]), 1)
    elif vtype == 8:
        fh.seek(_read(fh, "<Q"), 1)
    elif vtype == 9:
        etype, count = _read(fh, "<I"), _read(fh, "<Q")
        if etype in _SCALARS:
            fh.seek(struct.calcsize(_SCALARS[etype]) * count, 1)
        else:
            for _ in range(count):
                _skip_value(fh, etype)
    else:
        raise ValueError(f"unknown GGUF value type {vtype}")


def file_type(path: Path) -> Optional[str]:
    """The GGUF's weight type name (``q4_1``, ``f16`` ...), ``ftype<N>`` for a value not in the table, or None
    when the file is not a readable GGUF or does not say."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                return None
            version = _read(fh, "<I")
            if version < 2:
                return None
            _read(fh, "<Q")  # tensors
            n_kv = _read(fh, "<Q")
            for _ in range(min(n_kv, _MAX_KV)):
                key = fh.read(_read(fh, "<Q")).decode("utf-8", "replace")
                vtype = _read(fh, "<I")
                if key == "general.file_type" and vtype in _SCALARS:
                    value = int(_read(fh, _SCALARS[vtype]))
                    return FILE_TYPES.get(value, f"ftype{value}")
                _skip_value(fh, vtype)
    except (OSError, ValueError, struct.error):
        return None
    return None
