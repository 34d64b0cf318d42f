"""Peak memory that does not depend on history (measure/memory.py, backends/cache.py's release).

Independent figures: the size of an allocation the test makes itself, and the same measurement in a fresh
process that never loaded anything else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pytest_llmeff.measure.memory import PeakMemory, malloc_trim, release_memory  # noqa: E402

MiB = 2**20
KNOWN_BYTES = 256 * MiB


def _fill(n_bytes: int, device: str):
    """A tensor of n_bytes whose every page is written (so it is resident / allocated)."""
    return torch.full((n_bytes // 4,), 1.5, dtype=torch.float32, device=device)


def _check_known_allocation(device: str) -> None:
    peak = PeakMemory(device)
    if peak.method == "unavailable":
        pytest.skip("no resettable peak on this platform")
    before = _fill(64 * MiB, device)  # memory in use at the reset: must not count in the window's delta
    peak.reset()
    x = _fill(KNOWN_BYTES, device)
    delta = peak.delta_bytes()
    process_peak = peak.peak_bytes()
    del x
    assert delta is not None and process_peak is not None
    assert abs(delta - KNOWN_BYTES) <= 0.05 * KNOWN_BYTES, (delta / MiB, process_peak / MiB)
    # the process peak also holds what was in use before (the 64 MiB tensor at least)
    assert process_peak >= delta + 64 * MiB * 0.95
    # an empty window: no delta (the 256 MiB were freed before this reset)
    peak.reset()
    assert peak.delta_bytes() < 0.05 * KNOWN_BYTES
    del before


def test_delta_catches_a_known_256_mib_allocation_cpu():
    _check_known_allocation("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_delta_catches_a_known_256_mib_allocation_cuda():
    _check_known_allocation("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_delta_ignores_memory_freed_before_the_reset():
    """A model freed before the reset (as ModelCache.release does) leaves no trace in the next window."""
    peak = PeakMemory("cuda")
    old = _fill(512 * MiB, "cuda")
    del old
    release_memory()
    assert torch.cuda.memory_reserved() < 256 * MiB  # the cache was emptied
    peak.reset()
    x = _fill(KNOWN_BYTES, "cuda")
    assert abs(peak.delta_bytes() - KNOWN_BYTES) <= 0.05 * KNOWN_BYTES
    assert abs(peak.peak_bytes() - KNOWN_BYTES) <= 0.05 * KNOWN_BYTES + torch.cuda.memory_allocated() - KNOWN_BYTES
    del x


def test_delta_is_none_before_a_reset():
    assert PeakMemory("cpu").delta_bytes() is None


def test_release_memory_is_safe_and_trim_reports():
    release_memory()  # no CUDA here or there: must not raise, nor initialise CUDA
    assert isinstance(malloc_trim(), bool)


# ---- history: a variant measured after another equals the same variant measured alone ----------------------

CHILD = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.manual_seed(0)
    torch.set_num_threads(1)
    from pytest_llmeff.engines.cache import ModelCache
    from pytest_llmeff.measure.memory import PeakMemory
    from pytest_llmeff.config.variants import Variant

    model_dir, cache_root, history = sys.argv[1], sys.argv[2], sys.argv[3]

    def variant(precision):
        return Variant(model=model_dir, precision=precision, quantization=None, batch_size=4, max_new_tokens=8,
                       prompts=None, rounds=None, warmup=None, group=None, device="cpu", revision=None,
                       trust_remote_code=False)

    cache = ModelCache(cache_root)
    prompts = ["the quick brown fox jumps over the lazy dog " * 6] * 4
    if history == "after-float32":  # the reference first, used as a run would use it, then released by get()
        ref = cache.get(variant("float32"))
        ids = ref.encode(prompts)
        ref.generate_ids(ids, 8, fixed_length=True)
        with torch.no_grad():
            ref.model(**ids)
        del ref, ids
    loaded = cache.get(variant("bfloat16"))
    inputs = loaded.encode(prompts)
    loaded.generate_ids(inputs, 8, fixed_length=True)  # warm-up, as the runner does
    peak = PeakMemory("cpu")
    peaks, deltas = [], []
    for _ in range(3):
        peak.reset(trim=True)  # as the runner's untimed memory window does
        loaded.generate_ids(inputs, 8, fixed_length=True)
        peaks.append(peak.peak_bytes())
        deltas.append(peak.delta_bytes())
    print(json.dumps({"peak": sorted(peaks)[1], "delta": sorted(deltas)[1]}))
    """
)


@pytest.fixture(scope="module")
def random_llama_dir(tmp_path_factory, tiny_cache) -> Path:
    """A random Llama shaped like SmolLM2 (hidden 576, 12 layers; ~166 MB of float32 weights) built from a config
    and saved in bfloat16 with the tiny model's tokenizer: loading it in float32 converts every tensor into
    anonymous (heap) memory, which is what leaves freed pages behind when the variant is dropped."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tiny = tiny_cache / "models" / "tiny-random-llama-v1"
    tok = AutoTokenizer.from_pretrained(tiny)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=576, intermediate_size=1536, num_hidden_layers=12,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=512,
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    float32_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert 100e6 < float32_bytes < 200e6
    out = tmp_path_factory.mktemp("random-llama")
    model.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _measure_in_fresh_process(model_dir: Path, cache_root: Path, history: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", CHILD, str(model_dir), str(cache_root), history],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not PeakMemory("cpu").method == "vmhwm", reason="needs a resettable VmHWM (Linux)")
def test_bfloat16_after_float32_equals_bfloat16_alone(random_llama_dir, tmp_path):
    alone = _measure_in_fresh_process(random_llama_dir, tmp_path, "alone")
    after = _measure_in_fresh_process(random_llama_dir, tmp_path, "after-float32")
    print(f"bf16 alone: peak {alone['peak'] / MiB:.1f} MiB, delta {alone['delta'] / MiB:.2f} MiB; "
          f"after float32: peak {after['peak'] / MiB:.1f} MiB, delta {after['delta'] / MiB:.2f} MiB")
    # the process peak: without the trim in ModelCache.release this was +6.3% (519.9 vs 552.5 MiB measured)
    assert abs(after["peak"] - alone["peak"]) <= 0.05 * alone["peak"], (after, alone)
    # the window's own peak: on CPU it is the pages the window makes resident, and where glibc places the
    # generate's many small (< mmap threshold) chunks depends on the heap's layout, which history changes even
    # after malloc_trim (partly used pages stay resident). Measured: alone 19.2-22.0 MiB, after float32
    # 16.3-18.1 MiB (rounds of two runs each), later 18.4 vs 25.7 MiB and 16.3 vs 25.5 MiB (x1.56), so on CPU the
    # delta is only stable to its order of magnitude: within a factor 2 here, not 5%; CUDA counts bytes (above)
    assert alone["delta"] > 0 and after["delta"] > 0
    assert 1 / 2 <= after["delta"] / alone["delta"] <= 2, (after, alone)
