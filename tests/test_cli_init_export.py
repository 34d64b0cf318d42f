"""The `llmeff init` scaffold (its suite passes at once), `llmeff export` (the session's own writers), and the
CLI's help: every command has its own help with examples, every error is one line and exit 2."""

from __future__ import annotations

import importlib.util
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from pytest_llmeff.cli import app as cli, init as scaffold


def _one_line_error(capsys, needle: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("llmeff: error: "), err
    assert needle in err and "Traceback" not in err, err


def _init(capsys, *args) -> int:
    return cli.main(["init", "--no-input", *args])


@pytest.fixture
def model_dir(tiny_cache, tmp_path):
    """A local model directory of the user's own (config.json, safetensors, tokenizer)."""
    target = tmp_path / "project" / "models" / "tiny"
    shutil.copytree(tiny_cache / "models" / "tiny-random-llama-v1", target)
    return target


@pytest.mark.slow
def test_the_scaffolded_suite_passes_at_once(llmeff_pytester, tiny_cache):
    shutil.copytree(tiny_cache / "models" / "tiny-random-llama-v1", llmeff_pytester.path / "models" / "mine")
    made = subprocess.run([sys.executable, "-m", "pytest_llmeff.cli", "init", "--model", "models/mine",
                           "--precision", "float32,bfloat16", "--batch-size", "1,2", "--max-new-tokens", "4"],
                          cwd=llmeff_pytester.path, capture_output=True, text=True)  # stdin is not a terminal
    assert made.returncode == 0, made.stderr
    for written in ("benchmarks/test_llm.py", "pytest.ini", ".github/workflows/llmeff.yml"):
        assert f"wrote {written}" in made.stdout
    source = (llmeff_pytester.path / "benchmarks" / "test_llm.py").read_text()
    assert "Path(__file__).parent / '../models/mine'" in source  # travels with the repository
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((llmeff_pytester.path / ".github" / "workflows" / "llmeff.yml").read_text())
    assert "benchmark" in workflow["jobs"]
    result = llmeff_pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llmeff-json=run.json")
    result.assert_outcomes(passed=4)  # 2 precisions x 2 batch sizes
    assert "llmeff_target_ci" in (llmeff_pytester.path / "pytest.ini").read_text()


def test_init_refuses_to_overwrite_unless_forced(model_dir, capsys):
    project = model_dir.parents[1]
    assert _init(capsys, "--model", str(model_dir), "--dir", str(project), "--no-ci") == 0
    capsys.readouterr()
    before = (project / "benchmarks" / "test_llm.py").read_text()
    assert _init(capsys, "--model", "tiny-random-llama", "--dir", str(project), "--no-ci") == 2
    _one_line_error(capsys, "test_llm.py already exists; use --force")
    assert (project / "benchmarks" / "test_llm.py").read_text() == before  # nothing written
    assert _init(capsys, "--model", "tiny-random-llama", "--dir", str(project), "--no-ci", "--force") == 0
    assert "MODEL = 'tiny-random-llama'" in (project / "benchmarks" / "test_llm.py").read_text()


def test_init_appends_to_pyproject_or_prints_when_pytest_is_configured(tmp_path, capsys):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert _init(capsys, "--model", "tiny-random-llama", "--dir", str(tmp_path), "--no-ci") == 0
    text = (tmp_path / "pyproject.toml").read_text()
    assert text.startswith('[project]\nname = "x"\n') and '[tool.pytest.ini_options]\n' in text
    import tomllib

    assert tomllib.loads(text)["tool"]["pytest"]["ini_options"]["llmeff_target_ci"] == "5"
    capsys.readouterr()
    other = tmp_path / "other"
    other.mkdir()
    (other / "tox.ini").write_text("[pytest]\naddopts = -q\n")
    assert _init(capsys, "--model", "tiny-random-llama", "--dir", str(other), "--no-ci") == 0
    out = capsys.readouterr().out
    assert "tox.ini already configures pytest" in out and "llmeff_max_time = 20" in out
    assert (other / "tox.ini").read_text() == "[pytest]\naddopts = -q\n" and not (other / "pytest.ini").exists()


@pytest.mark.parametrize("args, needle", [
    (["--model", "no-such-alias-or-dir"], "'no-such-alias-or-dir' is not a built-in alias"),
    (["--model", "./missing-dir"], "'./missing-dir': no such directory"),
    (["--model", "missing.gguf"], "'missing.gguf': no such .gguf file"),
    (["--model", "someorg/not-cached"], "is not in the local Hugging Face cache"),
    (["--model", "tiny-random-llama", "--precision", "fp64"], "--precision 'fp64' is not allowed"),
    (["--model", "tiny-random-llama", "--quantization", "int3"], "--quantization 'int3' is not allowed"),
    (["--model", "tiny-random-llama", "--batch-size", "1,x"], "--batch-size 'x' is not allowed"),
    (["--model", "tiny-random-llama", "--max-new-tokens", "0"], "--max-new-tokens '0' is not allowed"),
    (["--model", "tiny-random-llama", "--dir", "/no/such/dir"], "--dir '/no/such/dir': no such directory"),
    ([], "--model is required when not on a terminal"),
    (["--model", "tiny-random-llama", "--ini", "setup.cfg"], "argument --ini: invalid choice: 'setup.cfg'"),
])
def test_init_bad_values_are_one_line(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) if "--ini" in args else _no_raise():
        assert _init(capsys, *args) == 2
    _one_line_error(capsys, needle)
    assert not (tmp_path / "benchmarks").exists()


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_init_into_an_unwritable_folder(tmp_path, capsys):
    (tmp_path / "benchmarks").write_text("a file where the folder should be")
    assert _init(capsys, "--model", "tiny-random-llama", "--dir", str(tmp_path)) == 2
    _one_line_error(capsys, "cannot be written")


def test_init_asks_on_a_terminal(tmp_path, capsys, monkeypatch):
    """On a TTY the values not given are asked with questionary; the answers become the scaffold."""
    questionary = pytest.importorskip("questionary")
    asked = []

    class Answer:
        def __init__(self, value):
            self.value = value

        def ask(self):
            return self.value

    def fake(kind, value):
        def make(message, *a, **k):
            asked.append(kind)
            validate = k.get("validate")
            if validate is not None and kind == "text":
                assert validate(value) is True, validate(value)
            return Answer(value)
        return make

    monkeypatch.setattr(questionary, "text", lambda message, **k: fake("text", {
        True: "tiny-random-llama"}.get(message.startswith("Model"), "8" if "tokens" in message else "1,2"))(
        message, **k))
    monkeypatch.setattr(questionary, "checkbox", fake("checkbox", ["bfloat16"]))
    monkeypatch.setattr(questionary, "confirm", fake("confirm", False))
    monkeypatch.setattr(scaffold, "_interactive", lambda args: True)
    assert cli.main(["init", "--dir", str(tmp_path)]) == 0
    assert asked == ["text", "checkbox", "text", "text", "confirm"]
    source = (tmp_path / "benchmarks" / "test_llm.py").read_text()
    assert "precision=['bfloat16']" in source and "batch_size=[1, 2]" in source and "max_new_tokens=8" in source
    assert not (tmp_path / ".github").exists()  # the workflow was declined


def test_export_writes_what_the_session_wrote(llmeff_pytester, capsys):
    llmeff_pytester.makepyfile(test_b="""
import pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", batch_size=[1, 2], max_new_tokens=4, quality=False)
def test_speed(llm_benchmark):
    llm_benchmark()
""")
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-json=run.json",
                                                 "--llmeff-csv=s.csv", "--llmeff-markdown=s.md",
                                                 "--llmeff-benchmark-json=s.json")
    result.assert_outcomes(passed=2)
    capsys.readouterr()
    d = llmeff_pytester.path
    for fmt, session_file in (("csv", "s.csv"), ("markdown", "s.md"), ("pytest-benchmark", "s.json")):
        assert cli.main(["export", str(d / "run.json"), "--format", fmt, "-o", str(d / f"e-{fmt}")]) == 0
        assert (d / f"e-{fmt}").read_text() == (d / session_file).read_text(), fmt
        assert cli.main(["export", str(d / "run.json"), "--format", fmt]) == 0  # stdout
        assert capsys.readouterr().out == (d / session_file).read_text()
    if importlib.util.find_spec("plotly") is not None:  # the report extra
        assert cli.main(["export", str(d / "run.json"), "--format", "html", "-o", str(d / "r.html")]) == 0
        html = (d / "r.html").read_text()
        assert html.startswith("<!DOCTYPE html>") and "tiny-random-llama-fp32-b2" in html and "run.json" in html
        assert capsys.readouterr().err == f"html written to {d / 'r.html'}\n"
    (d / "foreign.json").write_text('{"benchmarks": []}')
    (d / "corrupt.json").write_text('{"schema": "pytest-llmeff/1.1", "benchm')
    for argv, needle in (
            (["export", str(d / "run.json"), "--format", "xml"], "invalid choice: 'xml'"),
            (["export", str(d / "missing.json"), "--format", "csv"], "missing.json: no such results file"),
            (["export", str(d / "corrupt.json"), "--format", "csv"], "corrupt.json"),
            (["export", str(d / "foreign.json"), "--format", "csv"], "foreign.json"),
            (["export", str(d / "run.json"), "--format", "csv", "-o", str(d)], "is a directory"),
            (["export", str(d / "run.json"), "--format", "csv", "-o", str(d / "s.csv" / "x.csv")],
             "cannot be written")):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        assert code == 2, argv
        _one_line_error(capsys, needle)


