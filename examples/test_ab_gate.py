"""The one-command A/B gate: measure this checkout against a git ref in lockstep, round by round, so both sides
see the same machine noise, and fail on a significant regression.

Shows: `--llmeff-ab=GITREF` checks the ref out into a temporary git worktree, runs the same selection there as
the baseline, takes turns with it (20 rounds each by default) and judges each pair of rounds with the
Wilcoxon signed-rank test; the exit code is the gate. Needs a git repository; the file must exist at GITREF
(commit it first), otherwise the baseline selects nothing and the benchmark is reported without a verdict.
Without `--llmeff-ab` it is an ordinary benchmark.

    pytest examples/test_ab_gate.py --llmeff-ab=origin/main --llmeff-compare-fail=throughput_tok_s:10%
    pytest examples/test_ab_gate.py --llmeff-ab=HEAD --llmeff-compare-fail=throughput_tok_s:10%   # A/A check
"""

import pytest


@pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=8, quality=False, group="ab")
def test_candidate(llm_benchmark):
    result = llm_benchmark()
    for verdict in result.verdicts:
        print(f"{verdict.metric}: {verdict.status}, change {verdict.change}, p {verdict.p_value}")
    if result.interleaved:  # a lockstep pair: both sides timed the same number of rounds
        assert result.rounds == result.stop.rounds
