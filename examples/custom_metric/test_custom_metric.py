"""A custom metric through the hooks (see conftest.py next to this file): the KV cache bytes per token of
context (once per variant; bfloat16 halves it) and tokens per kilojoule (per round, with an interval).

Shows: custom metrics are stored, shown and gated like built-in ones (`--llmeff-columns` can name them,
`limits=` can bound them). Run this folder on its own: its conftest.py must be read before the session starts.

    pytest examples/custom_metric --llmeff-report --llmeff-columns=throughput_tok_s,kv_cache_bytes_per_tok,tok_per_kj
"""

import pytest


@pytest.mark.llm_efficiency(model="tiny-random-llama", precision=["float32", "bfloat16"], max_new_tokens=8,
                            quality=False, limits={"kv_cache_bytes_per_tok": "<= 4KB"})
def test_kv_cache(llm_benchmark):
    result = llm_benchmark()
    kv = result.metrics["kv_cache_bytes_per_tok"].median
    # tiny-random-llama: 2 layers x 2 KV heads x head dim 16 x 2 (K and V) = 128 values per token
    assert kv == 128 * (4 if result.variant.precision == "float32" else 2)
    if "tok_per_kj" in result.metrics:  # energy measured (or estimated) per round
        assert result.metrics["tok_per_kj"].n == result.rounds
