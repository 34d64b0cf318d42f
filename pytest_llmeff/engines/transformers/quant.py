"""What a variant needs at load time: hardware and library checks (a skip with a reason when the combination
cannot run here), the ``from_pretrained`` quantization config, and post-load quantization (dynamic int8)."""

from __future__ import annotations

from pytest_llmeff.errors import VariantUnsupported  # noqa: F401  (its old home; defined in errors.py)

import contextlib
import importlib.util
import logging
import warnings
from typing import Any, Iterator, Optional

from pytest_llmeff.config.variants import Variant

FP8_MIN_CAPABILITY = (8, 9)
BF16_MIN_CAPABILITY = (8, 0)




def _cuda_capability(device: str) -> Optional[tuple[int, int]]:
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
    return tuple(torch.cuda.get_device_capability(index))


def check_supported(variant: Variant, device: str) -> None:
    """Raise VariantUnsupported with the requirement when ``variant`` cannot run on ``device`` here."""
    q = variant.quantization
    capability = _cuda_capability(device)
    if variant.precision == "fp8":
        if capability is None:
            raise VariantUnsupported(
                f"precision='fp8' needs an NVIDIA GPU with compute capability >= "
                f"{FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} (Ada, Hopper or newer); device {device!r} is not one")
        if capability < FP8_MIN_CAPABILITY:
            raise VariantUnsupported(
                f"precision='fp8' needs compute capability >= {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]}; "
                f"{device} has {capability[0]}.{capability[1]}")
    wants_bf16 = variant.precision == "bfloat16" or (q is not None and q.compute_dtype == "bfloat16")
    if wants_bf16 and capability is not None and capability < BF16_MIN_CAPABILITY:
        raise VariantUnsupported(f"bfloat16 needs compute capability >= 8.0; {device} has "
                                 f"{capability[0]}.{capability[1]}")
    if q is None:
        return
    if q.method == "int4":
        raise VariantUnsupported("quantization='int4' is an engine's own 4-bit format (engine='onnxruntime-genai'); "
                                 "with transformers use 'nf4' or 'fp4' (bitsandbytes)")
    if q.method in ("int8", "nf4", "fp4") and importlib.util.find_spec("bitsandbytes") is None:
        raise VariantUnsupported(f"quantization={q.method!r} needs bitsandbytes: pip install 'pytest-llmeff[quant]'")
    if q.method == "dynamic-int8":
        if not device.startswith("cpu"):
            raise VariantUnsupported("quantization='dynamic-int8' (torch dynamic quantization) runs on CPU only; "
                                     f"this variant's device is {device!r}")
        if variant.precision != "float32":
            raise VariantUnsupported("quantization='dynamic-int8' quantizes float32 linears; use "
                                     f"precision='float32' (got {variant.precision!r})")


def from_pretrained_kwargs(variant: Variant) -> dict[str, Any]:
    """Extra ``from_pretrained`` arguments for the variant's quantization (empty when none)."""
    import torch

    q = variant.quantization
    if variant.precision == "fp8":
        from transformers import FineGrainedFP8Config

        return {"quantization_config": FineGrainedFP8Config()}
    if q is None or q.method == "dynamic-int8":
        return {}
    from transformers import BitsAndBytesConfig

    quiet_bitsandbytes()
    if q.method == "int8":
        kwargs: dict[str, Any] = {"load_in_8bit": True}
        if q.threshold is not None:
            kwargs["llm_int8_threshold"] = q.threshold
    else:
        compute = q.compute_dtype or ("bfloat16" if variant.precision == "fp8" else variant.precision)
        kwargs = {"load_in_4bit": True, "bnb_4bit_quant_type": q.method,
                  "bnb_4bit_use_double_quant": q.double_quant, "bnb_4bit_compute_dtype": getattr(torch, compute)}
    if q.skip_modules:
        kwargs["llm_int8_skip_modules"] = list(q.skip_modules)
    return {"quantization_config": BitsAndBytesConfig(**kwargs)}


def torch_dtype_name(variant: Variant) -> str:
    """dtype of the unquantized parts: the precision, bfloat16 for fp8."""
    return "bfloat16" if variant.precision == "fp8" else variant.precision


def after_load(model, variant: Variant):
    """Post-load quantization (dynamic int8); returns the model to use."""
    q = variant.quantization
    if q is not None and q.method == "dynamic-int8":
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao announces its deprecation on every call
            # in place: a copy would leave the float32 weights' pages in the process (and in its peak RSS)
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


def quiet_bitsandbytes() -> None:
    """bitsandbytes logs a line per int8 matmul when inputs are cast; keep only errors."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


@contextlib.contextmanager
def quiet_generation(variant: Variant) -> Iterator[None]:
    """Silence per-call library warnings during generate() for quantized variants (no-op otherwise)."""
    if variant.quantization is None:
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
        warnings.filterwarnings("ignore", message=".*inputs will be cast.*")
        yield
