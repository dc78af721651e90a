"""Architecture → fixed-length feature vector for accuracy predictors.

The encoding is the raw choices of an arch (as AttentiveNAS's random-forest predictor uses them, Wang
et al., CVPR 2021), laid out per block slot so that every arch of a space gives a vector of the same
length, plus optional derived costs (depth and MACs as explicit features help small-data predictors,
White et al., 2021). Feature order, stable for a given space:

1. ``resolution``
2. ``width.stem``, ``width.<stage>`` for every stage, ``width.head``
3. ``depth.<stage>`` for every stage
4. for every stage and every block slot ``b`` up to the stage's largest depth:
   ``kernel_size.<stage>.<b>``, ``expand_ratio.<stage>.<b>``; a slot beyond the arch's depth (an inactive
   block) is 0 in both, which no real choice can be (choices are >= 1)
5. when ``derived``: ``mmacs`` (MACs in millions) and ``mparams`` (parameters in millions), counted by
   ``ofa.flops`` with ``num_classes`` outputs
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ofa.flops import DEFAULT_NUM_CLASSES, count_macs_many, count_params_many
from ofa.space import Arch, SearchSpace

__all__ = ["encode", "feature_names"]


def feature_names(space: SearchSpace, derived: bool = True) -> list[str]:
    """Names of the columns ``encode`` returns, in order."""
    names = ["resolution", "width.stem"]
    names += [f"width.{stage.name}" for stage in space.stages]
    names.append("width.head")
    names += [f"depth.{stage.name}" for stage in space.stages]
    for stage in space.stages:
        for block in range(max(stage.depth)):
            names += [f"kernel_size.{stage.name}.{block}", f"expand_ratio.{stage.name}.{block}"]
    if derived:
        names += ["mmacs", "mparams"]
    return names


def encode(
    space: SearchSpace, archs: Sequence[Arch], derived: bool = True, num_classes: int = DEFAULT_NUM_CLASSES
) -> np.ndarray:
    """Encode archs of ``space`` as a float64 array of shape (len(archs), len(feature_names(space, derived))).

    Raises:
        ValueError: an arch does not belong to ``space``.
    """
    slots = [max(stage.depth) for stage in space.stages]
    n_features = len(feature_names(space, derived=False))
    if derived:  # counting validates every arch (an invalid one raises), so the loop below need not
        macs = count_macs_many(space, archs, num_classes=num_classes).astype(np.float64) / 1e6
        params = count_params_many(space, archs, num_classes=num_classes).astype(np.float64) / 1e6
    rows = np.zeros((len(archs), n_features), dtype=np.float64)
    for row, arch in enumerate(archs):
        if not derived:
            space.validate(arch)
        values: list[float] = [arch.resolution, *arch.width, *arch.depth]
        for kernels, expands, slot_count in zip(arch.kernel_size, arch.expand_ratio, slots):
            for kernel, expand in zip(kernels, expands):
                values += (kernel, expand)
            values += (0, 0) * (slot_count - len(kernels))
        rows[row] = values
    if not derived:
        return rows
    return np.column_stack([rows, macs, params]) if len(archs) else np.zeros((0, n_features + 2))
