"""FLOPs: counted with ``torch.utils.flop_counter.FlopCounterMode`` (plus formulas for the ops it misses), and an
analytic dense-equivalent count of a generate() to check it against, for the architectures it knows.

Units: every count here is in FLOP (floating-point operations, one multiply-add = 2 FLOP), an ``int``.

FlopCounterMode counts 0 for CPU SDPA; we register the same formula torch uses for CUDA SDPA.
It counts the full (masked) attention matrix, as the kernel computes it; the analytic count does the same.
It also counts 0 for the grouped matmuls that transformers' mixture-of-experts layers run their experts through
(``aten._grouped_mm``, its fp8 twin ``aten._scaled_grouped_mm`` and transformers' own
``transformers::grouped_mm_fallback``); we register 2 x rows x in x out per group for them.

Dense-equivalent FLOPs of one generate depend only on the architecture and the shapes (batch, padded prompt length,
new tokens), not on the precision or quantization: ``flops_cache_key`` names them so one count can serve every
variant of a model.
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
        return sdpa_flops(query.shape, key.shape, value.shape)

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

    def grouped_mm(a, b, *args, offs=None, out_val=None, **kwargs) -> int:
        if offs is None and len(args) >= 1:
            offs = args[0]
        return grouped_mm_flops(a.shape, b.shape, _last_offset(offs))

    def scaled_grouped_mm(a, b, scale_a, scale_b, *args, offs=None, out_val=None, **kwargs) -> int:
        if offs is None and len(args) >= 1:
            offs = args[0]
        return grouped_mm_flops(a.shape, b.shape, _last_offset(offs))

    def transformers_grouped_mm(a, b, offs, *args, out_val=None, **kwargs) -> int:
        return grouped_mm_flops(a.shape, b.shape, _last_offset(offs))

    register(getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None), cpu_sdpa)
    register(getattr(torch.ops.aten, "_grouped_mm", None), grouped_mm)
    register(getattr(torch.ops.aten, "_scaled_grouped_mm", None), scaled_grouped_mm)
    register(_defined_op(torch.ops, "transformers", "grouped_mm_fallback"), transformers_grouped_mm)
    quantized = getattr(torch.ops, "quantized", None)
    register(getattr(quantized, "linear_dynamic", None), dynamic_linear)
    if "bitsandbytes" in _loaded_namespaces():
        bnb = torch.ops.bitsandbytes
        for name in ("gemm_4bit", "gemv_4bit"):
            register(getattr(bnb, name, None), bnb_4bit)
        register(getattr(bnb, "int8_mixed_scaled_mm", None), bnb_int8_mixed)
        register(getattr(bnb, "int8_scaled_mm", None), bnb_int8)
        register(getattr(bnb, "int8_linear_matmul", None), bnb_int8)


def sdpa_flops(query_shape, key_shape, value_shape) -> int:
    """FLOP of one scaled-dot-product attention: Q K^T and the softmax-weighted sum of V over the full (masked)
    score matrix, 2 x batch x query_heads x queries x keys x (head_dim + value_dim). Grouped-query attention (key
    and value with fewer heads than the query, each shared by a group of query heads) costs the same per query head.
    Shapes are ``(batch, heads, positions, dim)``."""
    b, q_heads, queries, q_dim = (int(d) for d in query_shape)
    kv_heads, keys, v_dim = int(key_shape[1]), int(key_shape[2]), int(value_shape[3])
    if kv_heads < 1 or q_heads % kv_heads:
        raise ValueError(f"attention with {q_heads} query heads and {kv_heads} key/value heads: not a whole group")
    return 2 * b * q_heads * queries * keys * (q_dim + v_dim)


def _attention_formulas() -> dict:
    """Our formula for torch's fused attention ops, passed to FlopCounterMode as ``custom_mapping``: torch's own
    formula refuses grouped-query shapes before torch 2.13 (seen on CUDA with torch 2.11: "query/key/value shapes
    are incompatible"), which would abort the counting pass of every GQA model (SmolLM2, Llama 3, Mistral)."""
    import torch

    def fused_sdpa(query, key, value, *args, out_val=None, **kwargs) -> int:
        return sdpa_flops(query.shape, key.shape, value.shape)

    fused_sdpa._get_raw = True  # FlopCounterMode passes the tensors themselves, as register_flop_formula(get_raw=True)
    names = ("_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_cudnn_attention")
    ops = (getattr(torch.ops.aten, name, None) for name in names)
    return {op: fused_sdpa for op in ops if op is not None}


def grouped_mm_flops(a_shape, b_shape, last_offset: Optional[int] = None) -> int:
    """FLOP of one grouped matmul ``a @ b`` (2 per multiply-add), the dense-equivalent of its per-group matmuls.

    The layouts of ``torch.nn.functional.grouped_mm``: ``a`` 2-D ``(rows, k)`` with ``b`` 3-D ``(groups, k, n)``:
    the rows are split into groups by the offsets (rows past the last offset are skipped), so
    2 x rows_used x k x n; both 3-D ``(groups, m, k)`` x ``(groups, k, n)``: 2 x groups x m x k x n; ``a`` 3-D
    ``(groups, m, k)`` with ``b`` 2-D ``(k, n_total)``: 2 x m x k x n_used; both 2-D ``(m, k_total)`` x
    ``(k_total, n)`` (the weight-gradient layout, k split into groups): 2 x m x k_used x n.
    ``last_offset`` is the last of the offsets (the used length of the jagged dimension); None means all of it.
    """
    a_dims, b_dims = len(a_shape), len(b_shape)
    if a_dims == 2 and b_dims == 3:
        rows = int(a_shape[0]) if last_offset is None else min(int(last_offset), int(a_shape[0]))
        return 2 * rows * int(a_shape[1]) * int(b_shape[2])
    if a_dims == 3 and b_dims == 3:
        return 2 * int(a_shape[0]) * int(a_shape[1]) * int(a_shape[2]) * int(b_shape[2])
    if a_dims == 3 and b_dims == 2:
        cols = int(b_shape[1]) if last_offset is None else min(int(last_offset), int(b_shape[1]))
        return 2 * int(a_shape[1]) * int(a_shape[2]) * cols
    if a_dims == 2 and b_dims == 2:
        inner = int(a_shape[1]) if last_offset is None else min(int(last_offset), int(a_shape[1]))
        return 2 * int(a_shape[0]) * inner * int(b_shape[1])
    raise ValueError(f"grouped matmul of shapes {tuple(a_shape)} x {tuple(b_shape)}: expected 2-D or 3-D operands")


def _last_offset(offs) -> Optional[int]:
    """The last offset of a grouped matmul (the rows it really computes), or None when there are none or the
    tensor has no readable value (a fake tensor while compiling): then all rows count. Reading it syncs a GPU,
    which is fine in the untimed counting pass."""
    if offs is None:
        return None
    try:
        return int(offs.reshape(-1)[-1].item()) if offs.numel() else 0
    except RuntimeError:  # fake / meta tensors have no value (DataDependentOutputException); count all rows
        return None


def _defined_op(ops, namespace: str, name: str):
    """``torch.ops.<namespace>.<name>`` if a library already defined it (we never import one to find out)."""
    try:
        return getattr(getattr(ops, namespace), name)
    except (AttributeError, RuntimeError):
        return None


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
        mode = FlopCounterMode(display=False, custom_mapping=_attention_formulas())
        with mode:
            yield result
        result.flops = int(mode.get_total_flops())
        counts = mode.get_flop_counts()
        result.by_op = {str(op): int(n) for op, n in counts.get("Global", {}).items()}


# --- analytic dense-equivalent count ---------------------------------------------------------------------------
# Architectures whose generate() the analytic count describes, by ``config.model_type`` (never by the mere presence
# of attributes: GPT-NeoX has them all and a different block). Each was checked against the counted pass on a
# tiny random model (tests/test_flops.py).
#   dense gated: attention projections q, k, v, o (grouped-query: k and v have num_key_value_heads heads) and a
#                gated MLP of three matrices hidden x intermediate_size; biases and norms are not counted (as in
#                FlopCounterMode, which counts the matmul of an addmm). Phi-3 fuses q/k/v and gate/up into one
#                matrix each: the same weights, the same count.
#   mixture of experts: the same attention; the MLP is a router (hidden x experts) plus num_experts_per_tok experts
#                of three matrices each per token (plus, for Qwen2-MoE, an always-on shared expert and its 1-wide gate).
DENSE_GATED_MODEL_TYPES = frozenset({"llama", "mistral", "phi3", "qwen2", "qwen3"})
MOE_MODEL_TYPES = frozenset({"mixtral", "qwen2_moe", "qwen3_moe"})
KNOWN_MODEL_TYPES = DENSE_GATED_MODEL_TYPES | MOE_MODEL_TYPES

_NEEDED = ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers", "vocab_size")
_NEEDED_MOE = {"mixtral": ("num_local_experts", "num_experts_per_tok"),
               "qwen2_moe": ("num_experts", "num_experts_per_tok", "moe_intermediate_size"),
               "qwen3_moe": ("num_experts", "num_experts_per_tok", "moe_intermediate_size")}


def _llama_dims(config) -> tuple[int, int, int, int, int, int, int]:
    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return hidden, heads, head_dim, kv_heads, config.intermediate_size, config.num_hidden_layers, config.vocab_size


def _is_sparse_layer(config, layer: int) -> bool:
    """Qwen-MoE rule: a layer has experts unless listed in ``mlp_only_layers`` or off the ``decoder_sparse_step``."""
    step = getattr(config, "decoder_sparse_step", 1) or 1
    return layer not in (getattr(config, "mlp_only_layers", None) or []) and (layer + 1) % step == 0


def mlp_multiply_adds_per_token(config, layer: int) -> int:
    """Multiply-adds (FLOP / 2) one token spends in ``layer``'s MLP or mixture-of-experts block: for a MoE layer the
    router plus the ``num_experts_per_tok`` experts it runs (the active weights, not all experts)."""
    hidden, inter = config.hidden_size, config.intermediate_size
    model_type = getattr(config, "model_type", None)
    if model_type == "mixtral":
        return hidden * config.num_local_experts + config.num_experts_per_tok * 3 * hidden * inter
    if model_type in ("qwen2_moe", "qwen3_moe"):
        if not (config.num_experts > 0 and _is_sparse_layer(config, layer)):
            return 3 * hidden * inter
        moe = hidden * config.num_experts + config.num_experts_per_tok * 3 * hidden * config.moe_intermediate_size
        shared = (getattr(config, "shared_expert_intermediate_size", 0) or 0) if model_type == "qwen2_moe" else 0
        if shared:
            moe += 3 * hidden * shared + hidden  # the shared expert and its sigmoid gate (hidden x 1)
        return moe
    return 3 * hidden * inter


def linear_flops_per_token(config, with_lm_head: bool = True) -> int:
    """FLOP one token spends in matmuls: 2 x (the weights it goes through): attention projections, the MLP (for a
    mixture of experts: router and active experts only), optionally the LM head. For a dense model this is 2 x
    the model's matmul weights."""
    hidden, heads, head_dim, kv_heads, inter, layers, vocab = _llama_dims(config)
    attention = hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + heads * head_dim * hidden
    total = sum(attention + mlp_multiply_adds_per_token(config, layer) for layer in range(layers))
    total += hidden * vocab if with_lm_head else 0
    return 2 * total


def attention_flops(config, queries: int, keys: int) -> int:
    """FLOP of QK^T and AV for ``queries`` query positions against ``keys`` key positions, all layers, one sequence."""
    hidden, heads, head_dim, kv_heads, inter, layers, vocab = _llama_dims(config)
    return layers * 4 * heads * head_dim * queries * keys


def analytic_generate_flops(config, batch: int, padded_prompt_len: int, steps: int,
                            prefill_logits_positions: int = 1) -> int:
    """FLOP (dense-equivalent) of a KV-cached greedy generate() of ``steps`` new tokens per sequence, for a
    Llama-shaped config (MoE-aware for the MoE types in ``MOE_MODEL_TYPES``). It does not check the architecture:
    use ``analytic_flops``, which refuses the ones this formula does not describe.

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


def analytic_flops(config, batch_size: int, prompt_len: int,
                   new_tokens: int) -> tuple[Optional[int], Optional[str]]:
    """Dense-equivalent FLOP of one KV-cached generate(): a prefill of ``prompt_len`` positions per sequence (the
    padded length: padding is computed too) with the LM head on the last one, then ``new_tokens - 1`` one-position
    decode steps, for ``batch_size`` sequences. 2 FLOP per multiply-add, the matmuls and attention only, as the
    counted pass counts them.

    Returns ``(flops, None)`` for an architecture in ``KNOWN_MODEL_TYPES`` (by ``config.model_type``), else
    ``(None, reason)``: no analytic count is better than one for the wrong block.
    """
    batch_size, prompt_len, new_tokens = (_count("analytic_flops", name, value, 1) for name, value in
                                          (("batch_size", batch_size), ("prompt_len", prompt_len),
                                           ("new_tokens", new_tokens)))
    if config is None:
        return None, "no analytic FLOP count: the model has no config"
    model_type = getattr(config, "model_type", None)
    if model_type not in KNOWN_MODEL_TYPES:
        known = ", ".join(sorted(KNOWN_MODEL_TYPES))
        return None, (f"no analytic FLOP count for model_type {model_type!r}: the formula knows only {known}")
    needed = _NEEDED + _NEEDED_MOE.get(model_type, ())
    missing = [a for a in needed if not getattr(config, a, None)]
    if missing:
        return None, f"no analytic FLOP count for {model_type}: its config lacks {', '.join(missing)}"
    return analytic_generate_flops(config, batch_size, prompt_len, new_tokens), None


def flops_disagreement_warning(counted: Optional[int], analytic: Optional[int],
                               tolerance: float = 0.10) -> Optional[str]:
    """One line when the counted and analytic FLOP differ by more than ``tolerance`` (a fraction of the analytic
    count; 0.10 = 10%), else None (also when either is missing or the analytic count is not positive)."""
    if counted is None or analytic is None or analytic <= 0:
        return None
    ratio = counted / analytic
    if abs(ratio - 1.0) <= tolerance:
        return None
    return (f"FLOPs disagree: counted {counted:.4g} FLOP vs analytic {analytic:.4g} FLOP (counted/analytic "
            f"{ratio:.2f}, more than {tolerance:.0%} apart): the counter may miss an op or the formula may not fit "
            f"this model")


def flops_cache_key(model_source: str, revision: Optional[str], batch_size: int, padded_prompt_len: int,
                    steps: int) -> tuple:
    """Key for one counted generate's dense-equivalent FLOP: the same for every precision and quantization of a
    model at the same batch and lengths, so one count serves all its variants. Pure; precision, quantization and
    device are deliberately not part of it. ``model_source`` is the model's id or path as loaded, ``revision`` its
    revision (None: the default one), ``padded_prompt_len`` the batch's padded prompt length in tokens, ``steps``
    the new tokens per sequence."""
    counts = tuple(_count("flops_cache_key", name, value, 0) for name, value in
                   (("batch_size", batch_size), ("padded_prompt_len", padded_prompt_len), ("steps", steps)))
    return ("flops/v1", str(model_source), None if revision is None else str(revision)) + counts


def _count(where: str, name: str, value, minimum: int) -> int:
    """``value`` as a plain int (Python or numpy/torch integer), refusing bools, floats and values < ``minimum``."""
    import operator

    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if isinstance(value, bool) or number is None or number < minimum:
        raise ValueError(f"{where}: {name}={value!r}; give an int >= {minimum}")
    return int(number)
