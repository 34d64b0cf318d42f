"""Replacing the machine description through the hooks (see conftest.py next to this file): the run file's
`machine` becomes what the hooks say, and stored baselines are grouped by its fingerprint.

Run this folder on its own (its conftest.py must be read before the session starts), then look at the run:

    pytest examples/machine_info --llmeff-json=run.json && python -c "import json; print(json.load(open('run.json'))['machine'])"
"""

import pytest


@pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=8, quality=False)
def test_on_described_machine(llm_benchmark, pytestconfig):
    llm_benchmark()
    described = pytestconfig.hook.pytest_llmeff_generate_machine_info(config=pytestconfig)
    assert described["cpu"] and described["os"] and described["python"]
