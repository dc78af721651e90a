"""Fine-tuning and from-scratch training of one subnet (``ofa finetune``) on the briefly trained digits run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ofa.finetune
from ofa.cli import main
from ofa.deploy import export_from_run
from ofa.evaluate import evaluate_model
from ofa.export import export_subnet, load_subnet, read_export_info
from ofa.finetune import FinetuneSettings, finetune_subnet, state_path
from ofa.runs import LoadedRun, load_run
from ofa.space import Arch, load_space
from ofa.supernet import Supernet


@pytest.fixture(scope="module")
def run(trained_run: Path) -> LoadedRun:
    return load_run(trained_run)


@pytest.fixture(scope="module")
def arch(run: LoadedRun) -> Arch:
    """A mid-sized arch of the tiny space, not the smallest (the largest is the teacher)."""
    largest = run.space.max_arch().to_dict()
    largest["depth"] = [1] * len(largest["depth"])
    largest["kernel_size"] = [kernels[:1] for kernels in largest["kernel_size"]]
    largest["expand_ratio"] = [ratios[:1] for ratios in largest["expand_ratio"]]
    return run.space.arch_from_dict(largest)


@pytest.fixture(scope="module")
def arch_file(arch: Arch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "arch.json"
    path.write_text(json.dumps(arch.to_dict()))
    return path


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_finetune_records_before_and_after_and_the_export_reproduces_them(
    run: LoadedRun, arch: Arch, tmp_path: Path
) -> None:
    result = finetune_subnet(run, arch, FinetuneSettings(epochs=1, distill=True), tmp_path / "tuned", progress=False)
    metadata = read_export_info(tmp_path / "tuned")["metadata"]
    assert metadata["val_acc_before"] == run.evaluate(arch, "val").accuracy
    assert metadata["test_acc_before"] == run.evaluate(arch, "test").accuracy
    assert (metadata["training"], metadata["epochs"], metadata["distill"]) == ("finetune", 1, 1)
    assert metadata["lr"] == pytest.approx(run.config.optim.lr * ofa.finetune.FINETUNE_LR_FACTOR)
    assert metadata["run"] == str(run.run_dir) and metadata["source_export"] is None
    model = load_subnet(tmp_path / "tuned")
    assert model.arch == arch
    assert evaluate_model(model, run.val_loader, arch.resolution).accuracy == metadata["val_acc"] == result.val_acc
    assert evaluate_model(model, run.test_loader, arch.resolution).accuracy == metadata["test_acc"]
    run.supernet.set_active(arch)
    taken = run.supernet.extract(arch).state_dict()
    changed = [name for name, tensor in _weights(tmp_path / "tuned").items() if not torch.equal(tensor, taken[name])]
    assert any(name.endswith("conv.weight") for name in changed)  # it trained
    assert not state_path(tmp_path / "tuned").exists()  # the resumable state is gone once the export exists


@pytest.mark.slow
def test_from_scratch_starts_from_the_supernet_initialisation_with_the_run_recipe(
    run: LoadedRun, arch: Arch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[dict[str, torch.Tensor]] = []
    original = ofa.finetune._train_epoch

    def record(model, *args, **kwargs):
        if not started:
            started.append({name: tensor.clone() for name, tensor in model.state_dict().items()})
        return original(model, *args, **kwargs)

    monkeypatch.setattr(ofa.finetune, "_train_epoch", record)
    finetune_subnet(run, arch, FinetuneSettings(epochs=1, from_scratch=True, seed=3), tmp_path / "s", progress=False)
    torch.manual_seed(3)
    fresh = Supernet(run.space, run.num_classes, run.config.model.dropout)
    fresh.zero_init_last_bn()
    expected = fresh.extract(arch).state_dict()
    assert all(torch.equal(started[0][name], expected[name]) for name in expected)
    metadata = read_export_info(tmp_path / "s")["metadata"]
    assert metadata["training"] == "scratch" and metadata["lr"] == run.config.optim.lr
    assert metadata["val_acc_before"] is None and metadata["test_acc_before"] is None


@pytest.mark.slow
def test_an_interrupted_job_resumes_to_the_same_weights(
    run: LoadedRun, arch: Arch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = FinetuneSettings(epochs=2, seed=1)
    finetune_subnet(run, arch, settings, tmp_path / "straight", progress=False)
    original, calls = ofa.finetune._train_epoch, []

    def killed_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(ofa.finetune, "_train_epoch", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        finetune_subnet(run, arch, settings, tmp_path / "resumed", progress=False)
    assert state_path(tmp_path / "resumed").is_file() and not (tmp_path / "resumed").exists()
    monkeypatch.setattr(ofa.finetune, "_train_epoch", original)
    finetune_subnet(run, arch, settings, tmp_path / "resumed", progress=False)
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


def test_a_leftover_job_with_other_settings_is_refused_unless_forced(
    run: LoadedRun, arch: Arch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    leftover = state_path(tmp_path / "out")
    torch.save({"model": {}, "space": {}, "job": {"epochs": 9}}, leftover)  # another job's state
    with pytest.raises(ValueError, match="unfinished job with other settings"):
        finetune_subnet(run, arch, FinetuneSettings(epochs=1), tmp_path / "out", progress=False)
    assert torch.load(leftover, weights_only=True)["job"] == {"epochs": 9}  # kept

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ofa.finetune, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):  # with force the job starts over: the leftover is gone
        finetune_subnet(run, arch, FinetuneSettings(epochs=1), tmp_path / "out", force=True, progress=False)
    assert not leftover.exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_finetunes_an_export_and_records_its_source(
    trained_run: Path, arch_file: Path, tmp_path: Path, capsys
) -> None:
    export_from_run(trained_run, arch_file, None, tmp_path / "export")
    assert main(["finetune", str(tmp_path / "export"), "--epochs", "1", "--out", str(tmp_path / "tuned")]) == 0
    assert "val" in capsys.readouterr().out
    metadata = read_export_info(tmp_path / "tuned")["metadata"]
    assert metadata["source_export"] == str(tmp_path / "export") and metadata["run"] == str(trained_run)
    assert metadata["val_acc_before"] == read_export_info(tmp_path / "export")["metadata"]["val_acc"]


def _foreign_export(folder: Path) -> Path:
    """An export of the cifar space (3 channels), which the digits run of the tiny space did not train."""
    space = load_space("cifar")
    arch = space.min_arch()
    model = Supernet(space, 10).extract(arch).eval()
    export_subnet(model, space, arch, folder, num_classes=10, mean=[0.5] * 3, std=[0.25] * 3, metadata={})
    return folder


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--flops", "0.001M", "--epochs", "1"], "0.001"),
        (["--flops", "1M", "--epochs", "0"], "epochs must be an integer >= 1, got 0"),
        (["--flops", "1M", "--epochs", "1", "--lr", "-1"], "lr must be"),
        (["--epochs", "1"], "exactly one of --arch FILE and --flops BUDGET"),
        (["--flops", "1M", "--epochs", "1", "--out", "EXISTING"], "exists and is not empty"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    trained_run: Path, tmp_path: Path, capsys, arguments: list[str], message: str
) -> None:
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "arch.json").write_text("{}")
    arguments = [str(tmp_path / "existing") if value == "EXISTING" else value for value in arguments]
    out = [] if "--out" in arguments else ["--out", str(tmp_path / "new")]
    assert main(["finetune", str(trained_run), *arguments, *out]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
    assert not (tmp_path / "new").exists()


def test_cli_refuses_an_export_of_another_space(trained_run: Path, tmp_path: Path, capsys) -> None:
    export = _foreign_export(tmp_path / "foreign")
    code = main(["finetune", str(export), "--run", str(trained_run), "--epochs", "1", "--out", str(tmp_path / "o")])
    assert code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "space 'cifar'" in error and "'tiny'" in error
    assert not (tmp_path / "o").exists()
