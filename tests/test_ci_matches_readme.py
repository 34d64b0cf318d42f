"""The README's test command and the one .ci/run runs first are the same text, and the repository names no
absolute path of the machine it was written on (issue 20, deliverable 7)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "# README-TEST-COMMAND"


def ci_test_command(ci_text: str) -> str:
    """The command on the line after the marker in .ci/run, without the ``{ ...; } || rc=$?`` that wraps it."""
    lines = ci_text.splitlines()
    marked = [i for i, line in enumerate(lines) if line.strip().startswith(MARKER)]
    assert len(marked) == 1, f"{MARKER} must mark exactly one line of .ci/run, found {len(marked)}"
    match = re.fullmatch(r"\{ (.+); \} \|\| rc=\$\?", lines[marked[0] + 1].strip())
    assert match, f"the line after {MARKER} is not '{{ COMMAND; }} || rc=$?': {lines[marked[0] + 1]!r}"
    return match.group(1)


def test_the_ci_runs_the_readme_test_command_verbatim():
    command = ci_test_command((ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    readme_lines = [line.strip() for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()]
    assert command in readme_lines, f".ci/run runs {command!r}, which is no line of README.md"
    assert 'pip install -e ".[test]"' in command and "python -m pytest tests/" in command


def test_the_extraction_fails_on_a_changed_or_missing_command():
    good = f'x\n{MARKER} (keep)\n{{ pip install -e . && python -m pytest tests/; }} || rc=$?\n'
    assert ci_test_command(good) == "pip install -e . && python -m pytest tests/"
    with pytest.raises(AssertionError, match="exactly one"):
        ci_test_command("no marker here\n")
    with pytest.raises(AssertionError, match="is not"):
        ci_test_command(f"{MARKER}\npip install -e . && python -m pytest tests/\n")


def test_no_absolute_machine_path_in_the_repository():
    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    machine_path = re.compile(r"(?<![\w.])/(work|home|Users)/")  # a container path like /root/.cache is fine
    hits = []
    for name in files.splitlines():
        path = ROOT / name
        if not path.is_file() or path.suffix in (".gguf", ".png", ".bin", ".safetensors"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        hits += [f"{name}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
                 if machine_path.search(line) and name != "tests/test_ci_matches_readme.py"]
    assert not hits, "absolute machine paths:\n" + "\n".join(hits)
