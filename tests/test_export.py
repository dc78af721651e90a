"""Export of a subnet to arch.json + safetensors (+ ONNX) and loading it back without the supernet."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import ofa.export
from ofa.export import ARCH_FILE, ONNX_FILE, WEIGHTS_FILE, export_subnet, load_subnet, preprocess, read_export_info
from ofa.flops import count_macs, count_params
from ofa.space import Arch, SearchSpace, load_arch
from ofa.static import StaticNet
from ofa.supernet import Supernet
from tests.conftest import randomise_bn

NUM_CLASSES = 4
MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)
METADATA = {"val_acc": 0.75, "test_acc": 0.7, "predicted_acc": None, "run": "runs/test"}


@pytest.fixture(scope="module")
def supernet(tiny: SearchSpace) -> Supernet:
    torch.manual_seed(0)
    model = Supernet(tiny, num_classes=NUM_CLASSES)
    randomise_bn(model, seed=1)
    return model.eval()


def archs(space: SearchSpace) -> dict[str, Arch]:
    rng = random.Random(3)
    return {
        "min": space.min_arch(),
        "max": space.max_arch(),
        "random0": space.sample(rng),
        "random1": space.sample(rng),
    }


def export(supernet: Supernet, arch: Arch, out_dir: Path, force: bool = False, onnx: bool = False) -> Path:
    return export_subnet(
        supernet.extract(arch),
        supernet.space,
        arch,
        out_dir,
        num_classes=NUM_CLASSES,
        mean=MEAN,
        std=STD,
        metadata=METADATA,
        force=force,
        onnx=onnx,
    )


@pytest.mark.parametrize("name", ["min", "max", "random0", "random1"])
@torch.no_grad()
def test_loaded_subnet_matches_supernet(supernet: Supernet, tiny: SearchSpace, tmp_path: Path, name: str) -> None:
    arch = archs(tiny)[name]
    out_dir = export(supernet, arch, tmp_path / "export")
    assert sorted(path.name for path in out_dir.iterdir()) == [ARCH_FILE, WEIGHTS_FILE]
    model = load_subnet(out_dir)
    assert isinstance(model, StaticNet) and not model.training
    assert not any("Dynamic" in type(module).__name__ for module in model.modules())
    x = torch.randn(3, 3, arch.resolution, arch.resolution, generator=torch.Generator().manual_seed(5))
    supernet.set_active(arch)
    expected = supernet(x)
    actual = model(x)
    assert (expected - actual).abs().max().item() <= 1e-6
    assert torch.equal(expected.argmax(1), actual.argmax(1))  # hence the same accuracy on the same data
    assert model.resolution == arch.resolution
    assert model.arch == arch
    assert model.space_name == "tiny"
    assert model.mean == MEAN and model.std == STD
    assert model.metadata == METADATA


def test_buffers_round_trip(supernet: Supernet, tiny: SearchSpace, tmp_path: Path) -> None:
    arch = archs(tiny)["random0"]
    source = supernet.extract(arch).state_dict()
    loaded = load_subnet(export(supernet, arch, tmp_path / "export")).state_dict()
    assert source.keys() == loaded.keys()
    for name, tensor in source.items():
        assert torch.equal(tensor, loaded[name]), name
    assert any(name.endswith("num_batches_tracked") and tensor.item() == 7 for name, tensor in loaded.items())


def test_info_records_counts_space_and_checksum(supernet: Supernet, tiny: SearchSpace, tmp_path: Path) -> None:
    arch = archs(tiny)["random1"]
    out_dir = export(supernet, arch, tmp_path / "export")
    info = read_export_info(out_dir)
    assert info["macs"] == count_macs(tiny, arch, NUM_CLASSES)
    assert info["mmacs"] == pytest.approx(count_macs(tiny, arch, NUM_CLASSES) / 1e6)
    assert info["params"] == count_params(tiny, arch, NUM_CLASSES)
    assert info["params"] == sum(p.numel() for p in supernet.extract(arch).parameters())
    assert SearchSpace.from_dict(info["space_definition"]) == tiny
    assert Arch.from_dict(info["arch"]) == arch
    assert info["input"]["resolution"] == arch.resolution and info["num_classes"] == NUM_CLASSES
    assert info["metadata"] == METADATA and info["onnx"] is None
    assert len(info["weights"]["sha256"]) == 64
    # an exported arch.json is a valid arch file for the rest of the toolkit
    assert load_arch(out_dir / ARCH_FILE, tiny) == arch


def test_onnx_matches_pytorch(supernet: Supernet, tiny: SearchSpace, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    arch = archs(tiny)["random0"]
    out_dir = export(supernet, arch, tmp_path / "export", onnx=True)
    info = read_export_info(out_dir)
    assert info["onnx"]["opset"] >= 17
    assert 0.0 <= info["onnx"]["max_abs_diff"] <= 1e-4
    # independently of the export-time check: another batch size through the dynamic batch axis
    model = load_subnet(out_dir)
    x = torch.randn(5, 3, arch.resolution, arch.resolution, generator=torch.Generator().manual_seed(9))
    session = onnxruntime.InferenceSession(str(out_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert actual.shape == (5, NUM_CLASSES)
    assert abs(actual - expected).max() <= 1e-4


@pytest.mark.parametrize("name", ["min", "max"])
def test_onnx_extremes(supernet: Supernet, tiny: SearchSpace, tmp_path: Path, name: str) -> None:
    out_dir = export(supernet, archs(tiny)[name], tmp_path / "export", onnx=True)
    assert read_export_info(out_dir)["onnx"]["max_abs_diff"] <= 1e-4


def test_onnx_mismatch_is_refused(
    supernet: Supernet, tiny: SearchSpace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ofa.export, "ONNX_TOLERANCE", -1.0)  # any difference, even 0, is now too much
    with pytest.raises(ValueError, match="ONNX output differs"):
        export(supernet, tiny.min_arch(), tmp_path / "export", onnx=True)
    assert not (tmp_path / "export").exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


def test_existing_target_refused_without_force_and_replaced_with_force(
    supernet: Supernet, tiny: SearchSpace, tmp_path: Path
) -> None:
    out_dir = tmp_path / "export"
    export(supernet, tiny.min_arch(), out_dir)
    with pytest.raises(ValueError, match=r"export.*not empty.*force"):
        export(supernet, tiny.max_arch(), out_dir)
    assert load_subnet(out_dir).arch == tiny.min_arch()
    export(supernet, tiny.max_arch(), out_dir, force=True)
    assert load_subnet(out_dir).arch == tiny.max_arch()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]  # no staging or backup left


def test_empty_target_is_used(supernet: Supernet, tiny: SearchSpace, tmp_path: Path) -> None:
    out_dir = tmp_path / "export"
    out_dir.mkdir()
    export(supernet, tiny.min_arch(), out_dir)
    assert load_subnet(out_dir).arch == tiny.min_arch()


def test_force_never_replaces_a_folder_that_is_not_an_export(
    supernet: Supernet, tiny: SearchSpace, tmp_path: Path
) -> None:
    out_dir = tmp_path / "mine"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a previous export"):
        export(supernet, tiny.min_arch(), out_dir, force=True)
    assert (out_dir / "notes.txt").read_text() == "keep me"


def test_a_symlink_to_an_export_is_refused_even_with_force(
    supernet: Supernet, tiny: SearchSpace, tmp_path: Path
) -> None:
    export(supernet, tiny.min_arch(), tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ValueError, match=r"export target .*link is a symbolic link; give the folder itself"):
        export(supernet, tiny.max_arch(), tmp_path / "link", force=True)
    assert load_subnet(tmp_path / "real").arch == tiny.min_arch()  # untouched


def test_failure_during_export_keeps_previous_export(
    supernet: Supernet, tiny: SearchSpace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_dir = tmp_path / "export"
    export(supernet, tiny.min_arch(), out_dir)
    before = {path.name: path.read_bytes() for path in out_dir.iterdir()}

    def killed(*args: object, **keywords: object) -> None:
        raise KeyboardInterrupt("killed while writing the weights")

    monkeypatch.setattr(ofa.export, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        export(supernet, tiny.max_arch(), out_dir, force=True)
    assert {path.name: path.read_bytes() for path in out_dir.iterdir()} == before
    assert load_subnet(out_dir).arch == tiny.min_arch()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]


def test_tampered_weights_are_refused(supernet: Supernet, tiny: SearchSpace, tmp_path: Path) -> None:
    out_dir = export(supernet, archs(tiny)["random1"], tmp_path / "export")
    weights = out_dir / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors.*sha256"):
        load_subnet(out_dir)


def test_weights_of_another_arch_are_refused(supernet: Supernet, tiny: SearchSpace, tmp_path: Path) -> None:
    out_dir = export(supernet, tiny.min_arch(), tmp_path / "export")
    info = json.loads((out_dir / ARCH_FILE).read_text())
    info["arch"] = tiny.max_arch().to_dict()
    info["input"]["resolution"] = tiny.max_arch().resolution
    (out_dir / ARCH_FILE).write_text(json.dumps(info))
    with pytest.raises(ValueError, match="do not fit arch"):
        load_subnet(out_dir)


def test_model_of_another_arch_is_refused(supernet: Supernet, tiny: SearchSpace, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not match arch"):
        export_subnet(
            supernet.extract(tiny.min_arch()),
            tiny,
            tiny.max_arch(),
            tmp_path / "export",
            num_classes=NUM_CLASSES,
            mean=MEAN,
            std=STD,
            metadata={},
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("mean", "std", "metadata", "message"),
    [
        ((0.5, 0.5), STD, {}, "mean: expected 3 numbers"),
        (MEAN, (0.2, 0.0, 0.3), {}, "std: 0.0 is not allowed"),
        (MEAN, STD, {"val_acc": [1]}, r"metadata\['val_acc'\]"),
        (MEAN, STD, {"val_acc": float("nan")}, "use None"),
    ],
)
def test_bad_export_arguments(
    supernet: Supernet, tiny: SearchSpace, tmp_path: Path, mean: tuple, std: tuple, metadata: dict, message: str
) -> None:
    arch = tiny.min_arch()
    with pytest.raises(ValueError, match=message):
        export_subnet(
            supernet.extract(arch),
            tiny,
            arch,
            tmp_path / "export",
            num_classes=NUM_CLASSES,
            mean=mean,
            std=std,
            metadata=metadata,
        )


def test_missing_files_are_refused(supernet: Supernet, tiny: SearchSpace, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a folder"):
        load_subnet(tmp_path / "nowhere")
    out_dir = export(supernet, tiny.min_arch(), tmp_path / "export")
    (out_dir / WEIGHTS_FILE).unlink()
    with pytest.raises(ValueError, match=r"model\.safetensors not found"):
        load_subnet(out_dir)
    (out_dir / ARCH_FILE).unlink()
    with pytest.raises(ValueError, match=r"arch\.json not found"):
        load_subnet(out_dir)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text[: len(text) // 2], "malformed JSON"),
        (lambda text: "[1, 2]", "expected a JSON object"),
        (lambda text: text.replace('"format_version": 1', '"format_version": 99'), "format_version 99"),
        (lambda text: text.replace('"ofa-subnet"', '"something-else"'), "format 'something-else'"),
        (lambda text: text.replace('"space_definition"', '"space_def"'), "missing key.*space_definition"),
        (lambda text: text.replace('"h_swish"', '"gelu"'), "gelu.*not one of"),
    ],
)
def test_malformed_arch_json_is_refused(
    supernet: Supernet, tiny: SearchSpace, tmp_path: Path, edit: object, message: str
) -> None:
    out_dir = export(supernet, tiny.min_arch(), tmp_path / "export")
    path = out_dir / ARCH_FILE
    path.write_text(edit(path.read_text()))
    with pytest.raises(ValueError, match=message) as error:
        load_subnet(out_dir)
    assert "arch.json" in str(error.value)


@torch.no_grad()
def test_preprocess_resizes_and_normalises(supernet: Supernet, tiny: SearchSpace, tmp_path: Path) -> None:
    arch = archs(tiny)["random0"]
    model = load_subnet(export(supernet, arch, tmp_path / "export"))
    images = torch.full((2, 3, 40, 40), 0.5)
    inputs = preprocess(model, images)
    assert inputs.shape == (2, 3, arch.resolution, arch.resolution)
    expected = (0.5 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(inputs[0, :, 0, 0], expected)
