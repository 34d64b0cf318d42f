"""The examples in examples/: each is documented (a module docstring saying what it shows and the command that
runs it), there are at least ten, and .ci/run runs them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("test_*.py"))


def test_every_example_has_a_docstring_with_its_command():
    files = _example_files()
    assert len(files) >= 10, [p.name for p in files]
    for path in files:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc, f"{path.relative_to(ROOT)} has no module docstring"
        shows = doc.split("\n\n")[0]
        assert len(shows) > 40, f"{path.relative_to(ROOT)}: the docstring's first paragraph should say what it shows"
        rel = path.relative_to(ROOT).as_posix()
        commands = [line.strip() for line in doc.splitlines() if line.strip().startswith(("pytest ", "MY_MODEL_DIR="))]
        assert commands, f"{rel}: no command to run it in the docstring"
        # the command names this file or its folder
        assert any(rel in c or path.parent.relative_to(ROOT).as_posix() + " " in c + " " for c in commands), \
            f"{rel}: its command does not name it: {commands}"


def test_hook_examples_explain_their_conftest():
    for folder in ("custom_metric", "machine_info"):
        conftest = EXAMPLES / folder / "conftest.py"
        assert ast.get_docstring(ast.parse(conftest.read_text())), conftest
    ignored = ast.literal_eval(next(n.value for n in ast.parse((EXAMPLES / "conftest.py").read_text()).body
                                    if isinstance(n, ast.Assign)))
    assert set(ignored) == {"custom_metric", "machine_info"}


def test_ci_runs_the_examples():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "examples/" in ci and "examples/custom_metric" in ci and "examples/machine_info" in ci
    assert "--llmeff-ab=HEAD" in ci and "--llmeff-compare=" in ci
