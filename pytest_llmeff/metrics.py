"""The one metric table: every public metric's unit, direction and meaning.

The reports, the JSON and (later) the gate and the CLI read this table; none repeats it.
A metric's name carries its unit. This module imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["higher", "lower", "none"]
#: how a metric is sampled: ``round`` one sample per timed round (its median gets a confidence interval and can
#: be imprecise), ``token`` one sample per generated token pooled over the rounds, ``once`` one figure per
#: variant (load time, weights, FLOP counts, quality drift): not a sampled figure, no interval
Sampling = Literal["round", "token", "once"]


@dataclass(frozen=True)
class MetricSpec:
    """Declaration of one metric.

    name: public name, ending in its unit (``ttft_s``, ``peak_mem_bytes``).
    unit: the unit written in reports (``s``, ``B``, ``tok/s``).
    direction: ``higher`` or ``lower`` is better, ``none`` when neither is (a property, not a score).
    meaning: one line for docs and ``--help``.
    sampling: ``round``, ``token`` or ``once`` (see ``Sampling``); user metrics default to ``round``.
    """

    name: str
    unit: str
    direction: Direction
    meaning: str
    sampling: Sampling = "round"


_TABLE: tuple[MetricSpec, ...] = (
    MetricSpec("throughput_tok_s", "tok/s", "higher",
               "generated tokens (no padding, nothing after EOS) / generate wall time, whole batch"),
    MetricSpec("decode_tok_s", "tok/s", "higher",
               "tokens generated after the first of each sequence / (latency_s - ttft_s), whole batch"),
    MetricSpec("prefill_tok_s", "tok/s", "higher", "prompt tokens (no padding) / time to first token"),
    MetricSpec("ttft_s", "s", "lower", "time from generate() entry to the first new token of the batch"),
    MetricSpec("tpot_s", "s", "lower", "(latency_s - ttft_s) / (new tokens per sequence - 1)"),
    MetricSpec("itl_s", "s", "lower",
               "inter-token latency: the time of each decode step, pooled over the timed rounds "
               "(rounds x (tokens - 1) samples, so p90/p99 are real)", "token"),
    MetricSpec("latency_s", "s", "lower", "wall time of one batched generate()"),
    MetricSpec("peak_mem_bytes", "B", "lower",
               "process peak during generation (CUDA max allocated; CPU VmHWM after reset, which includes "
               "everything resident at the reset)"),
    MetricSpec("peak_mem_delta_bytes", "B", "lower",
               "the generation's own peak above the memory in use at the reset: CUDA, each timed round "
               "(max allocated - allocated); CPU, one untimed generate after malloc_trim (VmHWM - VmRSS)"),
    MetricSpec("model_bytes", "B", "lower", "weights footprint as loaded (parameters + buffers)", "once"),
    MetricSpec("energy_j", "J", "lower", "energy of one batched generate(); method and estimated flag beside it"),
    MetricSpec("energy_j_per_tok", "J/tok", "lower", "energy_j / generated tokens"),
    MetricSpec("energy_net_j", "J", "lower",
               "energy_j minus idle power x window time (only with a real meter and --llmeff-idle-s)"),
    MetricSpec("energy_prefill_j", "J", "lower", "energy of a prefill-only pass (generate of 1 token) of the batch"),
    MetricSpec("energy_decode_j_per_tok", "J/tok", "lower",
               "(energy_j - energy_prefill_j) / tokens generated after the first of each sequence"),
    MetricSpec("co2_g", "g", "lower", "energy x grid intensity of the chosen country (CodeCarbon's data)"),
    MetricSpec("flops_per_tok", "FLOP/tok", "none",
               "dense-equivalent FLOPs of one generate() per generated token (one untimed counted pass)", "once"),
    MetricSpec("flops_counted", "FLOP", "none",
               "FLOPs of one generate() counted by FlopCounterMode (+ our formulas, e.g. grouped_mm for MoE)",
               "once"),
    MetricSpec("flops_analytic", "FLOP", "none",
               "dense-equivalent FLOPs of one generate() from the model config (architectures we know only)",
               "once"),
    MetricSpec("tflops", "TFLOP/s", "higher", "achieved FLOP rate: counted FLOPs / latency_s / 1e12"),
    MetricSpec("mfu", "ratio", "higher", "model FLOPs utilisation: tflops / the device's peak TFLOP/s for the dtype"),
    MetricSpec("load_s", "s", "lower", "model load time (first load of the variant in the session)", "once"),
    MetricSpec("token_agreement", "ratio", "higher",
               "fraction of greedy output positions equal to the reference variant's, same prompts "
               "(positions after a first divergence count too)", "once"),
    MetricSpec("prefix_agreement", "ratio", "higher",
               "greedy tokens equal to the reference's before the first divergence / all positions", "once"),
    MetricSpec("top1_agreement", "ratio", "higher",
               "teacher-forced: fraction of positions whose most likely next token equals the reference's",
               "once"),
    MetricSpec("kld_mean_nat", "nat", "lower",
               "teacher-forced: mean KL divergence of the next-token distribution from the reference's", "once"),
    MetricSpec("kld_p99_nat", "nat", "lower",
               "teacher-forced: 99th percentile of the per-position KL divergence from the reference", "once"),
    MetricSpec("ppl", "ppl", "lower", "perplexity on the package's public-domain text", "once"),
    MetricSpec("ppl_ratio", "ratio", "lower", "ppl / the reference variant's ppl (1.0 = no drift)", "once"),
)

METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in _TABLE}


def register_metric(spec: MetricSpec) -> None:
    """Add a user metric (from the ``pytest_llmeff_metric_specs`` hook). Built-ins cannot be redefined."""
    existing = METRICS.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"metric {spec.name!r} is already declared as {existing}")
    if spec.direction not in ("higher", "lower", "none"):
        raise ValueError(f"metric {spec.name!r}: direction {spec.direction!r} is not one of higher, lower, none")
    METRICS[spec.name] = spec


def reset_user_metrics() -> None:
    """Forget metrics added by ``register_metric`` (called when a pytest session ends)."""
    METRICS.clear()
    METRICS.update({spec.name: spec for spec in _TABLE})


BUILTIN_METRICS: tuple[MetricSpec, ...] = _TABLE


def spec_for(name: str) -> MetricSpec:
    """The declaration of ``name``; a clear error listing the known names otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}") from None
