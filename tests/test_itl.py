"""Per-token latency as users read it from the JSON: each decode step's time pooled over rounds, closing with TTFT
on the round's own wall latency, and decode throughput from the same clock."""

from __future__ import annotations

import json

import pytest

BENCH = """
import pytest
@pytest.mark.llm_efficiency(model="tiny-random-llama", batch_size=2, max_new_tokens=32, warmup=1, rounds=7,
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
    rounds, steps = bench["rounds"], 32
    itl = m["itl_s"]["samples"]
    assert len(itl) == rounds * (steps - 1) == 217
    latency, ttft = m["latency_s"]["samples"], m["ttft_s"]["samples"]
    for r in range(rounds):
        # the independent clock: perf_counter around the whole generate() call of that round
        closed = ttft[r] + sum(itl[r * (steps - 1):(r + 1) * (steps - 1)])
        # (within 1% on a quiet machine: a benchmark figure; a busy one preempts the tail after the last step,
        # so the unit test asks only that the stamps never exceed the call and cover most of it)
        assert 0.9 * latency[r] <= closed <= latency[r], (r, closed, latency[r])
    # 217 pooled samples: p90 and p99 are reported; the 7 latencies hold neither, and say why
    assert m["itl_s"]["p90"] is not None and m["itl_s"]["p99"] is not None and m["itl_s"]["percentile_note"] is None
    assert m["latency_s"]["p90"] is None and "p90 needs at least 10 samples, there are 7" in \
        m["latency_s"]["percentile_note"]
    # decode throughput: tokens after each sequence's first / the decode part of each round
    tokens = bench["tokens_generated"]
    for rate, lat, first in zip(m["decode_tok_s"]["samples"], latency, ttft):
        assert rate == pytest.approx((tokens - 2) / (lat - first))
