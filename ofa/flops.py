"""Analytic MAC and parameter counts of archs: the single source of truth for "FLOPs" in this project.

The convention and the per-layer terms are in :mod:`ofa.layer_costs` (``layout_macs``/``layout_params``
count a :class:`~ofa.layout.NetworkLayout` layer by layer). An arch is counted with the tables of its space's
genome (:mod:`ofa._genome`), built once per space and class count from those same terms: every block's
cost depends only on the resolution, its input and output widths, its position, its kernel size and its
expand ratio, so a count is a few table look-ups. One path for one arch and for many; an arch of
another space, or with a value the space does not offer, raises the space's ``ValueError``. Tests check
the counts against the layer-by-layer layout count and against fvcore on the built models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ofa._genome import genome_of
from ofa.space import Arch, SearchSpace

__all__ = [
    "DEFAULT_NUM_CLASSES",
    "count_macs",
    "count_macs_many",
    "count_params",
    "count_params_many",
]

DEFAULT_NUM_CLASSES = 10  # the library's one default (the data sets' and the runs'); paper figures pass 1000


def _check_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")


def count_macs_many(space: SearchSpace, archs: Sequence[Arch], num_classes: int = DEFAULT_NUM_CLASSES) -> np.ndarray:
    """MACs of many archs (int64 array, same order); the first invalid arch raises its ``ValueError``."""
    _check_classes(num_classes)
    genome = genome_of(space, num_classes)
    return genome.macs(genome.encode(archs))


def count_params_many(space: SearchSpace, archs: Sequence[Arch], num_classes: int = DEFAULT_NUM_CLASSES) -> np.ndarray:
    """Parameters of the static models many archs build into (int64 array, same order)."""
    _check_classes(num_classes)
    genome = genome_of(space, num_classes)
    return genome.params(genome.encode(archs))


def count_macs(space: SearchSpace, arch: Arch, num_classes: int = DEFAULT_NUM_CLASSES) -> int:
    """Multiply-accumulates of ``arch`` at batch 1 (validated against ``space``)."""
    _check_classes(num_classes)
    return genome_of(space, num_classes).macs_of(arch)


def count_params(space: SearchSpace, arch: Arch, num_classes: int = DEFAULT_NUM_CLASSES) -> int:
    """Trainable parameters of the static model ``arch`` builds into."""
    _check_classes(num_classes)
    return genome_of(space, num_classes).params_of(arch)
