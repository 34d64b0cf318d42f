"""One engine interface, really used (issue 20): no engine name compared as a string outside ``engines/``, every
engine in the catalog implements ``engines.base.LoadedEngine``, and the tiny transformers model loaded through the
generic loader is such a model with the capabilities it declares.

Each check is also run on a deliberately broken input, so a check that cannot fail is caught here too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_llmeff.config.engine_catalog import DEFAULT_ENGINE, ENGINES

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_llmeff"
#: where engine names may be compared: the engines themselves, and the catalog that names them
EXEMPT = (PACKAGE / "engines", PACKAGE / "config" / "engine_catalog.py")
ENGINE_NAMES = frozenset(n for s in ENGINES.values() for n in (s.name, s.short) if n)


# -- (a) no engine name compared as a string outside engines/ ------------------------------------------------------
def _literal_names(node: ast.AST) -> list[str]:
    """The engine names ``node`` spells as a string literal, itself or as an element of a literal collection."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value] if node.value in ENGINE_NAMES else []
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [name for element in node.elts for name in _literal_names(element)]
    return []


def _pattern_names(pattern: ast.AST) -> list[str]:
    if isinstance(pattern, ast.MatchValue):
        return _literal_names(pattern.value)
    if isinstance(pattern, ast.MatchOr):
        return [name for p in pattern.patterns for name in _pattern_names(p)]
    if isinstance(pattern, ast.MatchAs) and pattern.pattern is not None:
        return _pattern_names(pattern.pattern)
    return []


_COMPARING = (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)


def engine_name_comparisons(source: str) -> list[tuple[int, str]]:
    """(line, engine name) of every comparison (==, !=, in, not in, is, match-case) in ``source`` whose one side
    is a string literal naming an engine of the catalog (or a literal collection holding one)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                if isinstance(op, _COMPARING):
                    found += [(node.lineno, n) for side in sides[i:i + 2] for n in _literal_names(side)]
        elif isinstance(node, ast.Match):
            found += [(case.pattern.lineno, n) for case in node.cases for n in _pattern_names(case.pattern)]
    return found


def test_the_check_finds_every_form_of_engine_name_comparison():
    bad = textwrap.dedent("""
        a = engine == "llama.cpp"
        b = "ctranslate2" != variant.engine
        c = engine in ("transformers", "other")
        d = x.engine not in ["ortgenai"]
        match engine:
            case "onnxruntime-genai" | "ct2":
                pass
    """)
    names = sorted(n for _, n in engine_name_comparisons(bad))
    assert names == ["ct2", "ctranslate2", "llama.cpp", "onnxruntime-genai", "ortgenai", "transformers"]
    fine = textwrap.dedent("""
        import importlib.util
        found = importlib.util.find_spec("transformers")  # a package name in an import probe
        versions = ("torch", "transformers")               # named, not compared
        same = engine == DEFAULT_ENGINE
        other = name == "torch"
    """)
    assert engine_name_comparisons(fine) == []


def test_no_engine_name_is_compared_as_a_string_outside_engines():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if any(path == e or e in path.parents for e in EXEMPT):
            continue
        for line, name in engine_name_comparisons(path.read_text()):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line} compares with {name!r}")
    assert not offenders, "ask engine_catalog or loaded.capabilities instead:\n" + "\n".join(offenders)


def test_spec_and_marker_read_the_catalog_never_engines():
    """The catalog is a leaf (errors at most); the variant and marker modules import nothing from engines/."""
    def imports(path: Path) -> set[str]:
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                out.add(node.module)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        return out

    catalog = {m for m in imports(PACKAGE / "config" / "engine_catalog.py") if m.startswith("pytest_llmeff")}
    assert catalog <= {"pytest_llmeff.errors"}, catalog
    for reader in (PACKAGE / "config" / "variants.py", PACKAGE / "session" / "marker.py"):
        assert not [m for m in imports(reader) if m.startswith("pytest_llmeff.engines")], reader


# -- (b) every engine in the catalog implements the interface ------------------------------------------------------
def interface_gaps(cls: type) -> list[str]:
    """What ``cls`` lacks to implement ``LoadedEngine``: not a subclass, or abstract members left unimplemented."""
    from pytest_llmeff.engines.base import LoadedEngine

    if not (isinstance(cls, type) and issubclass(cls, LoadedEngine)):
        return [f"{cls!r} is not a LoadedEngine"]
    return sorted(getattr(cls, "__abstractmethods__", ()))


def test_the_interface_check_fails_on_an_incomplete_engine():
    from pytest_llmeff.engines.base import Capabilities, LoadedEngine
    from pytest_llmeff.engines.native import EngineLoaded

    class ForgotLogits(LoadedEngine):  # everything but the quality probe's logits
        @classmethod
        def load(cls, variant, cache_root, progress, threads, tensor_parallel=False):
            return cls()

        def encode(self, prompts):
            return {}

        def generate_ids(self, inputs, max_new_tokens, *, fixed_length=False, logits_processor=None):
            return None

        model_bytes = property(lambda self: 0)
        capabilities = property(lambda self: Capabilities())

    assert interface_gaps(ForgotLogits) == ["window_logits"]
    assert interface_gaps(object) == [f"{object!r} is not a LoadedEngine"]
    assert interface_gaps(EngineLoaded) == ["load", "model_bytes"]  # the shared part leaves these to each engine


_IMPORT_EVERY_ENGINE = """
import importlib.abc, json, sys

