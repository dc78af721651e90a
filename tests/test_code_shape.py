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


# The layers, lowest first: a module imports (at run time) only modules of its own layer or of lower ones.
LAYERS = {
    "base": "atomic config errors pareto distill distributed bn _dynamic",
    "space": "space layout layer_costs _genome flops budget cost_axis reference runfolder runlock",
    "predictors": "predictors.dataset predictors.encoding predictors.metrics predictors.models predictors.registry "
    "predictors.tree_arrays predictors.bench",
    "nn": "static supernet channel_sort evaluate export",
    "train": "train_config progressive sampling data train checkpoint archdata guide trainer",
    "search": "search search_rl search_dnas latency_table latency_timing latency latency_data latency_models query",
    "deploy": "runs deploy finetune pipeline compare report importer",
    "cli": "cli cli_import cli_latency cli_run predictors.cli",
}


def _layer_of() -> dict[str, int]:
    return {
        name if name.startswith("predictors.") else f"ofa.{name}": rank
        for rank, names in enumerate(LAYERS.values())
        for name in names.split()
    }


def _runtime_imports(path: Path) -> set[str]:
    """The project modules a module imports at its top (``if TYPE_CHECKING:`` blocks left out)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("ofa", "predictors"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] in ("ofa", "predictors"))
    return found


def test_every_module_imports_only_its_own_layer_or_lower_ones() -> None:
    """The layers (base, space, predictors, nn, train, search, deploy, cli; the README's layout) hold: no
    module reaches up, and every new module is given a layer here."""
    layer_of, upward, unplaced = _layer_of(), [], []
    names = list(LAYERS)
    for package in ("ofa", "predictors"):
        for path in sorted((ROOT / package).glob("*.py")):
            if path.name == "__init__.py":
                continue
            module = f"{package}.{path.stem}"
            if module not in layer_of:
                unplaced.append(module)
                continue
            for imported in sorted(_runtime_imports(path)):
                if layer_of.get(imported, -1) > layer_of[module]:
                    upward.append(f"{module} ({names[layer_of[module]]}) imports {imported}")
    assert unplaced == [] and upward == []
