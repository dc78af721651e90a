"""Importing the published AttentiveNAS and once-for-all supernets, proved equal to their reference code.

The fixtures in ``tests/data/reference`` were made by running each reference implementation: its state-dict
manifest, a rule that generates every weight from its key, five archs in its own naming and its logits.
"""

from __future__ import annotations

import json
import random
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ofa.checkpoint import atomic_save, load_checkpoint
from ofa.cli import main
from ofa.importer import convert_state_dict, import_supernet, read_state_dict
from ofa.reference import FAMILIES, arch_from_reference, arch_to_reference, reference_family
from ofa.runfolder import RunFolder
from ofa.space import Arch, SearchSpace, load_arch, load_space
from ofa.supernet import Supernet
from tests.conftest import ROOT, randomise_bn, write_images

FIXTURES = Path(__file__).resolve().parent / "data" / "reference"
TOLERANCE = 1e-4  # the references' activations round differently (README of the fixtures)


@cache
def fixture(family: str) -> dict:
    """The reference's manifest, weight rule, archs and input rule."""
    return json.loads((FIXTURES / f"{family}_reference.json").read_text())


def _tensor(key: str, shape: list[int]) -> torch.Tensor:
    """One weight by the fixtures' rule (seeded by the key's crc32; computed in float64, cast to float32)."""
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    if key.endswith("running_mean"):
        values = rng.normal(0, 0.1, shape)
    elif key.endswith("running_var") or key.endswith("bn.weight"):
        values = rng.uniform(0.5, 1.5, shape)
    elif len(shape) == 1:
        values = rng.normal(0, 0.05, shape)
    else:
        values = rng.normal(0, 1 / np.sqrt(np.prod(shape[1:])), shape)
    return torch.from_numpy(np.asarray(values, dtype=np.float64).astype(np.float32))


@cache
def _reference_state(family: str) -> dict[str, torch.Tensor]:
    return {entry["key"]: _tensor(entry["key"], entry["shape"]) for entry in fixture(family)["manifest"]}


def reference_state(family: str) -> dict[str, torch.Tensor]:
    """The reference-layout state dict of the fixture (a fresh dict; the tensors are shared, do not modify)."""
    return dict(_reference_state(family))


@cache
def _imported(family: str) -> Supernet:
    space = load_space(family)
    weights, classes, _ = convert_state_dict(reference_family(family), reference_state(family), space, Path("x"))
    supernet = Supernet(space, classes)
    supernet.load_state_dict(weights)
    return supernet.eval()


def outputs(supernet: Supernet, arch: Arch, images: torch.Tensor) -> torch.Tensor:
    """The logits of ``arch`` inside ``supernet``."""
    supernet.set_active(arch)
    return supernet(images)


def reference_input(index: int, resolution: int) -> torch.Tensor:
    """The fixtures' input rule."""
    return torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(index))


CASES = [(family, index) for family in ("ofa_mbv3", "attentivenas") for index in range(5)]  # 0.3-3 s each


@pytest.mark.parametrize(("family", "index"), CASES)
def test_imported_supernet_and_extracted_subnet_match_the_reference_logits(family: str, index: int) -> None:
    supernet = _imported(family)
    arch = arch_from_reference(family, supernet.space, fixture(family)["archs"][index])
    expected = load_file(FIXTURES / f"{family}_reference_logits.safetensors")[f"logits_{index}"]
    images = reference_input(index, arch.resolution)
    supernet.set_active(arch)
    with torch.no_grad():
        logits = supernet(images)
        static = supernet.extract(arch).eval()(images)
    assert torch.allclose(logits, expected, atol=TOLERANCE, rtol=0), (logits - expected).abs().max()
    assert torch.allclose(static, logits, atol=1e-5, rtol=0), (static - logits).abs().max()


def test_kernel_transformation_matrices_are_honoured() -> None:
    """With the once-for-all matrices replaced by identities (a plain centre crop) the logits leave the
    reference's: the import depends on them, and the test above would catch their loss."""
    space = load_space("ofa_mbv3")
    state = {
        key: torch.eye(value.shape[0]) if key.endswith("_matrix") else value
        for key, value in reference_state("ofa_mbv3").items()
    }
    weights, classes, _ = convert_state_dict(reference_family("ofa_mbv3"), state, space, Path("x"))
    supernet = Supernet(space, classes).eval()
    supernet.load_state_dict(weights)
    arch = arch_from_reference("ofa_mbv3", space, fixture("ofa_mbv3")["archs"][0])  # every kernel 3
    expected = load_file(FIXTURES / "ofa_mbv3_reference_logits.safetensors")["logits_0"]
    with torch.no_grad():
        logits = outputs(supernet, arch, reference_input(0, arch.resolution))
    assert (logits - expected).abs().max() > 100 * TOLERANCE


