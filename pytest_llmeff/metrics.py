"""The one metric table: every public metric's unit, direction and meaning.

The terminal table, the markdown, CSV and HTML reports, the figures, the exports, the gate and the CLI read this
table; none repeats it. Each entry says the stored unit, the direction, the sampling, and how the metric is
displayed (column label, display unit and scale). A metric's name carries its unit. This module imports nothing
from the package and nothing heavy (the plugin registers user metrics while pytest configures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

Direction = Literal["higher", "lower", "none"]
#: how a metric is sampled: ``round`` one sample per timed round (its median gets a confidence interval and can
#: be imprecise), ``token`` one sample per generated token pooled over the rounds, ``once`` one figure per
#: variant (load time, weights, FLOP counts, quality drift): not a sampled figure, no interval
Sampling = Literal["round", "token", "once"]


@dataclass(frozen=True)
class Display:
    """How a metric is shown in the terminal table, the markdown, the HTML report and the figures.

    label: the column's words without the display unit (``TTFT``, ``gen peak``); it also names the metric in the
    ``vs baseline`` cell, whose changes are in percent.
    unit: the display unit written after the label in a column header (``ms``, ``MiB``, ``%``); empty when the
    label already says it (``tok/s``, ``J/tok``).
    scale: the factor from the stored unit (``MetricSpec.unit``) to the display unit: ``1e3`` for seconds shown
    in ms, ``1 / 2**20`` for bytes shown in MiB, ``100`` for a ratio shown in %.
    """

    label: str
    unit: str = ""
    scale: float = 1.0

    @property
    def header(self) -> str:
        """The column header: the label and its display unit (``TTFT ms``), or the label alone."""
        return f"{self.label} {self.unit}" if self.unit else self.label


_MIB = 1 / 2**20  #: bytes -> MiB


@dataclass(frozen=True)
class MetricSpec:
    """Declaration of one metric: everything any report, export, gate or CLI knows about it.

    name: public name, ending in its unit (``ttft_s``, ``peak_mem_bytes``).
    unit: the unit the value is stored in and written in the JSON and CSV (``s``, ``B``, ``tok/s``).
    direction: ``higher`` or ``lower`` is better, ``none`` when neither is (a property, not a score).
    meaning: one line for docs and ``--help``.
    sampling: ``round``, ``token`` or ``once`` (see ``Sampling``); user metrics default to ``round``.
    display: label, display unit and scale for tables and figures (see ``Display``); None shows the name itself
    in the stored unit (a user metric's name carries its unit).
    from_energy_meter: True when the figure is computed from the energy meter's joules, so it carries the meter's
    method and ``estimated`` flag (``~`` in the table); a user metric named ``energy_*`` counts as one too.
    """

    name: str
    unit: str
    direction: Direction
    meaning: str
    sampling: Sampling = "round"
    display: Optional[Display] = None
    from_energy_meter: bool = False

    @property
    def header(self) -> str:
        """The column header in tables and figures (``TTFT ms``; a user metric: its name)."""
        return self.display.header if self.display is not None else self.name

    @property
    def label(self) -> str:
        """The header without its display unit (``TTFT``), for cells whose figures are in percent."""
        return self.display.label if self.display is not None else self.name

    @property
    def scale(self) -> float:
        """The factor from the stored unit to the display unit (1.0 without ``display``)."""
        return self.display.scale if self.display is not None else 1.0


_TABLE: tuple[MetricSpec, ...] = (
    MetricSpec("throughput_tok_s", "tok/s", "higher",
               "generated tokens (no padding, nothing after EOS) / generate wall time, whole batch",
               display=Display("tok/s", "", 1.0)),
    MetricSpec("decode_tok_s", "tok/s", "higher",
               "tokens generated after the first of each sequence / (latency_s - ttft_s), whole batch",
               display=Display("decode tok/s", "", 1.0)),
    MetricSpec("prefill_tok_s", "tok/s", "higher", "prompt tokens (no padding) / time to first token",
               display=Display("prefill tok/s", "", 1.0)),
    MetricSpec("ttft_s", "s", "lower", "time from generate() entry to the first new token of the batch",
               display=Display("TTFT", "ms", 1e3)),
    MetricSpec("tpot_s", "s", "lower", "(latency_s - ttft_s) / (new tokens per sequence - 1)",
               display=Display("TPOT", "ms", 1e3)),
    MetricSpec("itl_s", "s", "lower",
               "inter-token latency: the time of each decode step, pooled over the timed rounds "
               "(rounds x (tokens - 1) samples, so p90/p99 are real)", "token",
               display=Display("ITL", "ms", 1e3)),
    MetricSpec("latency_s", "s", "lower", "wall time of one batched generate()", display=Display("e2e", "s", 1.0)),
    MetricSpec("peak_mem_bytes", "B", "lower",
               "process peak during generation (CUDA max allocated; CPU VmHWM after reset, which includes "
               "everything resident at the reset)",
               display=Display("peak", "MiB", _MIB)),
    MetricSpec("peak_mem_delta_bytes", "B", "lower",
               "the generation's own peak above the memory in use at the reset: CUDA, each timed round "
               "(max allocated - allocated); CPU, one untimed generate after malloc_trim (VmHWM - VmRSS)",
               display=Display("gen peak", "MiB", _MIB)),
    MetricSpec("model_bytes", "B", "lower", "weights footprint as loaded (parameters + buffers)", "once",
               display=Display("model", "MiB", _MIB)),
    MetricSpec("energy_j", "J", "lower", "energy of one batched generate(); method and estimated flag beside it",
               display=Display("energy", "J", 1.0), from_energy_meter=True),
    MetricSpec("energy_j_per_tok", "J/tok", "lower", "energy_j / generated tokens",
               display=Display("J/tok", "", 1.0), from_energy_meter=True),
    MetricSpec("energy_net_j", "J", "lower",
               "energy_j minus idle power x window time (only with a real meter and --llmeff-idle-s)",
               display=Display("net", "J", 1.0), from_energy_meter=True),
    MetricSpec("energy_prefill_j", "J", "lower", "energy of a prefill-only pass (generate of 1 token) of the batch",
               display=Display("prefill", "J", 1.0), from_energy_meter=True),
    MetricSpec("energy_decode_j_per_tok", "J/tok", "lower",
               "(energy_j - energy_prefill_j) / tokens generated after the first of each sequence",
               display=Display("decode J/tok", "", 1.0), from_energy_meter=True),
    MetricSpec("co2_g", "g", "lower", "energy x grid intensity of the chosen country (CodeCarbon's data)",
               display=Display("CO2", "g", 1.0), from_energy_meter=True),
    MetricSpec("flops_per_tok", "FLOP/tok", "none",
               "dense-equivalent FLOPs of one generate() per generated token (one untimed counted pass)", "once",
               display=Display("GFLOP/tok", "", 1e-9)),
    MetricSpec("flops_counted", "FLOP", "none",
               "FLOPs of one generate() counted by FlopCounterMode (+ our formulas, e.g. grouped_mm for MoE)",
               "once",
               display=Display("counted", "GFLOP", 1e-9)),
    MetricSpec("flops_analytic", "FLOP", "none",
               "dense-equivalent FLOPs of one generate() from the model config (architectures we know only)",
               "once",
               display=Display("analytic", "GFLOP", 1e-9)),
    MetricSpec("tflops", "TFLOP/s", "higher", "achieved FLOP rate: counted FLOPs / latency_s / 1e12",
               display=Display("TFLOP/s", "", 1.0)),
    MetricSpec("mfu", "ratio", "higher", "model FLOPs utilisation: tflops / the device's peak TFLOP/s for the dtype",
               display=Display("MFU", "%", 100.0)),
    MetricSpec("load_s", "s", "lower", "model load time (first load of the variant in the session)", "once",
               display=Display("load", "s", 1.0)),
    MetricSpec("token_agreement", "ratio", "higher",
               "fraction of greedy output positions equal to the reference variant's, same prompts "
               "(positions after a first divergence count too)", "once",
               display=Display("agree", "%", 100.0)),
    MetricSpec("prefix_agreement", "ratio", "higher",
               "greedy tokens equal to the reference's before the first divergence / all positions", "once",
               display=Display("prefix", "%", 100.0)),
    MetricSpec("top1_agreement", "ratio", "higher",
               "teacher-forced: fraction of positions whose most likely next token equals the reference's",
               "once",
               display=Display("top1", "%", 100.0)),
    MetricSpec("kld_mean_nat", "nat", "lower",
               "teacher-forced: mean KL divergence of the next-token distribution from the reference's", "once",
               display=Display("KLD", "nat", 1.0)),
    MetricSpec("kld_p99_nat", "nat", "lower",
               "teacher-forced: 99th percentile of the per-position KL divergence from the reference", "once",
               display=Display("KLD p99", "nat", 1.0)),
    MetricSpec("ppl", "ppl", "lower", "perplexity on the package's public-domain text", "once",
               display=Display("ppl", "", 1.0)),
    MetricSpec("ppl_ratio", "ratio", "lower", "ppl / the reference variant's ppl (1.0 = no drift)", "once",
               display=Display("ppl ratio", "", 1.0)),
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


def _known(name: str) -> Optional[MetricSpec]:
    return METRICS.get(name)


def header_for(name: str) -> str:
    """The column header of metric ``name`` in its display unit (an unknown or user metric: its name)."""
    spec = _known(name)
    return spec.header if spec is not None else name


def short_label(name: str) -> str:
    """``name``'s header without its display unit (``TTFT ms`` -> ``TTFT``), for the verdicts, whose changes
    are in percent."""
    spec = _known(name)
    return spec.label if spec is not None else name


def scale_for(name: str) -> float:
    """The factor from the stored unit to the display unit of metric ``name`` (1.0 when unknown)."""
    spec = _known(name)
    return spec.scale if spec is not None else 1.0


def is_energy_metric(name: str) -> bool:
    """True for a figure computed from the energy meter's joules (it carries the meter's method and estimated
    flag): a declared ``from_energy_meter`` metric, or any metric whose name starts with ``energy_``."""
    spec = _known(name)
    return (spec is not None and spec.from_energy_meter) or name.startswith("energy_")
