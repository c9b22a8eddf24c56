"""The house's structural rules, read from the source: no import cycle among validate's modules, the
layers import only downwards, and ``import validate`` stays cheap (the pipeline is loaded on first use,
not on import).

The layers (the house rule; :data:`LAYERS`):

- **core** (``validate.numerics``, ``.errors``, ``.escape``, ``.groups``, ``.contract``): plain helpers
  and the bundle contract. They import no engine and no presentation module.
- **engine** (``validate.analysis``, ``.metrics``, ``.calibrators``, ``.scoring``, ``.predictions``,
  ``.cohort``, ``.protocol``): reads cases and predictions, computes. It imports no presentation module
  (``validate.report``, ``validate.charts``, ``validate.view``, ``dashboard``) and not the CLI
  (``validate.cli``, ``validate.commands``): a notebook can use it without either.
- **presentation** (``dashboard``, ``validate.report``, ``validate.charts``, ``validate.charts_segmentation``,
  ``validate.view``): reads bundles. It imports no engine internals: not ``validate.analysis``,
  ``.scoring``, ``.calibrators``, ``.cohort``, nor ``validate.metrics`` other than
  ``validate.metrics.registry`` (the metric declarations: names, labels, directions). Whatever it shows is
  computed at run time into the bundle; images reach it through ``validate.thumbnails``, the one display
  decoder shared with ``validate run``.

Import edges are collected with :mod:`ast` from every ``import validate...`` / ``from validate... import``
in a module, at module level AND inside functions (a function-level import hides a cycle from Python's
import machinery, not from a reader). Imports under ``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "validate"
DASHBOARD = ROOT / "dashboard"


# ---- the import graph --------------------------------------------------------------------------------


def package_modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its ``__init__``)."""
    out = {}
    for file in sorted(package.rglob("*.py")):
        parts = list(file.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = file
    return out


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node at any depth, except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if _is_type_checking(node):
            children = list(node.orelse)  # the else branch does run
        stack.extend(children)


def import_edges(module: str, source: str, modules, *, is_package: bool = False, root: str = "validate") -> set[str]:
    """The modules of ``modules`` that ``module`` imports. ``from a.b import c`` is an edge to ``a.b.c``
    when that is a module, else to ``a.b``; a name below any known module goes to its nearest known
    ancestor."""

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges = set()
    for node in _imports(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module or ""
            targets = [f"{parent}.{a.name}" if f"{parent}.{a.name}" in modules else parent for a in node.names]
        for t in targets:
            if t == root or t.startswith(root + "."):
                target = known(t)
                if target and target != module:
                    edges.add(target)
    return edges


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = package_modules(package)
    return {
        m: import_edges(m, f.read_text(), modules, is_package=f.name == "__init__.py", root=package.name)
        for m, f in modules.items()
    }


def house_graph(packages: tuple[Path, ...] = (PACKAGE, DASHBOARD)) -> dict[str, set[str]]:
    """The import graph of validate and the dashboard together (edges within and between them)."""
    modules: dict[str, Path] = {}
    for package in packages:
        modules.update(package_modules(package))
    graph: dict[str, set[str]] = {}
    for m, f in modules.items():
        source = f.read_text()
        graph[m] = set().union(
            *(import_edges(m, source, modules, is_package=f.name == "__init__.py", root=p.name) for p in packages)
        )
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per back edge of a depth-first search (``[a, b, ..., a]``); empty when the graph is
    acyclic (a DFS finds a back edge if and only if there is a cycle)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                cycles.append(path[path.index(w) :] + [w])
            elif w not in state:
                visit(w)
        path.pop()
        state[v] = 2

    for v in sorted(graph):
        if v not in state:
            visit(v)
    return cycles


# ---- the finder finds what it must (else "no cycle" would prove nothing) ------------------------------


def test_edges_include_function_level_imports_and_skip_type_checking_ones():
    modules = {"validate", "validate.a", "validate.b", "validate.c", "validate.d", "validate.pkg", "validate.pkg.e"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "from validate.b import thing\n"
        "def f():\n"
        "    from validate import c\n"
        "    import validate.pkg.e.deeper\n"
        "if TYPE_CHECKING:\n"
        "    from validate.d import T\n"
    )
    assert import_edges("validate.a", source, modules) == {"validate.b", "validate.c", "validate.pkg.e"}
    assert import_edges("validate.pkg", "from . import e\nfrom .. import a\n", modules, is_package=True) == {
        "validate.pkg.e",
        "validate.a",
    }


def test_find_cycles_sees_a_cycle_hidden_in_a_function():
    modules = {"validate.x", "validate.y", "validate.z"}
    graph = {
        "validate.x": import_edges("validate.x", "from validate.y import f\n", modules),
        "validate.y": import_edges("validate.y", "def g():\n    from validate.x import h\n", modules),
        "validate.z": import_edges("validate.z", "import validate.x\n", modules),
    }
    assert find_cycles(graph) == [["validate.x", "validate.y", "validate.x"]]
    graph["validate.y"] = set()
    assert find_cycles(graph) == []


def test_the_graph_holds_known_edges_of_this_package():
    graph = import_graph()
    assert "validate.groups" in graph["validate.analysis.subgroups"]  # module level
    assert "validate.predictions" in graph["validate.analysis.subgroups"]  # inside a function
    assert "validate.scoring" in graph["validate.pipeline"]  # inside load_predictions
    assert "validate.groups" in graph["validate.analysis.sites"]


# ---- the rules -------------------------------------------------------------------------------------


def test_no_import_cycle_in_the_analysis_package():
    graph = import_graph()
    analysis = {
        m: {e for e in edges if e.startswith("validate.analysis")}
        for m, edges in graph.items()
        if m.startswith("validate.analysis")
    }
    assert find_cycles(analysis) == []


# Known debt, listed so that nothing else can join it (empty: the house has no import cycle today).
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()


def test_no_import_cycle_in_validate():
    graph = {m: {e for e in edges if (m, e) not in KNOWN_CYCLE_EDGES} for m, edges in import_graph().items()}
    assert find_cycles(graph) == []
    # the exception is still needed (remove it from KNOWN_CYCLE_EDGES once the cycle is gone)
    assert all(e in import_graph()[m] for m, e in KNOWN_CYCLE_EDGES)


# ---- the layers ----------------------------------------------------------------------------------


def _in(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


CORE = ("validate.numerics", "validate.errors", "validate.escape", "validate.groups", "validate.contract")
ENGINE = (
    "validate.analysis",
    "validate.metrics",
    "validate.calibrators",
    "validate.scoring",
    "validate.predictions",
    "validate.cohort",
    "validate.protocol",
)
PRESENTATION = ("dashboard", "validate.report", "validate.charts", "validate.charts_segmentation", "validate.view")
CLI = ("validate.cli", "validate.commands")
ENGINE_INTERNALS = (
    "validate.analysis",
    "validate.scoring",
    "validate.calibrators",
    "validate.cohort",
    "validate.metrics",
)
SHARED_WITH_PRESENTATION = ("validate.metrics.registry",)

# layer: (who, what they may not import, what is allowed among those anyway)
LAYERS = {
    "core": (CORE, ENGINE + PRESENTATION + CLI, ()),
    "engine": (ENGINE, PRESENTATION + CLI, ()),
    "presentation": (PRESENTATION, ENGINE_INTERNALS, SHARED_WITH_PRESENTATION),
}

# Known exceptions to the layer rule, listed so that nothing else can join them (empty today; the list may
# only shrink: the test fails when an exception listed here is no longer needed).
KNOWN_LAYER_EXCEPTIONS: set[tuple[str, str]] = set()


def layer_violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """``(module, imported)`` for every edge that breaks a rule of :data:`LAYERS`."""
    out = set()
    for who, forbidden, allowed in LAYERS.values():
        for module, edges in graph.items():
            if not _in(module, who):
                continue
            out |= {(module, e) for e in edges if _in(e, forbidden) and not _in(e, allowed)}
    return out


def test_layer_rule_sees_a_forbidden_import_at_any_depth():
    graph = house_graph()
    modules = {**package_modules(PACKAGE), **package_modules(DASHBOARD)}
    for source in (
        "import validate.analysis.sites\n",
        "def page():\n    from validate.analysis import sites\n",
        "from validate.metrics.blocks import binary_block\n",
        "from validate.scoring import inputs\n",
    ):
        edges = set().union(
            *(import_edges("dashboard.tables", source, modules, root=r) for r in ("validate", "dashboard"))
        )
        broken = layer_violations({**graph, "dashboard.tables": graph["dashboard.tables"] | edges})
        assert {("dashboard.tables", e) for e in edges} <= broken and edges, source
    # the registry is shared with presentation; the engine may not reach up to the report or the CLI
    assert layer_violations({"validate.charts": {"validate.metrics.registry"}}) == set()
    assert layer_violations(
        {
            "validate.analysis.sites": {"validate.report.render", "validate.commands.run"},
            "validate.contract": {"validate.predictions"},
        }
    ) == {
        ("validate.analysis.sites", "validate.report.render"),
        ("validate.analysis.sites", "validate.commands.run"),
        ("validate.contract", "validate.predictions"),
    }


def test_layers_import_only_what_the_house_rule_allows():
    broken = layer_violations(house_graph())
    assert broken - KNOWN_LAYER_EXCEPTIONS == set(), "imports across the layers (see this module's docstring)"
    # the exceptions are still needed: remove each from KNOWN_LAYER_EXCEPTIONS once its import is gone
    assert KNOWN_LAYER_EXCEPTIONS - broken == set(), "no longer needed: remove from KNOWN_LAYER_EXCEPTIONS"


HEAVY = ("torch", "netcal", "pandas", "scipy", "sklearn")


def _loaded_after(code: str) -> list[str]:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_validate_loads_no_numerical_library():
    assert _loaded_after(f"import validate\nassert validate.__file__.startswith({str(PACKAGE)!r})") == []
    # the pipeline's entry point itself is cheap to import: its stages load what they need when run
    assert _loaded_after("from validate import run_protocol, RunResult") == []
