"""The house's floors, checked on the import graph built from the source with ``ast`` (issue 20, deliverable 3).

Every module of ``pytest_llmeff`` lives in a room: a folder directly under the package (``stats``, ``engines``,
...), or, for a top-level module, the package root. Each room sits on a floor of ``FLOORS`` (the one table; the
top-level modules are listed by name, since the root holds both the leaves and ``plugin``). A module may import
only from its own folder or from a lower floor. The checks, each reported as the arrow that breaks it:

- no cycle between modules (module-level and function-level imports alike);
- no arrow to a higher floor, nor to another folder on the same floor;
- no import of a private name (``_x``) from another module;
- a function-local import of a ``pytest_llmeff`` module only from ``plugin.py`` (which must stay light) or where
  the target, at module level and transitively, imports a heavy or optional package (``HEAVY``): a local import
  that dodges nothing is a hidden arrow or a dodged cycle.

Imports under ``if TYPE_CHECKING:`` are ignored: they never run. The checker reads a module map (dotted name ->
source text), so the tests at the bottom feed it small synthetic graphs to prove that every check can fail.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import pytest

PACKAGE = "pytest_llmeff"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

# The one table of floors, bottom (0) to top. A name is a folder under the package, or a top-level module.
FLOORS: dict[str, int] = {
    # floor 0: the top-level leaves (defaults and files are planned: they take floor 0 when they exist)
    "errors": 0, "events": 0, "metrics": 0, "hookspec": 0, "defaults": 0, "files": 0,
    "stats": 1,
    "config": 2,
    "results": 3,
    "measure": 4,
    "engines": 5,
    "lockstep": 6,
    "gate": 7,
    "report": 8,
    "bench": 9,
    "scale": 10,
    "session": 11,
    "cli": 12,
    "plugin": 13,  # hooks only; imports its floors lazily to stay light
}
PLANNED = frozenset({"defaults", "files"})  # in the table before they exist on disk
MAX_TOP_LEVEL_MODULES = 8

# Packages heavy to import or optional: only these justify a function-local import of a pytest_llmeff module.
HEAVY = frozenset({
    "torch", "transformers", "accelerate", "bitsandbytes", "pydantic", "scipy", "numpy", "plotly", "kaleido",
    "codecarbon", "pynvml", "llama_cpp", "ctranslate2", "onnxruntime_genai", "xdist", "ruptures", "tabulate",
    "questionary",
})
LIGHT_IMPORTERS = frozenset({f"{PACKAGE}.plugin"})  # may import anything lazily: pytest loads them at startup


@dataclass(frozen=True)
class Arrow:
    """One import of a pytest_llmeff module: ``importer`` (dotted) imports ``target`` (dotted) at ``line``;
    ``local`` when the import statement sits inside a function body."""

    importer: str
    target: str
    line: int
    local: bool

    def __str__(self) -> str:
        where = "function-local" if self.local else "module-level"
        return f"{self.importer}:{self.line} -> {self.target} ({where})"


@dataclass
class ModuleFacts:
    """What one module's source says: its arrows, the external top-level packages it imports at module level,
    and the private names it imports from other pytest_llmeff modules (as (line, target, name))."""

    arrows: list[Arrow] = field(default_factory=list)
    external: set[str] = field(default_factory=set)
    private: list[tuple[int, str, str]] = field(default_factory=list)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve_base(importer: str, is_package: bool, module: str | None, level: int) -> str:
    """The absolute dotted name of ``from <level dots><module> import ...`` written in ``importer``."""
    if level == 0:
        return module or ""
    parts = importer.split(".")
    if not is_package:
        parts = parts[:-1]
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([module] if module else []))


def read_module(name: str, source: str, modules: Iterable[str], is_package: bool = False) -> ModuleFacts:
    """Parse one module's source and collect its facts; ``modules`` is the set of known dotted names (used to
    tell ``from pkg import submodule`` from ``from module import name``)."""
    known = set(modules)
    facts = ModuleFacts()

    def add(target: str, line: int, local: bool) -> None:
        arrow = Arrow(name, target, line, local)
        if target != name and arrow not in facts.arrows:  # `from m import a, b` is one arrow
            facts.arrows.append(arrow)

    def visit(node: ast.AST, local: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, local)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    add(alias.name, node.lineno, local)
                elif not local:
                    facts.external.add(alias.name.split(".")[0])
            return
        if isinstance(node, ast.ImportFrom):
            base = _resolve_base(name, is_package, node.module, node.level)
            if base == PACKAGE or base.startswith(PACKAGE + "."):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in known:
                        add(sub, node.lineno, local)
                    else:
                        add(base, node.lineno, local)
                        if _is_private(alias.name) and base != name:
                            facts.private.append((node.lineno, base, alias.name))
            elif not local and base:
                facts.external.add(base.split(".")[0])
            return
        if isinstance(node, ast.Call):  # importlib.import_module("pytest_llmeff.x") with a literal name
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if (fname == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str) and node.args[0].value.startswith(PACKAGE)):
                add(node.args[0].value, node.lineno, local)
        inner = local or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source, filename=name), False)
    return facts


def room_of(module: str, packages: Iterable[str] = ()) -> tuple[str, str]:
    """(folder, table name) of a dotted module name; ``packages`` names the modules that are folders (their
    __init__). The folder is "" for the package root's own modules."""
    parts = module.split(".")[1:]
    if not parts:
        return "", ""  # the package's __init__: the root, floor 0
    if len(parts) == 1 and module not in packages:
        return "", parts[0]
    return parts[0], parts[0]


