"""What only a CUDA GPU shows: per-step times from CUDA events close on the synchronized wall latency, the
generation's own peak (max_memory_allocated above memory_allocated at the reset), and the FLOP rate against the
card's peak. Skipped without CUDA (CI has none); run on a GPU machine."""

from __future__ import annotations

import statistics

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def cuda_tiny(tiny_cache):
    from pytest_llmeff.engines.transformers.load import load
    from pytest_llmeff.session.marker import expand

    return load(expand({"model": "tiny-random-llama", "device": "cuda"})[0], tiny_cache)


def test_cuda_event_step_times_close_on_the_wall_latency(cuda_tiny):
    from pytest_llmeff.bench import runner

    steps, rounds = 24, 6
    spec = runner.RunSpec(("hello there", "a longer prompt for the batch"), batch_size=2, max_new_tokens=steps,
                          rounds=rounds, warmup=2, count_flops=False)
    measured = runner.run(cuda_tiny, spec, None)
    itl, ttft, latency = (measured.samples[k] for k in ("itl_s", "ttft_s", "latency_s"))
    assert len(itl) == rounds * (steps - 1)
    closures = []
    for r in range(rounds):
        closed = ttft[r] + sum(itl[r * (steps - 1):(r + 1) * (steps - 1)])
        closures.append(closed / latency[r])
        assert closed <= latency[r] * 1.001
    print(f"cuda closure (TTFT + sum ITL) / latency: median {statistics.median(closures):.4f}, "
          f"min {min(closures):.4f}")
    assert statistics.median(closures) == pytest.approx(1.0, abs=0.01)
    assert all(s > 0 for s in itl)


def test_cuda_generation_peak_is_measured_above_what_was_allocated_at_the_reset(cuda_tiny):
    from pytest_llmeff.measure.memory import PeakMemory

    hold = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")  # 64 MiB already allocated: not the window's
    peak = PeakMemory("cuda:0")
    peak.reset()
    block = torch.ones(256 * 2**20, dtype=torch.uint8, device="cuda")  # the window's own 256 MiB
    del block
    delta, total = peak.delta_bytes(), peak.peak_bytes()
    assert delta == pytest.approx(256 * 2**20, rel=0.05), delta
    assert total >= delta + 64 * 2**20
    del hold


def test_mfu_uses_the_cards_exact_peak(cuda_tiny):
    from pytest_llmeff.bench import measure as bench, runner

    peak = bench.known_peak_tflops(cuda_tiny)
    name = torch.cuda.get_device_name(0)
    print(f"device {name!r}: peak {peak} TFLOP/s for float32")
    spec = runner.RunSpec(("hello there",), batch_size=1, max_new_tokens=8, rounds=6, warmup=1, peak_tflops=peak)
    measured = runner.run(cuda_tiny, spec, None)
    assert measured.samples["flops_counted"][0] > 0
    if peak is None:
        assert "mfu" not in measured.samples
    else:
        for mfu, tflops in zip(measured.samples["mfu"], measured.samples["tflops"]):
            assert mfu == pytest.approx(tflops / peak)
