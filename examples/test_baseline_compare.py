"""Save a baseline, then compare later runs with it and fail on a regression: the CI gate with a stored run.

Shows: `--llmeff-save=NAME` stores the run under `.llmeff/baselines/<machine>/`, `--llmeff-compare=NAME`
judges every benchmark against it with `--llmeff-compare-fail` thresholds, and `thresholds=` on the marker
overrides them per test. A regression must move beyond its threshold AND be significant; figures measured
once per variant (model_bytes, ppl) are judged directly; with a single stored session a timing verdict can
only be inconclusive (store a few runs: the gate learns the spread between sessions from them).

    pytest examples/test_baseline_compare.py --llmeff-save=main
    pytest examples/test_baseline_compare.py --llmeff-compare=main \
           --llmeff-compare-fail=throughput_tok_s:10%,model_bytes:0%,ppl:1%
    llmeff compare .llmeff/baselines/*/main.json .llmeff/runs/<latest>.json
"""

import pytest


@pytest.mark.llm_efficiency(
    model="tiny-random-llama",
    max_new_tokens=8,
    thresholds={"ttft_s": "50%"},  # this test tolerates more TTFT noise than the command line's default
    group="gate",
)
def test_gated(llm_benchmark):
    result = llm_benchmark()
    for verdict in result.verdicts:  # empty without --llmeff-compare
        print(f"{result.variant.id} {verdict.metric}: {verdict.status} ({verdict.message})")