def test_kernel_transform_starts_as_the_centre_crop_and_extracts_exactly() -> None:
    """Identity matrices give the centre-crop supernet's outputs; trained (random) ones fold into the
    extracted static weights exactly."""
    transformed = load_space("ofa_mbv3")
    cropped = SearchSpace.from_dict({**transformed.to_dict(), "kernel_transform": False})
    torch.manual_seed(0)
    with_matrices = Supernet(transformed, 10).eval()
    randomise_bn(with_matrices, seed=0)  # outputs of a useful size
    plain = Supernet(cropped, 10).eval()
    plain.load_state_dict(with_matrices.state_dict(), strict=False)
    rng = random.Random(0)
    archs = [transformed.min_arch()] + [transformed.sample(rng) for _ in range(2)]
    with torch.no_grad():
        for arch in archs:
            images = torch.randn(1, 3, arch.resolution, arch.resolution)
            assert torch.equal(outputs(with_matrices, arch, images), outputs(plain, arch, images))
        for name, parameter in with_matrices.named_parameters():
            if "transform_" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
        for arch in archs:
            images = torch.randn(1, 3, arch.resolution, arch.resolution)
            dynamic = outputs(with_matrices, arch, images)
            scale = dynamic.abs().max()
            assert (dynamic - outputs(plain, arch, images)).abs().max() > 1e-3 * scale  # far above rounding
            assert (with_matrices.extract(arch).eval()(images) - dynamic).abs().max() <= 1e-5 * scale


# ----------------------------------------------------------------------------------------------------
# arch naming
# ----------------------------------------------------------------------------------------------------


def test_attentivenas_a0_to_a6_convert_both_ways() -> None:
    space = load_space("attentivenas")
    for index in range(7):
        path = ROOT / "configs" / "archs" / f"attentivenas_a{index}.yaml"
        arch = load_arch(path, space)
        reference = arch_to_reference("attentivenas", space, arch)
        assert all(isinstance(kernel, int) for kernel in reference["kernel_size"])  # one value per stage
        assert arch_from_reference("attentivenas", space, reference) == arch
    a0 = load_arch(ROOT / "configs" / "archs" / "attentivenas_a0.yaml", space)
    assert arch_to_reference("attentivenas", space, a0) == fixture("attentivenas")["archs"][0]


def test_once_for_all_archs_convert_both_ways() -> None:
    space = load_space("ofa_mbv3")
    for data in fixture("ofa_mbv3")["archs"]:
        arch = arch_from_reference("ofa_mbv3", space, data)
        back = arch_to_reference("ofa_mbv3", space, arch)
        assert back["d"] == data["d"] and back["image_size"] == data["image_size"]
        for stage, depth in enumerate(data["d"]):  # slots beyond a stage's depth are ignored by the reference
            active = slice(4 * stage, 4 * stage + depth)
            assert back["ks"][active] == data["ks"][active] and back["e"][active] == data["e"][active]
    rng = random.Random(1)
    for arch in [space.min_arch(), space.max_arch()] + [space.sample(rng) for _ in range(20)]:
        assert arch_from_reference("ofa_mbv3", space, arch_to_reference("ofa_mbv3", space, arch)) == arch


def test_arch_convert_command_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps(fixture("ofa_mbv3")["archs"][2]))
    ours = tmp_path / "ours.json"
    assert main(["arch", "convert", str(reference), "--family", "ofa_mbv3", "--to", "toolkit", "--out", str(ours)]) == 0
    assert main(["arch", "convert", str(ours), "--family", "ofa_mbv3", "--to", "reference"]) == 0
    back = json.loads(capsys.readouterr().out)
    assert arch_from_reference("ofa_mbv3", load_space("ofa_mbv3"), back) == load_arch(ours)


# ----------------------------------------------------------------------------------------------------
# the command and its run folder
# ----------------------------------------------------------------------------------------------------


