"""The code stays readable: no function in the library packages over 60 lines, imports at the top."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 60


def test_no_function_is_longer_than_the_limit() -> None:
    long = []
    for package in ("ofa", "predictors"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > LIMIT:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def _is_command_line(path: Path) -> bool:
    """The CLI modules (``ofa/cli*.py``, ``predictors/cli.py``): the one place a command's imports may wait."""
    return path.name == "cli.py" or path.name.startswith("cli_")


def test_imports_sit_at_the_top_outside_the_command_line() -> None:
    """One import direction, visible at a module's top: only the CLI dispatch imports inside functions."""
    inside = []
    for package in ("ofa", "predictors"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if _is_command_line(path):
                continue
            for function in ast.walk(ast.parse(path.read_text())):
                if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for node in ast.walk(function):
                        if isinstance(node, (ast.Import, ast.ImportFrom)):
                            inside.append(f"{path.relative_to(ROOT)}:{node.lineno} in {function.name}")
    assert inside == []
