"""``ofa import``: a published supernet checkpoint turned into a run folder the deploy commands accept.

The checkpoint (``{'state_dict': {...}}`` or a bare state dict) is read with ``torch.load(weights_only=True)``:
a file that needs more than tensors and plain containers is refused, never unpickled. Its keys are renamed
to this toolkit's supernet (:mod:`ofa.reference`), every key and shape is checked before anything is
written, and the run folder (config with the user's data, space, weights, provenance) is built in a hidden
sibling folder and renamed into place, so a failed import leaves nothing behind and a kill never leaves
half a run.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ofa.atomic import check_folder_target, file_sha256, publish_folder
from ofa.checkpoint import atomic_save, load_tensors
from ofa.config import config_to_dict
from ofa.data import IMAGENET_MEAN, IMAGENET_STD
from ofa.reference import FAMILIES, ReferenceFamily, reference_family
from ofa.runfolder import RUN_FORMAT, RunFolder
from ofa.space import SearchSpace, load_space
from ofa.supernet import Supernet
from ofa.train_config import RUN_NAME, DataConfig, ModelSection, TrainConfig
from ofa.trainer import write_run_description

__all__ = ["ImportResult", "convert_state_dict", "import_supernet", "read_state_dict"]

SHOWN = 3  # keys named in an error message
IMPORT_DROPOUT = 0.2  # before the classifier when an imported supernet is fine-tuned (the references' setting)


@dataclass(frozen=True)
class ImportResult:
    """What ``import_supernet`` wrote."""

    run_dir: Path
    family: str
    num_classes: int
    tensors: int  # imported
    dropped: int  # present in the checkpoint, unused by the toolkit


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a published checkpoint, loaded safely (tensors and plain containers only).

    Raises:
        ValueError: a missing file, one that needs unpickling of objects, or one that holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} not found")
    state = load_tensors(path, "re-save its state_dict alone: torch.save({'state_dict': model.state_dict()}, FILE)")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict ({{'state_dict': ...}})")
    not_tensors = [str(key) for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"checkpoint {path} is not a state dict: {_first(not_tensors)} hold no tensor")
    return state


def _first(keys: list[str]) -> str:
    """The first few keys, and how many more."""
    shown = ", ".join(keys[:SHOWN])
    return shown + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def _block_positions(space: SearchSpace) -> list[tuple[int, int]]:
    """(stage, block) of every block of the largest subnet, in network order (the references' ``blocks.i``)."""
    return [(stage, block) for stage, spec in enumerate(space.stages) for block in range(max(spec.depth))]


def _translated(family: ReferenceFamily, keys: list[str], space: SearchSpace) -> dict[str, str | None]:
    positions = _block_positions(space)
    stripped = family.strip_prefix(keys)
    return {key: family.translate(stripped[key], positions) for key in keys if not family.is_dropped(stripped[key])}


def _check_family(family: ReferenceFamily, translated: dict[str, str | None], keys: list[str], path: Path) -> None:
    """Refuse a checkpoint of the other family (most of its keys follow the other family's layout)."""
    if sum(ours is not None for ours in translated.values()) >= len(keys) / 2:
        return
    for other in FAMILIES.values():
        if other is not family:
            fits = sum(ours is not None for ours in _translated(other, keys, load_space(other.name)).values())
            if fits >= len(keys) / 2:
                command = f"ofa import {other.name} ..."
                raise ValueError(f"checkpoint {path} is a {other.name} supernet, not {family.name}: run `{command}`")


def convert_state_dict(
    family: ReferenceFamily, state: dict[str, torch.Tensor], space: SearchSpace, path: Path
) -> tuple[dict[str, torch.Tensor], int, int]:
    """The reference state dict renamed to this toolkit's supernet of ``space``, checked key by key.

    Returns:
        The state dict, the class count (rows of the classifier) and how many keys were dropped.

    Raises:
        ValueError: a checkpoint of the other family, unknown (extra) or missing keys, or wrong shapes,
            naming the first few.
    """
    keys = list(state)
    translated = _translated(family, keys, space)
    _check_family(family, translated, keys, path)
    extra = [key for key, ours in translated.items() if ours is None]
    if extra:
        raise ValueError(f"checkpoint {path} has keys a {family.name} supernet does not: {_first(extra)}")
    renamed = {ours: state[key] for key, ours in translated.items() if ours is not None}
    classifier = renamed.get("head.classifier.weight")
    if classifier is None or classifier.ndim != 2:
        raise ValueError(f"checkpoint {path} has no classifier weight (a 2-D linear weight)")
    num_classes = int(classifier.shape[0])
    expected = Supernet(space, num_classes).state_dict()
    unexpected = [key for key, ours in translated.items() if ours not in expected]
    if unexpected:
        raise ValueError(f"checkpoint {path} has keys the {space.name} space does not use: {_first(unexpected)}")
    missing = [key for key in expected if key not in renamed]
    if missing:
        raise ValueError(f"checkpoint {path} lacks weights (named as this toolkit names them): {_first(missing)}")
    source = {ours: key for key, ours in translated.items()}
    wrong = [
        f"{source[key]} {tuple(renamed[key].shape)} (expected {tuple(tensor.shape)})"
        for key, tensor in expected.items()
        if renamed[key].shape != tensor.shape
    ]
    if wrong:
        raise ValueError(f"checkpoint {path} has tensors of the wrong shape for {space.name}: {_first(wrong)}")
    weights = {key: renamed[key].to(tensor.dtype) for key, tensor in expected.items()}
    return weights, num_classes, len(keys) - len(translated)


def import_supernet(
    family_name: str,
    checkpoint: str | Path,
    out: str | Path,
    data_root: str | Path,
    test_fraction: float = 0.0,
    force: bool = False,
) -> ImportResult:
    """Import a published supernet checkpoint of ``family_name`` into the run folder ``out``.

    ``data_root`` is the user's image folder (``train/`` and ``val/`` with one folder per class, ImageNet's
    layout), which evaluation and BN calibration read; ``test_fraction`` holds part of val out as test when
    there is no ``test/``. Everything is checked before the folder is written.

    Raises:
        ValueError: an unknown family, a bad checkpoint, data folder or target (see :func:`read_state_dict`
            and :func:`convert_state_dict`); an existing ``out`` without ``force``, or one that is not an
            imported run.
    """
    family = reference_family(family_name)
    space = load_space(family.name)
    out = _check_target(Path(out), force)
    data = _data_config(Path(data_root), test_fraction)
    path = Path(checkpoint)
    weights, num_classes, dropped = convert_state_dict(family, read_state_dict(path), space, path)
    config = TrainConfig(
        name=out.name if RUN_NAME.fullmatch(out.name) else "imported",
        epochs=1,  # nominal: the weights were trained elsewhere (see provenance.json)
        out_dir=str(out.parent),
        data=data,
        model=ModelSection(space=family.name, dropout=IMPORT_DROPOUT, zero_init_last_bn=False),
    )
    provenance = {
        "family": family.name,
        "reference": family.source,
        "checkpoint": str(path.resolve()),
        "checkpoint_sha256": file_sha256(path),
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "num_classes": num_classes,
        "tensors_imported": len(weights),
        "keys_dropped": dropped,
        "dropped_keys_pattern": family.dropped if dropped else None,
    }
    _write_run(out, config, space, num_classes, weights, provenance, force)
    return ImportResult(out, family.name, num_classes, len(weights), dropped)


def _check_target(out: Path, force: bool) -> Path:
    """``out`` may be new or empty; a previous import is replaced with ``force``; anything else is refused."""
    check_folder_target(out, "--out")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ValueError(f"--out {out} exists and is not empty; pass --force to replace a previous import")
        if not RunFolder(out).provenance.is_file():
            raise ValueError(f"--out {out} is not an imported run (no provenance.json); refusing to replace it")
    return out


def _data_config(root: Path, test_fraction: float) -> DataConfig:
    """The imported run's data: the user's image folder, checked to exist now rather than at first use."""
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise ValueError(
                f"--data {root}: no {split}/ folder; expected ImageNet's layout ROOT/train/<class>/<image> "
                "and ROOT/val/<class>/<image>"
            )
    return DataConfig(name="imagefolder", root=str(root.resolve()), test_fraction=test_fraction)


def _write_run(
    out: Path,
    config: TrainConfig,
    space: SearchSpace,
    num_classes: int,
    weights: dict[str, torch.Tensor],
    provenance: dict[str, Any],
    force: bool,
) -> None:
    """Build the run folder beside ``out`` and rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a run is an ordinary folder
        folder = RunFolder(staging)
        write_run_description(folder, config, space, num_classes)
        folder.provenance.write_text(json.dumps(provenance, indent=1) + "\n")
        folder.checkpoints.mkdir()
        checkpoint = {
            "format": RUN_FORMAT,
            "epoch": 0,
            "config": config_to_dict(config),
            "space": space.to_dict(),
            "num_classes": num_classes,
            "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "model": weights,
            "provenance": provenance,
        }
        atomic_save(checkpoint, folder.latest)
        _check_target(out, force)  # the target may have appeared while we worked
        publish_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
