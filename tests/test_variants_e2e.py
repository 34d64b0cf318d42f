"""Variants as users meet them: every precision and quantization, model sources, quality drift, skips, errors."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("bitsandbytes")


ALL_VARIANTS = """
import pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", precision="float32",
                            quantization=[None, "int8", "nf4", "fp4", "dynamic-int8",
                                          {"method": "nf4", "double_quant": True, "compute_dtype": "bfloat16"}],
                            max_new_tokens=5, rounds=2, warmup=0)
def test_quantized(llm_benchmark):
    result = llm_benchmark()
    assert result.tokens_generated == 5

@pytest.mark.llm_efficiency(model="tiny-random-llama", precision=["bfloat16", "float16", "fp8"],
                            max_new_tokens=5, rounds=2, warmup=0)
def test_precisions(llm_benchmark):
    llm_benchmark()
"""


@pytest.mark.slow
def test_every_variant_loads_generates_and_reports_drift(llmeff_pytester, run_with_json):
    llmeff_pytester.makepyfile(test_all=ALL_VARIANTS)
    result, data = run_with_json(llmeff_pytester, "-v", "-rs")
    result.assert_outcomes(passed=8, skipped=1)
    for vid in ("fp32-b1", "fp32-int8-b1", "fp32-nf4-b1", "fp32-fp4-b1", "fp32-dynamic-int8-b1",
                "fp32-nf4-dq-cbf16-b1", "bf16-b1", "fp16-b1"):
        result.stdout.fnmatch_lines([f"*tiny-random-llama-{vid}? PASSED*"])
    # fp8 is skipped on this machine with the requirement named, not an error and not a pass
    result.stdout.fnmatch_lines(["*SKIPPED*tiny-random-llama-fp8-b1: precision='fp8' needs an NVIDIA GPU with "
                                 "compute capability >= 8.9*"])
    out = result.stdout.str()
    assert "INTERNALERROR" not in out and "MatMul8bitLt" not in out
    result.stdout.fnmatch_lines(["*tok/s*top1 %*"])  # the default table's drift column

    by_id = {b["variant"]["id"]: b for b in data["benchmarks"]}
    ref = by_id["tiny-random-llama-fp32-b1"]["metrics"]
    assert ref["token_agreement"]["median"] == 1.0 and ref["ppl_ratio"]["median"] == 1.0
    assert ref["top1_agreement"]["median"] == 1.0 and ref["kld_mean_nat"]["median"] == pytest.approx(0, abs=1e-6)
    for vid, bench in by_id.items():
        m = bench["metrics"]
        assert {"token_agreement", "prefix_agreement", "top1_agreement", "kld_mean_nat", "kld_p99_nat", "ppl",
                "ppl_ratio"} <= set(m), vid
        assert 0.0 <= m["token_agreement"]["median"] <= 1.0
        assert bench["variant"]["reference"] == "tiny-random-llama-fp32"
        # dense-equivalent FLOPs are the same for every variant of the same work
        assert m["flops_per_tok"]["median"] == ref["flops_per_tok"]["median"], vid
    assert by_id["tiny-random-llama-fp32-nf4-dq-cbf16-b1"]["variant"]["quantization_config"] == {
        "method": "nf4", "double_quant": True, "compute_dtype": "bfloat16", "threshold": None, "skip_modules": None}
    # quantized weights are smaller than float32 ones
    fp32_bytes = ref["model_bytes"]["median"]
    for vid in ("fp32-int8-b1", "fp32-nf4-b1", "fp32-dynamic-int8-b1", "bf16-b1"):
        assert by_id[f"tiny-random-llama-{vid}"]["metrics"]["model_bytes"]["median"] < fp32_bytes
    # each variant loaded once; the reference first
    keys = [load["key"] for load in data["loads"] if load["ok"]]
    assert len(keys) == len(set(keys)) == 8
    assert keys[0].startswith("tiny-random-llama||float32|none")


def test_reference_outside_the_expansion_is_loaded_once_for_the_comparison(llmeff_pytester, run_with_json):
    llmeff_pytester.makepyfile(test_ref="""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", precision="bfloat16", batch_size=[1, 2],
                                    max_new_tokens=4, rounds=1, warmup=0)
        def test_bf16(llm_benchmark):
            r = llm_benchmark()
            assert r.metrics["ppl_ratio"].median > 0
    """)
    result, data = run_with_json(llmeff_pytester)
    result.assert_outcomes(passed=2)
    keys = [load["key"] for load in data["loads"]]
    assert keys == ["tiny-random-llama||float32|none|auto|", "tiny-random-llama||bfloat16|none|auto|"]
    assert all(b["variant"]["reference"] == "tiny-random-llama-fp32" for b in data["benchmarks"])


def test_quality_can_be_turned_off_and_the_reference_chosen(llmeff_pytester, run_with_json):
    llmeff_pytester.makepyfile(test_q="""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", precision="bfloat16", quality=False,
                                    max_new_tokens=3, rounds=1, warmup=0)
        def test_off(llm_benchmark):
            r = llm_benchmark()
            assert "token_agreement" not in r.metrics

        @pytest.mark.llm_efficiency(model="tiny-random-llama", precision=["float16", "bfloat16"],
                                    reference={"precision": "bfloat16"}, max_new_tokens=3, rounds=1, warmup=0)
        def test_bf16_reference(llm_benchmark):
            r = llm_benchmark()
            assert r.variant.reference == "tiny-random-llama-bf16"
    """)
    result, data = run_with_json(llmeff_pytester)
    result.assert_outcomes(passed=3)
    assert not any("float32" in load["key"] for load in data["loads"])


def test_a_reference_that_cannot_load_is_a_clear_error(llmeff_pytester, run_with_json):
    llmeff_pytester.makepyfile(test_badref="""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", precision="bfloat16", reference={"precision": "fp8"},
                                    max_new_tokens=3, rounds=1, warmup=0)
        def test_x(llm_benchmark):
            llm_benchmark()
    """)
    result, _ = run_with_json(llmeff_pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_x*the reference variant tiny-random-llama-fp8 cannot load: "
                                 "precision='fp8' needs an NVIDIA GPU*"])
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize("kwargs, reason", [
    ('device="cuda"', "device='cuda' needs CUDA, which is not available here"),
    ('device="cuda:1"', "device='cuda:1' needs CUDA"),
    ('quantization="dynamic-int8", precision="bfloat16"', "dynamic-int8' quantizes float32 linears"),
])
def test_combinations_this_machine_cannot_run_are_skipped_with_the_reason(llmeff_pytester, kwargs, reason):
    if torch.cuda.is_available() and "cuda" in kwargs:
        pytest.skip("this machine has CUDA")
    llmeff_pytester.makepyfile(test_skip=f"""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", {kwargs}, max_new_tokens=2, rounds=1, warmup=0)
        def test_x(llm_benchmark):
            llm_benchmark()
    """)
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*SKIPPED*{reason}*"])


def _footprint_model(tmp_path, tiny_cache):
    """A random Llama whose linears dominate its size, saved as a local directory."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok_dir = tiny_cache / "models" / "tiny-random-llama-v1"
    tok = AutoTokenizer.from_pretrained(tok_dir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    out = tmp_path / "wide-llama"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out, model


def test_model_bytes_of_4bit_vs_float32_matches_the_expected_ratio(tmp_path, tiny_cache):
    """nf4 stores 0.5 B per quantized weight plus one float32 absmax per 64 weights and a 16-entry map per
    linear; lm_head, embeddings and norms stay float32. Measured ratio within 1% of that."""
    from pytest_llmeff.engines.transformers.load import load
    from pytest_llmeff.session.marker import expand

    path, dense = _footprint_model(tmp_path, tiny_cache)
    linears = [m for name, m in dense.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"]
    quantized = sum(m.weight.numel() for m in linears)
    others = sum(p.numel() for p in dense.parameters()) - quantized
    buffers = sum(b.numel() * b.element_size() for b in dense.buffers())
    expected_fp32 = 4 * (quantized + others) + buffers
    expected_nf4 = quantized * (0.5 + 4 / 64) + len(linears) * 16 * 4 + 4 * others + buffers

    fp32, nf4 = expand({"model": str(path), "quantization": [None, "nf4"]})
    fp32_bytes = load(fp32, tmp_path).model_bytes
    nf4_model = load(nf4, tmp_path)
    assert fp32_bytes == expected_fp32
    ratio = nf4_model.model_bytes / fp32_bytes
    assert ratio == pytest.approx(expected_nf4 / expected_fp32, rel=0.01)
    # transformers' own footprint misses the 4-bit scales
    assert nf4_model.model.get_memory_footprint() < nf4_model.model_bytes


# --- model sources ------------------------------------------------------------------------------------------
def _bench_file(pytester, model_expr, extra=""):
    pytester.makepyfile(test_src=f"""
        import pytest
        @pytest.mark.llm_efficiency(model={model_expr}, max_new_tokens=2, rounds=1, warmup=0, quality=False{extra})
        def test_x(llm_benchmark):
            llm_benchmark()
    """)


def test_local_directory_source(llmeff_pytester, run_with_json, tiny_cache):
    local = llmeff_pytester.path / "my-model"
    shutil.copytree(tiny_cache / "models" / "tiny-random-llama-v1", local)
    _bench_file(llmeff_pytester, repr(str(local)))
    result, data = run_with_json(llmeff_pytester, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_x?my-model-fp32-b1? PASSED*"])
    assert data["benchmarks"][0]["variant"]["model_source"] == "directory"


@pytest.mark.parametrize("setup, message", [
    ("nocfg", "not a model directory (no config.json)"),
    ("corrupt", "bad.gguf: cannot read this GGUF file"),
])
def test_broken_local_sources_are_clear_errors(llmeff_pytester, run_with_json, setup, message):
    if setup == "nocfg":
        (llmeff_pytester.path / "empty-model").mkdir()
        model = str(llmeff_pytester.path / "empty-model")
    else:
        (llmeff_pytester.path / "bad.gguf").write_bytes(b"GGUF" + b"\x00garbage" * 50)
        model = str(llmeff_pytester.path / "bad.gguf")
    _bench_file(llmeff_pytester, repr(model))
    result, _ = run_with_json(llmeff_pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{message}*"])
    assert "INTERNALERROR" not in result.stdout.str()


def test_unwritable_cache_directory_is_a_clear_error(llmeff_pytester, run_with_json):
    blocker = llmeff_pytester.path / "not-a-dir"
    blocker.write_text("x")
    _bench_file(llmeff_pytester, '"tiny-random-llama"')
    result, _ = run_with_json(llmeff_pytester, f"--llmeff-cache-dir={blocker}/cache")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*cannot create the model cache*not-a-dir/cache/models*choose another with "
                                 "--llmeff-cache-dir*"])


def _fake_hub_cache(hf_home, tiny_cache, repo="acme/tiny-chat", commit="0123456789abcdef0123456789abcdef01234567"):
    repo_dir = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit
    shutil.copytree(tiny_cache / "models" / "tiny-random-llama-v1", snap)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return commit


def test_hub_id_resolves_from_the_local_cache_with_a_revision_pin(llmeff_pytester, run_with_json, tiny_cache):
    commit = _fake_hub_cache(llmeff_pytester.path / "hf-home", tiny_cache)
    llmeff_pytester.makepyfile(test_hub=f"""
        import pytest
        @pytest.mark.llm_efficiency(model="acme/tiny-chat", max_new_tokens=2, rounds=1, warmup=0, quality=False)
        def test_main(llm_benchmark):
            llm_benchmark()

        @pytest.mark.llm_efficiency(model="acme/tiny-chat", revision="{commit}", precision="bfloat16",
                                    max_new_tokens=2, rounds=1, warmup=0, quality=False)
        def test_pinned(llm_benchmark):
            llm_benchmark()

        @pytest.mark.llm_efficiency(model="acme/tiny-chat", revision="v9-not-cached", max_new_tokens=2,
                                    rounds=1, warmup=0, quality=False)
        def test_missing_revision(llm_benchmark):
            llm_benchmark()
    """)
    result, data = run_with_json(llmeff_pytester)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*model 'acme/tiny-chat@v9-not-cached' is not in the local Hugging Face cache*"])
    assert {b["variant"]["model_source"] for b in data["benchmarks"]} == {"hub"}
    assert all(commit in b["variant"]["resolved_path"] for b in data["benchmarks"])


CUSTOM_CONFIG = '''
from transformers import LlamaConfig

class CustomConfig(LlamaConfig):
    model_type = "llmeff-custom"
'''

CUSTOM_MODEL = '''
import os
from pathlib import Path
from transformers import LlamaForCausalLM
from .configuration_custom import CustomConfig

Path(os.environ["LLMEFF_SENTINEL"]).write_text("remote code ran")

class CustomModel(LlamaForCausalLM):
    config_class = CustomConfig
'''


def test_trust_remote_code_is_off_unless_asked(llmeff_pytester, run_with_json, tiny_cache, monkeypatch):
    model_dir = llmeff_pytester.path / "custom-model"
    shutil.copytree(tiny_cache / "models" / "tiny-random-llama-v1", model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["model_type"] = "llmeff-custom"
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig",
                          "AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (model_dir / "config.json").write_text(json.dumps(config))
    (model_dir / "configuration_custom.py").write_text(CUSTOM_CONFIG)
    (model_dir / "modeling_custom.py").write_text(CUSTOM_MODEL)
    sentinel = llmeff_pytester.path / "sentinel.txt"
    monkeypatch.setenv("LLMEFF_SENTINEL", str(sentinel))

    _bench_file(llmeff_pytester, repr(str(model_dir)))
    result, _ = run_with_json(llmeff_pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*custom-model: cannot load from*trust_remote_code*"])
    assert not sentinel.exists(), "the model's own code ran without trust_remote_code"

    _bench_file(llmeff_pytester, repr(str(model_dir)), extra=", trust_remote_code=True")
    result, data = run_with_json(llmeff_pytester)
    result.assert_outcomes(passed=1)
    assert sentinel.read_text() == "remote code ran"
    assert data["benchmarks"][0]["variant"]["trust_remote_code"] is True
