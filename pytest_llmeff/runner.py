"""The standard measurement protocol for one variant.

1. The batch: ``batch_size`` prompts (the prompt list cycled), tokenized once with left padding.
2. ``warmup`` untimed generate() calls.
3. ``rounds`` timed calls of greedy, fixed-length generate() (EOS suppressed so each round does the same work)
   under ``torch.inference_mode``. Per round: perf_counter around ``model.generate`` (CUDA-synchronized),
   step timestamps from a logits processor inside that same call (TTFT and per-token times), a peak-memory
   window (VmHWM reset / CUDA peak reset) and an energy window.
4. One separate, untimed pass under FlopCounterMode for the FLOPs.
Only real tokens are counted: no padding, nothing after EOS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from pytest_llmeff.measure.energy import CodeCarbonMeter, Measurement
from pytest_llmeff.measure.flops import FlopsCounter
from pytest_llmeff.measure.memory import PeakMemory
from pytest_llmeff.measure.timing import make_timestamp_processor, step_times


@dataclass
class Measured:
    """Raw per-round samples by metric name, plus what the samples were taken on."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    tokens_generated: int = 0
    prompt_tokens: int = 0
    steps: int = 0
    energy: Optional[Measurement] = None
    energy_devices: dict[str, Optional[float]] = field(default_factory=dict)
    memory_method: str = "unavailable"
    flops_total: Optional[int] = None
    warnings: list[str] = field(default_factory=list)

    def add(self, name: str, value: Optional[float]) -> None:
        if value is not None:
            self.samples.setdefault(name, []).append(float(value))


def make_batch(prompts: Sequence[str], batch_size: int) -> list[str]:
    """``batch_size`` prompts, cycling through ``prompts`` in order."""
    if not prompts:
        raise ValueError("the prompt list is empty")
    return [prompts[i % len(prompts)] for i in range(batch_size)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def run(loaded, prompts: Sequence[str], *, batch_size: int, max_new_tokens: int, rounds: int, warmup: int,
        meter: Optional[CodeCarbonMeter], count_flops: bool = True) -> Measured:
    """Run the protocol on ``loaded`` (a ``LoadedModel``) and return the raw samples."""
    batch = make_batch(list(prompts), batch_size)
    inputs = loaded.encode(batch)
    device = loaded.device
    measured = Measured()

    for _ in range(warmup):
        loaded.generate_ids(inputs, max_new_tokens, fixed_length=True)

    peak = PeakMemory(device)
    measured.memory_method = peak.method
    energy_total, energy_seen = 0.0, False
    devices_total: dict[str, Optional[float]] = {}
    last_energy: Optional[Measurement] = None
    latencies = []
    for _ in range(rounds):
        stamper = make_timestamp_processor(device)
        peak.reset()
        e_start = meter.begin() if meter is not None else None
        _sync(device)
        t0 = time.perf_counter()
        out = loaded.generate_ids(inputs, max_new_tokens, fixed_length=True, logits_processor=[stamper])
        _sync(device)
        t1 = time.perf_counter()
        energy = meter.end(e_start) if meter is not None else None
        peak_bytes = peak.peak_bytes()

        gen = loaded.decode(inputs, out)
        latency = t1 - t0
        ttft, tpot, _decode = step_times(t0, stamper.stamps, t1)
        latencies.append(latency)
        measured.tokens_generated = gen.tokens_total
        measured.prompt_tokens = gen.prompt_tokens_total
        measured.steps = gen.steps
        measured.add("latency_s", latency)
        measured.add("ttft_s", ttft)
        measured.add("tpot_s", tpot)
        measured.add("throughput_tok_s", gen.tokens_total / latency)
        measured.add("prefill_tok_s", gen.prompt_tokens_total / ttft if ttft > 0 else None)
        measured.add("peak_mem_bytes", peak_bytes)
        if energy is not None and energy.energy_j is not None:
            energy_seen = True
            energy_total += energy.energy_j
            for dev, joules in energy.devices.items():
                if joules is None:
                    devices_total.setdefault(dev, None)
                else:
                    devices_total[dev] = (devices_total.get(dev) or 0.0) + joules
            measured.add("energy_j", energy.energy_j)
            measured.add("energy_j_per_tok", energy.energy_j / gen.tokens_total if gen.tokens_total else None)
            measured.add("co2_g", energy.co2_g)
        if energy is not None:
            last_energy = energy

    if last_energy is not None:
        measured.energy = last_energy
        measured.energy_devices = devices_total if energy_seen else {}
        if last_energy.estimated and energy_seen:
            measured.warnings.append(f"energy is an estimate ({last_energy.method}), not a meter reading")
        if not energy_seen:
            measured.warnings.append(f"energy not measured: {last_energy.method}")
    if peak.method == "unavailable":
        measured.warnings.append("peak memory not measured: no resettable peak on this platform")

    if count_flops:
        with FlopsCounter().count() as counted:
            out = loaded.generate_ids(inputs, max_new_tokens, fixed_length=True)
        gen = loaded.decode(inputs, out)
        measured.flops_total = counted.flops
        if counted.flops and gen.tokens_total:
            measured.add("flops_per_tok", counted.flops / gen.tokens_total)
            for latency in latencies:
                measured.add("tflops", counted.flops / latency / 1e12)
    return measured
