"""The command line imports torch, scikit-learn and LightGBM only in the commands that need them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_startup import COMMANDS, EXIT_CODES, heavy_imports
from ofa.flops import count_macs
from ofa.latency_models import fit_estimator
from ofa.latency_table import DeviceFingerprint
from ofa.runfolder import RunFolder
from ofa.space import SearchSpace, load_space
from predictors.models import create_predictor


@pytest.mark.parametrize("command", ["ofa --help", "ofa flops", "ofa train, bad config (exit 2)"])
def test_light_commands_import_no_heavy_library(command: str) -> None:
    """Also a refused training config: it is checked before torch loads."""
    assert heavy_imports(COMMANDS[command], EXIT_CODES.get(command, 0)) == []


def _latency_model(space: SearchSpace, path: Path) -> str:
    """A MAC-line latency estimator saved at ``path`` (fitted on made-up timings); its largest latency budget."""
    archs = [space.min_arch(), space.max_arch(), *(space.sample(random.Random(seed)) for seed in range(8))]
    latencies = [0.05 + 0.1 * count_macs(space, arch, 10) / 1e6 for arch in archs]
    fingerprint = DeviceFingerprint("cpu", "test cpu", "torch", "0", "0", 1, 1)
    fit_estimator("macs", space, 10, fingerprint, archs, latencies).save(path)
    return f"{max(latencies) * 2}ms"


@pytest.mark.parametrize("budget_kind", ["--flops", "--latency"])
def test_query_imports_no_torch(tmp_path: Path, budget_kind: str) -> None:
    """``ofa query`` answers from space.json and the predictor (and a latency estimator): the supernet's
    libraries stay unloaded."""
    space = load_space("tiny")
    run = tmp_path / "run"
    run.mkdir()
    RunFolder(run).space.write_text(json.dumps({"space": space.to_dict(), "num_classes": 10}))
    predictor = create_predictor("macs", space, num_classes=10)
    predictor.fit([space.min_arch(), space.max_arch()], np.array([0.1, 0.9]))
    predictor.save(tmp_path / "predictor.json")
    options = ["--flops", f"{count_macs(space, space.max_arch(), 10) / 1e6}M"]
    if budget_kind == "--latency":
        options = ["--latency", _latency_model(space, tmp_path / "latency.json")]
        options += ["--latency-model", str(tmp_path / "latency.json")]
    command = ["-m", "ofa.cli", "query", str(run), *options, "--predictor", str(tmp_path / "predictor.json")]
    heavy = heavy_imports(command)
    assert "torch" not in heavy
    assert "lightgbm" in heavy  # the query did run, and heavy_imports sees what a command loads
