"""Every precision and quantization of SmolLM2-135M on this machine: speed, memory and quality drift side by side.

    pytest benchmarks/test_smollm2_variants.py --llmeff-report
"""

import pytest


@pytest.mark.llm_efficiency(
    model="smollm2-135m",
    precision="float32",
    quantization=[None, "int8", "nf4", "fp4", "dynamic-int8"],
    batch_size=4,
    max_new_tokens=32,
    group="smollm2-variants",
)
def test_smollm2_quantized(llm_benchmark):
    result = llm_benchmark()
    # truth: counted FLOPs (FlopCounterMode + our formulas) agree with the analytic dense-equivalent count
    counted, analytic = result.metrics["flops_counted"].median, result.metrics["flops_analytic"].median
    assert abs(counted - analytic) <= 0.02 * analytic, (counted, analytic)
    assert result.tokens_generated == 4 * 32
    assert 0.0 <= result.metrics["token_agreement"].median <= 1.0


@pytest.mark.llm_efficiency(
    model="smollm2-135m",
    precision=["bfloat16", "float16", "fp8"],
    batch_size=4,
    max_new_tokens=32,
    group="smollm2-variants",
)
def test_smollm2_precisions(llm_benchmark):
    result = llm_benchmark()
    # truth: counted FLOPs (FlopCounterMode + our formulas) agree with the analytic dense-equivalent count
    counted, analytic = result.metrics["flops_counted"].median, result.metrics["flops_analytic"].median
    assert abs(counted - analytic) <= 0.02 * analytic, (counted, analytic)
    assert result.metrics["ppl_ratio"].median > 0
