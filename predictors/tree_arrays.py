"""LightGBM regression trees as numpy arrays: the summed output of many small boosters in a few vectorised
steps per call.

The search scores about 75 new archs per generation, 500 generations per budget; LightGBM's own
``Booster.predict`` costs about a millisecond per call and per booster whatever the batch, which made it
the largest part of a search. Here every tree of every booster is a row of split arrays (feature,
threshold) with a table from the byte of its split outcomes to the leaf value reached, and a batch is scored
by one gather, one comparison and one table look-up for all trees. Only numerical ``<=`` splits without a
zero-as-missing rule, in trees of at most ``MAX_SPLITS`` splits, are compiled (what the toolkit's default
boosters hold; its encodings have no missing values); anything else keeps ``Booster.predict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightgbm
import numpy as np

__all__ = ["MAX_SPLITS", "TreeArrays", "compile_boosters"]


MAX_SPLITS = 8  # splits per tree compiled (a tree's outcomes are one byte); larger trees keep LightGBM


class TreeArrays:
    """Every tree of some boosters as arrays; ``predict`` sums all their outputs per row.

    Each tree's splits are evaluated for every row at once (one gather and one comparison for all trees);
    the byte of a tree's split outcomes then indexes a table of the leaf value it reaches.
    """

    def __init__(self, trees: Sequence[dict[str, Any]]) -> None:
        splits = [_internal_nodes(tree["tree_structure"]) for tree in trees]
        width = max(1, max(len(nodes) for nodes in splits))
        self.feature = np.zeros((len(trees), width), dtype=np.int64)
        self.threshold = np.full((len(trees), width), np.inf)  # padding: never taken
        self.table = np.zeros((len(trees), 1 << width), dtype=np.float64)
        for row, (tree, nodes) in enumerate(zip(trees, splits)):
            for node in nodes:
                self.feature[row, node["split_index"]] = node["split_feature"]
                self.threshold[row, node["split_index"]] = node["threshold"]
            for code in range(1 << width):
                self.table[row, code] = _leaf_value(tree["tree_structure"], code)
        self.feature, self.threshold = self.feature.T.ravel(), self.threshold.T.ravel()  # split-major
        self.width = width
        self._offsets = np.arange(len(trees)) * self.table.shape[1]  # row starts in the flat table
        self._flat_table = self.table.ravel()

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The sum over every tree of its leaf value for each row of ``features``."""
        right = (features[:, self.feature] > self.threshold).view(np.uint8)  # (rows, splits x trees)
        right = right.reshape(len(features), self.width, len(self._offsets))
        codes = right[:, 0, :].astype(np.int64)
        for split in range(1, self.width):
            codes |= right[:, split, :].astype(np.int64) << split
        return np.take(self._flat_table, self._offsets + codes).sum(axis=1)


def _leaf_value(node: dict[str, Any], code: int) -> float:
    """The leaf reached when split ``i`` goes right exactly where bit ``i`` of ``code`` is set."""
    while "split_index" in node:
        node = node["right_child"] if code >> node["split_index"] & 1 else node["left_child"]
    return float(node["leaf_value"])


def _internal_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    if "split_index" not in node:
        return []
    return [node, *_internal_nodes(node["left_child"]), *_internal_nodes(node["right_child"])]


def _compilable(node: dict[str, Any]) -> bool:
    if "split_index" not in node:
        return True
    plain = node["decision_type"] == "<=" and node["missing_type"] in ("None", "NaN")
    return plain and _compilable(node["left_child"]) and _compilable(node["right_child"])


def compile_boosters(boosters: Sequence[lightgbm.Booster]) -> TreeArrays | None:
    """The trees of ``boosters`` (single-output regression) as one :class:`TreeArrays`; None when a tree
    holds a split it does not compile (categorical, zero-as-missing), has more than ``MAX_SPLITS`` splits, or a
    booster averages its trees."""
    trees = []
    for booster in boosters:
        model = booster.dump_model()
        if model["num_tree_per_iteration"] != 1 or model.get("average_output"):
            return None
        trees += model["tree_info"]
    if not trees or not all(_compilable(tree["tree_structure"]) for tree in trees):
        return None
    if max(len(_internal_nodes(tree["tree_structure"])) for tree in trees) > MAX_SPLITS:
        return None
    return TreeArrays(trees)
