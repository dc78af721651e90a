"""The command line imports torch, scikit-learn and LightGBM only in the commands that need them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_startup import COMMANDS, heavy_imports
from ofa.flops import count_macs
from ofa.runfolder import RunFolder
from ofa.space import load_space
from predictors.models import create_predictor


@pytest.mark.parametrize("command", ["ofa --help", "ofa flops"])
def test_light_commands_import_no_heavy_library(command: str) -> None:
    assert heavy_imports(COMMANDS[command]) == []


def test_query_imports_no_torch(tmp_path: Path) -> None:
    """``ofa query`` answers from space.json and the predictor: the supernet's libraries stay unloaded."""
    space = load_space("tiny")
    run = tmp_path / "run"
    run.mkdir()
    RunFolder(run).space.write_text(json.dumps({"space": space.to_dict(), "num_classes": 10}))
    predictor = create_predictor("macs", space, num_classes=10)
    predictor.fit([space.min_arch(), space.max_arch()], np.array([0.1, 0.9]))
    predictor.save(tmp_path / "predictor.json")
    budget = f"{count_macs(space, space.max_arch(), 10) / 1e6}M"
    command = ["-m", "ofa.cli", "query", str(run), "--flops", budget, "--predictor", str(tmp_path / "predictor.json")]
    heavy = heavy_imports(command)
    assert "torch" not in heavy
    assert "lightgbm" in heavy  # the query did run, and heavy_imports sees what a command loads
