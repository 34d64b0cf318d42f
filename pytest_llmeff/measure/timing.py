"""Per-step times taken inside ``generate`` by a logits processor.

The processor runs once per generation step, right after the forward pass produced that step's logits; its
first call therefore marks the end of prefill (time to first token), and successive calls mark each decode
step (the inter-token latencies, ``itl_s``). Nothing is measured from a second, separate run.

CPU: ``time.perf_counter()`` at each call. CUDA: a CUDA event recorded on the current stream at each call and
one at the start, read after the call's final synchronize: the timed call is not synchronized inside every step
(a synchronize per step stalls the host's kernel queueing and slows decoding). ``benchmarks/cuda_step_timing.py``
measures what per-step synchronizes would cost.
"""

from __future__ import annotations

import time
from typing import Optional


def make_timestamp_processor(device: str):
    """A transformers LogitsProcessor with ``start()`` (call right before ``generate``) and
    ``step_times(t0_s, t1_s)`` (call after the final synchronize) -> (ttft_s, tpot_s, per-step decode seconds)."""
    from transformers import LogitsProcessor

    cuda = device.startswith("cuda")
    if cuda:
        import torch

    class TimestampProcessor(LogitsProcessor):
        def __init__(self):
            self.stamps: list[float] = []  # CPU: perf_counter seconds
            self.events: list = []  # CUDA: events, one per step
            self._start_event = None

        def start(self) -> None:
            if cuda:
                self._start_event = torch.cuda.Event(enable_timing=True)
                self._start_event.record()

        def __call__(self, input_ids, scores):
            if cuda:
                event = torch.cuda.Event(enable_timing=True)
                event.record()
                self.events.append(event)
            else:
                self.stamps.append(time.perf_counter())
            return scores

        def step_times(self, t0: float, t1: float) -> tuple[float, Optional[float], list[float]]:
            if cuda and self.events:
                start = self._start_event
                # seconds since the start event, on the GPU's clock, placed on the host's t0
                self.stamps = [t0 + start.elapsed_time(e) / 1e3 for e in self.events]
            return step_times(t0, self.stamps, t1)

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
