"""Your own measurement loop with the building blocks: `llm_model` (the loaded variant), `energy_tracker`
(energy windows on the device's meter, or CodeCarbon's estimate, flagged as such) and `flops_counter`
(FLOPs counted by torch's FlopCounterMode).

Shows: measuring something the standard protocol does not, here a multi-turn conversation where each turn's
prompt grows with the previous answers, with energy and FLOPs per turn. Nothing is recorded in the run file
unless you call `llm_benchmark()`; these figures are yours to assert on or print.

    pytest examples/test_own_measurement.py -s
"""

import time

import pytest


@pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=8)
def test_multi_turn_conversation(llm_model, energy_tracker, flops_counter):
    history = "User: Hello, who are you?\nAssistant:"
    for turn in range(3):
        start = time.perf_counter()
        with energy_tracker.measure() as energy, flops_counter.count() as flops:
            out = llm_model.generate([history], max_new_tokens=8)  # greedy; stops at EOS
        seconds = time.perf_counter() - start
        tokens = out.tokens_per_seq[0]
        estimated = "estimated" if energy.estimated else "measured"
        joules = "n/a" if energy.energy_j is None else f"{energy.energy_j:.3g} J"
        print(f"turn {turn}: prompt {out.prompt_tokens_per_seq[0]} tok, {tokens} new tok in {seconds * 1e3:.1f} ms, "
              f"{flops.flops / max(tokens, 1):.3g} FLOP/tok, {joules} ({estimated}: {energy.method})")
        assert 1 <= tokens <= 8 and flops.flops > 0
        # a meter says whether it is one; the CodeCarbon fallback always says "estimated"
        assert energy.estimated or energy.method.startswith(("nvml", "rapl"))
        history += out.texts[0] + "\nUser: Tell me more.\nAssistant:"
