"""Your own prompts and lengths: a chat-like workload (short prompts, longer answers) and a summarisation-like
one (a long prompt, a short answer) measured in one test, each as its own named benchmark.

Shows: `prompts=` and `max_new_tokens=` on the marker (the defaults of every call), the same arguments on one
`llm_benchmark()` call, and `name=` to keep two benchmarks of one test apart in the run file and the gate.
Prefill-heavy work shows in `ttft_s` and `prefill_tok_s`, decode-heavy work in `tpot_s` and `decode_tok_s`.

    pytest examples/test_custom_prompts.py --llmeff-report --llmeff-columns=throughput_tok_s,prefill_tok_s,ttft_s,tpot_s
"""

import pytest

CHAT = [
    "What is a good name for a black cat?",
    "Give me three tips for sleeping better.",
    "How do I boil an egg?",
    "Write a haiku about autumn rain.",
]

DOCUMENT = (
    "The committee met on Tuesday to review the quarterly figures. Revenue rose in every region except the "
    "north, where a late harvest delayed shipments. The board asked for a plan to reduce delivery times, a "
    "review of the supplier contracts, and a short report on staff turnover before the next meeting. "
) * 2 + "Summarise the text above in one sentence:"


@pytest.mark.llm_efficiency(model="tiny-random-llama", prompts=CHAT, max_new_tokens=12, batch_size=4,
                            quality=False, group="workloads")
def test_chat_and_summary(llm_benchmark):
    chat = llm_benchmark()  # the marker's prompts and length
    summary = llm_benchmark(prompts=[DOCUMENT], max_new_tokens=4, name="summarise-long-document")
    assert chat.tokens_generated == 4 * 12 and summary.tokens_generated == 4 * 4
    # the long prompt: more prompt tokens per generated token than the chat turns
    assert summary.prompt_tokens / summary.tokens_generated > chat.prompt_tokens / chat.tokens_generated
