"""A trained run directory reopened: its config, space, supernet weights, data and calibration batches."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader

from ofa.archdata import measure_to_csv
from ofa.bn import recalibrate_bn
from ofa.checkpoint import load_checkpoint
from ofa.config import config_from_dict
from ofa.data import DataBundle, calibration_images
from ofa.evaluate import Evaluation, evaluate_arch
from ofa.export import export_subnet
from ofa.runfolder import CHECKPOINT_NAMES, MissingSpaceFileError, RunFolder, read_run_space, write_run_space
from ofa.space import Arch, SearchSpace
from ofa.static import StaticNet
from ofa.supernet import Supernet
from ofa.train_config import TrainConfig
from ofa.trainer import build_data

if TYPE_CHECKING:
    from predictors.dataset import ArchRecord

__all__ = ["LoadedRun", "load_run", "run_space"]


@dataclass
class LoadedRun:
    """Everything the deploy-many commands need from a training run."""

    run_dir: Path
    config: TrainConfig
    space: SearchSpace
    supernet: Supernet
    data: DataBundle
    calibration_images: list[torch.Tensor]
    val_loader: DataLoader
    checkpoint_path: Path | None = None  # the checkpoint file the weights came from

    @property
    def measurement_source(self) -> dict[str, object]:
        """What a measurement in this run depends on besides the arch and the calibration seed (see
        :meth:`ofa.train_config.TrainConfig.measurement_source`)."""
        return self.config.measurement_source(self.checkpoint_path)

    @property
    def test_loader(self) -> DataLoader:
        """Batches of the test split (a ``ValueError`` when the data set has none, never val instead)."""
        return DataLoader(self.data.require_test(), self.config.data.eval_batch_size, shuffle=False)

    @property
    def num_classes(self) -> int:
        """Classifier outputs."""
        return self.supernet.num_classes

    def export(
        self,
        model: StaticNet,
        arch: Arch,
        out_dir: str | Path,
        metadata: Mapping[str, float | str | int | None],
        force: bool = False,
        onnx: bool = False,
    ) -> Path:
        """Write ``model`` (the static subnet ``arch`` of this run) as a standalone export with the run's
        space, classes and input normalisation (see :func:`ofa.export.export_subnet`)."""

        return export_subnet(
            model,
            self.space,
            arch,
            Path(out_dir),
            num_classes=self.num_classes,
            mean=self.data.mean,
            std=self.data.std,
            metadata=metadata,
            force=force,
            onnx=onnx,
        )

    def calibrated_subnet(self, arch: Arch) -> StaticNet:
        """The static model of ``arch`` with its BN statistics recalibrated on the run's calibration images
        (exactly the statistics :meth:`evaluate` measures with), in eval mode."""
        self.supernet.set_active(arch)
        recalibrate_bn(self.supernet, self.calibration_images, arch.resolution)
        return self.supernet.extract(arch).eval()

    def measure_into(self, path: Path, archs: Sequence[Arch], progress: bool = False) -> list[ArchRecord]:
        """Measure ``archs`` (val and test, BN recalibrated with the run's own calibration batches) into the
        arch CSV ``path``; rows made on these weights are reused, stale ones re-measured (see
        :func:`ofa.archdata.measure_to_csv`). Returns the rows of the run's calibration seed."""

        seed = self.config.calibration.seed  # labels the measurement: the run's own BN-calibration batches
        records = measure_to_csv(
            path,
            self.supernet,
            archs,
            self.calibration_images,
            self.val_loader,
            self.test_loader,
            seed,
            progress=progress,
            source=self.measurement_source,  # a longer training (more epochs) makes the old rows stale
        )
        return [record for record in records if record.seed == seed]

    def evaluate(self, arch: Arch, split: str = "val") -> Evaluation:
        """Accuracy of ``arch`` inside the supernet on ``val`` or ``test`` (BN recalibrated first)."""
        if split not in ("val", "test"):
            raise ValueError(f"split must be val or test, got {split!r}")
        loader = self.val_loader if split == "val" else self.test_loader
        return evaluate_arch(self.supernet, arch, self.calibration_images, loader)


def run_space(run_dir: str | Path) -> tuple[SearchSpace, int]:
    """The space and class count of a run (:func:`ofa.runfolder.read_run_space`); a deleted ``space.json`` is
    first written back from the run's checkpoint (a read-only run folder still answers)."""
    try:
        return read_run_space(run_dir)
    except MissingSpaceFileError:
        pass
    folder = RunFolder(Path(run_dir))
    path = next(folder.checkpoint(name) for name in CHECKPOINT_NAMES if folder.checkpoint(name).is_file())
    state = load_checkpoint(path)
    if "space" not in state or "num_classes" not in state:
        raise ValueError(f"checkpoint {path} lacks its space or class count: it was not written by `ofa train`")
    space = SearchSpace.from_dict(state["space"], source=f"checkpoint {path}")
    num_classes = int(state["num_classes"])
    with contextlib.suppress(OSError):
        write_run_space(run_dir, space, num_classes)
    return space, num_classes


def load_run(run_dir: str | Path, checkpoint: str = "latest") -> LoadedRun:
    """Reopen ``run_dir`` from its ``latest`` (the final weights, the default) or ``best`` checkpoint.

    Search, query, export and evaluation read the final weights by default: ``best.pt`` is chosen on the
    largest subnet's val accuracy alone, and says nothing about the rest of the front. A missing
    checkpoint is a clear error.

    Like training, this applies the config's ``cpu_threads`` (torch intra-op threads) when it is set.
    """
    run_dir = Path(run_dir)
    path = RunFolder(run_dir).existing_checkpoint(checkpoint)
    state = load_checkpoint(path)
    missing = [key for key in ("config", "num_classes") if key not in state]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {', '.join(missing)}: it was not written by `ofa train`")
    config = config_from_dict(TrainConfig, state["config"])
    space = SearchSpace.from_dict(state["space"], source=f"checkpoint {path.name} space")
    data = build_data(config, space)
    if data.num_classes != state["num_classes"]:
        raise ValueError(f"{path} has {state['num_classes']} classes but its data set has {data.num_classes}")
    if config.cpu_threads:  # as training does: small tensors run fastest on one thread
        torch.set_num_threads(config.cpu_threads)
    supernet = Supernet(space, state["num_classes"], config.model.dropout)
    try:
        supernet.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path}: the weights do not fit its space {space.name!r} ({error})") from None
    supernet.eval()
    section = config.calibration
    calibration = calibration_images(
        data.train, section.batches_for(data.name), section.batch_size, section.seed, section.augment
    )
    batch = config.data.eval_batch_size
    return LoadedRun(
        run_dir=run_dir,
        config=config,
        space=space,
        supernet=supernet,
        data=data,
        calibration_images=calibration,
        val_loader=DataLoader(data.val, batch, shuffle=False),
        checkpoint_path=path,
    )
