"""Per-step timestamps taken inside ``generate`` by a logits processor.

The processor runs once per generation step, right after the forward pass produced that step's logits; its
first call therefore marks the end of prefill (time to first token), and successive calls mark each decode
step. Nothing is measured from a second, separate run.
"""

from __future__ import annotations

import time
from typing import Optional


def make_timestamp_processor(device: str):
    """A transformers LogitsProcessor that records ``time.perf_counter()`` at each step (CUDA-synchronized)."""
    from transformers import LogitsProcessor

    sync = None
    if device.startswith("cuda"):
        import torch

        def sync():
            torch.cuda.synchronize(device)

    class TimestampProcessor(LogitsProcessor):
        def __init__(self):
            self.stamps: list[float] = []

        def __call__(self, input_ids, scores):
            if sync is not None:
                sync()
            self.stamps.append(time.perf_counter())
            return scores

    return TimestampProcessor()


def step_times(start: float, stamps: list[float], end: float) -> tuple[float, Optional[float], list[float]]:
    """(ttft_s, tpot_s or None for a single step, per-step decode seconds) from the raw stamps."""
    if not stamps:
        raise ValueError("generate produced no step: nothing to time")
    ttft = stamps[0] - start
    decode = [b - a for a, b in zip(stamps, stamps[1:])]
    latency = end - start
    tpot = (latency - ttft) / (len(stamps) - 1) if len(stamps) > 1 else None
    return ttft, tpot, decode
