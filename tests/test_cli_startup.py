"""The command line imports torch, scikit-learn and LightGBM only in the commands that need them."""

from __future__ import annotations

import pytest

from benchmarks.bench_startup import COMMANDS, heavy_imports


@pytest.mark.parametrize("command", ["ofa --help", "ofa flops"])
def test_light_commands_import_no_heavy_library(command: str) -> None:
    assert heavy_imports(COMMANDS[command]) == []


def test_heavy_imports_sees_torch_where_a_command_needs_it() -> None:
    # validating latency estimators reads timed subnets with torch's helpers before it finds the file missing
    command = ["-m", "ofa.cli", "latency", "validate", "--space", "tiny", "--data", "missing.csv", "x.json"]
    assert "torch" in heavy_imports(command)
