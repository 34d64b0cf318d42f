"""A quantization sweep with a quality limit: every quantization of the model is timed AND compared with the
float32 reference on the same prompts, and a variant whose next-token choices drift too far fails its test.

Shows: `quantization=` as a list (None = unquantized), `limits=` on quality metrics (checked on every run, no
baseline needed), and that a method this machine cannot run (nf4 without bitsandbytes) is a SKIP with the
reason, not an error. On SmolLM2-135M dynamic-int8 keeps only 42% top-1 agreement: this limit would fail it.

    pytest examples/test_quantization_sweep.py --llmeff-report --llmeff-columns=throughput_tok_s,model_bytes,top1_agreement,ppl_ratio
"""

import pytest


@pytest.mark.llm_efficiency(
    model="tiny-random-llama",
    quantization=[None, "dynamic-int8", "nf4"],
    max_new_tokens=8,
    group="quantization",
    # quality drift against the float32 reference: teacher-forced top-1 agreement and the perplexity ratio
    limits={"top1_agreement": ">= 0.8", "ppl_ratio": "<= 1.05"},
)
def test_quantized(llm_benchmark):
    result = llm_benchmark()
    quality = result.metrics
    print(f"{result.variant.id}: {quality['throughput_tok_s'].median:.0f} tok/s, "
          f"top-1 agreement {quality['top1_agreement'].median:.1%}, ppl ratio {quality['ppl_ratio'].median:.3f}")
    # the reference agrees with itself; a quantized variant is never heavier than the float32 weights
    if result.variant.quantization is None:
        assert quality["top1_agreement"].median == 1.0
