"""Training configs read strictly, and every bad input a clear error before any training starts."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from ofa.checkpoint import atomic_save
from ofa.cli import main as cli_main
from ofa.config import apply_overrides, config_from_dict, config_to_dict, parse_override
from ofa.sampling import SAMPLERS, SCORERS
from ofa.space import load_space
from ofa.train_config import CalibrationSection, TrainConfig, load_train_config
from ofa.trainer import train

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "train" / "digits.yaml"
QUICK = ("epochs=1", "max_steps_per_epoch=1", "data.batch_size=8", "sampler.flops_samples=200")


def quick_config(out_dir: Path, *overrides: str) -> TrainConfig:
    """The digits config, cut down, writing under ``out_dir``."""
    return load_train_config(CONFIG, (f"out_dir={out_dir}", *QUICK, *overrides))


# ---------------------------------------------------------------------------------------------------
# reading configs


def test_shipped_config_reads_and_round_trips() -> None:
    config = load_train_config(CONFIG)
    assert config.name == "digits" and config.model.space == "tiny"
    assert config.sampler.name == "bestup" and config.sampler.num_candidates == 3 and config.sampler.scorer == "loss"
    assert config.optim.weight_decay == 1e-5 and isinstance(config.optim.weight_decay, float)
    assert config_from_dict(TrainConfig, config_to_dict(config)) == config


def test_overrides_reach_nested_sections_and_are_typed() -> None:
    config = load_train_config(
        CONFIG, ("optim.lr=0.05", "sampler.name=worstup", "max_steps_per_epoch=7", "data.root=/some/where")
    )
    assert config.optim.lr == 0.05 and config.sampler.name == "worstup"
    assert config.max_steps_per_epoch == 7 and config.data.root == "/some/where"
    assert config.optim.momentum == 0.9  # untouched keys keep the file's or the default value
    assert load_train_config(None) == TrainConfig()
    assert load_train_config(CONFIG, ("optim.lr=1",)).optim.lr == 1.0  # an integer where a number is asked


def test_parse_override_reads_yaml_values() -> None:
    assert parse_override("optim.lr=0.05") == (["optim", "lr"], 0.05)
    assert parse_override("bf16=true") == (["bf16"], True)
    assert parse_override("data.root=a=b") == (["data", "root"], "a=b")
    assert apply_overrides({"optim": {"lr": 1}}, ["optim.momentum=0"]) == {"optim": {"lr": 1, "momentum": 0}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("optimizer.lr=0.1",), "config: unknown key(s) optimizer; allowed: name, seed, epochs"),
        (("optim.learning_rate=0.1",), "optim: unknown key(s) learning_rate; allowed: lr, momentum"),
        (("sampler.k=3",), "sampler: unknown key(s) k; allowed: name, num_subnets, num_candidates"),
        (("epochs=two",), "epochs: expected an integer, got str 'two'"),
        (("optim.lr=fast",), "optim.lr: expected a number, got str 'fast'"),
        (("data.batch_size=1.5",), "data.batch_size: expected an integer, got float 1.5"),
        (("bf16=maybe",), "bf16: expected true or false, got 'maybe'"),
        (("sampler=bestup",), "sampler: expected a mapping, got str 'bestup'"),
        (("sampler.num_subnets=true",), "sampler.num_subnets: expected an integer, got bool True"),
        (("sampler.name=bestest",), f"sampler.name: 'bestest' is not one of {', '.join(SAMPLERS)}"),
        (("sampler.scorer=accuracy",), f"sampler.scorer: 'accuracy' is not one of {', '.join(SCORERS)}"),
        (("sampler.num_candidates=0",), "sampler.num_candidates (k) must be >= 1, got 0"),
        (("sampler.num_candidates=-2",), "sampler.num_candidates (k) must be >= 1, got -2"),
        (("sampler.num_subnets=1",), "sampler.num_subnets (n) must be >= 2 (max and min), got 1"),
        (
            ("sampler.flops_bin_mmacs=0",),
            "sampler.flops_bin_mmacs must be a positive number of MMACs (or null: auto), got 0",
        ),
        (("epochs=0",), "config: epochs must be >= 1, got 0"),
        (("max_steps_per_epoch=0",), "max_steps_per_epoch must be >= 1, got 0"),
        (("device=tpu",), "device: 'tpu' is not one of auto, cpu, cuda"),
        (
            ("name=a/b",),
            "name must be a plain folder name (letters, digits, _ . -; not starting with . -), got 'a/b'",
        ),
        (("name=..",), "name must be a plain folder name"),
        (("optim.warmup_epochs=.inf",), "optim: warmup_epochs must be a finite number, got inf"),
        (("optim.lr=.nan",), "optim: lr must be a finite number, got nan"),
        (("optim.grad_clip_value=.nan",), "optim: grad_clip_value must be a finite number, got nan"),
        (("optim.weight_decay=.inf",), "optim: weight_decay must be a finite number, got inf"),
        (("optim.weight_decay=.nan",), "optim: weight_decay must be a finite number, got nan"),
        (("optim.lr=.inf",), "optim: lr must be a finite number, got inf"),
        (("optim.min_lr=.nan",), "optim: min_lr must be a finite number, got nan"),
        (("optim.min_lr=.inf",), "optim: min_lr must be a finite number, got inf"),
        (("optim.grad_clip_value=.inf",), "optim: grad_clip_value must be a finite number, got inf"),
        (("seed=100000000000000000000000",), "seed: 100000000000000000000000 is outside the 64-bit integer range"),
        (("seed=1e23",), "seed: expected an integer, got str '1e23'"),
        (("seed=4294967296",), "seed must be an integer in [0, 2**32), got 4294967296"),
        (("seed=-1",), "seed must be an integer in [0, 2**32), got -1"),
        (("calibration.seed=-3",), "calibration.seed must be an integer in [0, 2**32), got -3"),
        (
            ("data.image_size=0",),
            "data.image_size must be an integer >= 8 (or null: the space's largest resolution), got 0",
        ),
        (("optim.lr=0",), "optim: lr must be > 0, got 0.0"),
        (("optim.weight_decay=-1",), "optim: weight_decay must be >= 0, got -1.0"),
        (("optim.min_lr=1",), "optim: min_lr must be <= lr (0.1), got 1.0"),
        (("optim.momentum=0",), "optim: nesterov needs momentum > 0"),
        (("optim.label_smoothing=1",), "optim: label_smoothing must be in [0, 1), got 1.0"),
        (("optim.distill_label_weight=1.5",), "optim: distill_label_weight must be in [0, 1], got 1.5"),
        (("model.dropout=1.0",), "model: dropout must be in [0, 1), got 1.0"),
        (("guide.num_archs=4",), "guide.num_archs must be >= 8 to fit a predictor, got 4"),
        (("calibration.batch_size=0",), "calibration.batch_size must be >= 1, got 0"),
        (("calibration.num_batches=0",), "calibration.num_batches must be >= 1, got 0"),
        (("epochs",), "override 'epochs': expected KEY=VALUE"),
        (("optim..lr=1",), "override 'optim..lr=1': malformed key"),
        (("epochs.count=1",), "override 'epochs.count=1': epochs is not a section"),
    ],
)
def test_bad_config_values_name_the_value_and_what_is_allowed(overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        load_train_config(CONFIG, overrides)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("data_name", "num_batches", "batch_size", "expected"),
    [
        ("cifar10", None, 200, 10),  # 2,000 images by default
        ("cifar100", None, 200, 10),
        ("imagefolder", None, 200, 10),
        ("digits", None, 200, 3),  # 512 images: the digits' training split is small
        ("cifar10", None, 64, 32),  # rounded up to cover 2,000 images
        ("digits", None, 64, 8),
        ("cifar10", 4, 200, 4),  # an explicit count wins
        ("digits", 7, 200, 7),
    ],
)
def test_calibration_batches_per_data_set(
    data_name: str, num_batches: int | None, batch_size: int, expected: int
) -> None:
    section = CalibrationSection(num_batches=num_batches, batch_size=batch_size)
    assert section.batches_for(data_name) == expected


def test_calibration_defaults_to_2000_images_of_200() -> None:
    section = load_train_config(None).calibration
    assert (section.num_batches, section.batch_size) == (None, 200)
    assert section.batches_for("cifar10") * section.batch_size == 2000


def test_bad_config_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"config file not found: .*missing\.yaml"):
        load_train_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim: {lr: 0.1\n")
    with pytest.raises(ValueError, match="malformed YAML"):
        load_train_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- epochs: 3\n")
    with pytest.raises(ValueError, match="expected a mapping at the top, got list"):
        load_train_config(listed)


def test_every_section_rejects_unknown_keys() -> None:
    for section in ("data", "model", "optim", "sampler", "guide", "calibration"):
        with pytest.raises(ValueError, match=rf"^{section}: unknown key\(s\) typo; allowed: "):
            load_train_config(None, (f"{section}.typo=1",))
    assert {field.name for field in dataclasses.fields(TrainConfig)} >= {"data", "sampler", "max_steps_per_epoch"}


# ---------------------------------------------------------------------------------------------------
# bad input found by ``train`` before the first step


def _fails_before_training(config: TrainConfig, match: str, resume: bool = False) -> None:
    with pytest.raises(ValueError, match=match):
        train(config, resume=resume, progress=False)
    assert not (config.run_dir / "config.yaml").exists()
    assert not (config.run_dir / "metrics.csv").exists()


def test_missing_or_empty_data_folders(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails_before_training(
        quick_config(tmp_path, "data.name=imagefolder", f"data.root={missing}"),
        f"imagefolder: data root {missing} does not exist; expected {missing}/train/<class>/<image>",
    )
    _fails_before_training(
        quick_config(tmp_path, "data.name=imagefolder", f"data.root={empty}"),
        f"imagefolder: {empty}/train does not exist or is not a folder",
    )
    no_images = tmp_path / "no_images"
    for split in ("train", "val"):
        (no_images / split / "cat").mkdir(parents=True)
    _fails_before_training(
        quick_config(tmp_path, "data.name=imagefolder", f"data.root={no_images}"),
        f"imagefolder: no usable images in {no_images}/train",
    )
    _fails_before_training(
        quick_config(tmp_path, "data.name=cifar10", f"data.root={missing}"),
        f"cifar10: data root {missing} does not exist; set data.download=true",
    )
    _fails_before_training(
        quick_config(tmp_path, "data.name=cifar100", f"data.root={empty}"),
        f"cifar100: cannot read the data under {empty}",
    )
    # a data set without a root, or an unknown one, is refused when the config is read (nothing to train yet)
    with pytest.raises(ValueError, match=r"data\.root is required for data set 'cifar10'"):
        quick_config(tmp_path, "data.name=cifar10")
    with pytest.raises(ValueError, match="unknown data set 'mnist'; allowed: digits"):
        quick_config(tmp_path, "data.name=mnist")


def test_unknown_space_predictor_and_guide_model(tmp_path: Path) -> None:
    _fails_before_training(quick_config(tmp_path, "model.space=huge"), "huge")
    _fails_before_training(
        quick_config(tmp_path, "sampler.scorer=predictor"), "set sampler.predictor to a fitted predictor file"
    )
    _fails_before_training(
        quick_config(tmp_path, "sampler.scorer=predictor", f"sampler.predictor={tmp_path / 'p.json'}"),
        f"predictor file not found: {tmp_path / 'p.json'}",
    )
    _fails_before_training(
        quick_config(tmp_path, "guide.enabled=true", "guide.model=xgboost"), "unknown predictor 'xgboost'; registered"
    )


def _fake_checkpoint(config: TrainConfig, space_data: dict, num_classes: int = 10) -> None:
    state = {"epoch": 1, "model": {}, "space": space_data, "num_classes": num_classes}
    state["config"] = config_to_dict(config)
    atomic_save(state, config.run_dir / "checkpoints" / "latest.pt")


def test_resume_checks_the_run(tmp_path: Path) -> None:
    config = quick_config(tmp_path)
    latest = config.run_dir / "checkpoints" / "latest.pt"
    _fails_before_training(config, f"no checkpoint at {latest}", resume=True)
    _fake_checkpoint(config, load_space("attentivenas").to_dict())
    _fails_before_training(
        config,
        f"cannot resume {latest}: it was trained on space 'attentivenas', the config asks for space 'tiny'",
        resume=True,
    )
    other_tiny = load_space("tiny").to_dict()
    other_tiny["head"]["width"] = [64]
    _fake_checkpoint(config, other_tiny)
    _fails_before_training(config, "trained on another definition of space 'tiny'", resume=True)
    _fake_checkpoint(config, load_space("tiny").to_dict(), num_classes=100)
    _fails_before_training(config, "it has 100 classes, the data has 10", resume=True)
    latest.write_bytes(b"not a checkpoint")
    _fails_before_training(config, f"checkpoint {latest} is corrupt", resume=True)


def test_resume_refuses_another_recipe_naming_every_difference(tmp_path: Path) -> None:
    trained = quick_config(tmp_path)
    _fake_checkpoint(trained, load_space("tiny").to_dict())
    changed = quick_config(tmp_path, "optim.lr=0.05", "sampler.name=uniform", "epochs=9")
    expected = (
        f"cannot resume {trained.run_dir / 'checkpoints' / 'latest.pt'} with another config "
        f"(optim.lr {trained.optim.lr!r} -> 0.05, sampler.name {trained.sampler.name!r} -> 'uniform'); "
        "only epochs, out_dir"
    )
    with pytest.raises(ValueError) as caught:
        train(changed, resume=True, progress=False)
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)
    assert not (trained.run_dir / "config.yaml").exists()  # nothing overwritten


# ---------------------------------------------------------------------------------------------------
# the command line: exit code 2, one line on stderr, no traceback


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--set", "optimizer.lr=0.1"], "unknown key(s) optimizer"),
        (["--set", "sampler.name=bestest"], "sampler.name: 'bestest' is not one of uniform, flops, bestup, worstup"),
        (["--set", "sampler.scorer=oracle"], "sampler.scorer: 'oracle' is not one of loss, predictor"),
        (["--set", "sampler.num_candidates=0"], "sampler.num_candidates (k) must be >= 1, got 0"),
        (["--set", "sampler.num_subnets=1"], "sampler.num_subnets (n) must be >= 2"),
        (["--set", "epochs=ten"], "epochs: expected an integer, got str 'ten'"),
        (["--set", "data.name=imagefolder", "--set", "data.root=/no/such/folder"], "data root /no/such/folder"),
        (["--resume"], "no checkpoint at"),
        (["--set", "seed=100000000000000000000000"], "seed: 100000000000000000000000 is outside the 64-bit"),
        (["--set", "optim.warmup_epochs=.inf"], "optim: warmup_epochs must be a finite number, got inf"),
        (["--set", "data.image_size=0"], "data.image_size must be an integer >= 8"),
    ],
)
def test_cli_bad_input_is_one_line_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    code = cli_main(["train", str(CONFIG), "--set", f"out_dir={tmp_path}", *arguments])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("ofa train: error: ") and captured.err.count("\n") == 1
    assert message in captured.err and "Traceback" not in captured.err
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_cli_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli_main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == f"ofa train: error: config file not found: {tmp_path / 'nope.yaml'}\n"


def test_cli_process_exit_code_and_stderr(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "ofa.cli", "train", str(CONFIG), "--set", "sampler.num_candidates=0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert completed.returncode == 2
    assert completed.stderr == "ofa train: error: sampler.num_candidates (k) must be >= 1, got 0\n"
    assert completed.stdout == ""
