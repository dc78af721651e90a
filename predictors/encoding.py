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

from ofa._genome import genome_of
from ofa.flops import DEFAULT_NUM_CLASSES
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

    The archs become the search's index rows (``ofa._genome.Genome.encode``, which validates them) and the
    rows the features (``Genome.features``): the search scores predictors from its rows with no second encoder.

    Raises:
        ValueError: an arch does not belong to ``space``.
    """
    genome = genome_of(space, num_classes)
    features = genome.features(genome.encode(archs))
    return features if derived else features[:, :-2]
