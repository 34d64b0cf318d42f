"""Marker validation and expansion (pure, no model)."""

from __future__ import annotations

import pytest

from pytest_llmeff.session.marker import expand
from pytest_llmeff.config.variants import InvalidMarker, Variant, sanitize_id, variant_id


def test_cartesian_product_and_readable_ids():
    variants = expand({"model": "tiny-random-llama", "precision": ["float32", "bfloat16"], "batch_size": [1, 4]})
    assert isinstance(variants, list)
    assert [v.id for v in variants] == [
        "tiny-random-llama-fp32-b1", "tiny-random-llama-fp32-b4",
        "tiny-random-llama-bf16-b1", "tiny-random-llama-bf16-b4",
    ]
    assert all(isinstance(v, Variant) for v in variants)
    assert variants[0].max_new_tokens == 32 and variants[0].quantization is None


def test_batch_size_does_not_change_the_load_key():
    a, b = expand({"model": "tiny-random-llama", "batch_size": [1, 4]})
    assert a.load_key == b.load_key
    c, d = expand({"model": "tiny-random-llama", "precision": ["float32", "float16"]})
    assert c.load_key != d.load_key


def test_scalars_and_tuples_are_accepted():
    variants = expand({"model": ("tiny-random-llama",), "precision": "float16", "batch_size": 2})
    assert [v.id for v in variants] == ["tiny-random-llama-fp16-b2"]


def _error(kwargs) -> str:
    result = expand(kwargs)
    assert isinstance(result, InvalidMarker), f"{kwargs} was accepted"
    return result.message


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"model": "tiny-random-llama", "precison": "float32"}, "unknown argument 'precison'; allowed: model, precision"),
        ({"model": "tiny-random-llama", "precision": "float8"}, "precision='float8' is not allowed; allowed: float32, float16, bfloat16"),
        ({"model": "tiny-random-llama", "precision": ["float32", "int4"]}, "precision='int4' is not allowed"),
        ({"model": "tiny-random-llama", "batch_size": 0}, "batch_size=0 is not allowed; batch sizes are integers >= 1"),
        ({"model": "tiny-random-llama", "batch_size": [2, -1]}, "batch_size=-1 is not allowed"),
        ({"model": "tiny-random-llama", "batch_size": 1.5}, "batch_size=1.5 is not allowed; it must be an integer"),
        ({"model": "tiny-random-llama", "prompts": []}, "prompts=[] is empty"),
        ({"model": "tiny-random-llama", "prompts": ["ok", "  "]}, "prompts[1]='  ' is blank"),
        ({"model": "./no/such/dir"}, "model='./no/such/dir': no such directory"),
        ({"model": "missing.gguf"}, "model='missing.gguf': no such .gguf file"),
        ({"model": "not a model"}, "is not a built-in alias (smollm2-135m, tiny-random-llama)"),
        ({"model": "tiny-random-llama", "rounds": 2.5}, "rounds=2.5 is not allowed; it must be an integer"),
        ({"model": "tiny-random-llama", "rounds": "3"}, "rounds='3' is not allowed; it must be an integer"),
        ({"model": "tiny-random-llama", "rounds": 0}, "rounds=0 is not allowed; it must be an integer >= 1"),
        ({"model": "tiny-random-llama", "warmup": -1}, "warmup=-1 is not allowed"),
        ({"model": "tiny-random-llama", "quantization": "nf5"},
         "quantization='nf5' is not allowed; allowed: None, int8, nf4, fp4, dynamic-int8, int4, or a dict"),
        ({"model": "tiny-random-llama", "quantization": {"method": "nf4", "bits": 3}},
         "unknown knob 'bits' for nf4; allowed: method, double_quant, compute_dtype, skip_modules"),
        ({"model": "tiny-random-llama", "quantization": {"method": "int8", "double_quant": True}},
         "unknown knob 'double_quant' for int8; allowed: method, threshold, skip_modules"),
        ({"model": "tiny-random-llama", "quantization": {"method": "nf4", "compute_dtype": "float64"}},
         "compute_dtype='float64' is not allowed; allowed: float32, float16, bfloat16"),
        ({"model": "tiny-random-llama", "quantization": {"double_quant": True}}, "'method' must be one of int8, nf4"),
        ({"model": "tiny-random-llama", "quantization": 4}, "quantization=4 is not allowed"),
        ({"model": "tiny-random-llama", "precision": "fp8", "quantization": "nf4"},
         "precision='fp8' is itself a quantization and cannot be combined with quantization='nf4'"),
        ({"model": "tiny-random-llama", "reference": {"precison": "float32"}},
         "reference={'precison': 'float32'}: unknown key 'precison'; allowed: precision, quantization"),
        ({"model": "tiny-random-llama", "reference": {"quantization": "nf5"}}, "quantization='nf5' is not allowed"),
        ({"model": "tiny-random-llama", "device_map": "balanced"}, "device_map='balanced' is not allowed"),
        ({"model": "tiny-random-llama", "device": "tpu"}, "device='tpu' is not allowed; allowed: auto, cpu, cuda, cuda:N"),
        ({"precision": "float32"}, "model= is required"),
        ({"model": "tiny-random-llama", "batch_size": [1, 1]}, "repeats variant ids tiny-random-llama-fp32-b1"),
    ],
)
def test_bad_marker_arguments_name_the_value_and_what_is_allowed(kwargs, expected):
    assert expected in _error(kwargs)


