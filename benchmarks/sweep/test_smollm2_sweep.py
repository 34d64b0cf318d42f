"""Every precision and quantization of SmolLM2-135M on this machine: speed, memory and quality drift side by side.

    pytest benchmarks/sweep --llmeff-report

The float32 variant is every variant's quality reference. bitsandbytes' LLM.int8 computes in float16 (other
inputs are cast, with a log line per matmul), so int8 runs at precision float16; the 4-bit variants compute in
bfloat16, the fastest 16-bit type on this CPU; dynamic-int8 quantizes float32 linears.
"""

import pytest


def _check(result):
    assert result.tokens_generated == result.variant.batch_size * 32
    assert 0.0 <= result.metrics["token_agreement"].median <= 1.0
    # truth: counted FLOPs (FlopCounterMode + our formulas) agree with the analytic dense-equivalent count
    counted, analytic = result.metrics["flops_counted"].median, result.metrics["flops_analytic"].median
    assert abs(counted - analytic) <= 0.02 * analytic, (counted, analytic)


COMMON = dict(model="smollm2-135m", batch_size=4, max_new_tokens=32, group="smollm2-variants")


@pytest.mark.llm_efficiency(precision=["float32", "bfloat16", "float16", "fp8"], **COMMON)
def test_smollm2_precisions(llm_benchmark):
    _check(llm_benchmark())


@pytest.mark.llm_efficiency(precision="float32", quantization="dynamic-int8", **COMMON)
def test_smollm2_dynamic_int8(llm_benchmark):
    _check(llm_benchmark())


@pytest.mark.llm_efficiency(precision="float16", quantization="int8", **COMMON)
def test_smollm2_int8(llm_benchmark):
    _check(llm_benchmark())


@pytest.mark.llm_efficiency(precision="bfloat16", quantization=["nf4", "fp4"], **COMMON)
def test_smollm2_4bit(llm_benchmark):
    _check(llm_benchmark())
