"""Every shipped training config loads under the strict rules, and the paper recipe keeps the paper's values."""

from __future__ import annotations

from pathlib import Path

import pytest

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
