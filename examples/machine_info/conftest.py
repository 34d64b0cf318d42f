"""Hooks of the machine-info example: describe the machine yourself.

`pytest_llmeff_generate_machine_info` REPLACES the description the plugin would gather (cpu, os and python are
required): useful when the runner's own description is wrong or too detailed, e.g. a cloud VM whose CPU
model string changes between identical instances. The stored baselines are grouped by a fingerprint of this
description, so a stable description keeps comparing runs of "the same machine".
`pytest_llmeff_update_machine_info` edits it in place: add a label, remove a field.
"""

import os
import platform


def pytest_llmeff_generate_machine_info(config):
    return {
        "cpu": os.environ.get("RUNNER_CPU_CLASS", "ci-standard-2core"),  # the class you pay for, not the model
        "cores": os.cpu_count(),
        "os": platform.system(),
        "python": platform.python_version(),
    }


def pytest_llmeff_update_machine_info(config, machine_info):
    machine_info["runner"] = os.environ.get("RUNNER_NAME", "local")
