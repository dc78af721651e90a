"""Standalone export of one subnet: ``arch.json`` + ``model.safetensors`` (+ ``model.onnx``), and loading it back.

"Train once, deploy many" (once-for-all, Cai et al., ICLR 2020): a subnet chosen from a trained supernet is
shipped as plain data plus weights. The folder holds

- ``arch.json``: format name and version, the arch, the full search-space definition (so loading needs no
  YAML and no supernet), input resolution, channels and normalisation, number of classes, analytic MACs and
  parameters (:mod:`ofa.flops`), free-form metadata (accuracies, source run) and the sha256 of every file;
- ``model.safetensors``: the static model's state dict, BN running statistics and ``num_batches_tracked``
  included (no pickle);
- ``model.onnx`` (optional): batch-dynamic ONNX graph, checked against onnxruntime at export time.

The folder is built in a temporary sibling and renamed into place, so an interrupted export never leaves a
half-written target and never damages a previous export. Inputs are NCHW images with values in [0, 1],
resized to ``resolution`` (bilinear, antialiased when downsampling) and normalised per channel as
``(x - mean) / std`` (see :func:`preprocess`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ofa.atomic import file_sha256, publish_folder
from ofa.bn import resize_to
from ofa.flops import count_macs, count_params
from ofa.layout import network_layout
from ofa.space import Arch, SearchSpace
from ofa.static import StaticNet

__all__ = [
    "ARCH_FILE",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "ONNX_FILE",
    "ONNX_OPSET",
    "ONNX_TOLERANCE",
    "WEIGHTS_FILE",
    "check_export_target",
    "export_subnet",
    "is_export",
    "load_subnet",
    "preprocess",
    "read_export_info",
]

EXPORT_FORMAT = "ofa-subnet"
EXPORT_VERSION = 1
ARCH_FILE = "arch.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-4
ONNX_CHECK_BATCH = 2  # a batch other than the exported one also checks the dynamic batch axis
_REQUIRED_KEYS = ("format", "format_version", "space", "space_definition", "arch", "input", "num_classes", "weights")


# ----------------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------------


def export_subnet(
    model: StaticNet,
    space: SearchSpace,
    arch: Arch,
    out_dir: Path,
    *,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    metadata: Mapping[str, float | str | int | None],
    force: bool = False,
    onnx: bool = False,
) -> Path:
    """Write ``model`` (the static subnet ``arch`` of ``space``) as a standalone folder ``out_dir``.

    Args:
        model: the static model, e.g. ``supernet.extract(arch)`` after BN recalibration.
        space: the search space ``arch`` belongs to; its full definition is stored.
        arch: the architecture ``model`` was built from.
        out_dir: target folder; must not exist or be empty unless ``force``.
        num_classes: classifier outputs of ``model``.
        mean: per-channel input mean (after scaling pixels to [0, 1]).
        std: per-channel input standard deviation.
        metadata: free-form scalars to record, e.g. ``val_acc``, ``test_acc``, ``predicted_acc``, ``run``.
        force: replace an existing export at ``out_dir`` (only once the new export is complete); a non-empty
            folder that is not an export is never replaced.
        onnx: also write ``model.onnx`` and check it against onnxruntime (max abs diff <= 1e-4).

    Returns:
        ``out_dir``.

    Raises:
        ValueError: bad inputs, a model that does not match ``arch``, an existing target without
            ``force``, or an ONNX graph whose output differs from PyTorch by more than the tolerance.
    """
    out_dir = Path(out_dir)
    check_export_target(out_dir, force)
    space.validate(arch)
    mean_list = _channel_values(mean, "mean", space.input_channels, positive=False)
    std_list = _channel_values(std, "std", space.input_channels, positive=True)
    info = _export_info(space, arch, num_classes, mean_list, std_list, _check_metadata(metadata))
    state = _checked_state(model, space, arch, num_classes)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the export is an ordinary folder
        info["weights"] = _write_weights(state, staging / WEIGHTS_FILE)
        info["onnx"] = _write_onnx(model, staging / ONNX_FILE, space.input_channels, arch.resolution) if onnx else None
        arch_path = staging / ARCH_FILE
        arch_path.write_text(json.dumps(info, indent=2) + "\n")
        _fsync(arch_path)
        _move_into_place(staging, out_dir, force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _export_info(
    space: SearchSpace,
    arch: Arch,
    num_classes: int,
    mean: list[float],
    std: list[float],
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """``arch.json``'s content before the files are written: arch, input contract, counts, metadata, space."""
    macs = count_macs(space, arch, num_classes)
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "space": space.name,
        "arch": arch.to_dict(),
        "arch_short": arch.short(),
        "input": {
            "resolution": arch.resolution,
            "channels": space.input_channels,
            "mean": mean,
            "std": std,
            "layout": (
                "NCHW, values in [0, 1], resized (bilinear, antialiased when downsampling) to resolution, "
                "then (x - mean) / std"
            ),
        },
        "num_classes": num_classes,
        "macs": macs,
        "mmacs": macs / 1e6,
        "params": count_params(space, arch, num_classes),
        "metadata": metadata,
        "space_definition": space.to_dict(),
    }


