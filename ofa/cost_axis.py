"""What a budget limits, as one object: MMACs (exact, ``ofa.flops``) or a latency estimate on one device.

Search, query, export, the Pareto files and their figure ask the axis for the cost of archs, its unit and
label and the names of its result files, so MACs and latency fronts of one run live side by side
(``search/pareto.*`` and ``search/pareto-latency.*``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ofa.budget import MACS_PER_MMAC, check_budget, check_latency_budget
from ofa.flops import count_macs_many
from ofa.space import Arch, SearchSpace

if TYPE_CHECKING:
    from ofa.latency_models import LatencyEstimator

__all__ = ["DEFAULT_LEARNED_PREDICTOR", "ESTIMATORS", "CostAxis", "latency_axis", "mac_axis"]

# the kinds of latency estimator (``ofa.latency_models``), here so the command line can offer them without
# importing torch
ESTIMATORS = ("table", "learned", "macs")
DEFAULT_LEARNED_PREDICTOR = "lightgbm"


@dataclass(frozen=True)
class CostAxis:
    """One cost a budget can limit.

    Attributes:
        unit: ``mmacs`` or ``latency_ms`` (the key of costs and budgets in result files).
        label: axis label of figures, naming the device for latency.
        file_stem: result file stem under ``RUN/search/`` (``pareto`` or ``pareto-latency``).
        of_archs: the cost of archs.
        check: a budget (number or string) checked and converted into the unit.
        latency: the estimator of a latency axis, else None.
    """

    unit: str
    label: str
    file_stem: str
    of_archs: Callable[[Sequence[Arch]], np.ndarray]
    check: Callable[[float | str], float]
    latency: LatencyEstimator | None = None

    def budget_text(self, budget: float) -> str:
        """A budget as users write it: ``5M`` or ``5ms``."""
        return f"{budget:g}{'ms' if self.latency is not None else 'M'}"


def mac_axis(space: SearchSpace, num_classes: int) -> CostAxis:
    """MMACs of ``space`` with a classifier of ``num_classes``."""
    return CostAxis(
        unit="mmacs",
        label="MMACs",
        file_stem="pareto",
        of_archs=lambda archs: count_macs_many(space, list(archs), num_classes) / MACS_PER_MMAC,
        check=lambda budget: check_budget(space, budget, num_classes),
    )


def latency_axis(estimator: LatencyEstimator) -> CostAxis:
    """Estimated latency (ms) on the estimator's device."""
    return CostAxis(
        unit="latency_ms",
        label=f"latency (ms), {estimator.fingerprint.describe()}",
        file_stem="pareto-latency",
        of_archs=lambda archs: estimator.predict(list(archs)),
        check=lambda budget: check_latency_budget(estimator, budget),
        latency=estimator,
    )