def test_every_command_has_help_with_examples(capsys):
    parser = cli._parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"show", "list", "compare", "history", "schema", "export", "init"} <= set(commands)
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    overview = capsys.readouterr().out
    for name, sub in commands.items():
        assert f"llmeff {name}" in overview, name
        with pytest.raises(SystemExit) as done:
            cli.main([name, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert f"usage: llmeff {name}" in text and ("examples:" in text or sub.epilog), name


def test_init_templates_are_package_data_that_pyproject_ships():
    """The scaffold's files are package data (read with importlib.resources), every one matched by pyproject's
    package-data globs, and a rendered scaffold has no placeholder left."""
    import fnmatch
    import tomllib
    from importlib import resources

    from pytest_llmeff.cli import init

    folder = resources.files("pytest_llmeff.cli.templates")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmpl"))
    assert names == ["hub_fetch.yml.tmpl", "llmeff.yml.tmpl", "test_llm.py.tmpl"]
    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["pytest_llmeff"]
    for name in names:
        assert any(fnmatch.fnmatch(f"cli/templates/{name}", g) for g in globs), name
    a = init.Answers(model="org/name", kind="hub", quantizations=("int8",))
    for text in (init.test_source(a, "'org/name'", "benchmarks/test_llm.py"),
                 init.workflow_text(a, "benchmarks/test_llm.py")):
        assert "%%" not in text
    assert "snapshot_download('org/name')" in init.workflow_text(a, "benchmarks/test_llm.py")
