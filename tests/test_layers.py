"""The package's layers, read from its import statements (top-level and inside functions alike).

- ``data`` imports no models, ``filters`` no training, ``report`` no training;
- nothing but the entry point imports the command line;
- no two modules import each other, directly or through others;
- an import inside a function says why, in a comment on its line or above its block.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"

#: (importer prefix, imported prefix): the importer's modules may not import the other's.
FORBIDDEN = [
    ("img2img_filters.data", "img2img_filters.models"),
    ("img2img_filters.data", "img2img_filters.train"),
    ("img2img_filters.filters", "img2img_filters.train"),
    ("img2img_filters.filters", "img2img_filters.models"),
    ("img2img_filters.report", "img2img_filters.train"),
    ("img2img_filters.models", "img2img_filters.train"),
]


def _modules() -> dict[str, tuple[Path, bool]]:
    modules = {}
    for path in SOURCE.rglob("*.py"):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, package)
    return modules


MODULES = _modules()


def _targets(module: str, package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The project's modules an import statement loads (a name imported from a package is its
    submodule when one has that name, else the package itself)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        names = [
            f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in MODULES else origin
            for alias in node.names
        ]
    return [name for name in names if name in MODULES and name != module]


def _imports() -> dict[str, list[tuple[str, ast.stmt, bool]]]:
    """Each module's imports of the project: (target, statement, inside a function)."""
    found: dict[str, list[tuple[str, ast.stmt, bool]]] = defaultdict(list)
    for module, (path, package) in MODULES.items():
        tree = ast.parse(path.read_text())
        nested = {
            id(node)
            for function in ast.walk(tree)
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(function)
        }
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, package, node):
                    found[module].append((target, node, id(node) in nested))
    return found


IMPORTS = _imports()


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize(("importer", "imported"), FORBIDDEN)
def test_layer_is_respected(importer: str, imported: str) -> None:
    offending = sorted(
        f"{module} imports {target} (line {node.lineno})"
        for module, imports in IMPORTS.items()
        if _within(module, importer)
        for target, node, _ in imports
        if _within(target, imported)
    )
    assert not offending, offending


def test_nothing_but_the_entry_point_imports_the_command_line() -> None:
    offending = sorted(
        f"{module} imports {target}"
        for module, imports in IMPORTS.items()
        if not _within(module, "img2img_filters.cli") and module != "img2img_filters.__main__"
        for target, _, _ in imports
        if _within(target, "img2img_filters.cli")
    )
    assert not offending, offending


def _cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph = {
        module: sorted({target for target, _, _ in IMPORTS.get(module, [])}) for module in MODULES
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(start: str) -> None:
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(graph[successor])))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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

    for module in MODULES:
        if module not in index:
            visit(module)
    return components


def test_no_import_cycles() -> None:
    assert _cycles() == []


def test_the_cycle_finder_finds_a_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ast.parse("import img2img_filters").body[0]
    monkeypatch.setitem(
        IMPORTS, "img2img_filters.filters", [("img2img_filters.filters.base", fake, False)]
    )
    monkeypatch.setitem(
        IMPORTS, "img2img_filters.filters.base", [("img2img_filters.filters", fake, False)]
    )
    assert ["img2img_filters.filters", "img2img_filters.filters.base"] in _cycles()


def _says_why(lines: list[str], lineno: int) -> bool:
    """Whether the import at ``lineno`` has a comment on its line or above its block of imports."""
    if "#" in lines[lineno - 1]:
        return True
    index = lineno - 2
    while index >= 0:
        text = lines[index].strip()
        if text.startswith("#"):
            return True
        block = text.startswith(("from ", "import ")) or text.endswith((",", "(")) or text == ")"
        if not (block or text == ""):  # isort puts a blank line between import groups
            return False
        index -= 1
    return False


def test_imports_inside_functions_say_why() -> None:
    silent = sorted(
        {
            f"{module}:{node.lineno}"
            for module, imports in IMPORTS.items()
            for _, node, nested in imports
            if nested and not _says_why(MODULES[module][0].read_text().splitlines(), node.lineno)
        }
    )
    assert not silent, silent


def test_a_silent_import_inside_a_function_is_found() -> None:
    lines = ["def f():", "    import os", "    # why", "    import sys", "    import re"]
    assert not _says_why(lines, 2)
    assert _says_why(lines, 4) and _says_why(lines, 5)
