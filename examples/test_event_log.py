"""Structured logs and progress: every event of a session (model load, each timed round with the interval
reached so far, the stop decision, warnings, verdicts, files written) as one JSON object per line, written
while it happens, for dashboards, `jq`, or watching a long CI job with `tail -f`.

Shows: `--llmeff-log-json=PATH` (ini `llmeff_log_json`); each event names its test (`nodeid`) and variant. On
the terminal, a benchmark that runs longer than a few seconds (2 s with -v) prints its round count and interval.

    pytest examples/test_event_log.py --llmeff-log-json=events.jsonl -v
    jq -c 'select(.event == "stop") | {variant, reason, rounds, achieved_ci_rel}' events.jsonl
"""

import pytest


@pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=8, quality=False)
def test_logged(llm_benchmark):
    result = llm_benchmark()
    assert result.stop.reason in ("target_ci", "max_time", "max_rounds", "fixed_rounds")