def _data_root(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
    return root


def _checkpoint(tmp_path: Path, family: str, state: dict, name: str = "published.pth") -> Path:
    """A published-style checkpoint: ``{'state_dict': ...}``, keys prefixed ``module.`` for AttentiveNAS."""
    prefix = reference_family(family).key_prefix if family == "attentivenas" else ""
    path = tmp_path / name
    torch.save({"state_dict": {prefix + key: value for key, value in state.items()}}, path)
    return path


@pytest.mark.parametrize("family", list(FAMILIES))
def test_import_writes_a_run_folder_with_the_converted_weights(tmp_path: Path, family: str) -> None:
    out = tmp_path / "runs" / family
    code = main(["import", family, str(_checkpoint(tmp_path, family, reference_state(family))), "--out", str(out),
                 "--data", str(_data_root(tmp_path))])  # fmt: skip
    assert code == 0
    folder = RunFolder(out)
    space = json.loads(folder.space.read_text())
    assert space["num_classes"] == 1000 and SearchSpace.from_dict(space["space"]) == load_space(family)
    provenance = json.loads(folder.provenance.read_text())
    assert provenance["family"] == family and provenance["keys_dropped"] == (666 if family == "attentivenas" else 0)
    state = load_checkpoint(folder.latest)
    expected = _imported(family).state_dict()
    assert state["model"].keys() == expected.keys()
    assert all(torch.equal(state["model"][key], value) for key, value in expected.items())
    assert not [path.name for path in out.parent.iterdir() if path.name.startswith(".")]  # no staging left


def _bad_checkpoints(tmp_path: Path) -> list[tuple[str, Path, str]]:
    state = reference_state("ofa_mbv3")
    missing = {key: value for key, value in state.items() if not key.startswith("blocks.3.conv.point_linear")}
    extra = {**state, "blocks.3.conv.mystery.weight": torch.zeros(3)}
    wrong = {**state, "blocks.5.conv.depth_conv.se.fc.reduce.weight": torch.zeros(8, 144, 1, 1)}
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": state, "args": argparse_namespace()}, pickled)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listed)
    text = tmp_path / "text.pth"
    text.write_text("not a checkpoint")
    other = _checkpoint(tmp_path, "ofa_mbv3", state, "other.pth")
    return [
        ("attentivenas", other, "is a ofa_mbv3 supernet, not attentivenas"),
        ("ofa_mbv3", _checkpoint(tmp_path, "ofa_mbv3", missing, "missing.pth"), "lacks weights"),
        ("ofa_mbv3", _checkpoint(tmp_path, "ofa_mbv3", extra, "extra.pth"), "blocks.3.conv.mystery.weight"),
        ("ofa_mbv3", _checkpoint(tmp_path, "ofa_mbv3", wrong, "wrong.pth"), "(8, 144, 1, 1) (expected (40, 144, 1, 1)"),
        ("ofa_mbv3", pickled, "holds Python objects besides tensors"),
        ("ofa_mbv3", listed, "holds a list, not a state dict"),
        ("ofa_mbv3", text, "is corrupt or not a checkpoint"),
        ("ofa_mbv3", tmp_path / "absent.pth", "not found"),
    ]  # fmt: skip


def argparse_namespace() -> object:
    """A pickled Python object, as training scripts save their arguments beside the weights."""
    import argparse

    return argparse.Namespace(lr=0.1)


def test_bad_checkpoints_are_one_line_exit_2_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _data_root(tmp_path)
    for family, path, message in _bad_checkpoints(tmp_path):
        out = tmp_path / "runs" / path.stem
        capsys.readouterr()
        assert main(["import", family, str(path), "--out", str(out), "--data", str(data)]) == 2, path
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and message in error, error
        assert not (tmp_path / "runs").exists()  # nothing written, not even the parent


def test_import_refuses_bad_targets_and_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = _checkpoint(tmp_path, "ofa_mbv3", reference_state("ofa_mbv3"))
    data = _data_root(tmp_path)
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "metrics.csv").write_text("epoch\n1\n")
    cases = [
        (["--out", str(trained), "--data", str(data)], "pass --force"),
        (["--out", str(trained), "--data", str(data), "--force"], "not an imported run"),
        (["--out", str(tmp_path / "new"), "--data", str(tmp_path / "nowhere")], "no train/ folder"),
        (["--out", str(tmp_path / "new"), "--data", str(data), "--test-fraction", "1.5"], "test_fraction"),
    ]
    for arguments, message in cases:
        capsys.readouterr()
        assert main(["import", "ofa_mbv3", str(checkpoint), *arguments]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and message in error, error
    assert sorted(path.name for path in trained.iterdir()) == ["metrics.csv"]
    assert not (tmp_path / "new").exists()
    first = tmp_path / "imported"
    assert main(["import", "ofa_mbv3", str(checkpoint), "--out", str(first), "--data", str(data)]) == 0
    assert main(["import", "ofa_mbv3", str(checkpoint), "--out", str(first), "--data", str(data)]) == 2
    assert main(["import", "ofa_mbv3", str(checkpoint), "--out", str(first), "--data", str(data), "--force"]) == 0


def test_read_state_dict_accepts_a_bare_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "bare.pth"
    torch.save({"a.weight": torch.ones(2)}, path)
    assert list(read_state_dict(path)) == ["a.weight"]


@pytest.mark.slow
def test_imported_run_is_accepted_by_the_deploy_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """evaluate, query, search, export and finetune on an imported once-for-all supernet (its classifier cut to 4
    classes to match a tiny image folder)."""
    state = reference_state("ofa_mbv3")
    state["classifier.linear.weight"] = state["classifier.linear.weight"][:4].clone()
    state["classifier.linear.bias"] = state["classifier.linear.bias"][:4].clone()
    data = tmp_path / "images"
    classes = {f"class{index}": 3 for index in range(4)}
    for split in ("train", "val", "test"):
        write_images(data / split, classes, size=16)
    run = tmp_path / "run"
    assert import_supernet("ofa_mbv3", _checkpoint(tmp_path, "ofa_mbv3", state), run, data).num_classes == 4
    state = load_checkpoint(RunFolder(run).latest)  # batches the 12 images allow; calibrate on 12, not 2,000
    state["config"]["calibration"].update(num_batches=2, batch_size=6)
    state["config"]["data"].update(batch_size=4)
    atomic_save(state, RunFolder(run).latest)
    assert main(["evaluate", str(run), "--num-archs", "3"]) == 0
    assert main(["query", str(run), "--flops", "300M"]) == 0
    search = ["--population", "8", "--generations", "2", "--finalists", "1"]
    assert main(["search", str(run), "--budgets", "150M,300M", *search]) == 0
    assert len(json.loads(RunFolder(run).pareto_json.read_text())["chosen"]) == 2
    assert main(["export", str(run), "--flops", "300M", "--out", str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / "model.safetensors").is_file()
    assert main(["finetune", str(tmp_path / "export"), "--epochs", "1", "--out", str(tmp_path / "tuned")]) == 0
    assert (tmp_path / "tuned" / "arch.json").is_file()


def test_kernel_transform_is_a_checked_space_option() -> None:
    space = load_space("ofa_mbv3")
    assert space.kernel_transform and SearchSpace.from_dict(space.to_dict()) == space
    assert "kernel_transform" not in load_space("attentivenas").to_dict()  # centre-crop fingerprints unchanged
    with pytest.raises(ValueError, match=r"space.kernel_transform: expected true or false, got 'yes'"):
        SearchSpace.from_dict({**space.to_dict(), "kernel_transform": "yes"})


def test_exported_subnet_of_an_imported_supernet_gives_the_reference_logits(tmp_path: Path) -> None:
    """The kernel transformation survives export: the standalone model reproduces the reference."""
    from ofa.export import export_subnet, load_subnet

    supernet = _imported("ofa_mbv3")
    arch = arch_from_reference("ofa_mbv3", supernet.space, fixture("ofa_mbv3")["archs"][2])  # kernels 3, 5 and 7
    model = supernet.extract(arch).eval()
    export_subnet(
        model,
        supernet.space,
        arch,
        tmp_path / "export",
        num_classes=1000,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        metadata={},
    )
    loaded = load_subnet(tmp_path / "export").eval()
    expected = load_file(FIXTURES / "ofa_mbv3_reference_logits.safetensors")["logits_2"]
    with torch.no_grad():
        logits = loaded(reference_input(2, arch.resolution))
    assert torch.allclose(logits, expected, atol=TOLERANCE, rtol=0), (logits - expected).abs().max()


def test_transformation_matrices_are_trained_with_the_weights(tiny: SearchSpace) -> None:
    """A smaller kernel's loss reaches its transformation matrix: the matrices are trained like the weights."""
    space = SearchSpace.from_dict({**tiny.to_dict(), "kernel_transform": True})
    supernet = Supernet(space, 10)
    arch = space.min_arch()
    assert min(min(stage) for stage in arch.kernel_size) < max(max(stage.kernel_size) for stage in space.stages)
    supernet.set_active(arch)
    supernet(torch.randn(2, 3, arch.resolution, arch.resolution)).square().sum().backward()
    gradients = {name: p.grad for name, p in supernet.named_parameters() if "transform_" in name}
    assert gradients and any(grad is not None and grad.abs().sum() > 0 for grad in gradients.values())


def test_resume_of_an_imported_run_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = _checkpoint(tmp_path, "ofa_mbv3", reference_state("ofa_mbv3"))
    run = tmp_path / "runs" / "imported"
    assert main(["import", "ofa_mbv3", str(checkpoint), "--out", str(run), "--data", str(_data_root(tmp_path))]) == 0
    capsys.readouterr()
    overrides = ["name=imported", f"out_dir={tmp_path / 'runs'}", "model.space=ofa_mbv3", "epochs=1"]
    arguments = ["train", str(ROOT / "configs" / "train" / "digits.yaml"), "--resume"]
    assert main([*arguments, *(item for override in overrides for item in ("--set", override))]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is an imported supernet" in error, error
