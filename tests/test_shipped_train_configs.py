"""Every shipped training config loads under the strict rules, and the paper recipe keeps the paper's values."""

from __future__ import annotations

from pathlib import Path

import pytest

from ofa.progressive import build_schedule
from ofa.space import load_space
from ofa.train_config import load_train_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs" / "train").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_shipped_config_loads_and_names_a_shipped_space(path):
    config = load_train_config(path)
    assert load_space(config.model.space).name == config.model.space


def test_attentivenas_recipe_uses_the_paper_values():
    config = load_train_config(ROOT / "configs" / "train" / "attentivenas_imagenet.yaml")
    assert (config.model.dropout, config.model.drop_path) == (0.2, 0.2)
    assert config.sampler.flops_bin_mmacs == 25
    assert (config.sampler.name, config.sampler.num_candidates, config.sampler.scorer) == ("bestup", 3, "loss")
    assert config.calibration.batches_for(config.data.name) * config.calibration.batch_size == 2000


def test_real_data_recipe_reads_an_image_folder_with_a_test_split():
    config = load_train_config(ROOT / "configs" / "train" / "cifar10.yaml")
    assert (config.data.name, config.data.augment, config.data.test_fraction) == ("imagefolder", "crop_flip", 0.0)
    assert config.calibration.batches_for(config.data.name) * config.calibration.batch_size >= 2000


def test_once_for_all_recipe_runs_the_published_progressive_schedule():
    config = load_train_config(ROOT / "configs" / "train" / "ofa_mbv3_imagenet.yaml")
    space = load_space(config.model.space)
    schedule = build_schedule(space, config.progressive.phases, config.epochs)
    assert schedule.epochs == (180, 120, 25, 120, 25, 120)
    rates = [round(config.optim.lr * phase.lr_scale, 2) for phase in schedule.phases]
    assert rates == [2.6, 0.96, 0.08, 0.24, 0.08, 0.24]
    assert [phase.subnets for phase in schedule.phases] == [1, 1, 2, 2, 4, 4]
    assert [round(schedule.warmup_epochs(index)) for index in range(6)] == [5, 5, 0, 5, 0, 5]
    assert space.kernel_transform and schedule.spaces[-1] == space
    assert (config.optim.weight_decay, config.model.dropout, config.progressive.kd_ratio) == (3e-5, 0.1, 1.0)


def test_progressive_real_data_recipe_has_the_sandwich_recipes_compute():
    from dataclasses import replace

    from ofa.compare import at_equal_compute

    progressive = load_train_config(ROOT / "configs" / "train" / "cifar10_progressive.yaml")
    sandwich = load_train_config(ROOT / "configs" / "train" / "cifar10.yaml")
    assert at_equal_compute(replace(progressive, epochs=sandwich.epochs)).epochs == progressive.epochs
    for key in ("data", "model", "optim", "calibration"):
        assert getattr(progressive, key) == getattr(sandwich, key)


def test_alphanet_recipe_is_the_attentivenas_loop_with_the_alpha_divergence():
    from dataclasses import replace

    alphanet = load_train_config(ROOT / "configs" / "train" / "alphanet_imagenet.yaml")
    attentive = load_train_config(ROOT / "configs" / "train" / "attentivenas_imagenet.yaml")
    assert (alphanet.kd.loss, alphanet.kd.alpha_min, alphanet.kd.alpha_max, alphanet.kd.iw_clip) == ("alpha", -1, 1, 5)
    assert replace(alphanet, name=attentive.name, kd=attentive.kd) == attentive
