"""Stacking with `@pytest.mark.parametrize`: your own parameters multiply with the marker's variants, and are
recorded with each benchmark (`params` in the run file), so a table can compare them.

Shows: 2 system prompts x the marker's variants (here one: batch 4; make it batch_size=[1, 4] for 4 tests); the
parameter shapes the prompts each call benchmarks, and the loaded weights are shared by both.

    pytest examples/test_parametrize.py --llmeff-report -v
"""

import pytest

QUESTIONS = ["How do plants grow?", "Why is the sky blue?", "What is a prime number?", "Name a fast animal."]


@pytest.mark.parametrize("system", ["You are terse.", "You are a patient teacher who explains every step."],
                         ids=["terse", "teacher"])
@pytest.mark.llm_efficiency(model="tiny-random-llama", batch_size=4, max_new_tokens=8,
                            quality=False, group="system-prompt")
def test_system_prompt(llm_benchmark, system):
    prompts = [f"{system}\n\nUser: {q}\nAssistant:" for q in QUESTIONS]
    result = llm_benchmark(prompts=prompts)
    assert result.params == {"system": system}
    assert result.tokens_generated == result.variant.batch_size * 8
