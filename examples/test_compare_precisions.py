"""Example: compare precisions and batch sizes of the tiny demo model, and assert on the numbers.

    pytest examples/ --llmeff-report -v
"""

import pytest


@pytest.mark.llm_efficiency(
    model="tiny-random-llama",
    precision=["float32", "bfloat16"],
    batch_size=[1, 8],
    max_new_tokens=16,
    group="examples",
)
def test_tiny_variants(llm_benchmark):
    result = llm_benchmark()
    assert result.tokens_generated == result.variant.batch_size * 16
    assert result.metrics["ttft_s"].median < result.metrics["latency_s"].median


@pytest.mark.llm_efficiency(model="tiny-random-llama", prompts=["Once upon a time"], max_new_tokens=8)
def test_own_measurement(llm_model, energy_tracker, flops_counter):
    with energy_tracker.measure() as energy, flops_counter.count() as flops:
        out = llm_model.generate(["Once upon a time"], max_new_tokens=8)
    assert out.tokens_per_seq[0] <= 8
    assert flops.flops > 0
    assert energy.estimated or energy.method.startswith(("nvml", "rapl"))
