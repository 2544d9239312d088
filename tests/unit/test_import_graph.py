"""The import graph of idp/ has no cycle.

The graph is read from the source with ``ast``, not from ``sys.modules``: every import statement
counts, including those inside functions (a function-local import only postpones a cycle to the
first call; it does not remove it). Relative imports are resolved against the importing module,
and ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
Importing a submodule also runs its package's ``__init__``, but that implied edge is left out:
it would make every package with a submodule that its ``__init__`` imports a cycle by
definition. Imports under ``if TYPE_CHECKING:`` are left out too: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "idp"


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree`` at any depth, except under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Edges from each module of the package at ``root`` to the modules of it that it imports."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    # "from . import x" in a package is relative to the package itself; in a
                    # plain module, to the package that holds it.
                    anchor = name.split(".")
                    drop = node.level - 1 if is_package else node.level
                    base = ".".join(anchor[: len(anchor) - drop] if drop else anchor)
                    source = f"{base}.{node.module}" if node.module else base
                else:
                    source = node.module or ""
                targets = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    for alias in node.names
                ]
            for target in targets:
                # "import idp.a.b" names a module; the nearest enclosing module that exists is
                # the one imported (a name that is no module of idp is left out).
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan's
    algorithm, then a shortest cycle through the component's first module, for the message)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_shortest_cycle(graph, set(component), component[0]) for component in components]


def _shortest_cycle(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A shortest path from ``start`` back to itself inside one component (breadth first)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & members):
                if successor == start:
                    return [*paths[node], start]
                if successor not in paths:
                    paths[successor] = [*paths[node], successor]
                    following.append(successor)
        frontier = following
    raise AssertionError(f"{start} is in a component without a cycle through it")


def test_idp_has_no_import_cycle() -> None:
    cycles = find_cycles(import_graph(PACKAGE_ROOT))
    assert not cycles, "import cycles in idp/:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_a_function_local_import_that_closes_a_cycle_is_found(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg import b\n",
            "b.py": "def later():\n    from pkg.a import thing\n    return thing\n",
        },
    )
    assert find_cycles(import_graph(root)) == [["pkg.a", "pkg.b", "pkg.a"]]


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        # A relative import from a module of a subpackage.
        (
            {
                "__init__.py": "",
                "sub/__init__.py": "",
                "sub/x.py": "from ..y import f\n",
                "y.py": "import pkg.sub.x\n",
            },
            ["pkg.sub.x", "pkg.y", "pkg.sub.x"],
        ),
        # A blueprint defined in a package's __init__ and imported back by its submodule.
        (
            {
                "__init__.py": "",
                "api/__init__.py": "from . import views\nbp = 1\n",
                "api/views.py": "from pkg.api import bp\n",
            },
            ["pkg.api", "pkg.api.views", "pkg.api"],
        ),
        # Three modules in a ring, one edge inside a method.
        (
            {
                "__init__.py": "",
                "a.py": "import pkg.b\n",
                "b.py": "from pkg.c import C\n",
                "c.py": "class C:\n    def f(self):\n        from . import a\n",
            },
            ["pkg.a", "pkg.b", "pkg.c", "pkg.a"],
        ),
    ],
)
def test_cycles_through_relative_and_package_imports_are_found(
    tmp_path: Path, files: dict[str, str], cycle: list[str]
) -> None:
    assert find_cycles(import_graph(_package(tmp_path, files))) == [cycle]


def test_imports_that_close_no_cycle_are_not_reported(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "from pkg import a\n",
            "a.py": "import json\nfrom pkg.b import f\n",
            "b.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg.a import x\n",
        },
    )
    assert find_cycles(import_graph(root)) == []


def test_settings_import_nothing_from_idp() -> None:
    """Everything may read the settings, so they read nothing of idp: the checks that need the
    services' rules run in the app factory (``idp.load_checked_settings``)."""
    assert import_graph(PACKAGE_ROOT)["idp.settings"] == set()
