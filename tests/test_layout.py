"""Package layout: the library never loads the command line, and no import cycle.

`piconn.commands` (the command line) imports the library; library modules
(`piconn.nn`, `train`, `lower`, ...) import nothing from it. Imports at module
level form a graph without cycles, and none is hidden in a function either:
with the imports inside functions added, the graph stays acyclic (an import
moved into a function to dodge a cycle is the cycle still there).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import piconn

PACKAGE = Path(piconn.__file__).resolve().parent
COMMANDS = "piconn.commands"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
# Everything but the command line and `python -m piconn`, which runs it.
LIBRARY = sorted(m for m in MODULES if not (m == COMMANDS or m.startswith(COMMANDS + "."))
                 and m != "piconn.__main__")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The piconn modules an import statement in `module` loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "piconn"]
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    if node.level:
        base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    if base.split(".")[0] != "piconn":
        return []
    # `from P import name`: the submodule P.name when there is one, else P itself.
    return sorted({f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                   for a in node.names})


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(piconn modules imported at module level, piconn modules imported inside functions)."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    top: set[str] = set()
    local: set[str] = set()

    def visit(nodes: list[ast.stmt], in_function: bool) -> None:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                (local if in_function else top).update(_targets(node, module))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(node.body, True)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                continue  # never runs
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit([n for n in getattr(node, field, []) if isinstance(n, ast.AST)],
                          in_function)

    visit(tree.body, False)
    return top - {module}, local - {module}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_the_package_is_what_this_test_expects():
    assert {"piconn.nn", "piconn.train", "piconn.lower", "piconn.xnor", "piconn.reference",
            "piconn.export", "piconn.format", "piconn.ir"} <= set(LIBRARY)
    assert {COMMANDS, f"{COMMANDS}.common", f"{COMMANDS}.train"} <= set(MODULES)
    assert COMMANDS not in LIBRARY


@pytest.mark.parametrize("module", LIBRARY)
def test_library_module_does_not_load_the_command_line(module):
    """Imported alone in a fresh interpreter, a library module leaves piconn.commands unloaded."""
    code = (f"import sys, {module}\n"
            f"print(sorted(m for m in sys.modules if m == {COMMANDS!r} "
            f"or m.startswith({COMMANDS + '.'!r})))")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"{module} loads {proc.stdout.strip()}"


def test_the_command_line_does_load_in_the_same_check():
    """The check above can fail: importing the command line is seen by it."""
    code = f"import sys, {COMMANDS}\nprint({COMMANDS + '.common'!r} in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr


def test_module_level_imports_are_acyclic():
    graph = {m: _imports(m)[0] for m in MODULES}
    # the parser sees real edges (relative, absolute, `from .. import x`)
    assert "piconn.xnor" in graph["piconn.lower"]
    assert "piconn.format" in graph["piconn.reference"]
    assert "piconn.prune" in graph[f"{COMMANDS}.prune"]
    assert f"{COMMANDS}.common" in graph[f"{COMMANDS}.train"]
    for m in LIBRARY:
        assert not any(t == COMMANDS or t.startswith(COMMANDS + ".") for t in graph[m]), m
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_cycle_hidden_in_a_function():
    graph = {m: set().union(*_imports(m)) for m in MODULES}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
