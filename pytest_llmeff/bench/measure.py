"""The measuring step of ``llm_benchmark()``: plan the call, run the protocol, add the quality drift and the
user's custom metrics. What comes out goes to ``record.build_record`` and then to ``Baseline.judge``.

No pytest here: problems are raised as ``errors`` (the fixture turns them into one-line failures or skips).
Heavy imports (torch, transformers) happen inside the functions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from pytest_llmeff.bench import runner
from pytest_llmeff.bench.record import Plan
from pytest_llmeff.engines.transformers.quant import torch_dtype_name
from pytest_llmeff.errors import LlmeffRunError, ModelSourceError
from pytest_llmeff.lockstep.paired_stop import PairedDecider, PairedRounds, paired_target
from pytest_llmeff.measure import quality
from pytest_llmeff.measure.conditions import cpu_governor_warning, gpu_sharing_warning
from pytest_llmeff.measure.device_set import devices_key
from pytest_llmeff.measure.oom import translate_oom
from pytest_llmeff.measure.peaks import peak_tflops
from pytest_llmeff.metrics import METRICS
from pytest_llmeff.config.options import DEFAULT_INTERLEAVED_ROUNDS
from pytest_llmeff.config.variants import Variant

_DEFAULT_PROMPTS = Path(__file__).resolve().parents[1] / "data" / "prompts.txt"


def default_prompts() -> list[str]:
    """The prompt set shipped with the package (8 short instructions written for this project)."""
    return [line for line in _DEFAULT_PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]


def plan(options, variant: Variant, prompts: Optional[Sequence[str]], max_new_tokens: Optional[int]) -> Plan:
    """The call's plan: explicit arguments first, then the marker, then the options and defaults. Raises
    ValueError with one line for bad arguments."""
    if prompts is not None:
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError(f"llm_benchmark(prompts={prompts!r}): give a non-empty list of non-empty strings")
    if max_new_tokens is not None and (not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool)
                                       or max_new_tokens < 1):
        raise ValueError(f"llm_benchmark(max_new_tokens={max_new_tokens!r}): give an integer >= 1")
    chosen = tuple(prompts) if prompts is not None else tuple(variant.prompts or default_prompts())
    stop = options.stop_rule_for(variant)
    return Plan(prompts=chosen, max_new_tokens=max_new_tokens or variant.max_new_tokens,
                rounds=stop.fixed_rounds, warmup=options.warmup_for(variant.warmup), stop=stop)


def quality_inputs(variant: Variant, plan_: Optional[Plan] = None) -> tuple[tuple[str, ...], int]:
    """The prompts and length of the greedy quality probe: the benchmarked ones (``plan_``: a call's
    ``prompts=``/``max_new_tokens=`` when it gives them) or, without a plan, the marker's (what the ``llm_model``
    fixture can know before the call, to probe the reference before the variant loads)."""
    if plan_ is not None:
        return tuple(plan_.prompts), plan_.max_new_tokens
    return tuple(variant.prompts or default_prompts()), variant.max_new_tokens


def reference_data(session, variant: Variant, loaded_reference=None, plan_: Optional[Plan] = None):
    """The reference variant's quality probe (``quality.QualityData``) for ``quality_inputs(variant, plan_)``,
    filled once in ``session.quality_cache``, the one place that cache is filled: the teacher-forced part once per
    reference, the greedy tokens once per (reference, prompts, length). ``loaded_reference``: the reference's
    weights when the caller has them (the reference's own test); otherwise the reference is loaded now when
    something is missing. Whenever the reference is at hand, the marker's prompts are probed too, so the
    ``llm_model`` fixture of the other variants never reloads it. Raises ``ModelSourceError`` naming the
    reference when it cannot load."""
    ref = variant.reference()
    cache = session.quality_cache
    forced_key = (ref.load_key, "teacher-forced")
    greedy_key = (ref.load_key, *quality_inputs(variant, plan_))
    if forced_key not in cache or greedy_key not in cache:
        loaded = loaded_reference
        if loaded is None:
            try:
                loaded = session.models.get(ref)
            except LlmeffRunError as exc:
                raise ModelSourceError(
                    f"the reference variant {ref.id} cannot load: {exc}; choose another with "
                    "reference={'precision': ..., 'quantization': ...} or set quality=False") from None
        if forced_key not in cache:
            cache[forced_key] = quality.teacher_forced(loaded)
        for key in (greedy_key, (ref.load_key, *quality_inputs(variant))):
            if key not in cache:
                cache[key] = quality.greedy_tokens(loaded, key[1], key[2])
    return quality.QualityData(tokens=cache[greedy_key], forced=cache[forced_key])


def known_peak_tflops(loaded) -> Optional[float]:
    """Peak TFLOP/s of the variant's GPU and compute dtype from the table, or None (no mfu is guessed)."""
    if not loaded.device.startswith("cuda"):
        return None
    import torch

    dtype = torch_dtype_name(loaded.variant)
    q = loaded.variant.quantization
    if q is not None and q.compute_dtype:
        dtype = q.compute_dtype
    return peak_tflops(torch.cuda.get_device_name(loaded.device), "fp8" if loaded.variant.precision == "fp8" else dtype)


def measure(session, loaded, plan_: Plan, custom_metrics: Optional[Callable[..., list]] = None, where=None):
    """Run the standard protocol (``runner.run``) on ``loaded`` as ``plan_`` says, then, outside the timed rounds,
    the quality drift against the reference and the ``pytest_llmeff_custom_metrics`` hook (``custom_metrics``).

    Returns ``(measured, extra_metrics)``: the runner's ``Measured`` and the once-per-variant samples by metric
    name. A CUDA out-of-memory error becomes ``errors.OutOfMemory``. ``measured.time_s`` gains the phases
    measured here: ``load`` (the variant's load, in the first record that uses it), ``quality`` and ``custom``.
    ``where``: the benchmark (``record.Where``), which lockstep names in its messages to the partner.
    """
    variant: Variant = loaded.variant
    options = session.options
    devices = loaded.devices
    meter_device = devices_key(devices) if len(devices) > 1 else loaded.device  # a device_map model: all its GPUs
    meter = session.meters.for_device(meter_device)
    ctx = runner.EnergyContext(country_iso3=options.country_iso_code,
                               idle_power_w=session.meters.idle_power_w(meter_device),
                               idle_requested=options.idle_s > 0)
    pairing = _pairing(session, variant, plan_, where) if session.turnstile is not None else None
    with translate_oom(variant, loaded.device, variant.batch_size):
        spec = runner.RunSpec(prompts=tuple(plan_.prompts), batch_size=variant.batch_size,
                              max_new_tokens=plan_.max_new_tokens, stop=plan_.rule, warmup=plan_.warmup,
                              peak_tflops=options.peak_tflops or known_peak_tflops(loaded))
        hooks = runner.RoundHooks(after_round=pairing.after_round if pairing is not None else None,
                                  before_rounds=pairing.before_rounds if pairing is not None else None,
                                  agree=getattr(session, "agree", None))
        measured = runner.run(loaded, spec, meter, energy_ctx=ctx, hooks=hooks, flops_cache=session.flops_cache)
    measured.warnings.extend(w for w in (cpu_governor_warning(), gpu_sharing_warning(meter)) if w)
    if pairing is not None and pairing.decider is not None and measured.stop_reason is not None:
        measured.paired_target_rel = pairing.decider.target_rel
        measured.paired_achieved_rel = dict(pairing.decider.achieved)
    if variant.load_key not in session.loads_timed:
        session.loads_timed.add(variant.load_key)
        measured.time_s["load"] = float(loaded.load_s)
    extra: dict[str, list[float]] = {}
    if variant.quality and not loaded.capabilities.quality_logits:
        measured.warnings.append(f"quality drift not measured: engine={variant.engine!r} gives no logits to probe")
    elif variant.quality:
        start = time.perf_counter()
        extra.update(_quality(session, loaded, variant, plan_))
        measured.time_s["quality"] = time.perf_counter() - start
    start = time.perf_counter()
    for result in (custom_metrics(llm_model=loaded, measured=measured) if custom_metrics else []):
        if result:
            extra.update(result)
    measured.time_s["custom"] = time.perf_counter() - start
    return measured, extra


def _pairing(session, variant: Variant, plan_: Plan, where):
    """Lockstep A/B: the turn passes after the warm-up and after each timed round, and the candidate decides how
    many pairs to time (``paired_stop.py``): the stop rule's precision metrics and the gated per-round metrics,
    to half the smallest relative threshold."""
    turnstile = session.turnstile
    rule = plan_.rule
    key = f"{where.nodeid}\0{where.name}" if where is not None else ""
    decider = None
    if turnstile.role == "candidate" and rule.fixed_rounds is None:
        thresholds = session.baseline.thresholds_for(variant)
        per_round = {m: t for m, t in thresholds.items() if m in METRICS and METRICS[m].sampling == "round"}
        relative = [t.value for t in per_round.values() if t.kind == "relative"]
        metrics = tuple(dict.fromkeys(list(rule.metrics) + [m for m, t in per_round.items() if t.kind == "relative"]))
        decider = PairedDecider(metrics=metrics, target_rel=paired_target(rule.target_ci_rel, relative),
                                min_pairs=max(DEFAULT_INTERLEAVED_ROUNDS, rule.min_rounds), max_pairs=rule.max_rounds,
                                max_time_s=rule.max_time_s)
    return PairedRounds(turnstile, key, decider, fixed=rule.fixed_rounds is not None,
                        fallback_pairs=DEFAULT_INTERLEAVED_ROUNDS)


def _quality(session, loaded, variant: Variant, plan_: Optional[Plan] = None) -> dict[str, list[float]]:
    """Drift of this variant from its reference (``quality.drift_metrics``): teacher-forced on the quality text,
    greedy on the benchmarked prompts and length (``plan_``; the marker's without one). The variant's own probe
    runs first; when the call overrides the marker's prompts or length, the reference's greedy tokens for them
    are not known yet and the reference is loaded AFTER the variant's probe (the variant's next test then loads
    it again); with the marker's prompts the reference was probed before the variant loaded, as before."""
    prompts, new_tokens = quality_inputs(variant, plan_)
    with translate_oom(variant, loaded.device, len(prompts)):
        if variant.is_reference:
            mine = reference = reference_data(session, variant, loaded_reference=loaded, plan_=plan_)
        else:
            forced = reference_data(session, variant).forced  # marker inputs: ready before the variant loaded
            mine = quality.probe(loaded, prompts, new_tokens, reference=forced)
            reference = reference_data(session, variant, plan_=plan_)
    return quality.drift_metrics(mine, reference)
