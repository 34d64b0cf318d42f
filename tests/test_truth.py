"""Each instrument against an independent measurement."""

from __future__ import annotations

import statistics
import time

import pytest

torch = pytest.importorskip("torch")

from pytest_llmeff.bench import runner# noqa: E402
from pytest_llmeff.engines.transformers.load import count_real_tokens  # noqa: E402
from pytest_llmeff.measure.flops import (FlopsCounter, analytic_generate_flops,  # noqa: E402
                                         linear_flops_per_token, attention_flops)
from pytest_llmeff.measure.memory import PeakMemory, cpu_peak_resettable  # noqa: E402

PROMPTS = ["the river town woke slowly", "a measurement is a promise that careful people check", "winter"]


# --- token counts --------------------------------------------------------------------------------------
def test_count_real_tokens_stops_at_first_eos():
    ids = torch.tensor([[5, 6, 2, 2, 2], [7, 8, 9, 10, 11], [2, 0, 0, 0, 0]])
    assert count_real_tokens(ids, [2]) == [3, 5, 1]
    assert count_real_tokens(ids, [2, 9]) == [3, 3, 1]


def test_token_counts_match_the_tokenizer(tiny_model):
    """Real-token counts agree with the tokenizer's own view of the output, padding and EOS included."""
    tok = tiny_model.tokenizer
    gen = tiny_model.generate(PROMPTS, 12)
    enc = tok(PROMPTS, padding=True, return_tensors="pt")
    # prompt tokens: the tokenizer's unpadded lengths
    assert gen.prompt_tokens_per_seq == [len(tok(p).input_ids) for p in PROMPTS]
    assert gen.padded_prompt_len == enc.input_ids.shape[1]
    # the batch really was left padded, and padding is not counted
    assert min(gen.prompt_tokens_per_seq) < gen.padded_prompt_len
    # generated tokens: everything up to and including the first EOS, checked against the tokenizer's ids
    eos = tok.eos_token_id
    for row, counted in zip(gen.new_ids.tolist(), gen.tokens_per_seq):
        expected = row.index(eos) + 1 if eos in row else len(row)
        assert counted == expected


def test_tokens_after_eos_are_not_counted(tiny_model):
    """Make a token the model emits mid-sequence the EOS: generation of that sequence must count up to it."""
    free = tiny_model.generate(PROMPTS, 10)
    first_row = free.new_ids[0].tolist()
    target = first_row[3]
    stop_at = first_row.index(target) + 1  # first occurrence
    saved = tiny_model.eos_ids, tiny_model.model.generation_config.eos_token_id
    try:
        tiny_model.eos_ids = [target]
        tiny_model.model.generation_config.eos_token_id = target
        gen = tiny_model.generate(PROMPTS, 10)
    finally:
        tiny_model.eos_ids, tiny_model.model.generation_config.eos_token_id = saved
    assert gen.tokens_per_seq[0] == stop_at < 10
    assert gen.tokens_total == sum(gen.tokens_per_seq) < 10 * len(PROMPTS)


def test_fixed_length_protocol_counts_batch_times_new_tokens(tiny_model):
    measured = runner.run(tiny_model, runner.RunSpec(PROMPTS, batch_size=5, max_new_tokens=7, rounds=2), None)
    assert measured.tokens_generated == 5 * 7
    assert measured.steps == 7
    assert len(measured.samples["latency_s"]) == 2
    # throughput is exactly tokens / latency of the same round
    for tps, lat in zip(measured.samples["throughput_tok_s"], measured.samples["latency_s"]):
        assert tps == pytest.approx(35 / lat)