def floor_of(module: str, floors: Mapping[str, int], packages: Iterable[str] = ()) -> int | None:
    _, name = room_of(module, packages)
    return 0 if name == "" else floors.get(name)


class Graph:
    """The import graph of a module map (dotted name -> source). ``violations()`` lists every broken rule."""

    def __init__(self, sources: Mapping[str, str], floors: Mapping[str, int] = FLOORS,
                 heavy: frozenset[str] = HEAVY, light_importers: frozenset[str] = LIGHT_IMPORTERS):
        self.floors = floors
        self.heavy = heavy
        self.light_importers = light_importers
        names = set(sources)
        packages = {n for n in names if any(o.startswith(n + ".") for o in names)}
        self.facts = {n: read_module(n, src, names, n in packages) for n, src in sources.items()}
        self.names = names
        self.packages = packages

    @property
    def arrows(self) -> list[Arrow]:
        return [a for f in self.facts.values() for a in f.arrows]

    def unresolved(self) -> list[str]:
        return [f"no such module: {a}" for a in self.arrows if a.target not in self.names]

    def cycles(self) -> list[str]:
        """One named cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
        edges: dict[str, list[str]] = {n: [] for n in self.names}
        for a in self.arrows:
            if a.target in self.names and a.target not in edges[a.importer]:
                edges[a.importer].append(a.target)
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        components: list[list[str]] = []

        def strong(v: str) -> None:  # recursion depth is bounded by the module count (a few hundred)
            index[v] = low[v] = len(index)
            stack.append(v)
            on_stack.add(v)
            for w in edges[v]:
                if w not in index:
                    strong(w)
                    low[v] = min(low[v], low[w])
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    components.append(comp)

        for v in sorted(self.names):
            if v not in index:
                strong(v)
        out = []
        for comp in components:
            members = set(comp)
            start = min(comp)
            path = self._path_back(start, members, edges)
            out.append("cycle: " + " -> ".join(path) + f"  ({len(comp)} modules in the circle: "
                       + ", ".join(sorted(m.removeprefix(PACKAGE + ".") for m in comp)) + ")")
        return sorted(out)

    @staticmethod
    def _path_back(start: str, members: set[str], edges: Mapping[str, list[str]]) -> list[str]:
        """The shortest path start -> ... -> start inside one strongly connected component."""
        prev: dict[str, str] = {}
        frontier = [start]
        seen = {start}
        while frontier:
            nxt = []
            for v in frontier:
                for w in edges[v]:
                    if w == start:
                        path = [start]
                        node = v
                        while node != start:
                            path.append(node)
                            node = prev[node]
                        return [start] + path[1:][::-1] + [start]
                    if w in members and w not in seen:
                        seen.add(w)
                        prev[w] = v
                        nxt.append(w)
            frontier = nxt
        return [start]

    def floor_breaks(self) -> list[str]:
        out = []
        for a in self.arrows:
            if a.target not in self.names:
                continue
            src = floor_of(a.importer, self.floors, self.packages)
            dst = floor_of(a.target, self.floors, self.packages)
            if src is None or dst is None:
                missing = a.importer if src is None else a.target
                out.append(f"no floor for {room_of(missing, self.packages)[1]!r}: {a}")
            elif dst > src:
                out.append(f"upward (floor {src} -> {dst}): {a}")
            elif dst == src and room_of(a.importer, self.packages)[0] != room_of(a.target, self.packages)[0]:
                out.append(f"sideways (floor {src}, another folder): {a}")
        return out

    def private_imports(self) -> list[str]:
        return [f"private name {nm!r} of {target} imported: {importer}:{line}"
                for importer, f in self.facts.items() for line, target, nm in f.private]

    def heavy_at_import(self, module: str) -> set[str]:
        """The heavy packages that importing ``module`` loads: its module-level imports, its parent packages'
        and, transitively, those of every pytest_llmeff module they import at module level."""
        seen: set[str] = set()
        todo = [module]
        found: set[str] = set()
        while todo:
            m = todo.pop()
            if m in seen or m not in self.facts:
                continue
            seen.add(m)
            found |= self.facts[m].external & self.heavy
            parent = m.rpartition(".")[0]
            if parent:
                todo.append(parent)
            todo.extend(a.target for a in self.facts[m].arrows if not a.local)
        return found

    def unjustified_local_imports(self) -> list[str]:
        out = []
        for a in self.arrows:
            if not a.local or a.importer in self.light_importers or a.target not in self.names:
                continue
            if not self.heavy_at_import(a.target):
                out.append(f"function-local import that defers nothing heavy: {a}")
        return out

    def violations(self) -> list[str]:
        return (self.unresolved() + self.cycles() + self.floor_breaks() + self.private_imports()
                + self.unjustified_local_imports())


def table_vs_disk(folders: Iterable[str], top_modules: Iterable[str], floors: Mapping[str, int] = FLOORS,
                  planned: frozenset[str] = PLANNED, max_top: int = MAX_TOP_LEVEL_MODULES) -> list[str]:
    """Problems between the table and the package on disk: a folder or top-level module without a floor, a
    table entry that exists nowhere (other than a planned one), and too many top-level modules."""
    folders, top_modules = set(folders), set(top_modules)
    out = [f"folder {f!r} has no floor in FLOORS" for f in sorted(folders - set(floors))]
    out += [f"top-level module {m!r} has no floor in FLOORS" for m in sorted(top_modules - set(floors))]
    out += [f"FLOORS names {n!r}, which is neither a folder nor a top-level module"
            for n in sorted(set(floors) - folders - top_modules - planned)]
    if len(top_modules) > max_top:
        out.append(f"{len(top_modules)} top-level modules (at most {max_top}): {sorted(top_modules)}")
    return out


def package_sources(root: Path = PACKAGE_DIR) -> dict[str, str]:
    """The module map of the package on disk: dotted name -> source."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path.read_text(encoding="utf-8")
    return out


