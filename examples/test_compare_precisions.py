"""Precisions x batch sizes: one test per variant (2 precisions x 2 batch sizes = 4 tests), each variant's
weights loaded once, with assertions on what every variant must do.

Shows: list-valued marker arguments expand into their cartesian product; batching trades latency for throughput.

    pytest examples/test_compare_precisions.py --llmeff-report -v
"""

import pytest


@pytest.mark.llm_efficiency(
    model="tiny-random-llama",
    precision=["float32", "bfloat16"],
    batch_size=[1, 4],
    max_new_tokens=8,
    group="examples",
)
def test_tiny_variants(llm_benchmark):
    result = llm_benchmark()
    assert result.tokens_generated == result.variant.batch_size * 8
    assert result.metrics["ttft_s"].median < result.metrics["latency_s"].median

