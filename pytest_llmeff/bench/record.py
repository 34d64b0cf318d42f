"""Building a ``BenchmarkRecord`` from what one ``llm_benchmark()`` call measured, and its one-line summary.

Pure: the runner's raw samples in, a validated record out (statistics per metric computed by ``results``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Optional

from pytest_llmeff import events
from pytest_llmeff.metrics import scale_for
from pytest_llmeff.report.analysis import outlier_rounds
from pytest_llmeff.config.variants import Variant
from pytest_llmeff.stats.stop_rule import StopRule

if TYPE_CHECKING:
    from pytest_llmeff.results.schema import BenchmarkRecord


@dataclass(frozen=True)
class Plan:
    """What one ``llm_benchmark()`` call runs: the prompts (cycled to the batch size), the generated tokens per
    sequence, the untimed warm-up rounds and when to stop timing (``stop``: the stop rule; without one, exactly
    ``rounds`` rounds)."""

    prompts: tuple[str, ...]
    max_new_tokens: int
    rounds: Optional[int]
    warmup: int
    stop: Optional["StopRule"] = None

    @property
    def rule(self) -> "StopRule":
        return self.stop if self.stop is not None else StopRule(fixed_rounds=self.rounds or 1)


@dataclass(frozen=True)
class Where:
    """Which test made the record: pytest node id, benchmark name (``name=`` or the test's name), the test's
    other parameters (stringified), and the grid whose carbon intensity gave co2_g."""

    nodeid: str
    name: str
    params: dict
    country: Optional[str] = None


def build_record(where: Where, variant: Variant, plan: Plan, loaded, measured,
                 extra_metrics: dict[str, list[float]]) -> "BenchmarkRecord":
    """Turn the runner's raw samples (``measured``, a ``runner.Measured``) and the once-per-variant figures of
    ``loaded`` (a ``LoadedModel``) into a ``BenchmarkRecord`` (statistics computed per metric, time per phase
    with its ``total``)."""
    from pytest_llmeff.results.schema import BenchmarkRecord, EnergyInfo, Metric, VariantRecord

    samples = dict(measured.samples)
    samples["model_bytes"] = [float(loaded.model_bytes)]
    samples["load_s"] = [float(loaded.load_s)]
    samples.update(extra_metrics)
    metrics = {name_: Metric.from_samples(name_, vals) for name_, vals in samples.items() if vals}
    energy = None
    if measured.energy is not None:
        read = any(v is not None for v in measured.energy_devices.values()) or "energy_j" in measured.samples
        energy = EnergyInfo(method=measured.energy.method,
                            # never "not estimated" unless a meter was actually read
                            estimated=bool(measured.energy.estimated or not read),
                            country_iso_code=where.country, devices=measured.energy_devices,
                            note=(f"{measured.energy_repeats} generates per energy window"
                                  if measured.energy_repeats > 1 else None))
    if plan.max_new_tokens != variant.max_new_tokens:
        variant = replace(variant, max_new_tokens=plan.max_new_tokens)
    return BenchmarkRecord(
        nodeid=where.nodeid, name=where.name, group=variant.group,
        variant=VariantRecord(
            id=variant.id, model=variant.model, model_source=variant.model_source,
            resolved_path=str(loaded.path) if loaded.path else None, precision=variant.precision, quantization=variant.quant_label,
            quantization_config=asdict(variant.quantization) if variant.quantization else None,
            reference=variant.reference().id if variant.quality else None, batch_size=variant.batch_size,
            max_new_tokens=variant.max_new_tokens, device=loaded.device, device_map=variant.device_map,
            prompts=len(plan.prompts), trust_remote_code=variant.trust_remote_code,
            engine=variant.engine, engine_type=loaded.engine_type,
        ),
        params={k: str(v) for k, v in where.params.items()}, rounds=measured.rounds, warmup=plan.warmup,
        metrics=metrics, stop=_stop_info(plan.rule, measured), time_s={**measured.time_s, "total": sum(measured.time_s.values())},
        contention=list(measured.contention), outliers=outlier_rounds(metrics),
        energy=energy, tokens_generated=measured.tokens_generated, prompt_tokens=measured.prompt_tokens,
        warnings=list(measured.warnings),
        extra_info={"memory_method": measured.memory_method, "flops_total": measured.flops_total,
                    "steps": measured.steps, "flops_reused": measured.flops_reused,
                    "flops_source": measured.flops_source,
                    "threads": loaded.threads if loaded.capabilities.threads else None,
                    **({"timing_note": loaded.timing_note} if not loaded.capabilities.per_token_timing else {}),
                    **({"flops_analytic_missing": measured.flops_note} if measured.flops_note else {}),
                    **({"peak_mem_bytes_per_device": dict(measured.peak_mem_devices)}
                       if getattr(measured, "peak_mem_devices", None) else {})},
    )


def _stop_info(rule: "StopRule", measured):
    """The record's ``stop``: why the timed rounds ended and the precision reached then."""
    from pytest_llmeff.results.schema import StopInfo

    if measured.stop_reason is None:
        return None
    adaptive = rule.fixed_rounds is None
    return StopInfo(reason=measured.stop_reason, rounds=measured.rounds, timed_s=measured.timed_s,
                    target_ci_rel=rule.target_ci_rel if adaptive else None,
                    max_time_s=rule.max_time_s if adaptive else None,
                    min_rounds=rule.min_rounds if adaptive else None,
                    max_rounds=rule.max_rounds if adaptive else None,
                    precision_metrics=list(rule.metrics) if adaptive else [],
                    achieved_ci_rel=rule.achieved(measured.samples) if adaptive else {},
                    paired_target_rel=measured.paired_target_rel,
                    paired_achieved_rel=dict(measured.paired_achieved_rel))


PHASES = ("load", "warmup", "timed", "memory", "energy_extra", "flops", "quality", "custom")  # time_s keys, in order


def run_time_s(records: list["BenchmarkRecord"], session_s: float) -> dict[str, float]:
    """The run's time per phase: each phase summed over the records, ``benchmarks`` (their totals) and
    ``session`` (the pytest session's wall time, which also holds collection, imports and other tests)."""
    totals: dict[str, float] = {}
    for record in records:
        for phase, seconds in record.time_s.items():
            if phase != "total":
                totals[phase] = totals.get(phase, 0.0) + seconds
    ordered = {p: totals.pop(p) for p in PHASES if p in totals}
    ordered.update(totals)
    ordered["benchmarks"] = sum(r.time_s.get("total", 0.0) for r in records)
    ordered["session"] = session_s
    return ordered


def one_line(record: "BenchmarkRecord") -> str:
    """The ``-v`` line printed under a benchmark test."""
    m = record.metrics

    def med(name, fmt="{:.1f}"):  # in the metric table's display unit
        return fmt.format(m[name].median * scale_for(name)) if name in m else "n/a"

    energy = ""
    if "energy_j_per_tok" in m:
        tilde = "~" if record.energy and record.energy.estimated else ""
        energy = f", {tilde}{m['energy_j_per_tok'].median:.3g} J/tok"
    return (f"{record.variant.id}: {med('throughput_tok_s')} tok/s, ttft {med('ttft_s')} ms, "
            f"tpot {med('tpot_s')} ms, peak {med('peak_mem_bytes', '{:.0f}')} MiB{energy}")


def payload(records: list["BenchmarkRecord"]) -> list[str]:
    return [r.model_dump_json() for r in records]



def emit_record_events(record: "BenchmarkRecord") -> None:
    """Tell the event stream (``events``) what one finished benchmark holds: a ``record`` event with its medians
    and intervals, then one event per warning, gate verdict and limit."""
    if not events.active():
        return
    events.emit("record", name=record.name, rounds=record.rounds,
                stop_reason=record.stop.reason if record.stop else None, gate_failed=record.gate_failed,
                metrics={n: {"median": m.median, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n}
                         for n, m in record.metrics.items()})
    for warning in record.warnings:
        events.emit("warning", name=record.name, message=warning)
    for v in record.verdicts:
        events.emit("verdict", name=record.name, metric=v.metric, status=v.status, change=v.change,
                    p_value=v.p_value, threshold=v.threshold, test=v.test, message=v.message)
    for limit in record.limits:
        events.emit("limit", name=record.name, metric=limit.metric, limit=limit.limit, median=limit.median,
                    passed=limit.passed, message=limit.message)
