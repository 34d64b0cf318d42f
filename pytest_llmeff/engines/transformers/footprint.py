"""The true weights footprint of a loaded model, in bytes.

``get_memory_footprint()`` counts parameters and buffers only. That misses what quantized layers keep
outside them: bitsandbytes 4-bit scales (``quant_state``: absmax, quantization map, nested scales),
LLM.int8 row scales (``SCB``), and torch dynamic-quantized linears, whose packed weights are not parameters
at all. This module counts every tensor the weights need, once.
"""

from __future__ import annotations

from typing import Iterable


def _tensor_bytes(t) -> int:
    return int(t.numel()) * int(t.element_size())


def _quant_state_tensors(state) -> Iterable:
    for name in ("absmax", "code", "offset"):
        t = getattr(state, name, None)
        if t is not None and hasattr(t, "numel"):
            yield t
    nested = getattr(state, "state2", None)
    if nested is not None:
        yield from _quant_state_tensors(nested)


def weights_bytes(model) -> int:
    """Bytes of all weight storage of ``model`` (parameters, buffers and quantization side tensors)."""
    import torch

    seen: set[int] = set()
    total = 0

    def add(t) -> None:
        nonlocal total
        if t is None or not hasattr(t, "data_ptr"):
            return
        if t.is_quantized:
            key = id(t)
        else:
            key = t.data_ptr()
            if key == 0 and t.numel() == 0:
                return
        if key in seen:
            return
        seen.add(key)
        total += _tensor_bytes(t)

    for p in model.parameters():
        add(p)
        state = getattr(p, "quant_state", None)
        if state is not None:
            for t in _quant_state_tensors(state):
                add(t)
        scb = getattr(p, "SCB", None)
        if scb is not None:
            add(scb)
    for b in model.buffers():
        add(b)
    for module in model.modules():  # LLM.int8 moves the row scales to module.state after the first forward
        state = getattr(module, "state", None)
        scb = getattr(state, "SCB", None) if state is not None else None
        if scb is not None and hasattr(scb, "numel"):
            add(scb)

    dynamic_linear = getattr(getattr(torch.ao.nn, "quantized", None), "dynamic", None)
    dynamic_linear = getattr(dynamic_linear, "Linear", None)
    if dynamic_linear is not None:
        for module in model.modules():
            if isinstance(module, dynamic_linear):
                weight, bias = module._packed_params._weight_bias()
                total += _tensor_bytes(weight)  # int8 values
                if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                    total += _tensor_bytes(weight.q_per_channel_scales())
                    total += _tensor_bytes(weight.q_per_channel_zero_points())
                else:
                    total += 8 + 8  # one float64 scale and one int64 zero point
                if bias is not None:
                    total += _tensor_bytes(bias)
    return total
