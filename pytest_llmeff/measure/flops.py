"""FLOPs: counted with ``torch.utils.flop_counter.FlopCounterMode`` (plus formulas for the ops it misses), and an
analytic dense-equivalent count of a Llama-style generate() to check it against.

FlopCounterMode counts 0 for CPU SDPA; we register the same formula torch uses for CUDA SDPA.
It counts the full (masked) attention matrix, as the kernel computes it; the analytic count does the same.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional

def register_missing_formulas() -> None:
    """Register FLOP formulas for ops FlopCounterMode leaves at 0. Idempotent: it checks torch's own
    registry (not a flag of ours), so it also holds when torch's flop_counter module is re-imported."""
    import torch
    from torch.utils import flop_counter

    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None and cpu_sdpa not in flop_counter.flop_registry:
        @flop_counter.register_flop_formula(cpu_sdpa, get_raw=True)
        def _cpu_sdpa_flop(query, key, value, *args, out_val=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape)


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
