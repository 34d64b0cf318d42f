"""The public fixtures: ``llm_model``, ``energy_tracker``, ``flops_counter`` and ``llm_benchmark``.

This module is imported by plugin.py, so it imports nothing heavy at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import pytest

from pytest_llmeff.variants import InvalidMarker, Variant

SESSION_KEY = pytest.StashKey["object"]()
RECORDS_KEY = pytest.StashKey[list]()

_DEFAULT_PROMPTS = Path(__file__).resolve().parent / "data" / "prompts.txt"


def default_prompts() -> list[str]:
    """The prompt set shipped with the package (8 short instructions written for this project)."""
    return [line for line in _DEFAULT_PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]


def _session(request):
    return request.config.stash[SESSION_KEY]


@pytest.fixture
def llmeff_variant(request) -> Variant:
    """The variant of this test, from the ``llm_efficiency`` marker expansion."""
    param = getattr(request, "param", None)
    if isinstance(param, InvalidMarker):
        pytest.fail(f"llm_efficiency marker on {request.node.nodeid}: {param.message}", pytrace=False)
    if not isinstance(param, Variant):
        pytest.fail(f"{request.node.nodeid} uses the llmeff fixtures without @pytest.mark.llm_efficiency(model=...)",
                    pytrace=False)
    return param


def _quality_key(variant: Variant) -> tuple:
    prompts = tuple(variant.prompts or default_prompts())
    return (variant.reference().load_key, prompts, variant.max_new_tokens)


def _reference_data(session, variant: Variant, nodeid: str, loaded_reference=None):
    """The reference variant's quality probe, computed once per (reference, prompts, length): the one place the
    cache is filled. ``loaded_reference``: the reference's weights when the caller has them (the reference's own
    test); otherwise the reference is loaded now, before the variant, so no variant is loaded twice."""
    from pytest_llmeff import quality
    from pytest_llmeff.backends.gguf import ModelSourceError
    from pytest_llmeff.backends.quant import VariantUnsupported

    key = _quality_key(variant)
    if key not in session.quality_cache:
        loaded, problem = loaded_reference, None
        if loaded is None:
            ref = variant.reference()
            try:
                loaded = session.models.get(ref)
            except (ModelSourceError, VariantUnsupported) as exc:
                problem = str(exc)
            if problem is not None:
                pytest.fail(f"{nodeid}: the reference variant {ref.id} cannot load: {problem}; choose another "
                            "with reference={'precision': ..., 'quantization': ...} or set quality=False",
                            pytrace=False)
        session.quality_cache[key] = quality.probe(loaded, key[1], variant.max_new_tokens)
    return session.quality_cache[key]


@pytest.fixture
def llm_model(llmeff_variant, request):
    """The loaded variant (``.model``, ``.tokenizer``, ``.variant``, ``.generate(prompts, max_new_tokens)``).
    Loaded once per session and variant; at most one variant stays loaded per process. A variant this machine
    cannot run (fp8 without a capable GPU, bitsandbytes missing, ...) is skipped with the reason."""
    from dataclasses import replace

    from pytest_llmeff.backends.gguf import ModelSourceError
    from pytest_llmeff.backends.quant import VariantUnsupported

    session = _session(request)
    nodeid = request.node.nodeid
    if session.options.trust_remote_code and not llmeff_variant.trust_remote_code:
        llmeff_variant = replace(llmeff_variant, trust_remote_code=True)
    if llmeff_variant.quality and not llmeff_variant.is_reference and "llm_benchmark" in request.fixturenames:
        _reference_data(session, llmeff_variant, nodeid)
    skip_reason = failure = None
    try:
        loaded = session.models.get(llmeff_variant)
    except VariantUnsupported as exc:
        skip_reason = f"{llmeff_variant.id}: {exc}"
    except ModelSourceError as exc:
        failure = f"{nodeid}: {exc}"
    # raised outside the except blocks, so the report shows one line and no chained traceback
    if skip_reason is not None:
        pytest.skip(skip_reason)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    # same weights, this test's variant (batch size and generation settings may differ from the loader's)
    return replace(loaded, variant=llmeff_variant)


@pytest.fixture(scope="session")
def energy_tracker(request):
    """``with energy_tracker.measure() as e:`` -> ``e.energy_j``, ``e.method``, ``e.estimated``, ``e.co2_g``."""
    from pytest_llmeff.measure.energy import EnergyTracker

    session = _session(request)
    return EnergyTracker(session.meter, session.options.country_iso_code)


@pytest.fixture(scope="session")
def flops_counter():
    """``with flops_counter.count() as f:`` -> ``f.flops`` (FlopCounterMode plus formulas for missed ops)."""
    from pytest_llmeff.measure.flops import FlopsCounter

    return FlopsCounter()


@pytest.fixture
def llm_benchmark(llm_model, request):
    """Run the standard protocol on this test's variant and record it: ``result = llm_benchmark()``.

    Keyword arguments: ``prompts`` (list of str), ``max_new_tokens``, ``name`` (to record several
    benchmarks in one test). Returns the ``BenchmarkRecord`` (``result.metrics["throughput_tok_s"].median``).
    """
    from pytest_llmeff import runner
    from pytest_llmeff.session import build_record

    session = _session(request)
    variant: Variant = llm_model.variant
    item = request.node
    records = item.stash.setdefault(RECORDS_KEY, [])

    def bench(prompts: Optional[Sequence[str]] = None, *, max_new_tokens: Optional[int] = None,
              name: Optional[str] = None):
        if prompts is not None:
            if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
                pytest.fail(f"{item.nodeid}: llm_benchmark(prompts={prompts!r}): give a non-empty list of "
                            "non-empty strings", pytrace=False)
        if max_new_tokens is not None and (not isinstance(max_new_tokens, int) or max_new_tokens < 1):
            pytest.fail(f"{item.nodeid}: llm_benchmark(max_new_tokens={max_new_tokens!r}): give an integer >= 1",
                        pytrace=False)
        use_prompts = list(prompts) if prompts is not None else list(variant.prompts or default_prompts())
        new_tokens = max_new_tokens or variant.max_new_tokens
        rounds = session.options.rounds_for(variant.rounds)
        warmup = session.options.warmup_for(variant.warmup)
        meter = session.meter_for(llm_model.device)
        key = "cuda" if llm_model.device.startswith("cuda") else "cpu"
        ctx = runner.EnergyContext(country_iso3=session.options.country_iso_code,
                                   idle_power_w=session.idle_power_w.get(key),
                                   idle_requested=session.options.idle_s > 0)
        turnstile = session.turnstile  # lockstep A/B: the turn passes to the partner after each timed round
        measured = runner.run(llm_model, use_prompts, batch_size=variant.batch_size, max_new_tokens=new_tokens,
                              rounds=rounds, warmup=warmup, meter=meter, energy_ctx=ctx,
                              peak_tflops=session.options.peak_tflops or _known_peak(llm_model),
                              after_round=turnstile.step if turnstile is not None else None)
        interleaved = turnstile is not None and not turnstile.alone
        from pytest_llmeff.measure.conditions import cpu_governor_warning, gpu_sharing_warning

        measured.warnings.extend(w for w in (cpu_governor_warning(), gpu_sharing_warning(meter)) if w)
        extra: dict[str, list[float]] = {}
        if variant.quality:  # outside the timed rounds
            from pytest_llmeff import quality

            if variant.is_reference:
                reference = mine = _reference_data(session, variant, item.nodeid, loaded_reference=llm_model)
            else:
                reference = _reference_data(session, variant, item.nodeid)
                mine = quality.probe(llm_model, list(variant.prompts or default_prompts()), variant.max_new_tokens)
            extra.update(quality.drift_metrics(mine, reference))
        for result in request.config.hook.pytest_llmeff_custom_metrics(
                config=request.config, llm_model=llm_model, measured=measured):
            if result:
                extra.update(result)
        params = {k: v for k, v in getattr(item, "callspec", None).params.items() if k != "llmeff_variant"} \
            if hasattr(item, "callspec") else {}
        record = build_record(
            nodeid=item.nodeid, name=name or item.name, variant=variant if new_tokens == variant.max_new_tokens
            else _with_new_tokens(variant, new_tokens), params=params, rounds=rounds, warmup=warmup,
            measured=measured, loaded=llm_model, prompts_count=len(use_prompts), extra_metrics=extra,
            resolved_path=str(llm_model.path) if llm_model.path else None,
            country=session.options.country_iso_code,
        )
        record.interleaved = interleaved
        session.publish_for_partner(record)
        session.evaluate_gate(record, variant)
        for metric in ("throughput_tok_s", "ttft_s", "tpot_s", "peak_mem_bytes", "energy_j_per_tok"):
            if metric in record.metrics:  # junit-xml properties
                item.user_properties.append((f"llmeff_{record.variant.id}_{metric}", record.metrics[metric].median))
        records.append(record)
        return record

    return bench


def _known_peak(loaded):
    """Peak TFLOP/s of the variant's GPU and compute dtype from the table, or None (no mfu is guessed)."""
    if not loaded.device.startswith("cuda"):
        return None
    import torch

    from pytest_llmeff.backends.quant import torch_dtype_name
    from pytest_llmeff.measure.peaks import peak_tflops

    dtype = torch_dtype_name(loaded.variant)
    q = loaded.variant.quantization
    if q is not None and q.compute_dtype:
        dtype = q.compute_dtype
    return peak_tflops(torch.cuda.get_device_name(loaded.device), "fp8" if loaded.variant.precision == "fp8" else dtype)


def _with_new_tokens(variant: Variant, new_tokens: int) -> Variant:
    from dataclasses import replace

    return replace(variant, max_new_tokens=new_tokens)
