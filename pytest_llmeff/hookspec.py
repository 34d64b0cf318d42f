"""pluggy hooks of pytest-llmeff. Implement them in a conftest.py or a plugin."""

from __future__ import annotations

import pytest


@pytest.hookspec(firstresult=True)
def pytest_llmeff_generate_machine_info(config):
    """Return a dict that REPLACES the machine info of the run (keys cpu, os and python are required).
    The first non-None result wins."""


def pytest_llmeff_update_machine_info(config, machine_info):
    """Add to or edit ``machine_info`` (a dict) in place."""


def pytest_llmeff_metric_specs(config):
    """Return a list of ``pytest_llmeff.metrics.MetricSpec`` for custom metrics (name with its unit,
    unit, direction, meaning). They join the one metric table."""


def pytest_llmeff_custom_metrics(config, llm_model, measured):
    """Return ``{metric_name: [samples...]}`` to add to a benchmark after its rounds. ``llm_model`` is the
    loaded variant, ``measured`` the raw ``runner.Measured``. Names must be declared through
    ``pytest_llmeff_metric_specs``."""
