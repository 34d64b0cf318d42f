"""FLOPs: counted with ``torch.utils.flop_counter.FlopCounterMode`` (plus formulas for the ops it misses), and an
analytic dense-equivalent count of a Llama-style generate() to check it against.

FlopCounterMode counts 0 for CPU SDPA; we register the same formula torch uses for CUDA SDPA.
It counts the full (masked) attention matrix, as the kernel computes it; the analytic count does the same.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional

def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _rows(a) -> int:
    """Rows of the activation matrix (all leading dimensions)."""
    return _prod(a.shape[:-1])


def register_missing_formulas() -> None:
    """Register FLOP formulas for ops FlopCounterMode leaves at 0: CPU SDPA, torch dynamic-quantized linear
    and the bitsandbytes matmuls. Each counts the dense-equivalent 2 x rows x in x out of the matmul it stands
    for, so a quantized variant counts the same FLOPs as its unquantized twin. Idempotent: it checks torch's
    own registry (not a flag of ours), so it also holds when torch's flop_counter module is re-imported."""
    import torch
    from torch.utils import flop_counter

    def register(op, formula) -> None:
        if op is not None and op not in flop_counter.flop_registry:
            flop_counter.register_flop_formula(op, get_raw=True)(formula)

    def cpu_sdpa(query, key, value, *args, out_val=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape)

    def dynamic_linear(x, packed, *args, out_val=None, **kwargs) -> int:
        weight, _bias = packed.unpack()
        return 2 * _rows(x) * x.shape[-1] * weight.shape[0]

    def bnb_4bit(a, b, shape_b, *args, out_val=None, **kwargs) -> int:
        # shape_b is the dequantized weight's [out_features, in_features]
        return 2 * _rows(a) * a.shape[-1] * int(shape_b[0])

    def bnb_int8_mixed(a, ca, cb, *args, out_val=None, **kwargs) -> int:
        return 2 * _rows(a) * a.shape[-1] * cb.shape[0]

    def bnb_int8(a, b, *args, out_val=None, **kwargs) -> int:
        return 2 * _rows(a) * a.shape[-1] * b.shape[0]

    register(getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None), cpu_sdpa)
    quantized = getattr(torch.ops, "quantized", None)
    register(getattr(quantized, "linear_dynamic", None), dynamic_linear)
    if "bitsandbytes" in _loaded_namespaces():
        bnb = torch.ops.bitsandbytes
        for name in ("gemm_4bit", "gemv_4bit"):
            register(getattr(bnb, name, None), bnb_4bit)
        register(getattr(bnb, "int8_mixed_scaled_mm", None), bnb_int8_mixed)
        register(getattr(bnb, "int8_scaled_mm", None), bnb_int8)
        register(getattr(bnb, "int8_linear_matmul", None), bnb_int8)


def _loaded_namespaces() -> set[str]:
    """Op namespaces already defined (we never import bitsandbytes just to register formulas)."""
    import sys

    return {"bitsandbytes"} if "bitsandbytes" in sys.modules else set()


@dataclass
class FlopCount:
    """Result of one counted block: ``flops`` total floating-point operations (a multiply-add is 2)."""

    flops: Optional[int] = None
    by_op: Optional[dict] = None


class FlopsCounter:
    """The ``flops_counter`` fixture: ``with flops_counter.count() as f: ...`` then read ``f.flops``."""

    @contextlib.contextmanager
    def count(self) -> Iterator[FlopCount]:
        from torch.utils.flop_counter import FlopCounterMode

        register_missing_formulas()
        result = FlopCount()
        mode = FlopCounterMode(display=False)
        with mode:
            yield result
        result.flops = int(mode.get_total_flops())
        counts = mode.get_flop_counts()
        result.by_op = {str(op): int(n) for op, n in counts.get("Global", {}).items()}


def _llama_dims(config) -> tuple[int, int, int, int, int, int, int]:
    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return hidden, heads, head_dim, kv_heads, config.intermediate_size, config.num_hidden_layers, config.vocab_size


def linear_flops_per_token(config, with_lm_head: bool = True) -> int:
    """2 x (weights of every matmul a token goes through): attention projections, MLP, optionally the LM head."""
    hidden, heads, head_dim, kv_heads, inter, layers, vocab = _llama_dims(config)
    per_layer = hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + heads * head_dim * hidden
    per_layer += 3 * hidden * inter
    total = layers * per_layer + (hidden * vocab if with_lm_head else 0)
    return 2 * total


def attention_flops(config, queries: int, keys: int) -> int:
    """QK^T and AV for ``queries`` query positions against ``keys`` key positions, all layers."""
    hidden, heads, head_dim, kv_heads, inter, layers, vocab = _llama_dims(config)
    return layers * 4 * heads * head_dim * queries * keys


def analytic_generate_flops(config, batch: int, padded_prompt_len: int, steps: int,
                            prefill_logits_positions: int = 1) -> int:
    """Dense-equivalent FLOPs of a KV-cached greedy generate() of ``steps`` new tokens per sequence.

    Prefill runs all ``padded_prompt_len`` positions (padding is computed too) and the LM head on
    ``prefill_logits_positions`` of them; each later step runs one position at context length
    ``padded_prompt_len + i`` with the LM head on it.
    """
    p = padded_prompt_len
    body = linear_flops_per_token(config, with_lm_head=False)
    head = linear_flops_per_token(config, with_lm_head=True) - body
    prefill = p * body + prefill_logits_positions * head + attention_flops(config, p, p)
    decode = 0
    for i in range(1, steps):
        decode += body + head + attention_flops(config, 1, p + i)
    return batch * (prefill + decode)
