"""Modules and functions stay small enough to read: about 400 and 80 lines, or say why.

A module over :data:`MODULE_LINES` lines fails. A function over
:data:`FUNCTION_LINES` lines (docstring included) must carry a comment just above
it (above its decorators) that begins ``# Over 80 lines`` and gives the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "img2img_filters"
MODULE_LINES, FUNCTION_LINES = 400, 80
FILES = sorted(PACKAGE.rglob("*.py"))


def _reason_above(lines: list[str], first: int) -> bool:
    """Whether the comment block ending just above line ``first`` (1-based) starts the reason."""
    row = first - 2
    block = []
    while row >= 0 and lines[row].lstrip().startswith("#"):
        block.append(lines[row].strip())
        row -= 1
    return bool(block) and block[-1].startswith("# Over 80 lines")


def _long_functions_without_reason(path: Path, root: Path = PACKAGE) -> list[str]:
    text = path.read_text()
    lines = text.splitlines()
    found = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = node.end_lineno - node.lineno + 1
        first = min([d.lineno for d in node.decorator_list] + [node.lineno])
        if length > FUNCTION_LINES and not _reason_above(lines, first):
            found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_at_most_400_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MODULE_LINES


def test_long_functions_say_why() -> None:
    found = [entry for path in FILES for entry in _long_functions_without_reason(path)]
    assert found == []


def test_the_check_sees_a_long_function_without_a_reason(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(FUNCTION_LINES))
    bare = tmp_path / "bare.py"
    bare.write_text(f"def long():\n{body}\n")
    assert _long_functions_without_reason(bare, tmp_path) == ["bare.py:1 long (81 lines)"]
    told = tmp_path / "told.py"
    told.write_text(f"# Over 80 lines on purpose: a test.\n# (two lines)\ndef long():\n{body}\n")
    assert _long_functions_without_reason(told, tmp_path) == []
