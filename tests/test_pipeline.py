"""The main job end to end (`ofa run`) and the uniform-vs-BestUp comparison, on a few steps of digits."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ofa import count_macs, load_subnet
from ofa.cli import main
from ofa.compare import compare_samplers
from ofa.evaluate import evaluate_model
from ofa.export import preprocess, read_export_info
from ofa.latency import build_latency_table
from ofa.latency_models import load_estimator
from ofa.latency_table import TimingSettings
from ofa.latency_timing import device_fingerprint
from ofa.pareto import hypervolume, pareto_front
from ofa.pipeline import PipelineSettings, default_budgets, run_pipeline
from ofa.report import format_rows
from ofa.runfolder import RunFolder
from ofa.runs import load_run
from ofa.space import load_space
from tests.conftest import write_images

QUICK = (
    "epochs=2",
    "max_steps_per_epoch=2",
    "guide.warmup_epochs=1",
    "guide.num_archs=8",
    "calibration.num_batches=2",
)
SETTINGS = PipelineSettings(num_archs=16, num_budgets=3, population=8, generations=2, finalists=2)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("pipeline")
    overrides = (*QUICK, f"out_dir={out}", "name=quick")
    return run_pipeline(overrides=overrides, settings=SETTINGS, progress=False), overrides


@pytest.mark.slow  # the whole pipeline (train, measure, search, export): ~20 s
def test_subnets_meet_their_budgets_and_counts_are_exact(pipeline_run) -> None:
    result, _ = pipeline_run
    space = load_space("tiny")
    assert len(result.rows) == SETTINGS.num_budgets
    for row in result.rows:
        arch = space.arch_from_dict(row["arch"])
        assert row["mmacs"] <= row["budget_mmacs"]
        assert row["mmacs"] == pytest.approx(count_macs(space, arch, 10) / 1e6, abs=1e-12)


@pytest.mark.slow  # the whole pipeline (train, measure, search, export): ~20 s
def test_exports_reproduce_the_reported_test_accuracy(pipeline_run) -> None:
    result, _ = pipeline_run
    run = load_run(result.run_dir)  # the pipeline measures the final (latest) weights
    mean = torch.tensor(run.data.mean).view(1, -1, 1, 1)
    std = torch.tensor(run.data.std).view(1, -1, 1, 1)
    for row in result.rows:
        model = load_subnet(row["export"])
        batches = [(preprocess(model, images * std + mean), labels) for images, labels in run.test_loader]
        accuracy = evaluate_model(model, batches, model.resolution).accuracy
        assert accuracy == row["test_acc"] == row["export_test_acc"]
        assert run.evaluate(model.arch, "test").accuracy == row["test_acc"]


@pytest.mark.slow  # the whole pipeline (train, measure, search, export): ~20 s
def test_report_folder_is_complete(pipeline_run) -> None:
    result, _ = pipeline_run
    report = result.run_dir / "report"
    for name in ("report.md", "pareto.png", "predictor.png", "training.png", "summary.json"):
        assert (report / name).stat().st_size > 0, name
    text = (report / "report.md").read_text()
    assert "Every subnet is within its budget: True" in text
    assert "Exported models reproduce the supernet's test accuracy: True" in text
    assert f"{result.predictor_kendall_tau:.3f}" in text
    assert len(json.loads((report / "summary.json").read_text())["rows"]) == len(result.rows)
    assert (result.run_dir / "predictor" / "final.json").is_file()
    assert result.predictor_holdout_size == round(SETTINGS.num_archs * SETTINGS.holdout)


@pytest.mark.slow  # the whole pipeline (train, measure, search, export): ~20 s
def test_rerun_continues_without_retraining(pipeline_run) -> None:
    result, overrides = pipeline_run
    checkpoint = result.run_dir / "checkpoints" / "latest.pt"
    before = checkpoint.stat().st_mtime_ns, (result.run_dir / "archs.csv").read_text()
    again = run_pipeline(overrides=overrides, settings=SETTINGS, progress=False)
    assert (checkpoint.stat().st_mtime_ns, (result.run_dir / "archs.csv").read_text()) == before
    assert [row["arch"] for row in again.rows] == [row["arch"] for row in result.rows]


@pytest.mark.slow  # the whole pipeline (train, measure, search, export): ~20 s
def test_rerun_with_another_config_is_refused(pipeline_run) -> None:
    result, overrides = pipeline_run
    checkpoint = result.run_dir / "checkpoints" / "latest.pt"
    before = checkpoint.read_bytes()
    with pytest.raises(ValueError, match="another training config"):
        run_pipeline(overrides=(*overrides, "optim.lr=0.05"), settings=SETTINGS, progress=False)
    assert checkpoint.read_bytes() == before


@pytest.mark.slow
def test_finetune_epochs_add_a_finetuned_column_and_are_kept_on_rerun(pipeline_run) -> None:
    result, overrides = pipeline_run
    settings = dataclasses.replace(SETTINGS, finetune_epochs=1)
    tuned = run_pipeline(overrides=overrides, settings=settings, progress=False)
    folders = [result.run_dir / "export" / f"{row['budget_mmacs']:g}M-finetuned" for row in tuned.rows]
    for row, folder in zip(tuned.rows, folders):
        metadata = read_export_info(folder)["metadata"]
        assert (metadata["training"], metadata["epochs"], metadata["distill"]) == ("finetune", 1, 1)
        assert row["finetuned_test_acc"] == metadata["test_acc"]
        assert metadata["test_acc_before"] == row["test_acc"]  # fine-tuned from the exported subnet
    assert "fine-tuned test" in format_rows(tuned.rows)
    assert "fine-tuned test" in (result.run_dir / "report" / "report.md").read_text()
    stamps = [(folder / "model.safetensors").stat().st_mtime_ns for folder in folders]
    again = run_pipeline(overrides=overrides, settings=settings, progress=False)
    assert [(folder / "model.safetensors").stat().st_mtime_ns for folder in folders] == stamps
    assert [row["finetuned_test_acc"] for row in again.rows] == [row["finetuned_test_acc"] for row in tuned.rows]
    assert "fine-tuned test" not in format_rows(result.rows)


@pytest.mark.slow  # times the tiny space's layers (a quick table) and 10 subnets: ~20 s
def test_latency_budgets_add_a_latency_front_exports_and_report_section(pipeline_run) -> None:
    result, overrides = pipeline_run
    space = load_space("tiny")
    fingerprint = device_fingerprint()
    table = RunFolder(result.run_dir).latency_table
    table.parent.mkdir(parents=True, exist_ok=True)
    quick = TimingSettings(warmup=1, repeats=1, passes=1, min_sample_ms=0.0)
    built = build_latency_table(space, 10, fingerprint, table, quick)  # the run reuses a table of this machine
    stamp = table.stat().st_mtime_ns
    smallest = float(built.layer_sum([space.min_arch()])[0])  # about the fastest subnet's latency
    budgets = (round(smallest * 2, 2), round(smallest * 4, 2))
    settings = dataclasses.replace(SETTINGS, latency_budgets=budgets, latency_archs=10)
    timed = run_pipeline(overrides=overrides, settings=settings, progress=False)
    assert table.stat().st_mtime_ns == stamp and len(timed.latency_rows) == 2
    saved = load_estimator(RunFolder(result.run_dir).latency_estimator, space, fingerprint)
    assert saved.fitted_on == 10 and fingerprint.describe() == timed.latency_device
    for budget, row in zip(budgets, timed.latency_rows):
        assert row["latency_ms"] <= budget + 1e-9
        info = read_export_info(result.run_dir / "export" / f"{budget:g}ms")
        assert info["metadata"]["latency_ms"] == pytest.approx(row["latency_ms"])
        assert row["export_test_acc"] == pytest.approx(row["test_acc"])
    report = (result.run_dir / "report" / "report.md").read_text()
    assert f"Latency budgets on {timed.latency_device}" in report
    assert (result.run_dir / "report" / "pareto-latency.png").is_file()
    assert "Every subnet is within its latency budget: True" in report
    summary = json.loads((result.run_dir / "report" / "summary.json").read_text())
    assert [row["arch"] for row in summary["latency_rows"]] == [row["arch"] for row in timed.latency_rows]


def test_default_budgets_are_feasible_and_spread() -> None:
    space = load_space("tiny")
    budgets = default_budgets(space, 10, 4)
    low = count_macs(space, space.min_arch(), 10) / 1e6
    high = count_macs(space, space.max_arch(), 10) / 1e6
    assert budgets == sorted(budgets) and len(set(budgets)) == 4
    assert low < budgets[0] and budgets[-1] < high
    assert budgets[-1] / budgets[0] > 10


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("num_archs", 3, "num_archs"), ("num_budgets", 0, "num_budgets"), ("holdout", 0.9, "holdout")],
)
def test_bad_settings_are_refused(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PipelineSettings(**{field: value})


def test_run_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--out-dir", str(tmp_path), "--budgets", "0.01M"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "smallest subnet" in error[0]
    assert main(["run", "--out-dir", str(tmp_path), "--set", "sampler.name=best"]) == 2
    assert "sampler.name" in capsys.readouterr().err
    assert main(["run", "--out-dir", str(tmp_path), "--latency", "5fps"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "malformed latency budget '5fps'" in error[0]
    assert not (tmp_path / "digits-run" / "checkpoints").exists()


@pytest.mark.slow  # trains three supernets: ~12 s
def test_compare_uses_identical_steps_and_the_same_archs(tmp_path: Path) -> None:
    comparison = compare_samplers(
        Path(__file__).resolve().parent.parent / "configs" / "train" / "digits.yaml",
        ["epochs=1", "max_steps_per_epoch=2", "calibration.num_batches=2"],
        out_dir=tmp_path,
        num_archs=10,
        variants=("uniform", "bestup_loss"),
        progress=False,
    )
    uniform, bestup = comparison.variants
    assert np.array_equal(uniform.mmacs, bestup.mmacs)  # the same archs measured in both supernets
    steps = [len((tmp_path / name / "archs.jsonl").read_text().splitlines()) for name in ("uniform", "bestup_loss")]
    assert steps == [2, 2]
    for variant in comparison.variants:
        expected = hypervolume(variant.mmacs, variant.val_acc, *comparison.reference)
        assert comparison.hypervolume(variant) == expected > 0 or variant.val_acc.min() == variant.val_acc.max()
        for budget in comparison.budgets:
            val, _, _ = comparison.at_budget(variant, budget)
            assert val == variant.val_acc[variant.mmacs <= budget].max()
    table = (tmp_path / "comparison.csv").read_text().splitlines()
    assert len(table) == 3 and table[1].startswith("uniform,")
    assert int(table[1].split(",")[2]) == len(pareto_front(uniform.mmacs, uniform.val_acc)) <= 10
    for name in ("comparison.md", "comparison.csv", "comparison.png"):
        assert (tmp_path / name).stat().st_size > 0
    with pytest.raises(ValueError, match="variants"):
        compare_samplers("configs/train/digits.yaml", [], tmp_path, variants=("bestdown",))


@pytest.fixture
def folder_without_test(tmp_path: Path) -> Path:
    """An image folder with train/ and val/ only."""
    root = tmp_path / "images"
    write_images(root / "train", {"cat": 4, "dog": 4})
    write_images(root / "val", {"cat": 2, "dog": 2})
    return root


def test_run_refuses_an_image_folder_without_test_before_training(folder_without_test: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    overrides = ("data.name=imagefolder", f"data.root={folder_without_test}", "data.image_size=16", f"out_dir={out}")
    config = Path(__file__).resolve().parent.parent / "configs" / "train" / "digits_guided.yaml"
    with pytest.raises(ValueError, match=r"no test/ folder.*data\.test_fraction"):
        run_pipeline(config, overrides, SETTINGS, progress=False)
    assert not out.exists()  # no run folder, no checkpoint


def test_compare_refuses_an_image_folder_without_test_before_training(
    folder_without_test: Path, tmp_path: Path
) -> None:
    out = tmp_path / "compare"
    with pytest.raises(ValueError, match=r"no test/ folder.*data\.test_fraction"):
        compare_samplers(
            Path(__file__).resolve().parent.parent / "configs" / "train" / "digits.yaml",
            ["data.name=imagefolder", f"data.root={folder_without_test}", "data.image_size=16"],
            out_dir=out,
            num_archs=10,
            variants=("uniform", "bestup_loss"),
            progress=False,
        )
    assert not out.exists() or not any(out.iterdir())
