"""Progressive shrinking: the phase schedule, its sub-spaces, the step, the teacher, channel sorting and exact
resume (tiny space, digits, a few small steps)."""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ofa.trainer
from ofa.bn import resize_to
from ofa.checkpoint import load_checkpoint
from ofa.cli import main as cli_main
from ofa.compare import at_equal_compute, subnet_passes
from ofa.progressive import DEFAULT_PHASES, Phase, build_schedule, equal_compute_epochs, phase_epochs
from ofa.space import Arch, load_space
from ofa.supernet import Supernet
from ofa.train import StepSettings, build_optimizer, progressive_step
from ofa.train_config import ProgressiveSection
from ofa.trainer import TrainResult, train
from tests.test_train import SINGLE
from tests.test_trainer import (
    Interrupt,
    assert_same_run,
    assert_same_state,
    counting,
    quick_config,
    read_archs,
    read_metrics,
)

STEPS = 2
EPOCHS = 7  # one epoch per default phase on tiny, two for the full network
PROGRESSIVE = ("progressive.enabled=true", f"epochs={EPOCHS}", f"max_steps_per_epoch={STEPS}")


def test_phase_epochs_follow_the_weights_and_give_every_phase_one() -> None:
    weights = [phase.epochs for phase in DEFAULT_PHASES]
    for total in (6, 7, 11, 20, 59, 590, 1000):
        epochs = phase_epochs(weights, total)
        assert sum(epochs) == total and min(epochs) >= 1
        exact = [total * weight / sum(weights) for weight in weights]
        assert all(abs(count - share) < 1 for count, share in zip(epochs, exact) if share >= 1)
    assert phase_epochs(weights, 590) == (180, 120, 25, 120, 25, 120)  # once-for-all's own epochs
    assert phase_epochs(weights, 6) == (1,) * 6
    with pytest.raises(ValueError, match=r"epochs \(5\) must be >= the number of progressive phases \(6\)"):
        phase_epochs(weights, 5)


def test_default_schedule_opens_kernel_then_depth_then_expand() -> None:
    space = load_space("tiny")
    schedule = build_schedule(space, None, 12)
    assert [phase.name for phase in schedule.phases] == [phase.name for phase in DEFAULT_PHASES]
    full, kernel, depth_1, depth_2, expand_1, expand_2 = schedule.spaces
    assert full.size() == 1 and full.max_arch() == space.max_arch()
    assert {stage.kernel_size for stage in kernel.stages} == {stage.kernel_size for stage in space.stages}
    assert kernel.resolution == space.resolution and kernel.stages[1].depth == (3,)
    assert depth_1.stages[1].depth == (2, 3) and depth_2.stages[1].depth == (1, 2, 3)
    assert depth_2.stages[1].expand_ratio == (6,) and depth_2.stem.width == (16,)
    assert expand_1.stages[1].expand_ratio == (4, 6) and expand_2 == space
    assert schedule.expand_before(4) == (1, 6) and schedule.expand_before(5) == (1, 4, 6)
    assert schedule.expand_before(3) is None
    assert schedule.starts == tuple(sum(schedule.epochs[:index]) for index in range(6))
    assert [schedule.phase_at(epoch) for epoch in range(12)] == [
        index for index, count in enumerate(schedule.epochs) for _ in range(count)
    ]


def test_default_schedule_drops_what_the_space_does_not_make_elastic() -> None:
    tiny = load_space("tiny")
    stages = tuple(dataclasses.replace(stage, kernel_size=(3,)) for stage in tiny.stages)
    space = dataclasses.replace(tiny, stages=stages)
    schedule = build_schedule(space, None, 10)
    assert [phase.name for phase in schedule.phases] == ["full", "kernel", "depth-1", "depth-2", "expand-1", "expand-2"]
    assert schedule.phases[1].open == ("resolution",)
    assert schedule.spaces[-1] == space


