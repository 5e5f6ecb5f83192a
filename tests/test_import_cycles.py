"""No import cycles among tinywarden's modules, found statically from the source (no import is executed).

An edge ``a -> b`` is any import statement in ``a`` (at module level or inside a function: a lazy import
still has to succeed at run time) and any string constant naming a tinywarden module (``import_module``
tables such as ``codegen.EXPORTERS``); imports under ``if TYPE_CHECKING:`` are left out. Importing
``x.y.z`` also runs the packages ``x.y`` and ``x`` first, so those are edges too, except packages that
contain ``a`` itself (they are already being imported when ``a`` runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

import tinywarden

ROOT = Path(tinywarden.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imported(name: str, path: Path, known: set[str]) -> set[str]:
    """Every tinywarden module ``name`` (defined in ``path``) imports, with the packages that run first."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            targets.add(base)
            targets.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            mod = node.value.split(":")[0]
            if mod in known and mod != name:
                targets.add(mod)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1 + is_pkg)}
    out = set()
    for t in targets:
        parts = t.split(".")
        for i in range(1, len(parts) + 1):
            m = ".".join(parts[:i])
            if m in known and m not in own and m != name:
                out.add(m)
    return out


def import_graph() -> dict[str, set[str]]:
    """``module -> the tinywarden modules it imports`` for every module of the installed package."""
    mods = _modules()
    return {name: _imported(name, path, set(mods)) for name, path in mods.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_checker_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_imports_and_parent_packages() -> None:
    g = import_graph()
    assert "tinywarden.codegen.c" in g["tinywarden.codegen"]  # via the EXPORTERS string table
    assert "tinywarden.quantize" in g["tinywarden.cli.core"]  # a function-level import


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)