# --- TTFT ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prefill_heavy_model(tiny_cache):
    """A bigger random Llama with long prompts, so that prefill dominates the first step."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pytest_llmeff.engines.transformers.load import LoadedModel, _eos_ids
    from pytest_llmeff.session.marker import expand

    tok = AutoTokenizer.from_pretrained(tiny_cache / "models" / "tiny-random-llama-v1")
    tok.padding_side = "left"
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    loaded = LoadedModel(model=model, tokenizer=tok, variant=expand({"model": "tiny-random-llama"})[0],
                         device="cpu", path=None, load_s=0.0)
    loaded.eos_ids = _eos_ids(model, tok)
    return loaded


def test_ttft_matches_an_independent_one_token_generate(prefill_heavy_model):
    """TTFT from the in-generate hook vs the wall time of a separate max_new_tokens=1 generate: within 10%."""
    m = prefill_heavy_model
    prompts = [" ".join(["the ferryman counted the boats on the pier"] * 80)] * 4
    inputs = m.encode(prompts)
    m.generate_ids(inputs, 1)  # warm-up
    ttfts, latencies, one_token = [], [], []
    for _ in range(11):  # alternate the two measurements so that machine noise hits both alike
        spec = runner.RunSpec(prompts, batch_size=4, max_new_tokens=6, rounds=1, warmup=0, count_flops=False)
        measured = runner.run(m, spec, None)
        ttfts += measured.samples["ttft_s"]
        latencies += measured.samples["latency_s"]
        t0 = time.perf_counter()
        m.generate_ids(inputs, 1)
        one_token.append(time.perf_counter() - t0)
    # the median of paired ratios is robust to the machine speeding up or slowing down between pairs
    ratio = statistics.median(a / b for a, b in zip(ttfts, one_token))
    ttft, independent = statistics.median(ttfts), statistics.median(one_token)
    print(f"ttft {ttft * 1e3:.2f} ms vs one-token generate {independent * 1e3:.2f} ms; median pair ratio {ratio:.3f}")
    assert ratio == pytest.approx(1.0, abs=0.10), (ratio, ttfts, one_token)
    # and TTFT is a real part of the latency, not the whole of it
    assert ttft < statistics.median(latencies)


# --- FLOPs -----------------------------------------------------------------------------------------------
def test_counted_flops_match_2_n_tokens_on_a_forward(tiny_model):
    """A forward over T tokens costs 2*N*T for the matmul weights N, plus the (small) attention term."""
    model = tiny_model.model
    config = model.config
    n_matmul = sum(p.numel() for name, p in model.named_parameters()
                   if p.dim() == 2 and "embed_tokens" not in name)
    assert linear_flops_per_token(config) == 2 * n_matmul  # the analytic helper agrees with the real weights
    tokens = 4
    ids = torch.randint(5, config.vocab_size, (2, tokens))
    with FlopsCounter().count() as counted:
        with torch.inference_mode():
            model(input_ids=ids)
    two_n_t = 2 * n_matmul * 2 * tokens
    assert counted.flops == pytest.approx(two_n_t, rel=0.02)
    assert counted.flops == 2 * tokens * linear_flops_per_token(config) + 2 * attention_flops(config, tokens, tokens)


def test_counted_generate_flops_match_the_analytic_count(tiny_model):
    inputs = tiny_model.encode(PROMPTS)
    with FlopsCounter().count() as counted:
        out = tiny_model.generate_ids(inputs, 9, fixed_length=True)
    gen = tiny_model.decode(inputs, out)
    analytic = analytic_generate_flops(tiny_model.model.config, len(PROMPTS), gen.padded_prompt_len, gen.steps)
    assert counted.flops == pytest.approx(analytic, rel=0.02)
    # the CPU SDPA formula is registered: attention is counted, not silently 0
    assert any("scaled_dot_product" in op and n > 0 for op, n in counted.by_op.items())


# --- peak memory -----------------------------------------------------------------------------------------
@pytest.mark.skipif(not cpu_peak_resettable(), reason="needs a resettable VmHWM (/proc/self/clear_refs)")
def test_peak_memory_catches_a_known_allocation():
    size = 256 * 2**20
    peak = PeakMemory("cpu")
    assert peak.method == "vmhwm"

    peak.reset()
    quiet = peak.peak_bytes()
    peak.reset()
    block = torch.ones(size // 4, dtype=torch.float32)  # touched pages: really resident
    del block
    with_block = peak.peak_bytes()
    peak.reset()
    after = peak.peak_bytes()
    assert with_block - quiet >= 0.95 * size, (quiet, with_block)
    # the reset really resets: the freed block no longer shows in the next window
    assert after < with_block - 0.9 * size


# --- energy provenance -----------------------------------------------------------------------------------
def test_codecarbon_energy_is_labelled_an_estimate():
    pytest.importorskip("codecarbon")
    from pytest_llmeff.measure.energy import CodeCarbonMeter, EnergyTracker

    meter = CodeCarbonMeter("FRA")
    try:
        with EnergyTracker(meter, "FRA").measure() as e:
            time.sleep(0.2)
    finally:
        meter.close()
    assert e.estimated is True
    assert e.method.startswith("codecarbon:") and "cpu=" in e.method
    assert e.energy_j is not None and e.energy_j > 0
    assert e.co2_g is not None and e.co2_g > 0 and e.country_iso_code == "FRA"
    assert 0.2 <= e.duration_s < 1.0


def test_energy_tracker_co2_is_energy_times_grid_intensity_for_any_meter():
    """A physical meter gives no CO2 itself: the tracker applies the same rule as the records (energy x intensity)."""
    pytest.importorskip("codecarbon")
    from pytest_llmeff.measure.carbon import intensity_g_per_kwh
    from pytest_llmeff.measure.energy import EnergyTracker
    from pytest_llmeff.measure.meter import Measurement, Meter

    class TenJouleMeter:
        """Ten joules per window, a full ``Meter``."""

        estimated = False
        method = "fake:10J"
        resolution_s = 0.0
        fallback_notes: list = []

        def begin(self):
            return 0.0

        def end(self, start):
            return Measurement(energy_j=10.0, duration_s=1.0, method=self.method, estimated=False)

        def gpu_processes(self):
            return []

        def close(self):
            pass

    assert isinstance(TenJouleMeter(), Meter)

    with EnergyTracker(TenJouleMeter(), "FRA").measure() as e:
        pass
    assert e.estimated is False and e.country_iso_code == "FRA"
    assert e.co2_g == pytest.approx(10.0 / 3.6e6 * intensity_g_per_kwh("FRA"))
    with EnergyTracker(TenJouleMeter()).measure() as e:  # no country: no CO2 rather than a guess
        pass
    assert e.energy_j == 10.0 and e.co2_g is None
