"""The run folder type owns every run path and the checkpoint format."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ofa.checkpoint import atomic_save, load_checkpoint
from ofa.runfolder import RUN_FORMAT, RunFolder

ROOT = Path(__file__).resolve().parent.parent
RUN_FILE_NAMES = (
    "config.yaml",
    "space.json",
    "metrics.csv",
    "archs.jsonl",
    "archs.csv",
    "compare_archs.csv",
    "final.json",
    "predictor.json",
    "pareto.json",
    "pareto.csv",
    "pareto.png",
    "report.md",
    "training.png",
    "summary.json",
    "latest.pt",
    "best.pt",
    ".lock",
)


def test_paths_sit_inside_the_run(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    paths = [getattr(folder, name) for name in dir(RunFolder) if isinstance(getattr(RunFolder, name), property)]
    paths += [folder.export(2.5), folder.guide_predictor_of_epoch(3), folder.report_figure("training")]
    assert len(set(paths)) == len(paths)  # no two roles share a file
    assert all(path.is_relative_to(tmp_path / "run") for path in paths)
    assert folder.export(2.5, finetuned=True).name == "2.5M-finetuned"
    assert folder.checkpoint("best") == folder.best and folder.best.parent == folder.checkpoints


def test_unknown_checkpoint_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"one of latest, best, got 'final'"):
        RunFolder(tmp_path).checkpoint("final")


def test_no_other_module_spells_a_run_file_name() -> None:
    pattern = re.compile("|".join(re.escape(f'"{name}"') for name in RUN_FILE_NAMES))
    offenders = []
    for package in ("ofa", "predictors"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "runfolder.py":
                continue
            offenders += [f"{path.name}: {match.group()}" for match in pattern.finditer(path.read_text())]
    assert offenders == []


def test_a_checkpoint_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latest.pt"
    state = {"format": RUN_FORMAT + 1, "model": {"w": torch.zeros(1)}, "space": {}}
    atomic_save(state, path)
    with pytest.raises(ValueError, match=f"format {RUN_FORMAT + 1}.*reads format {RUN_FORMAT}"):
        load_checkpoint(path)
    state["format"] = RUN_FORMAT
    atomic_save(state, path)
    assert load_checkpoint(path)["format"] == RUN_FORMAT