def _write_weights(state: dict[str, torch.Tensor], path: Path) -> dict[str, str]:
    """Write the safetensors file (fsynced, world-readable); returns its ``arch.json`` entry."""
    save_file(state, str(path), metadata={"format": EXPORT_FORMAT})
    path.chmod(0o644)  # safetensors writes owner-only files; the export is an ordinary folder
    _fsync(path)
    return {"file": path.name, "sha256": file_sha256(path)}


def _write_onnx(model: StaticNet, path: Path, channels: int, resolution: int) -> dict[str, Any]:
    """Write and check ``model.onnx``; returns its ``arch.json`` entry."""
    difference = _export_onnx(model, path, channels, resolution)
    return {"file": path.name, "sha256": file_sha256(path), "opset": ONNX_OPSET, "max_abs_diff": difference}


def check_export_target(out_dir: str | Path, force: bool) -> None:
    """Refuse ``out_dir`` unless it is missing, an empty folder, or (with ``force``) a previous export.

    Raises:
        ValueError: naming the target and what to do instead.
    """
    out_dir = Path(out_dir)
    if out_dir.is_symlink():
        raise ValueError(f"export target {out_dir} is a symbolic link; give the folder itself ({out_dir.resolve()})")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"export target {out_dir} exists and is not a folder; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise ValueError(
                f"export target {out_dir} exists and is not empty; pass force=True (--force) to replace it"
            )
        if not (out_dir / ARCH_FILE).is_file():
            raise ValueError(
                f"export target {out_dir} is not empty and holds no {ARCH_FILE} (not a previous export); "
                "refusing to replace it even with force: choose another folder"
            )


def _channel_values(values: Sequence[float], name: str, channels: int, positive: bool) -> list[float]:
    try:
        numbers = [float(value) for value in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {channels} numbers (one per input channel), got {values!r}") from None
    if len(numbers) != channels:
        raise ValueError(f"{name}: expected {channels} numbers (one per input channel), got {len(numbers)}")
    for number in numbers:
        if not math.isfinite(number) or (positive and number <= 0):
            allowed = "finite positive numbers" if positive else "finite numbers"
            raise ValueError(f"{name}: {number} is not allowed; allowed: {allowed}")
    return numbers


def _check_metadata(metadata: Mapping[str, float | str | int | None]) -> dict[str, Any]:
    checked = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise ValueError(f"metadata key {key!r} is not a string")
        if value is not None and not isinstance(value, (str, int, float)):
            raise ValueError(
                f"metadata[{key!r}]: {type(value).__name__} {value!r} is not allowed; allowed: float, int, str, None"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"metadata[{key!r}]: {value} is not allowed; use None for a missing value")
        checked[key] = value
    return checked


def _checked_state(model: StaticNet, space: SearchSpace, arch: Arch, num_classes: int) -> dict[str, torch.Tensor]:
    """The model's state dict on the CPU, contiguous and unshared, after checking it builds ``arch``."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    state = {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in model.state_dict().items()}
    reference = StaticNet(network_layout(space, arch, num_classes)).state_dict()
    expected = {name: tuple(tensor.shape) for name, tensor in reference.items()}
    actual = {name: tuple(tensor.shape) for name, tensor in state.items()}
    if expected != actual:
        wrong = sorted(set(expected) ^ set(actual)) or sorted(n for n in expected if expected[n] != actual[n])
        raise ValueError(
            f"the model does not match arch {arch.short()} with {num_classes} classes "
            f"(first differing tensors: {', '.join(wrong[:3])})"
        )
    return state


def _export_onnx(model: StaticNet, path: Path, channels: int, resolution: int) -> float:
    """Write the ONNX graph and return its max abs difference to PyTorch on a random input."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        example = torch.zeros(1, channels, resolution, resolution, device=device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=["images"],
                output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            )
        _fsync(path)
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(ONNX_CHECK_BATCH, channels, resolution, resolution, generator=generator)
        with torch.no_grad():
            expected = model(images.to(device)).cpu().numpy()
    finally:
        model.train(was_training)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(["logits"], {"images": images.numpy()})
    if actual.shape != expected.shape:
        raise ValueError(f"ONNX output shape {actual.shape} differs from PyTorch {expected.shape}")
    difference = float(np.max(np.abs(actual - expected)))
    if not difference <= ONNX_TOLERANCE:
        raise ValueError(f"ONNX output differs from PyTorch by {difference:.3g} (allowed <= {ONNX_TOLERANCE:g})")
    return difference


