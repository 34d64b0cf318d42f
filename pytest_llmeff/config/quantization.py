"""Quantization specs: the names and knobs the marker accepts (pure Python, no torch).

``quantization=`` takes None, a method name, a dict with ``method`` and knobs, or a list of those.

| method | what | knobs |
|---|---|---|
| ``int8`` | bitsandbytes LLM.int8 (8-bit weights, outliers in 16 bit) | ``threshold`` (float, default 6.0), ``skip_modules`` |
| ``nf4`` | bitsandbytes 4-bit NormalFloat | ``double_quant`` (bool), ``compute_dtype``, ``skip_modules`` |
| ``fp4`` | bitsandbytes 4-bit float | ``double_quant`` (bool), ``compute_dtype``, ``skip_modules`` |
| ``dynamic-int8`` | ``torch.ao.quantization.quantize_dynamic`` (qint8 linears; CPU, float32 models) | none |
| ``int4`` | an engine's own 4-bit integer weights (``engine="onnxruntime-genai"``: MatMulNBits); transformers has none | none |

Each engine says which of these it runs (``engines/<engine>/``, and ``config/engine_catalog.py``); ``int8`` on ``engine="ctranslate2"`` is
CTranslate2's own int8 weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

from pytest_llmeff.config.precision import COMPUTE_DTYPES, PRECISION_SHORT

METHODS: tuple[str, ...] = ("int8", "nf4", "fp4", "dynamic-int8", "int4")
KNOBS: dict[str, tuple[str, ...]] = {
    "int8": ("method", "threshold", "skip_modules"),
    "nf4": ("method", "double_quant", "compute_dtype", "skip_modules"),
    "fp4": ("method", "double_quant", "compute_dtype", "skip_modules"),
    "dynamic-int8": ("method",),
    "int4": ("method",),
}


@dataclass(frozen=True)
class QuantSpec:
    """A validated quantization request.

    method: one of METHODS. double_quant: quantize the 4-bit scales too (nf4/fp4).
    compute_dtype: dtype of the 4-bit matmuls (None: the variant's precision).
    threshold: LLM.int8 outlier threshold (None: bitsandbytes' default 6.0).
    skip_modules: module names left unquantized (None: the library default, which keeps lm_head).
    """

    method: str
    double_quant: bool = False
    compute_dtype: Optional[str] = None
    threshold: Optional[float] = None
    skip_modules: Optional[tuple[str, ...]] = None

    @property
    def label(self) -> str:
        """Short, id-safe name: ``nf4``, ``nf4-dq-cbf16``, ``int8-t4.0``, ``dynamic-int8``."""
        parts = [self.method]
        if self.double_quant:
            parts.append("dq")
        if self.compute_dtype:
            parts.append("c" + PRECISION_SHORT[self.compute_dtype])
        if self.threshold is not None:
            parts.append(f"t{self.threshold:g}")
        if self.skip_modules:
            parts.append("skip" + str(len(self.skip_modules)))
        return "-".join(parts)


def parse(value: Union[None, str, dict]) -> Optional[QuantSpec]:
    """Validate one ``quantization=`` value; ValueError naming the bad value and what is allowed."""
    if value is None:
        return None
    if isinstance(value, str):
        if value not in METHODS:
            raise ValueError(f"quantization={value!r} is not allowed; allowed: None, {', '.join(METHODS)}, "
                             "or a dict such as {'method': 'nf4', 'double_quant': True}")
        return QuantSpec(method=value)
    if not isinstance(value, dict):
        raise ValueError(f"quantization={value!r} is not allowed; give None, a method name "
                         f"({', '.join(METHODS)}) or a dict with 'method'")
    method = value.get("method")
    if method not in METHODS:
        raise ValueError(f"quantization={value!r}: 'method' must be one of {', '.join(METHODS)}")
    unknown = [k for k in value if k not in KNOBS[method]]
    if unknown:
        raise ValueError(f"quantization={value!r}: unknown knob{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(k) for k in unknown)} for {method}; allowed: {', '.join(KNOBS[method])}")
    kwargs: dict[str, Any] = {"method": method}
    if "double_quant" in value:
        if not isinstance(value["double_quant"], bool):
            raise ValueError(f"quantization={value!r}: double_quant must be True or False")
        kwargs["double_quant"] = value["double_quant"]
    if "compute_dtype" in value:
        if value["compute_dtype"] not in COMPUTE_DTYPES:
            raise ValueError(f"quantization={value!r}: compute_dtype={value['compute_dtype']!r} is not allowed; "
                             f"allowed: {', '.join(COMPUTE_DTYPES)}")
        kwargs["compute_dtype"] = value["compute_dtype"]
    if "threshold" in value:
        t = value["threshold"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
            raise ValueError(f"quantization={value!r}: threshold must be a positive number")
        kwargs["threshold"] = float(t)
    if "skip_modules" in value:
        mods = value["skip_modules"]
        if not isinstance(mods, (list, tuple)) or not mods or not all(isinstance(m, str) and m for m in mods):
            raise ValueError(f"quantization={value!r}: skip_modules must be a non-empty list of module names")
        kwargs["skip_modules"] = tuple(mods)
    return QuantSpec(**kwargs)
