"""The sandwich step, the attentive samplers and their scorers, the optimizer and the schedule."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ofa.bn import resize_to
from ofa.distributed import DistributedContext
from ofa.flops import count_macs, count_macs_many
from ofa.sampling import AttentiveSampler, FlopsTargetSampler, build_flops_table
from ofa.space import Arch, SearchSpace
from ofa.supernet import Supernet
from ofa.train import (
    StepSettings,
    TrainingDivergedError,
    build_optimizer,
    build_scheduler,
    frozen_bn_statistics,
    loss_scorer,
    sandwich_step,
    soft_cross_entropy,
)
from ofa.train_config import OptimSection, load_train_config
from ofa.trainer import _ArchSource, _static_predictor_scorer
from predictors.models import create_predictor

NUM_CLASSES = 10
SINGLE = DistributedContext(rank=0, world_size=1, device=torch.device("cpu"))
NO_CLIP = StepSettings(label_smoothing=0.1, dropout=0.0, grad_clip_value=0.0, bf16=False)


@pytest.fixture(scope="module")
def flops_sampler(tiny: SearchSpace) -> FlopsTargetSampler:
    """A FLOPs-target sampler on a small table."""
    return FlopsTargetSampler(tiny, build_flops_table(tiny, NUM_CLASSES, num_samples=400, bin_mmacs=0.6), NUM_CLASSES)


def make_batch(size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 32 px images and labels."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, 32, 32, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (size,), generator=generator)
    return images, labels


def middle_arch(space: SearchSpace) -> Arch:
    """A subnet between min and max that uses the s1 projection shortcut (stem 16 -> s1 8), which neither
    the max (16 -> 16) nor the min (8 -> 8) subnet reaches, and not the third s2 block nor the wide head."""
    arch = Arch(
        resolution=24,
        width=(16, 8, 16, 24, 32, 64),
        depth=(1, 2, 2, 1),
        kernel_size=((5,), (3, 5), (5, 3), (3,)),
        expand_ratio=((1,), (4, 6), (3, 6), (4,)),
    )
    return space.validate(arch)


# ---------------------------------------------------------------------------------------------------
# the sandwich step


def test_sandwich_step_gives_each_subnet_its_own_gradients(tiny: SearchSpace) -> None:
    torch.manual_seed(0)
    supernet = Supernet(tiny, NUM_CLASSES)  # no zero-initialised BN: every block passes gradients at once
    archs = [tiny.max_arch(), middle_arch(tiny), tiny.min_arch()]
    # the accumulated gradients before each subnet's forward pass; a subnet's own is the next one's minus it
    snapshots: list[dict[str, torch.Tensor]] = []

    def snapshot(*_: object) -> None:
        named = supernet.named_parameters()
        snapshots.append({name: p.grad.clone() for name, p in named if p.grad is not None})

    supernet.register_forward_pre_hook(snapshot)
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.01)
    before = {name: tensor.clone() for name, tensor in supernet.named_parameters()}
    images, labels = make_batch()

    sandwich_step(supernet, images, labels, archs, optimizer, NO_CLIP, SINGLE)

    snapshot()
    per_slot = [
        {name: grad - earlier.get(name, torch.zeros_like(grad)) for name, grad in later.items()}
        for earlier, later in itertools.pairwise(snapshots)
    ]
    assert len(per_slot) == len(archs)  # one forward per subnet
    for grads in per_slot:  # max, sampled and min each send a non-zero gradient
        assert sum(float(grad.abs().sum()) for grad in grads.values()) > 0
    largest, sampled, smallest = per_slot

    def nonzero(grads: dict[str, torch.Tensor], name: str, index: tuple = (...,)) -> bool:
        return name in grads and bool(grads[name][index].abs().sum() > 0)

    # the stem's first 8 filters are shared by all; filters 8..15 belong to stem width 16 only
    assert nonzero(smallest, "stem.conv.weight", (slice(0, 8),))
    assert not nonzero(smallest, "stem.conv.weight", (slice(8, 16),))
    assert nonzero(largest, "stem.conv.weight", (slice(8, 16),))
    assert nonzero(sampled, "stem.conv.weight", (slice(8, 16),))
    # the s1 projection shortcut (16 -> 8 channels) is reached by the sampled subnet alone
    shortcut = "stages.0.0.shortcut.conv.weight"
    assert nonzero(sampled, shortcut)
    assert not nonzero(largest, shortcut) and not nonzero(smallest, shortcut)
    # the third s2 block and the head's channels 64..127 are reached by the largest subnet alone
    third_block = [name for name in largest if name.startswith("stages.1.2.")]
    assert len(third_block) >= 6 and all(nonzero(largest, name) for name in third_block)
    assert not any(nonzero(grads, name) for grads in (sampled, smallest) for name in third_block)
    assert nonzero(largest, "head.classifier.weight", (slice(None), slice(64, 128)))
    assert not nonzero(sampled, "head.classifier.weight", (slice(None), slice(64, 128)))
    assert not nonzero(smallest, "head.classifier.weight", (slice(None), slice(64, 128)))
    # one optimizer step over the sum of the three subnets' gradients; weights no subnet reached get none
    unreached = [name for name, parameter in supernet.named_parameters() if parameter.grad is None]
    # a later block's projection shortcut: its input and output widths are equal in all three archs
    assert "stages.0.1.shortcut.conv.weight" in unreached
    for name, parameter in supernet.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(parameter.detach(), before[name] - 0.01 * parameter.grad)
        else:
            assert torch.equal(parameter.detach(), before[name])


def _expected_losses(supernet: Supernet, archs: list[Arch], images, labels, label_weight: float) -> list[float]:
    """The sandwich losses computed by hand: labels for the first arch, then distillation (+ labels)."""
    expected = []
    with torch.no_grad(), frozen_bn_statistics(supernet):
        supernet.set_active(archs[0])
        teacher_logits = supernet(images)
        expected.append(float(F.cross_entropy(teacher_logits, labels, label_smoothing=0.1)))
        teacher = F.softmax(teacher_logits, dim=1)
        for arch in archs[1:]:
            supernet.set_active(arch)
            logits = supernet(resize_to(images, arch.resolution))
            distilled = float(soft_cross_entropy(logits, teacher))
            labelled = float(F.cross_entropy(logits, labels, label_smoothing=0.1))
            expected.append((1 - label_weight) * distilled + label_weight * labelled)
    return expected


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_sandwich_step_losses_are_labels_then_distillation_mixed_with_labels(tiny: SearchSpace, weight: float) -> None:
    torch.manual_seed(1)
    supernet = Supernet(tiny, NUM_CLASSES)
    archs = [tiny.max_arch(), middle_arch(tiny), tiny.min_arch()]
    images, labels = make_batch(seed=1)
    expected = _expected_losses(supernet, archs, images, labels, weight)
    settings = dataclasses.replace(NO_CLIP, distill_label_weight=weight)
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.01)

    losses = sandwich_step(supernet, images, labels, archs, optimizer, settings, SINGLE)

    assert losses == pytest.approx(expected, rel=1e-5)
    assert len(set(losses)) == len(losses)


def test_sandwich_step_needs_max_and_min(tiny: SearchSpace) -> None:
    supernet = Supernet(tiny, NUM_CLASSES)
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.01)
    images, labels = make_batch(4)
    with pytest.raises(ValueError, match="at least the max and min"):
        sandwich_step(supernet, images, labels, [tiny.max_arch()], optimizer, NO_CLIP, SINGLE)


def test_nan_loss_raises_and_leaves_the_weights(tiny: SearchSpace) -> None:
    supernet = Supernet(tiny, NUM_CLASSES)
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.01, momentum=0.9)
    images, labels = make_batch(4)
    images[0, 0, 0, 0] = float("nan")
    before = {name: tensor.clone() for name, tensor in supernet.named_parameters()}
    with pytest.raises(TrainingDivergedError, match="largest subnet is nan"):
        sandwich_step(supernet, images, labels, [tiny.max_arch(), tiny.min_arch()], optimizer, NO_CLIP, SINGLE)
    for name, tensor in supernet.named_parameters():
        assert torch.equal(tensor, before[name]), name
    assert not optimizer.state  # no step was taken


# ---------------------------------------------------------------------------------------------------
# BestUp / WorstUp


def test_attentive_choice_follows_the_scores(tiny: SearchSpace, flops_sampler: FlopsTargetSampler) -> None:
    losses: dict[Arch, float] = {}

    def fake_loss(arch: Arch) -> float:  # a fixed, arbitrary loss per arch
        return losses.setdefault(arch, random.Random(arch.to_json()).random())

    seen: list[list[Arch]] = []

    def scorer(archs: Sequence[Arch]) -> np.ndarray:
        seen.append(list(archs))
        return -np.array([fake_loss(arch) for arch in archs])  # higher score = lower loss

    best = AttentiveSampler(flops_sampler, 4, "best")
    worst = AttentiveSampler(flops_sampler, 4, "worst")
    differed = 0
    for seed in range(8):
        candidates = best.candidates(random.Random(seed))
        by_loss = sorted(set(candidates), key=fake_loss)
        chosen_best = best.sample(random.Random(seed), scorer)
        assert seen[-1] == candidates  # scored exactly the drawn candidates
        chosen_worst = worst.sample(random.Random(seed), scorer)
        assert seen[-1] == candidates
        assert chosen_best == by_loss[0]  # BestUp trains the lowest-loss candidate
        assert chosen_worst == by_loss[-1]  # WorstUp the highest-loss one
        differed += chosen_best != chosen_worst
    assert differed >= 4


def test_attentive_with_one_candidate_skips_the_scorer(flops_sampler: FlopsTargetSampler) -> None:
    def scorer(archs: Sequence[Arch]) -> np.ndarray:
        raise AssertionError("a single candidate needs no score")

    arch = AttentiveSampler(flops_sampler, 1, "best").sample(random.Random(0), scorer)
    assert arch == flops_sampler.sample(random.Random(0))


def test_attentive_rejects_bad_settings(flops_sampler: FlopsTargetSampler) -> None:
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        AttentiveSampler(flops_sampler, 0, "best")
    with pytest.raises(ValueError, match="'middle'"):
        AttentiveSampler(flops_sampler, 3, "middle")
    sampler = AttentiveSampler(flops_sampler, 3, "best")
    candidates = sampler.candidates(random.Random(0))
    with pytest.raises(ValueError, match="expected 3 scores"):
        sampler.choose(candidates, np.zeros(2))


def test_loss_scorer_ranks_by_the_minibatch_loss(tiny: SearchSpace, flops_sampler: FlopsTargetSampler) -> None:
    torch.manual_seed(2)
    supernet = Supernet(tiny, NUM_CLASSES)
    images, labels = make_batch(16, seed=2)
    reference = copy.deepcopy(supernet)
    buffers = {name: tensor.clone() for name, tensor in supernet.named_buffers()}
    score = loss_scorer(supernet, images, labels, 0.1, SINGLE)
    differed = 0
    for seed in range(3):
        candidates = AttentiveSampler(flops_sampler, 3, "best").candidates(random.Random(seed))
        own_losses = []
        with torch.no_grad():
            for arch in candidates:
                reference.set_active(arch)
                logits = reference(resize_to(images, arch.resolution))  # train mode: batch statistics
                own_losses.append(float(F.cross_entropy(logits, labels, label_smoothing=0.1)))
        np.testing.assert_allclose(score(candidates), -np.array(own_losses), rtol=1e-5)
        best = AttentiveSampler(flops_sampler, 3, "best").sample(random.Random(seed), score)
        worst = AttentiveSampler(flops_sampler, 3, "worst").sample(random.Random(seed), score)
        assert best == candidates[int(np.argmin(own_losses))]
        assert worst == candidates[int(np.argmax(own_losses))]
        differed += best != worst
    assert differed >= 1
    for name, tensor in supernet.named_buffers():  # scoring leaves the BN statistics alone
        assert torch.equal(tensor, buffers[name]), name


def test_frozen_bn_statistics_restores_the_buffers(tiny: SearchSpace) -> None:
    supernet = Supernet(tiny, NUM_CLASSES)
    buffers = {name: tensor.clone() for name, tensor in supernet.named_buffers()}
    images, _ = make_batch(4)
    for arch in (tiny.max_arch(), tiny.min_arch()):
        supernet.set_active(arch)
        with torch.no_grad(), frozen_bn_statistics(supernet):
            supernet(images)
    for name, tensor in supernet.named_buffers():
        assert torch.equal(tensor, buffers[name]), name
    assert all(module.momentum == 0.1 for module in supernet.modules() if isinstance(module, torch.nn.BatchNorm2d))
    with torch.no_grad():
        supernet(images)  # outside the context the statistics move again
    assert not torch.equal(supernet.stem.bn.running_mean, buffers["stem.bn.running_mean"])


# ---------------------------------------------------------------------------------------------------
# the trainer's arch source: sampler names and scorers wired the right way round


def _arch_source(tiny: SearchSpace, tmp_path: Path, *overrides: str) -> _ArchSource:
    config = load_train_config(None, ("sampler.flops_samples=400", "sampler.flops_bin_mmacs=0.6", *overrides))
    return _ArchSource(config, tiny, NUM_CLASSES, tmp_path)


class FakePredictor:
    """Predicted accuracy with a known ranking: resolution first, then total depth."""

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([arch.resolution + sum(arch.depth) / 100 for arch in archs], dtype=np.float64)


@pytest.mark.parametrize("name", ["bestup", "worstup"])
def test_arch_source_picks_by_predicted_accuracy(tiny: SearchSpace, tmp_path: Path, name: str) -> None:
    source = _arch_source(
        tiny, tmp_path, f"sampler.name={name}", "sampler.scorer=predictor", "sampler.num_candidates=4"
    )
    predictor = FakePredictor()

    def no_batch_scorer() -> None:
        raise AssertionError("the predictor scorer must not run the loss scorer")

    differed = 0
    for seed in range(6):
        replay = random.Random(seed)
        candidates = [source.attentive.candidates(replay) for _ in range(2)]
        chosen = source.sample(random.Random(seed), 2, no_batch_scorer, predictor.predict, warming_up=False)
        for group, arch in zip(candidates, chosen):
            predicted = predictor.predict(group)
            wanted = group[int(np.argmax(predicted))] if name == "bestup" else group[int(np.argmin(predicted))]
            assert arch == wanted
            differed += predicted.max() > predicted.min()
    assert differed >= 6


@pytest.mark.parametrize("name", ["bestup", "worstup"])
def test_arch_source_loss_scorer_direction(tiny: SearchSpace, tmp_path: Path, name: str) -> None:
    source = _arch_source(tiny, tmp_path, f"sampler.name={name}", "sampler.num_candidates=3")
    fixed_loss = {}

    def loss_of(arch: Arch) -> float:
        return fixed_loss.setdefault(arch, random.Random(arch.to_json()).random())

    def batch_scorer():  # what the trainer passes: a factory of the loss scorer of the current batch
        return lambda archs: -np.array([loss_of(arch) for arch in archs])

    for seed in range(4):
        replay = random.Random(seed)
        groups = [source.attentive.candidates(replay) for _ in range(2)]
        chosen = source.sample(random.Random(seed), 2, batch_scorer, None, warming_up=False)
        for group, arch in zip(groups, chosen):
            losses = [loss_of(candidate) for candidate in group]
            expected = group[int(np.argmin(losses))] if name == "bestup" else group[int(np.argmax(losses))]
            assert arch == expected


def test_arch_source_uniform_during_warmup_and_flops_sampler(tiny: SearchSpace, tmp_path: Path) -> None:
    source = _arch_source(tiny, tmp_path, "sampler.name=bestup")

    def fail(*args: object) -> None:
        raise AssertionError("no scoring during the uniform warm-up")

    warm = source.sample(random.Random(3), 2, fail, fail, warming_up=True)
    rng = random.Random(3)
    assert warm == [tiny.sample(rng) for _ in range(2)]
    flops = _arch_source(tiny, tmp_path, "sampler.name=flops")
    assert flops.attentive is None
    assert flops.sample(random.Random(4), 1, fail, fail, warming_up=False) == [flops.flops.sample(random.Random(4))]


def test_real_fitted_predictor_scores_bestup(tiny: SearchSpace, tmp_path: Path) -> None:
    rng = random.Random(0)
    archs = [tiny.sample(rng) for _ in range(48)]
    # a known target: accuracy grows with MACs and resolution
    targets = np.log(count_macs_many(tiny, archs, NUM_CLASSES)) + np.array([arch.resolution for arch in archs]) / 8
    fitted = create_predictor("lightgbm", tiny, num_classes=NUM_CLASSES).fit(archs, targets)
    path = tmp_path / "predictor.json"
    fitted.save(path)
    config = load_train_config(
        None,
        (
            "sampler.scorer=predictor",
            f"sampler.predictor={path}",
            "sampler.num_candidates=4",
            "sampler.flops_samples=400",
            "sampler.flops_bin_mmacs=0.6",
        ),
    )
    scorer = _static_predictor_scorer(config, tiny)  # the trainer reads the file
    source = _ArchSource(config, tiny, NUM_CLASSES, tmp_path)
    agreement = []
    for seed in range(6):
        group = source.attentive.candidates(random.Random(seed))
        (chosen,) = source.sample(random.Random(seed), 1, lambda: None, scorer, warming_up=False)
        predicted = fitted.predict(group)
        assert chosen == group[int(np.argmax(predicted))]
        true_best = max(group, key=lambda arch: np.log(count_macs(tiny, arch, NUM_CLASSES)) + arch.resolution / 8)
        agreement.append(chosen == true_best)
    assert sum(agreement) >= 3  # the fitted model ranks like the target it learned


# ---------------------------------------------------------------------------------------------------
# optimizer and schedule


def test_optimizer_decays_only_weights(tiny: SearchSpace) -> None:
    supernet = Supernet(tiny, NUM_CLASSES)
    optimizer = build_optimizer(supernet, OptimSection(weight_decay=1e-4))
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(supernet.parameters()))
    assert decay["nesterov"] and decay["momentum"] == 0.9


def test_schedule_warms_up_then_decays_to_min_lr() -> None:
    settings = OptimSection(lr=0.4, warmup_epochs=1.0, min_lr=0.04)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=settings.lr)
    scheduler = build_scheduler(optimizer, settings, steps_per_epoch=4, epochs=3)
    rates = []
    for _ in range(12):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    rates.append(scheduler.get_last_lr()[0])
    assert rates[:4] == pytest.approx([0.08, 0.16, 0.24, 0.32])  # linear warm-up over one epoch
    assert rates[4] == pytest.approx(0.4)  # peak, then cosine
    assert all(later <= earlier for earlier, later in itertools.pairwise(rates[4:]))
    assert rates[-1] == pytest.approx(0.04)
    assert rates[8] == pytest.approx(0.04 + 0.36 * 0.5)  # half way through the decay
