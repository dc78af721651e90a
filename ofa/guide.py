"""Predictor-guided training: a uniform sandwich warm-up, then BestUp/WorstUp scored by a tree predictor.

After ``guide.warmup_epochs`` epochs a set of archs spread over the FLOPs range is evaluated inside the
supernet (BN recalibrated, val accuracy only: the test split never steers training), the predictor is
fitted on them, and attentive sampling uses its predictions; every ``refit_every`` epochs fresh archs are
evaluated and the predictor is refitted on those alone. ``guide.calibration_batches`` and
``guide.val_images`` make each measurement cheaper (a ranking needs less precision than a report).
Rows measured on earlier weights are not mixed
in: every refit's rows carry an offset of their own epoch (the whole supernet got better since), which
has nothing to do with the arch and would blur the ranking. Each fitted predictor and the arch data
behind it stay in ``RUN/predictor/`` (the CSV's seed column names the refit: ``seed * 1000 + epoch``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from ofa.archdata import measure_to_csv, spread_archs
from ofa.runfolder import RunFolder
from ofa.space import Arch, SearchSpace
from ofa.supernet import Supernet
from ofa.train_config import TrainConfig
from predictors.models import Predictor, create_predictor, load_predictor

__all__ = ["PredictorGuide"]


class PredictorGuide:
    """Fits and refits the accuracy predictor that scores attentive candidates during training."""

    def __init__(self, config: TrainConfig, space: SearchSpace, run_dir: Path) -> None:
        self.config = config
        self.space = space
        self.folder = RunFolder(run_dir)
        self.data_path = self.folder.guide_arch_data
        self.predictor: Predictor | None = None
        self.fit_epochs: list[int] = []
        create_predictor(config.guide.model, space)  # an unknown model name fails before training

    @property
    def ready(self) -> bool:
        """Whether a fitted predictor is available."""
        return self.predictor is not None

    def scorer(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predicted accuracy (higher is better)."""
        return self.predictor.predict(archs)

    def _due(self, epoch: int) -> bool:
        guide = self.config.guide
        if epoch < guide.warmup_epochs or epoch in self.fit_epochs:
            return False
        if not self.fit_epochs:
            return True
        return guide.refit_every > 0 and (epoch - guide.warmup_epochs) % guide.refit_every == 0

    def maybe_refit(
        self,
        epoch: int,
        supernet: Supernet,
        calibration_images: Sequence[torch.Tensor],
        val_batches: Iterable,
    ) -> bool:
        """Evaluate fresh archs on val and refit on them when ``epoch`` is due; returns whether it refitted."""
        if not self._due(epoch):
            return False
        # the guide draws from its own seeded stream, so the training randomness is unchanged
        seed = self.config.seed * 1000 + epoch
        archs = spread_archs(self.space, self.config.guide.num_archs, supernet.num_classes, seed)
        calibration = calibration_images[: self.config.guide.calibration_batches]  # None: every batch
        measured = measure_to_csv(self.data_path, supernet, archs, calibration, val_batches, None, seed)
        records = [record for record in measured if record.seed == seed]  # the current weights' rows only
        predictor = create_predictor(self.config.guide.model, self.space, seed=self.config.seed)
        predictor.fit([record.arch for record in records], np.array([record.val_acc for record in records]))
        predictor.save(self.folder.guide_predictor_of_epoch(epoch))
        predictor.save(self.folder.guide_predictor)
        supernet.train()
        self.predictor = predictor
        self.fit_epochs.append(epoch)
        return True

    def state(self) -> dict:
        """What a checkpoint keeps to resume the guide."""
        return {"fit_epochs": list(self.fit_epochs)}

    def load_state(self, state: dict | None) -> None:
        """Restore from a checkpoint (the predictor is re-read from the run directory)."""
        if not state or not state["fit_epochs"]:
            return
        self.fit_epochs = list(state["fit_epochs"])
        last = self.fit_epochs[-1]
        self.predictor = load_predictor(self.folder.guide_predictor_of_epoch(last), self.space)