@pytest.mark.parametrize(
    ("phases", "message"),
    [
        ([Phase("kernel", ("kernel",))], "the first phase must open nothing"),
        (
            [Phase("full"), Phase("all", ("kernel", "expand", "width", "resolution"))],
            "never open all choices of depth, which space 'tiny' makes elastic",
        ),
        (
            [Phase("full"), Phase("all", ("kernel", "depth", "expand", "width", "resolution"), choices=2)],
            "never open all choices of depth, expand",
        ),
    ],
)
def test_phase_lists_that_leave_an_elasticity_closed_are_refused(phases: list[Phase], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_schedule(load_space("tiny"), phases, 10)


def test_a_phase_opening_a_fixed_dimension_is_refused() -> None:
    tiny = load_space("tiny")
    space = dataclasses.replace(tiny, stages=tuple(dataclasses.replace(s, kernel_size=(3,)) for s in tiny.stages))
    phases = [Phase("full"), Phase("all", ("kernel", "depth", "expand", "width", "resolution"))]
    with pytest.raises(ValueError, match="opens kernel, which space 'tiny' does not make elastic"):
        build_schedule(space, phases, 10)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("progressive.phases=[{name: k, open: [kernel]}]",), "the first phase must open nothing"),
        (("progressive.phases=[{name: full}, {name: a, open: [depht]}]",), "unknown dimension"),
        (("progressive.phases=[{name: full, warmup: 2, epochs: 1}]",), "warmup must be in"),
        (("progressive.kd_ratio=-1",), "kd_ratio must be a finite number >= 0"),
        (("guide.enabled=true",), "set guide.enabled to false"),
        (("epochs=3",), r"epochs \(3\) must be >= the number of progressive phases \(6\)"),
    ],
)
def test_bad_progressive_settings_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, overrides: tuple[str, ...], message: str
) -> None:
    config = Path(__file__).resolve().parent.parent / "configs" / "train" / "digits.yaml"
    sets = [
        item
        for override in ("progressive.enabled=true", f"out_dir={tmp_path}", *overrides)
        for item in ("--set", override)
    ]
    assert cli_main(["train", str(config), *sets]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and re.search(message, error), error
    assert not list(tmp_path.rglob("*.pt"))


def test_equal_compute_epochs_match_the_sandwich_passes() -> None:
    space = load_space("cifar")
    for sandwich_epochs in (6, 16):
        epochs = equal_compute_epochs(space, None, sandwich_epochs, 4)
        gap = abs(build_schedule(space, None, epochs).passes(1) - 4 * sandwich_epochs)
        for other in (epochs - 1, epochs + 1):
            if other >= len(DEFAULT_PHASES):
                assert abs(build_schedule(space, None, other).passes(1) - 4 * sandwich_epochs) >= gap
        assert gap <= 2


# ---------------------------------------------------------------------------------------------------
# the step


def _batch(space_name: str = "tiny") -> tuple[Supernet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    supernet = Supernet(load_space(space_name), 10)
    return supernet, torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))


def _step_loss(teacher: Supernet | None, kd_ratio: float, archs: list[Arch]) -> list[float]:
    supernet, images, labels = _batch()
    settings = StepSettings(0.1, 0.0, 0.0, False)
    optimizer = build_optimizer(supernet, ofa.trainer.TrainConfig().optim)
    return progressive_step(supernet, teacher, images, labels, archs, optimizer, settings, SINGLE, kd_ratio)


def test_progressive_step_adds_the_teachers_distillation_to_the_label_loss() -> None:
    space = load_space("tiny")
    first, second = (space.sample(random.Random(seed)) for seed in range(2))
    archs = [first, second, dataclasses.replace(second, resolution=first.resolution)]  # teacher reused at one size
    teacher, images, _ = _batch()
    teacher = ofa.trainer._frozen_teacher(teacher)
    labels_only = _step_loss(None, 1.0, archs)
    assert _step_loss(teacher, 0.0, archs) == pytest.approx(labels_only)
    with_teacher = _step_loss(teacher, 0.5, archs)
    student, _, _ = _batch()
    student.train()
    for arch, total, label_loss in zip(archs, with_teacher, labels_only):
        resized = resize_to(images, arch.resolution)
        with torch.no_grad():
            student.set_active(arch)
            log_q = F.log_softmax(student(resized), dim=1)
            p = F.softmax(teacher(resized), dim=1)
        assert total == pytest.approx(label_loss + 0.5 * float(-(p * log_q).sum(1).mean()), rel=1e-4)


# ---------------------------------------------------------------------------------------------------
# training


@pytest.fixture(scope="module")
def progressive_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, dict]:
    """A straight progressive run, with the weights at the moment the teacher was frozen."""
    frozen = {}
    original = ofa.trainer._frozen_teacher

    def recording(supernet: Supernet) -> Supernet:
        frozen["state"] = {key: value.clone() for key, value in supernet.state_dict().items()}
        return original(supernet)

    ofa.trainer._frozen_teacher = recording
    try:
        result = train(quick_config(tmp_path_factory.mktemp("progressive"), *PROGRESSIVE), progress=False)
    finally:
        ofa.trainer._frozen_teacher = original
    return result, frozen


