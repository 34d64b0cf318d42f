"""The standard measurement protocol for one variant.

1. The batch: ``batch_size`` prompts (the prompt list cycled), tokenized once with left padding. A padded prompt
   plus the new tokens longer than the model's context is a warning (generation runs past the trained positions).
2. ``warmup`` untimed generate() calls.
3. Timed calls of greedy, fixed-length generate() (EOS suppressed so each round does the same work) under
   ``torch.inference_mode``, until the stop rule (``stop_rule.StopRule``) says enough: a precision target met,
   the time budget reached, or an explicit round count done. Per round: perf_counter around ``model.generate``
   (CUDA-synchronized), step timestamps from a logits processor inside that same call (TTFT, and each decode
   step's time as ``itl_s`` samples), a peak-memory window (VmHWM reset / CUDA peak reset, and the memory in use
   at the reset for the generation's own peak), an energy window, and what other processes did to the CPU.
4. Short-window guard: when one generate is shorter than twice the meter's resolution, a real meter's energy is
   re-measured after the timed rounds over ``k`` repeated generates per window (energy per generate = window / k);
   an estimate is kept and flagged.
5. Prefill energy: windows around prefill-only passes (generate of 1 token), repeated the same way.
6. One separate, untimed pass under FlopCounterMode for the FLOPs, next to the analytic count; dense-equivalent
   FLOPs do not depend on precision or quantization, so a session counts them once per (model, batch, prompt
   length, steps) from an unquantized variant and reuses them (``flops_cache``).
Where the time went (warm-up, timed rounds, energy extras, FLOP pass) is kept in ``Measured.time_s``.
Only real tokens are counted: no padding, nothing after EOS.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from pytest_llmeff import events
from pytest_llmeff.measure.carbon import co2_g
from pytest_llmeff.measure.contention import ContentionProbe, contention_warning
from pytest_llmeff.measure.flops import FlopsCounter, analytic_flops, flops_cache_key, flops_disagreement_warning
from pytest_llmeff.measure.memory import PeakMemory
from pytest_llmeff.measure.meter import Measurement, Meter
from pytest_llmeff.measure.timing import make_timestamp_processor
from pytest_llmeff.stats.stop_rule import StopRule

MAX_REPEATS = 1000
CV_WARN = 0.10
#: a tokenizer's ``model_max_length`` at or above this is transformers' "unknown" placeholder (int(1e30)), not
#: a context length
SANE_CONTEXT_MAX = 10**9
#: config attributes that state a model's context length in positions, in order of preference
CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "max_sequence_length")


@dataclass
class Measured:
    """Raw per-round samples by metric name, plus what the samples were taken on."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    tokens_generated: int = 0
    prompt_tokens: int = 0
    steps: int = 0
    energy: Optional[Measurement] = None
    energy_devices: dict[str, Optional[float]] = field(default_factory=dict)
    energy_repeats: int = 1
    memory_method: str = "unavailable"
    flops_total: Optional[int] = None
    warnings: list[str] = field(default_factory=list)
    rounds: int = 0
    stop_reason: Optional[str] = None
    timed_s: float = 0.0
    time_s: dict[str, float] = field(default_factory=dict)  # seconds per phase: warmup, timed, energy_extra, flops
    contention: list = field(default_factory=list)  # results.RoundContention per timed round
    round_energy: list = field(default_factory=list)  # each timed round's energy Measurement
    flops_note: Optional[str] = None  # why there is no analytic count
    flops_reused: bool = False  # the counted FLOPs came from an earlier variant of the same shape
    flops_source: str = "counted"  # "analytic": an engine outside torch, whose FLOPs only the formula gives
    peak_mem_devices: dict[str, int] = field(default_factory=dict)  # several GPUs: each one's highest peak, bytes
    paired_target_rel: Optional[float] = None  # lockstep, decided by pairs: the paired precision target
    paired_achieved_rel: dict[str, Optional[float]] = field(default_factory=dict)  # ... and what each metric reached

    def add(self, name: str, value: Optional[float]) -> None:
        if value is not None:
            self.samples.setdefault(name, []).append(float(value))