def test_positional_arguments_are_refused():
    result = expand({}, ("tiny-random-llama",))
    assert isinstance(result, InvalidMarker) and "use keywords" in result.message


def test_model_sources(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "w.gguf").write_bytes(b"GGUF")
    assert expand({"model": str(tmp_path / "m")})[0].model_source == "directory"
    assert expand({"model": str(tmp_path / "w.gguf")})[0].model_source == "gguf"
    assert expand({"model": "HuggingFaceTB/SmolLM2-135M"})[0].model_source == "hub"
    assert expand({"model": "smollm2-135m"})[0].model_source == "alias"
    assert expand({"model": str(tmp_path / "w.gguf")})[0].id == "w-fp32-b1"


@pytest.mark.parametrize("raw, clean", [("../../etc/passwd", "etc-passwd"), ("a b/c", "a-b-c"), ("...", "x"),
                                        ("ok-1.2_x", "ok-1.2_x")])
def test_sanitize_id_blocks_path_tricks(raw, clean):
    assert sanitize_id(raw) == clean
    assert "/" not in sanitize_id(raw) and not sanitize_id(raw).startswith(".")


def test_variant_id_includes_quantization_when_set():
    from pytest_llmeff.config.quantization import parse

    assert variant_id("smollm2-135m", "bfloat16", parse("nf4"), 4) == "smollm2-135m-bf16-nf4-b4"
    knobs = parse({"method": "nf4", "double_quant": True, "compute_dtype": "bfloat16"})
    assert variant_id("smollm2-135m", "float32", knobs, 1) == "smollm2-135m-fp32-nf4-dq-cbf16-b1"


def test_quantizations_expand_with_readable_ids_and_a_float32_reference():
    variants = expand({"model": "tiny-random-llama", "precision": ["float32", "fp8"],
                       "quantization": [None]} )
    assert [v.id for v in variants] == ["tiny-random-llama-fp32-b1", "tiny-random-llama-fp8-b1"]
    variants = expand({"model": "tiny-random-llama", "quantization": [None, "int8", "nf4", "fp4", "dynamic-int8"]})
    assert [v.quant_label for v in variants] == [None, "int8", "nf4", "fp4", "dynamic-int8"]
    assert len({v.load_key for v in variants}) == 5
    assert variants[0].is_reference and not any(v.is_reference for v in variants[1:])
    assert all(v.reference().id == "tiny-random-llama-fp32" for v in variants)
    custom = expand({"model": "tiny-random-llama", "precision": "bfloat16",
                     "reference": {"precision": "bfloat16"}})[0]
    assert custom.is_reference
