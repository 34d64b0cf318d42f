"""The plugin is loaded into every pytest run of its environment: importing it must stay light."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "bitsandbytes", "accelerate", "codecarbon", "tabulate", "scipy")


@pytest.mark.slow
def test_importing_the_plugin_imports_no_heavy_library():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import pytest_llmeff.plugin"],
                          capture_output=True, text=True, check=True)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "pytest_llmeff" in imported  # the check really saw the plugin's imports
    heavy = sorted(set(HEAVY) & imported)
    assert not heavy, f"pytest_llmeff.plugin imports {heavy}"


@pytest.mark.slow
def test_a_session_without_benchmarks_imports_no_heavy_library(pytester):
    pytester.makepyfile(test_plain="""
        import sys
        def test_x():
            pass
        def test_zz_nothing_heavy():
            heavy = [m for m in ("torch", "transformers", "bitsandbytes", "accelerate") if m in sys.modules]
            assert not heavy, heavy
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
