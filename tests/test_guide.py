"""Predictor-guided training (``ofa.guide``): a very short guided run on the tiny space and digits.

One uniform warm-up epoch, then the predictor is fitted on 8 archs evaluated in the supernet and refitted
the next epoch on 8 more; BestUp-3 candidates are scored by it. Two training steps per epoch.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from ofa.cli import main
from ofa.sampling import AttentiveSampler
from ofa.space import load_space
from ofa.train_config import load_train_config
from ofa.trainer import train
from predictors.dataset import read_arch_csv
from predictors.models import create_predictor, load_predictor

EPOCHS = 3
STEPS = 2


@pytest.fixture(scope="module")
def guided_run(tmp_path_factory):
    """The run directory, its config and result, and every attentive choice made (candidates, scores, pick)."""
    out = tmp_path_factory.mktemp("guided")
    config = load_train_config(
        None,
        (
            f"out_dir={out}",
            "name=guided",
            f"epochs={EPOCHS}",
            f"max_steps_per_epoch={STEPS}",
            "cpu_threads=1",
            "data.batch_size=32",
            "sampler.name=bestup",
            "sampler.scorer=predictor",
            "sampler.num_subnets=3",
            "sampler.num_candidates=3",
            "sampler.flops_samples=500",
            "sampler.flops_bin_mmacs=0.45",
            "guide.enabled=true",
            "guide.warmup_epochs=1",
            "guide.num_archs=8",
            "guide.refit_every=1",
            "calibration.num_batches=1",
            "calibration.batch_size=64",
        ),
    )
    choices = []
    original = AttentiveSampler.choose

    def spy(self, candidates, scores):
        chosen = original(self, candidates, scores)
        choices.append((list(candidates), np.asarray(scores, dtype=np.float64), chosen))
        return chosen

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AttentiveSampler, "choose", spy)
        result = train(config, progress=False)
    return config, result, choices


def test_run_keeps_each_predictor_and_its_arch_data(guided_run):
    config, _, _ = guided_run
    space = load_space(config.model.space)
    folder = config.run_dir / "predictor"
    fit_epochs = list(range(config.guide.warmup_epochs, EPOCHS))  # 1 and 2
    assert {path.name for path in folder.glob("predictor_epoch*.json")} == {
        f"predictor_epoch{epoch:03d}.json" for epoch in fit_epochs
    }
    records = read_arch_csv(folder / "archs.csv", space)
    seeds = [config.seed * 1000 + epoch for epoch in fit_epochs]  # the seed column tells the fits apart
    assert sorted({record.seed for record in records}) == seeds
    assert len(records) == config.guide.num_archs * len(fit_epochs)
    assert all(record.test_acc is None for record in records)  # the test split never steers training
    for epoch, seed in zip(fit_epochs, seeds):
        # each saved predictor is reproduced by a fit on its own refit's rows (the current weights) alone
        data = [record for record in records if record.seed == seed]
        refitted = create_predictor(config.guide.model, space, seed=config.seed)
        refitted.fit([record.arch for record in data], np.array([record.val_acc for record in data]))
        saved = load_predictor(folder / f"predictor_epoch{epoch:03d}.json", space)
        probe = [record.arch for record in records]
        np.testing.assert_allclose(saved.predict(probe), refitted.predict(probe), rtol=0, atol=1e-12)
        if seed != seeds[0]:  # rows of earlier weights are left out: a fit on all rows so far differs
            stale = create_predictor(config.guide.model, space, seed=config.seed)
            stale.fit(
                [r.arch for r in records if r.seed <= seed], np.array([r.val_acc for r in records if r.seed <= seed])
            )
            assert not np.allclose(saved.predict(probe), stale.predict(probe), rtol=0, atol=1e-9)
    latest = load_predictor(folder / "predictor.json", space)
    np.testing.assert_allclose(latest.predict(probe), saved.predict(probe), rtol=0, atol=1e-12)


def test_sampler_picks_the_predicted_best_after_warm_up(guided_run):
    config, result, choices = guided_run
    space = load_space(config.model.space)
    folder = config.run_dir / "predictor"
    warmup_steps = config.guide.warmup_epochs * STEPS
    guided_steps = (EPOCHS - config.guide.warmup_epochs) * STEPS
    assert len(choices) == guided_steps  # warm-up is uniform: no attentive choice before the first fit
    with (config.run_dir / "metrics.csv").open() as handle:
        samplers = [row["sampler"] for row in csv.DictReader(handle)]
    assert samplers == ["uniform-warmup"] + ["bestup"] * (EPOCHS - 1)
    for step, (candidates, scores, chosen) in enumerate(choices):
        epoch = config.guide.warmup_epochs + step // STEPS
        predictor = load_predictor(folder / f"predictor_epoch{epoch:03d}.json", space)
        np.testing.assert_allclose(scores, predictor.predict(candidates), rtol=0, atol=1e-12)  # the guide scored
        assert chosen == candidates[int(np.argmax(scores))]
        assert result.trained_archs[warmup_steps + step] == [chosen]  # and the chosen arch was trained


def test_evaluate_command_measures_the_guide_archs_again(guided_run, tmp_path, capsys):
    config, _, _ = guided_run
    space = load_space(config.model.space)
    source = config.run_dir / "predictor" / "archs.csv"
    out = tmp_path / "again.csv"
    arguments = ["evaluate", str(config.run_dir), "--archs-from", str(source), "--num-archs", "2", "--out", str(out)]
    assert main([*arguments, "--calibration-seed", "7", "--checkpoint", "latest"]) == 0
    assert "calibration seed 7" in capsys.readouterr().out
    again = read_arch_csv(out, space)
    assert [record.arch for record in again] == [record.arch for record in read_arch_csv(source, space)[:2]]
    assert {record.seed for record in again} == {7}
    assert main([*arguments, "--checkpoint", "latest"]) == 0  # the run's own calibration seed: a second measurement
    assert [record.seed for record in read_arch_csv(out, space)] == [7, 7, 0, 0]
    assert main([*arguments, "--num-archs", "0"]) == 2
    assert "--num-archs must be >= 1" in capsys.readouterr().err


def test_guide_measures_on_a_fixed_val_subset_when_asked():
    from ofa.trainer import _guide_val_loader, build_data

    config = load_train_config(None, ("guide.val_images=50",))
    data = build_data(config, load_space(config.model.space))
    full = torch.utils.data.DataLoader(data.val, 64)
    subset = _guide_val_loader(config, data, full)
    assert len(subset.dataset) == 50 and subset is not full
    again = _guide_val_loader(config, data, full)
    assert subset.dataset.indices == again.dataset.indices  # the same images at every refit
    everything = load_train_config(None, ())
    assert _guide_val_loader(everything, data, full) is full


@pytest.mark.parametrize("key", ["guide.val_images=0", "guide.calibration_batches=0"])
def test_guide_measurement_knobs_refuse_zero(key):
    with pytest.raises(ValueError, match=key.split("=")[0].split(".")[1]):
        load_train_config(None, (key,))
