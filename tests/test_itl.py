"""Per-token latency as users read it from the JSON: each decode step's time pooled over rounds, closing with TTFT
on the round's own wall latency, and decode throughput from the same clock."""

from __future__ import annotations

import json

import pytest

BENCH = """
import pytest
@pytest.mark.llm_efficiency(model="tiny-random-llama", batch_size=2, max_new_tokens=12, warmup=1, rounds=7,
                            quality=False)
def test_x(llm_benchmark):
    llm_benchmark()
"""


def test_itl_samples_close_on_each_round_latency_and_count_rounds_times_steps(llmeff_pytester):
    llmeff_pytester.makepyfile(test_i=BENCH)
    out = llmeff_pytester.path / "out.json"
    result = llmeff_pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llmeff-energy=off",
                                                  f"--llmeff-json={out}")
    result.assert_outcomes(passed=1)
    bench = json.loads(out.read_text())["benchmarks"][0]
    m = bench["metrics"]
    rounds, steps = bench["rounds"], 12
    itl = m["itl_s"]["samples"]
    assert len(itl) == rounds * (steps - 1) == 77
    latency, ttft = m["latency_s"]["samples"], m["ttft_s"]["samples"]
    for r in range(rounds):
        # the independent clock: perf_counter around the whole generate() call of that round
        closed = ttft[r] + sum(itl[r * (steps - 1):(r + 1) * (steps - 1)])
        assert closed <= latency[r] and closed == pytest.approx(latency[r], rel=0.01), (r, closed, latency[r])
    # 77 samples: p90 is reported, p99 (needs 100) is not, and says why
    assert m["itl_s"]["p90"] is not None and m["itl_s"]["p99"] is None
    assert "p99 needs at least 100 samples, there are 77" in m["itl_s"]["percentile_note"]
    # decode throughput: tokens after each sequence's first / the decode part of each round
    tokens = bench["tokens_generated"]
    for rate, lat, first in zip(m["decode_tok_s"]["samples"], latency, ttft):
        assert rate == pytest.approx((tokens - 2) / (lat - first))