BLOCKED = {blocked!r}

class Missing(importlib.abc.MetaPathFinder):  # every engine's package behaves as if it were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked")
        return None

sys.meta_path.insert(0, Missing())
from pytest_llmeff.engines.base import engine_class
from pytest_llmeff.config.engine_catalog import ENGINES

out = {{}}
for name, spec in ENGINES.items():
    cls = engine_class(name)
    out[name] = {{"module": cls.__module__, "qualname": cls.__qualname__,
                 "weight_type_for_id": callable(getattr(sys.modules[spec.module], "weight_type_for_id", None))}}
print(json.dumps({{"engines": out, "imported": sorted(m for m in BLOCKED if m in sys.modules)}}))
"""


def test_every_catalog_engine_defines_a_class_implementing_the_interface_without_its_package():
    """Each catalog line's module is imported with every engine package blocked (as on a machine without the
    extras), and its named class implements every abstract member of ``LoadedEngine``."""
    import importlib

    blocked = sorted({s.import_name for s in ENGINES.values() if s.import_name} | {"torch"})
    script = _IMPORT_EVERY_ENGINE.format(blocked=blocked)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PACKAGE.parent,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["imported"] == []
    for name, spec in ENGINES.items():
        found = report["engines"][name]
        assert found["module"] == spec.module and found["qualname"] == spec.loaded_class, (name, found)
        cls = getattr(importlib.import_module(spec.module), spec.loaded_class)
        assert interface_gaps(cls) == [], (name, interface_gaps(cls))
        if spec.named_by_weight_type:  # the marker names its variants by the module's weight_type_for_id
            assert found["weight_type_for_id"], name


def test_the_catalog_facts_are_names_the_marker_knows():
    from pytest_llmeff.config.precision import PRECISIONS
    from pytest_llmeff.config.quantization import METHODS

    assert ENGINES[DEFAULT_ENGINE].is_default and ENGINES[DEFAULT_ENGINE].short == ""
    shorts = [s.short for s in ENGINES.values()]
    assert len(set(shorts)) == len(shorts)
    for s in ENGINES.values():
        assert s.module.startswith("pytest_llmeff.engines."), s
        assert set(s.precisions or PRECISIONS) <= set(PRECISIONS), s
        assert set(s.quantizations) <= set(METHODS), s
        assert s.is_default or (s.short and s.extra and s.import_name), s


def test_tensor_parallel_on_an_engine_the_catalog_does_not_mark_is_a_skip_before_loading(tmp_path):
    from pytest_llmeff.engines.base import load
    from pytest_llmeff.errors import VariantUnsupported
    from pytest_llmeff.session.marker import expand

    engine = next(n for n, s in ENGINES.items() if not s.tensor_parallel)
    (variant,) = expand({"model": "tiny-random-llama", "engine": engine})
    with pytest.raises(VariantUnsupported, match=rf"engine={engine!r} has no tensor parallelism here"):
        load(variant, tmp_path, tensor_parallel=True)
    assert not (tmp_path / "models").exists()  # refused before anything was resolved or built


# -- (c) the tiny transformers model through the generic loader ----------------------------------------------------
def test_the_tiny_model_loaded_generically_is_an_engine_with_its_declared_capabilities(tiny_cache):
    import torch

    from pytest_llmeff.engines.base import Capabilities, LoadedEngine, load
    from pytest_llmeff.session.marker import expand

    threads = torch.get_num_threads()  # the process's own count: the load sets it, so keep it unchanged
    loaded = load(expand({"model": "tiny-random-llama"})[0], tiny_cache, threads=threads)
    assert isinstance(loaded, LoadedEngine) and type(loaded).__name__ == ENGINES[DEFAULT_ENGINE].loaded_class
    assert loaded.capabilities == Capabilities(per_token_timing=True, counts_flops=True, quality_logits=True,
                                               threads=True)
    assert loaded.threads == threads and loaded.devices == () and loaded.model_bytes > 0
    assert loaded.config is loaded.model.config

    steps = []
    inputs = loaded.encode(["Hello there", "Hi"])
    out = loaded.generate_ids(inputs, 5, fixed_length=True,
                              logits_processor=[lambda ids, scores: steps.append(1) or scores])
    assert len(steps) == 5 and out.shape == (2, inputs["input_ids"].shape[1] + 5)  # one stamp per step
    gen = loaded.decode(inputs, out)
    assert gen.tokens_per_seq == [5, 5]

    ids = inputs["input_ids"][0].tolist()
    logits = loaded.window_logits(ids)
    assert logits.shape == (len(ids), loaded.config.vocab_size)
    with torch.inference_mode():
        direct = loaded.model(input_ids=torch.tensor([ids])).logits[0]
    assert torch.equal(logits, direct)