def _move_into_place(staging: Path, out_dir: Path, force: bool) -> None:
    """Rename the complete ``staging`` folder to ``out_dir``; an old export is removed only afterwards."""
    check_export_target(out_dir, force)  # the target may have appeared while we worked
    publish_folder(staging, out_dir)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# ----------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------


def is_export(directory: str | Path) -> bool:
    """Whether ``directory`` holds a finished export (its ``arch.json`` is written last)."""
    return (Path(directory) / ARCH_FILE).is_file()


def read_export_info(directory: str | Path) -> dict[str, Any]:
    """The content of an export's ``arch.json``, after checking its format, version and required keys."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"no exported subnet at {directory}: not a folder")
    path = directory / ARCH_FILE
    if not path.is_file():
        raise ValueError(f"{path} not found: {directory} is not an exported subnet")
    try:
        info = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: malformed JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(info).__name__}")
    if info.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: format {info.get('format')!r} is not {EXPORT_FORMAT!r}")
    if info.get("format_version") != EXPORT_VERSION:
        raise ValueError(
            f"{path}: format_version {info.get('format_version')!r} is not supported; supported: {EXPORT_VERSION}"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in info]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    return info


def load_subnet(directory: str | Path) -> StaticNet:
    """Rebuild an exported subnet (no supernet, no pickle) in eval mode, on the CPU.

    The returned model carries ``resolution``, ``arch``, ``space_name``, ``mean``, ``std`` and ``metadata``.

    Raises:
        ValueError: a missing folder or file, malformed ``arch.json``, an unsupported format or version, a
            weights file whose sha256 differs from the recorded one, or weights that do not fit the arch.
    """
    directory = Path(directory)
    info = read_export_info(directory)
    arch_path = directory / ARCH_FILE
    try:
        space = SearchSpace.from_dict(info["space_definition"], source=f"{arch_path} space_definition")
        arch = space.arch_from_dict(info["arch"])
        inputs, weights = info["input"], info["weights"]
        resolution, mean, std = inputs["resolution"], inputs["mean"], inputs["std"]
        weights_name, recorded_sha = weights["file"], weights["sha256"]
        num_classes = info["num_classes"]
    except ValueError as error:
        raise ValueError(f"{arch_path}: {error}") from None
    except (KeyError, TypeError) as error:
        raise ValueError(f"{arch_path}: malformed export description ({type(error).__name__}: {error})") from None
    if info["space"] != space.name:
        raise ValueError(f"{arch_path}: space {info['space']!r} differs from the stored definition {space.name!r}")
    if resolution != arch.resolution:
        raise ValueError(f"{arch_path}: input resolution {resolution!r} differs from the arch's {arch.resolution}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{arch_path}: num_classes must be an integer >= 1, got {num_classes!r}")
    if not isinstance(weights_name, str) or Path(weights_name).name != weights_name:
        raise ValueError(f"{arch_path}: weights file {weights_name!r} must be a file name inside {directory}")
    weights_path = directory / weights_name
    if not weights_path.is_file():
        raise ValueError(f"{weights_path} not found (named by {arch_path})")
    actual_sha = file_sha256(weights_path)
    if actual_sha != recorded_sha:
        raise ValueError(
            f"{weights_path}: sha256 {actual_sha} differs from {recorded_sha} recorded in {arch_path}; "
            "the weights file is damaged or was replaced"
        )
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{weights_path}: not a readable safetensors file ({error})") from None
    model = StaticNet(network_layout(space, arch, num_classes))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{weights_path}: weights do not fit arch {arch.short()} ({error})") from None
    model.eval()
    model.resolution = arch.resolution
    model.arch = arch
    model.space_name = space.name
    model.mean = tuple(_channel_values(mean, f"{arch_path} input.mean", space.input_channels, positive=False))
    model.std = tuple(_channel_values(std, f"{arch_path} input.std", space.input_channels, positive=True))
    model.metadata = dict(info.get("metadata") or {})
    return model


def preprocess(model: StaticNet, images: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) with values in [0, 1] -> the loaded model's input: resized and normalised."""
    if images.dim() != 4:
        raise ValueError(f"images: expected a (N, C, H, W) tensor, got shape {tuple(images.shape)}")
    mean = torch.tensor(model.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(model.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    if images.size(1) != mean.size(1):
        raise ValueError(f"images: expected {mean.size(1)} channels, got {images.size(1)}")
    return (resize_to(images, model.resolution) - mean) / std