def test_each_phase_samples_its_own_subspace(progressive_run: tuple[TrainResult, dict]) -> None:
    result, _ = progressive_run
    space = load_space("tiny")
    schedule = build_schedule(space, None, EPOCHS)
    labels = [row["sampler"] for row in read_metrics(result.run_dir)]
    assert labels == [f"progressive:{schedule.phases[schedule.phase_at(e)].name}" for e in range(EPOCHS)]
    for line in read_archs(result.run_dir):
        index = schedule.phase_at(line["epoch"] - 1)
        archs = [Arch.from_dict(data) for data in line["archs"]]
        assert len(archs) == schedule.phases[index].subnets
        for arch in archs:
            schedule.spaces[index].validate(arch)
    assert {Arch.from_dict(a) for line in read_archs(result.run_dir) for a in line["archs"]} != {space.max_arch()}


def test_teacher_is_the_frozen_full_network_of_the_first_phase(progressive_run: tuple[TrainResult, dict]) -> None:
    result, frozen = progressive_run
    state = load_checkpoint(result.run_dir / "checkpoints" / "latest.pt")
    assert state["phase"] == 5
    assert_same_state(state["teacher"], frozen["state"], "teacher")
    moved = [key for key in frozen["state"] if not torch.equal(frozen["state"][key], state["model"][key])]
    assert moved  # the supernet trained on after the teacher was frozen


def test_channels_are_sorted_at_the_start_of_each_expand_phase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(ofa.trainer, "sort_channels", lambda supernet, ratios: calls.append(tuple(ratios)) or 0)
    train(quick_config(tmp_path, *PROGRESSIVE, "max_steps_per_epoch=1"), progress=False)
    assert calls == [(1, 6), (1, 4, 6)]


@pytest.mark.slow  # about 5 s: two short progressive runs, one killed and resumed
def test_progressive_resume_after_a_kill_in_a_later_phase_is_exact(
    tmp_path: Path, progressive_run: tuple[TrainResult, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    straight, _ = progressive_run
    config = quick_config(tmp_path, *PROGRESSIVE)

    def kill(args: tuple) -> tuple:
        raise Interrupt

    # full x2, kernel, depth-1, depth-2: the kill lands in expand-1's first step, whose start sorted the channels
    kill_at = 5 * STEPS + 1
    monkeypatch.setattr(ofa.trainer, "progressive_step", counting(ofa.trainer.progressive_step, kill_at, kill))
    with pytest.raises(Interrupt):
        train(config, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(config.run_dir / "checkpoints" / "latest.pt")["phase"] == 3

    resumed = train(config, resume=True, progress=False)

    assert_same_run(config.run_dir, straight.run_dir)
    for key in ("phase", "teacher"):
        assert_same_state(
            load_checkpoint(config.run_dir / "checkpoints" / "latest.pt")[key],
            load_checkpoint(straight.run_dir / "checkpoints" / "latest.pt")[key],
            key,
        )
    assert_same_state(resumed.supernet.state_dict(), straight.supernet.state_dict())


def test_progressive_resume_refuses_other_epochs(progressive_run: tuple[TrainResult, dict]) -> None:
    result, _ = progressive_run
    config = quick_config(result.run_dir.parent, *PROGRESSIVE, "epochs=8")
    with pytest.raises(ValueError, match="progressive phases split the run's epochs"):
        train(config, resume=True, progress=False)


def test_compare_gives_progressive_shrinking_the_sandwich_passes() -> None:
    sandwich = quick_config(Path("unused"), "epochs=6", "sampler.num_subnets=4")
    assert at_equal_compute(sandwich) is sandwich
    assert subnet_passes(sandwich, 10) == 6 * 4 * 10
    progressive = at_equal_compute(dataclasses.replace(sandwich, progressive=ProgressiveSection(enabled=True)))
    assert progressive.epochs > 6
    passes = subnet_passes(progressive, 10)
    assert passes == build_schedule(load_space("tiny"), None, progressive.epochs).passes(10)
    assert abs(passes - 240) <= 20  # within one progressive epoch of the smallest phase
