"""The same model on several inference engines, in one table, against one quality reference.

Shows: `engine=` as a list (one test per engine, like any other axis), each engine's conversion cached once, and
quality drift of every engine against transformers float32 on the same text and prompts. On a tiny random model
the float32 engines agree with transformers exactly (top-1 agreement 1.0); speed on such a model says little.

    pytest examples/test_compare_engines.py --llmeff-report

Needs the engines' extras: `pip install "pytest-llmeff[ct2,onnx]"` (a missing engine is a SKIP naming its
extra). On a real model, with llama.cpp on a GGUF: `engine=["transformers", "llama.cpp"]` and
`model="smollm2-135m"` (see benchmarks/sweep/test_smollm2_engines.py).
"""

import pytest


@pytest.mark.llm_efficiency(
    model="tiny-random-llama",
    engine=["transformers", "ctranslate2", "onnxruntime-genai"],
    max_new_tokens=16,
    group="engines",
)
def test_engine(llm_benchmark):
    result = llm_benchmark()
    m = result.metrics
    print(f"{result.variant.id}: {m['throughput_tok_s'].median:.0f} tok/s, weights {m['model_bytes'].median / 1e6:.2f} MB,"
          f" top-1 agreement {m['top1_agreement'].median:.1%}, ppl ratio {m['ppl_ratio'].median:.4f}")
    # float32 on every engine: the same greedy tokens as the transformers reference
    assert m["token_agreement"].median == 1.0