def disk_layout(root: Path = PACKAGE_DIR) -> tuple[set[str], set[str]]:
    """(folders holding Python modules, top-level module names without __init__) of the package on disk."""
    folders = {p.name for p in root.iterdir() if p.is_dir() and any(p.rglob("*.py"))}
    top = {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    return folders, top


def _report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n" + "\n".join(problems)


# ---- the real tree ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> Graph:
    return Graph(package_sources())


def test_the_floor_table_matches_the_folders_on_disk():
    problems = table_vs_disk(*disk_layout())
    assert not problems, _report(problems)


def test_every_import_resolves_to_a_module(graph):
    problems = graph.unresolved()
    assert not problems, _report(problems)


def test_no_cycle_between_modules(graph):
    problems = graph.cycles()
    assert not problems, _report(problems)


def test_imports_go_only_downward_or_within_the_folder(graph):
    problems = graph.floor_breaks()
    assert not problems, _report(problems)


def test_no_private_name_is_imported_from_another_module(graph):
    problems = graph.private_imports()
    assert not problems, _report(problems)


def test_function_local_imports_only_defer_heavy_packages(graph):
    problems = graph.unjustified_local_imports()
    assert not problems, _report(problems)


def test_the_graph_is_read_from_the_real_tree(graph):
    """The checks above see the package: it has arrows, both kinds, and modules on many floors."""
    arrows = graph.arrows
    assert len(graph.names) > 50 and len(arrows) > 100
    assert any(a.local for a in arrows) and any(not a.local for a in arrows)
    assert {floor_of(m, FLOORS, graph.packages) for m in graph.names} == set(range(14))
    assert "pydantic" in graph.heavy_at_import(f"{PACKAGE}.results.schema")


# ---- every check can fail: small synthetic graphs -----------------------------------------------------------


def _pkg(**modules: str) -> dict[str, str]:
    """A fake module map: keyword names use "__" for dots (``engines__base`` -> pytest_llmeff.engines.base);
    every folder gets an empty __init__."""
    out = {PACKAGE: ""}
    for key, src in modules.items():
        name = f"{PACKAGE}." + key.replace("__", ".")
        out[name] = src
        parts = name.split(".")
        for i in range(2, len(parts)):
            out.setdefault(".".join(parts[:i]), "")
    return out


def test_a_clean_graph_has_no_violation():
    g = Graph(_pkg(
        errors="class E(Exception): pass\n",
        stats__intervals="from pytest_llmeff.errors import E\nimport numpy\n",
        config__options="from pytest_llmeff.stats import intervals\n",
        engines__base="from pytest_llmeff.config.options import x\nfrom pytest_llmeff.engines import cache\n",
        engines__cache="import os\n",
        plugin="def hook():\n    from pytest_llmeff.engines.base import y\n",
        bench__measure="def f():\n    from pytest_llmeff.stats.intervals import ci\n",  # numpy: heavy
    ))
    assert g.violations() == []
    assert {str(a) for a in g.arrows} >= {
        "pytest_llmeff.config.options:1 -> pytest_llmeff.stats.intervals (module-level)",
        "pytest_llmeff.engines.base:2 -> pytest_llmeff.engines.cache (module-level)",
        "pytest_llmeff.bench.measure:2 -> pytest_llmeff.stats.intervals (function-local)",
    }


def test_a_cycle_is_named_arrow_by_arrow():
    g = Graph(_pkg(
        engines__base="from pytest_llmeff.engines.cache import c\n",
        engines__cache="def f():\n    from pytest_llmeff.engines import sources\n",
        engines__sources="import torch\nimport pytest_llmeff.engines.base\n",
    ))
    assert g.cycles() == ["cycle: pytest_llmeff.engines.base -> pytest_llmeff.engines.cache -> "
                          "pytest_llmeff.engines.sources -> pytest_llmeff.engines.base  (3 modules in the circle: "
                          "engines.base, engines.cache, engines.sources)"]
    assert g.floor_breaks() == []  # one folder: only the cycle check catches it


def test_an_upward_arrow_and_a_sideways_one_are_named():
    floors = dict(FLOORS, lockstep2=FLOORS["lockstep"])
    g = Graph(_pkg(
        config__variants="from pytest_llmeff.engines.base import ENGINES\n",
        lockstep__ab="from pytest_llmeff.lockstep2.x import y\n",
        lockstep2__x="y = 1\n",
        engines__base="ENGINES = {}\n",
        errors="from pytest_llmeff import plugin\n",
        plugin="",
    ), floors=floors)
    assert sorted(g.floor_breaks()) == [
        "sideways (floor 6, another folder): pytest_llmeff.lockstep.ab:1 -> pytest_llmeff.lockstep2.x (module-level)",
        "upward (floor 0 -> 13): pytest_llmeff.errors:1 -> pytest_llmeff.plugin (module-level)",
        "upward (floor 2 -> 5): pytest_llmeff.config.variants:1 -> pytest_llmeff.engines.base (module-level)",
    ]


def test_a_function_local_upward_arrow_counts_too():
    g = Graph(_pkg(stats__intervals="def f():\n    import pytest_llmeff.report.terminal\n",
                   report__terminal="import tabulate\n"))
    assert g.floor_breaks() == ["upward (floor 1 -> 8): pytest_llmeff.stats.intervals:2 -> "
                                "pytest_llmeff.report.terminal (function-local)"]


def test_a_module_without_a_floor_is_named():
    g = Graph(_pkg(attic__old="x = 1\n", bench__measure="from pytest_llmeff.attic.old import x\n"))
    assert g.floor_breaks() == ["no floor for 'attic': pytest_llmeff.bench.measure:1 -> "
                                "pytest_llmeff.attic.old (module-level)"]


def test_a_private_name_from_another_module_is_named():
    g = Graph(_pkg(
        measure__timing="def _clock(): pass\n__all__ = []\n",
        bench__measure="from pytest_llmeff.measure.timing import _clock, __all__\n",
        measure__memory="from pytest_llmeff.measure import timing\n",
    ))
    assert g.private_imports() == ["private name '_clock' of pytest_llmeff.measure.timing imported: "
                                   "pytest_llmeff.bench.measure:1"]


def test_a_local_import_that_defers_nothing_heavy_is_named():
    g = Graph(_pkg(
        results__schema="import json\n",
        results__storage="from pytest_llmeff.results import schema\n",
        measure__flops="import pytest_llmeff.results.deep\n",
        results__deep="import pydantic\n",
        bench__record="def f():\n    from pytest_llmeff.results import storage\n"
                      "def g():\n    from pytest_llmeff.measure import flops\n",  # transitively pydantic: fine
        plugin="def h():\n    from pytest_llmeff.results import storage\n",  # plugin: fine
    ))
    assert g.unjustified_local_imports() == [
        "function-local import that defers nothing heavy: pytest_llmeff.bench.record:2 -> "
        "pytest_llmeff.results.storage (function-local)"]


def test_type_checking_imports_are_ignored_and_else_branches_are_not():
    g = Graph(_pkg(
        stats__intervals="from typing import TYPE_CHECKING\nimport typing\n"
                         "if TYPE_CHECKING:\n    from pytest_llmeff.cli.app import main\n"
                         "if typing.TYPE_CHECKING:\n    import pytest_llmeff.plugin\n"
                         "else:\n    from pytest_llmeff.errors import E\n",
        cli__app="main = 1\n", plugin="", errors="class E(Exception): pass\n",
    ))
    assert [str(a) for a in g.facts[f"{PACKAGE}.stats.intervals"].arrows] == [
        "pytest_llmeff.stats.intervals:8 -> pytest_llmeff.errors (module-level)"]


def test_relative_imports_and_literal_import_module_are_arrows():
    g = Graph(_pkg(
        gate__verdicts="from . import drift\nfrom ..report.terminal import t\n",
        gate__drift="import importlib\ndef f():\n    importlib.import_module('pytest_llmeff.cli.app')\n",
        report__terminal="t = 1\n", cli__app="",
    ))
    assert sorted(str(a) for a in g.arrows) == [
        "pytest_llmeff.gate.drift:3 -> pytest_llmeff.cli.app (function-local)",
        "pytest_llmeff.gate.verdicts:1 -> pytest_llmeff.gate.drift (module-level)",
        "pytest_llmeff.gate.verdicts:2 -> pytest_llmeff.report.terminal (module-level)",
    ]


def test_an_import_of_a_module_that_does_not_exist_is_named():
    g = Graph(_pkg(bench__measure="from pytest_llmeff.backends.engine import spec\n"))
    assert g.unresolved() == ["no such module: pytest_llmeff.bench.measure:1 -> pytest_llmeff.backends.engine "
                              "(module-level)"]


def test_the_table_check_names_a_new_folder_a_stale_entry_and_too_many_top_level_modules():
    assert table_vs_disk({"stats", "spec"}, {"errors"}, floors={"stats": 1, "spec": 2, "errors": 0}) == []
    assert table_vs_disk({"stats", "spec", "attic"}, {"errors", "glue"}, floors={"stats": 1, "errors": 0, "old": 3},
                         planned=frozenset()) == [
        "folder 'attic' has no floor in FLOORS",
        "folder 'spec' has no floor in FLOORS",
        "top-level module 'glue' has no floor in FLOORS",
        "FLOORS names 'old', which is neither a folder nor a top-level module",
    ]
    many = {f"m{i}" for i in range(9)}
    assert table_vs_disk(set(), many, floors={m: 0 for m in many}) == [
        f"9 top-level modules (at most 8): {sorted(many)}"]