@dataclass
class EnergyContext:
    """What the energy phase needs besides the meter: the grid for CO2 and the idle power to subtract."""

    country_iso3: Optional[str] = None
    idle_power_w: Optional[float] = None
    idle_requested: bool = False


def make_batch(prompts: Sequence[str], batch_size: int) -> list[str]:
    """``batch_size`` prompts, cycling through ``prompts`` in order."""
    if not prompts:
        raise ValueError("the prompt list is empty")
    return [prompts[i % len(prompts)] for i in range(batch_size)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _is_real(meter: Optional[Meter]) -> bool:
    """A physical meter (RAPL, NVML): every meter says so with its ``estimated`` attribute."""
    return meter is not None and not meter.estimated


def _repeats_for(meter: Meter, seconds_per_call: float) -> int:
    resolution = float(meter.resolution_s)
    if resolution <= 0 or seconds_per_call <= 0 or seconds_per_call >= 2 * resolution:
        return 1
    return min(MAX_REPEATS, math.ceil(2 * resolution / seconds_per_call))


def _energy_window(meter: Meter, work, repeats: int, device: str) -> Measurement:
    start = meter.begin()
    for _ in range(repeats):
        work()
    _sync(device)
    return meter.end(start)


def context_length(loaded) -> Optional[tuple[int, str]]:
    """The model's context length in positions and where it was read: the config's ``max_position_embeddings``
    (or ``n_positions`` / ``max_sequence_length``), else the tokenizer's ``model_max_length`` when it is a real
    number (not transformers' 1e30 "unknown"); None when neither says."""
    config = getattr(loaded.model, "config", None)
    configs = [config, getattr(config, "text_config", None)] if config is not None else []
    for cfg in configs:
        for attr in CONTEXT_ATTRS:
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value < SANE_CONTEXT_MAX:
                return value, f"config.{attr}"
    value = getattr(loaded.tokenizer, "model_max_length", None)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < SANE_CONTEXT_MAX:
        return value, "tokenizer.model_max_length"
    return None


def context_warning(prompt_tokens: int, max_new_tokens: int, context: Optional[tuple[int, str]]) -> Optional[str]:
    """A warning when ``prompt_tokens`` (the padded prompt length) + ``max_new_tokens`` exceed the model's
    context; None when they fit or the context is unknown."""
    if context is None or prompt_tokens + max_new_tokens <= context[0]:
        return None
    limit, source = context
    return (f"prompt of {prompt_tokens} tokens (padded) + {max_new_tokens} new tokens = "
            f"{prompt_tokens + max_new_tokens} positions exceeds the model's context length of {limit} ({source}): "
            f"positions beyond the context were generated, results may not mean anything")


def _co2(energy_j: Optional[float], ctx: EnergyContext) -> Optional[float]:
    if energy_j is None or not ctx.country_iso3:
        return None

    return co2_g(energy_j, ctx.country_iso3)


@dataclass(frozen=True)
class RunSpec:
    """What one protocol run does: the workload and how many rounds, independent of the model and the meter."""

    prompts: tuple[str, ...]  # the prompt texts, cycled in order to fill the batch
    batch_size: int  # prompts per generate() call (sequences)
    max_new_tokens: int  # tokens generated per sequence in each call (EOS suppressed: exactly this many)
    warmup: int = 0  # untimed generate() calls before the first timed round
    rounds: Optional[int] = None  # exactly this many timed rounds, when ``stop`` is None
    stop: Optional[StopRule] = None  # the stop rule; None: ``rounds`` fixed rounds
    count_flops: bool = True  # run the untimed FLOP-counting pass (and the analytic count next to it)
    peak_tflops: Optional[float] = None  # the device's peak in TFLOP/s, for ``mfu``; None: no mfu

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", tuple(self.prompts))

    def rule(self) -> StopRule:
        """The stop rule to follow: ``stop``, else exactly ``rounds`` rounds (ValueError without either)."""
        if self.stop is not None:
            return self.stop
        if self.rounds is None:
            raise ValueError("give rounds= or stop=")
        return StopRule(fixed_rounds=self.rounds)


@dataclass(frozen=True)
class RoundHooks:
    """Callbacks into the timed loop, for a partner process or other ranks; each is called outside the timing.

    ``before_rounds()``: called once after the warm-up, before the first timed round (lockstep passes the turn
    there too, so that every timed round, the first included, starts right after the partner's work: measured
    here, a first round that followed its own warm-up directly ran 25% faster than the rest, a -0.19 log-ratio
    outlier in every pair's first round).
    ``after_round(samples, rounds_done, elapsed_s, reason)``: called after each timed round and the stop rule's
    decision (``reason``, None to go on); it returns the reason to follow (lockstep A/B passes the turn there
    and follows the pair's decision, ``paired_stop.py``).
    ``agree(value)``: under tensor parallelism, turns this rank's decision into rank 0's (every rank must make
    the same generate calls): the stop rule's reason after each round and the energy re-measure's plan.
    """

    before_rounds: Optional[Callable[[], None]] = None
    after_round: Optional[Callable[..., Optional[str]]] = None
    agree: Optional[Callable[[Any], Any]] = None


NO_HOOKS = RoundHooks()


def run(loaded, spec: RunSpec, meter: Optional[Meter], *, energy_ctx: Optional[EnergyContext] = None,
        hooks: RoundHooks = NO_HOOKS, flops_cache: Optional[dict] = None) -> Measured:
    """Run the protocol of ``spec`` on ``loaded`` (a ``LoadedModel``) and return the raw samples.

    ``meter``: the energy meter (None: no energy). ``energy_ctx``: the grid for CO2 and the idle power to
    subtract. ``hooks``: the callbacks into the timed loop (``RoundHooks``). ``flops_cache``: the session's
    counted FLOPs by (model, batch, prompt length, steps), read and filled here.
    """
    stop = spec.rule()
    ctx = energy_ctx or EnergyContext()
    batch = make_batch(list(spec.prompts), spec.batch_size)
    inputs = loaded.encode(batch)
    measured = Measured()
    too_long = context_warning(int(inputs["input_ids"].shape[1]), spec.max_new_tokens, context_length(loaded))
    if too_long:  # a warning, not an error: RoPE models run past it (e.g. to probe long-context behaviour)
        measured.warnings.append(too_long)

    def generate():
        return loaded.generate_ids(inputs, spec.max_new_tokens, fixed_length=True)

    events.emit("benchmark_start", batch_size=spec.batch_size, max_new_tokens=spec.max_new_tokens,
                warmup=spec.warmup, fixed_rounds=stop.fixed_rounds, target_ci_rel=stop.target_ci_rel,
                max_time_s=stop.max_time_s, min_rounds=stop.min_rounds, max_rounds=stop.max_rounds,
                precision_metrics=stop.metrics)
    phase_start = time.perf_counter()
    for _ in range(spec.warmup):
        generate()
    measured.time_s["warmup"] = time.perf_counter() - phase_start
    if hooks.before_rounds is not None:
        hooks.before_rounds()

    latencies = _timed_rounds(measured, loaded, inputs, spec, stop, meter, hooks)

    if meter is not None:
        phase_start = time.perf_counter()
        _energy_phase(measured, meter, latencies, generate, inputs, loaded, ctx, spec.batch_size, hooks.agree)
        measured.time_s["energy_extra"] = time.perf_counter() - phase_start

    if spec.count_flops:
        phase_start = time.perf_counter()
        _flops(measured, loaded, inputs, generate, spec, latencies, flops_cache)
        measured.time_s["flops"] = time.perf_counter() - phase_start
    return measured


def _timed_rounds(measured: Measured, loaded, inputs, spec: RunSpec, stop: StopRule, meter: Optional[Meter],
                  hooks: RoundHooks) -> list[float]:
    """Time rounds until ``stop`` says why to stop; fill ``measured`` and return the round latencies (s)."""
    device = loaded.device
    max_new_tokens, batch_size = spec.max_new_tokens, spec.batch_size
    peak = PeakMemory(device, loaded.devices)
    measured.memory_method = peak.method
    probe = ContentionProbe()
    round_energy: list[Measurement] = []
    latencies: list[float] = []
    loop_start = time.perf_counter()
    while True:
        stamper = make_timestamp_processor(device)
        token = probe.begin()
        peak.reset()
        e_start = meter.begin() if meter is not None else None
        _sync(device)
        t0 = time.perf_counter()
        stamper.start()
        out = loaded.generate_ids(inputs, max_new_tokens, fixed_length=True, logits_processor=[stamper])
        _sync(device)
        t1 = time.perf_counter()
        if meter is not None:
            round_energy.append(meter.end(e_start))
        peak_bytes = peak.peak_bytes()
        delta_bytes = None if peak.delta_needs_untimed_window else peak.delta_bytes()
        measured.contention.append(probe.end(token, len(latencies)))

        gen = loaded.decode(inputs, out)
        latency = t1 - t0
        ttft, tpot, decode = stamper.step_times(t0, t1)
        latencies.append(latency)
        measured.tokens_generated = gen.tokens_total
        measured.prompt_tokens = gen.prompt_tokens_total
        measured.steps = gen.steps
        measured.add("latency_s", latency)
        measured.add("ttft_s", ttft)
        measured.add("tpot_s", tpot)
        for step_s in decode:
            measured.add("itl_s", step_s)
        measured.add("throughput_tok_s", gen.tokens_total / latency)
        decode_tokens = gen.tokens_total - min(batch_size, gen.tokens_total)
        measured.add("decode_tok_s", decode_tokens / (latency - ttft) if decode_tokens and latency > ttft else None)
        measured.add("prefill_tok_s", gen.prompt_tokens_total / ttft if ttft > 0 else None)
        measured.add("peak_mem_bytes", peak_bytes)
        if len(peak.per_device) > 1:  # a device_map model: the peak of each of its GPUs, highest over the rounds
            for gpu, gpu_bytes in peak.per_device.items():
                measured.peak_mem_devices[gpu] = max(gpu_bytes, measured.peak_mem_devices.get(gpu, 0))
        measured.add("peak_mem_delta_bytes", delta_bytes)
        elapsed = time.perf_counter() - loop_start
        reason = stop.decide(measured.samples, len(latencies), elapsed)
        if hooks.after_round is not None:  # lockstep: the turn passes, and the pair's decision is followed
            reason = hooks.after_round(measured.samples, len(latencies), elapsed, reason)
        if hooks.agree is not None:  # tensor parallel: rank 0's decision, so every rank makes the same generate calls
            reason = hooks.agree(reason)
        if events.active():
            events.emit("round", round=len(latencies), latency_s=latency, ttft_s=ttft,
                        throughput_tok_s=gen.tokens_total / latency,
                        **_round_fields(stop, measured.samples, len(latencies), elapsed))
        if reason is not None:
            measured.stop_reason, measured.rounds, measured.timed_s = reason, len(latencies), elapsed
            if events.active():
                events.emit("stop", reason=reason, **_round_fields(stop, measured.samples, len(latencies), elapsed))
            break
    measured.time_s["timed"] = measured.timed_s
    measured.round_energy = round_energy
    if peak.delta_needs_untimed_window:
        # the generation's own peak on CPU: one untimed window after a malloc_trim (a trim before a timed round
        # would make it pay page faults that depend on the process's history)
        peak.reset(trim=True)
        loaded.generate_ids(inputs, max_new_tokens, fixed_length=True)
        measured.add("peak_mem_delta_bytes", peak.delta_bytes())
        measured.time_s["memory"] = time.perf_counter() - loop_start - measured.timed_s

    if peak.method == "unavailable":
        measured.warnings.append("peak memory not measured: no resettable peak on this platform")
    tps = measured.samples.get("throughput_tok_s", [])
    if len(tps) > 1 and statistics.mean(tps) > 0:
        cv = statistics.stdev(tps) / statistics.mean(tps)
        if cv > CV_WARN:
            measured.warnings.append(f"throughput varies: coefficient of variation {cv:.0%} over {len(tps)} rounds "
                                     f"(> {CV_WARN:.0%}); results are noisy")
    competed = contention_warning(measured.contention, os.cpu_count() or 1)
    if competed:
        measured.warnings.append(competed)
    return latencies


def _round_fields(stop: StopRule, samples: dict, rounds: int, elapsed_s: float) -> dict:
    """What a ``round`` or ``stop`` event says about the stop rule: rounds so far, the timed seconds, and each
    precision metric's median with the relative half-width of its 95% interval (None before 6 samples)."""
    return {"rounds": rounds, "elapsed_s": elapsed_s,
            "median": {m: statistics.median(samples[m]) for m in stop.metrics if samples.get(m)},
            "achieved_ci_rel": stop.achieved(samples), "target_ci_rel": stop.target_ci_rel,
            "max_time_s": stop.max_time_s, "fixed_rounds": stop.fixed_rounds}


def _flops(measured: Measured, loaded, inputs, generate, spec: RunSpec, latencies: list[float],
           flops_cache: Optional[dict]) -> None:
    """Counted FLOPs of one generate (from the session's cache when an equal shape was counted), the analytic
    count next to them, and the achieved rate per round."""
    batch_size, peak_tflops = spec.batch_size, spec.peak_tflops
    variant = loaded.variant
    key = None
    if flops_cache is not None and variant is not None and measured.steps:
        key = flops_cache_key(variant.model, variant.revision, batch_size, int(inputs["input_ids"].shape[1]),
                              measured.steps)
    counted_flops = flops_cache.get(key) if key is not None else None
    if not loaded.capabilities.counts_flops:  # e.g. an engine outside torch: FlopCounterMode would see nothing
        counted_flops = None
        measured.flops_source = "analytic"
    elif counted_flops is None:
        try:
            with FlopsCounter().count() as counted:
                generate()
            counted_flops = counted.flops
        except Exception as exc:  # a counting formula that cannot read an operand: no FLOPs, not a failed test
            counted_flops = None
            measured.warnings.append(f"FLOPs not counted: the counting pass failed ({type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())[:160]})")
        # only an unquantized variant's count is shared: quantized kernels may hide matmuls from the counter
        if key is not None and counted_flops and variant.quantization is None and variant.precision != "fp8":
            flops_cache[key] = counted_flops
    else:
        measured.flops_reused = True
    measured.flops_total = counted_flops
    tokens = measured.tokens_generated
    if counted_flops and tokens:
        measured.add("flops_counted", counted_flops)
        measured.add("flops_per_tok", counted_flops / tokens)
        for latency in latencies:
            tflops = counted_flops / latency / 1e12
            measured.add("tflops", tflops)
            measured.add("mfu", tflops / peak_tflops if peak_tflops else None)
    config = loaded.config
    analytic, why_not = (analytic_flops(config, batch_size, int(inputs["input_ids"].shape[1]), measured.steps)
                         if config is not None else (None, "the model has no config"))
    if analytic is not None:
        measured.add("flops_analytic", analytic)
        disagree = flops_disagreement_warning(counted_flops, analytic)
        if disagree:
            measured.warnings.append(disagree)
    measured.flops_note = why_not


def _energy_phase(measured: Measured, meter: Meter, latencies: list[float], generate, inputs, loaded,
                  ctx: EnergyContext, batch_size: int, agree=None) -> None:
    """Energy per generate from the timed rounds' windows (or re-measured over repeated generates when one is
    shorter than the meter resolves), per device, net of idle, and split into prefill and decode."""
    device = loaded.device
    real = _is_real(meter)
    median_latency = statistics.median(latencies)
    repeats = _repeats_for(meter, median_latency)
    remeasure = repeats > 1 and real
    if agree is not None:  # tensor parallel: rank 0 (which reads the meter) decides; the others generate along
        agreed, remeasure = agree((repeats, remeasure))
        repeats = agreed if remeasure else repeats
    windows = measured.round_energy
    if remeasure:
        # one generate is shorter than the meter can resolve: re-measure over repeated generates per window
        windows = [_energy_window(meter, generate, repeats, device) for _ in range(len(latencies))]
        measured.energy_repeats = repeats
        measured.warnings.append(
            f"one generate ({median_latency * 1e3:.1f} ms) is shorter than twice the meter's resolution "
            f"({meter.resolution_s * 1e3:.0f} ms): energy measured over {repeats} generates per window, "
            "after the timed rounds")
    elif repeats > 1:
        measured.warnings.append(
            f"energy window ({median_latency * 1e3:.1f} ms) is shorter than twice the resolution of "
            f"{meter.method} ({meter.resolution_s:g} s): the estimate is extrapolated")
    measured.energy = windows[-1] if windows else None
    seen = False
    devices: dict[str, Optional[float]] = {}
    for w in windows:
        if w.energy_j is None:
            continue
        seen = True
        per_call = w.energy_j / measured.energy_repeats
        measured.add("energy_j", per_call)
        measured.add("energy_j_per_tok", per_call / measured.tokens_generated if measured.tokens_generated else None)
        measured.add("co2_g", _co2(per_call, ctx))
        if ctx.idle_power_w is not None and real:
            measured.add("energy_net_j", per_call - ctx.idle_power_w * w.duration_s / measured.energy_repeats)
        for dev, joules in w.devices.items():
            if joules is None or (dev in devices and devices[dev] is None):
                devices[dev] = None  # a device unreadable in any window has no total
            else:
                devices[dev] = (devices.get(dev) or 0.0) + joules / measured.energy_repeats
    measured.energy_devices = devices
    if measured.energy is not None:
        if not seen:
            measured.warnings.append(f"energy not measured: {measured.energy.method}")
        elif measured.energy.estimated:
            measured.warnings.append(f"energy is an estimate ({measured.energy.method}), not a meter reading")
            if ctx.idle_requested:
                measured.warnings.append("idle subtraction is not meaningful for an estimate: energy_net_j "
                                         "is not reported")
    for note in meter.fallback_notes:
        measured.warnings.append(f"energy meter fallback: {note}")
    if not (seen if agree is None else agree(seen)):  # tensor parallel: rank 0 reads; the others generate along
        return

    # prefill-only energy: generate of one token on the same batch, repeated to fill the meter's resolution
    def prefill():
        loaded.generate_ids(inputs, 1, fixed_length=True)

    t0 = time.perf_counter()
    prefill()
    _sync(device)
    prefill_s = time.perf_counter() - t0
    p_repeats = _repeats_for(meter, prefill_s) if real else 1
    if agree is not None:
        p_repeats = agree(p_repeats)
    prefill_j = []
    for _ in range(min(3, len(latencies))):
        w = _energy_window(meter, prefill, p_repeats, device)
        if w.energy_j is not None:
            prefill_j.append(w.energy_j / p_repeats)
            measured.add("energy_prefill_j", w.energy_j / p_repeats)
    decode_tokens = measured.tokens_generated - batch_size
    if prefill_j and decode_tokens > 0:
        prefill_median = statistics.median(prefill_j)
        for e in measured.samples.get("energy_j", []):
            measured.add("energy_decode_j_per_tok", (e - prefill_median) / decode_tokens)
