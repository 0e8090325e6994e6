"""The package's imports point one way and no module dodges a cycle with a local import."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "xarray_nifti"
MODULES = sorted(PACKAGE.glob("*.py"))
# Modules that sit on top: nothing else in the package may import them.
TOP = {"accessor", "cli"}


def _relative_imports(tree: ast.AST) -> list[tuple[ast.ImportFrom, bool]]:
    """Every ``from . import`` / ``from .x import`` with whether it sits inside a function."""
    found: list[tuple[ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom) and child.level > 0:
                found.append((child, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_no_function_level_imports_of_own_modules(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    local = [node.lineno for node, in_function in _relative_imports(tree) if in_function]
    assert local == [], f"{path.name} imports package modules inside functions at lines {local}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_lower_modules_never_import_the_top(path: Path) -> None:
    if path.stem in TOP or path.stem == "__init__":
        return
    tree = ast.parse(path.read_text(), filename=str(path))
    imported = {
        (node.module or "").split(".")[0] or alias.name
        for node, _ in _relative_imports(tree)
        for alias in node.names
    }
    assert not imported & TOP, f"{path.name} imports {sorted(imported & TOP)}"


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = set()
        for node, _ in _relative_imports(tree):
            if node.module:
                targets.add(node.module.split(".")[0])
            else:
                targets.update(alias.name for alias in node.names)
        graph[path.stem] = targets - {path.stem}

    def cycle_from(start: str) -> list[str] | None:
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return [*trail, start]
                if nxt not in trail:
                    stack.append((nxt, [*trail, nxt]))
        return None

    cycles = [c for name in graph if (c := cycle_from(name))]
    assert cycles == [], f"import cycles: {cycles}"


def test_module_map_in_the_contributing_page_matches_the_imports() -> None:
    page = (PACKAGE.parents[1] / "docs" / "contributing.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ") and "`" in line]
    layer_of: dict[str, int] = {}
    for number, row in enumerate(rows):
        for name in re.findall(r"`([a-z_]+)`", row.split("|")[2]):
            layer_of[name] = number
    modules = {path.stem for path in MODULES} - {"__init__"}
    assert modules - set(layer_of) == set(), "modules missing from the module map"
    upward = []
    for path in MODULES:
        if path.stem == "__init__":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, _ in _relative_imports(tree):
            names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            upward += [
                (path.stem, name)
                for name in names
                if name in layer_of and layer_of[name] > layer_of[path.stem]
            ]
    assert upward == [], f"imports that point down the module map: {upward}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_modules_stay_small_enough_to_read(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= 500, f"{path.name} has {lines} lines: split a concept into its own module"
