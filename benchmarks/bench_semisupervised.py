"""P7b: does SemiNAS-style self-training help the default predictor on real arch data?

SemiNAS (Luo et al., 2020) fits a predictor on the measured archs, pseudo-labels a pool of unmeasured random
archs with it, and refits on both (the default with ``pseudo_label_factor``; registered as ``lightgbm_seminas``
with a pool as large as the training set). Here the predictor is the default ``lightgbm``; the data is the shipped
CIFAR-10 development measurements (``benchmarks/data/cifar10_dev_archs_seed0.csv``, 400 archs). For each
training size and seed, ``size`` archs are drawn for training and the rest are the test set; the pool holds
1x or 4x as many random archs of the space. Reported: Kendall tau on the held-out archs, mean ± std over
seeds, side by side with the plain predictor on the same split (the issue's goal: +0.03 at 25 and 50).

Run: ``python -m benchmarks.bench_semisupervised [--seeds 0,1,2,3,4]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import print_table
from ofa.flops import DEFAULT_NUM_CLASSES
from ofa.space import load_space
from predictors.dataset import read_arch_csv
from predictors.metrics import kendall_tau
from predictors.models import PREDICTORS, LightGBMPredictor, create_predictor

DATA = Path(__file__).resolve().parent / "data" / "cifar10_dev_archs_seed0.csv"
POOL_FACTORS = (1, 4)


def measure(sizes: Sequence[int], seeds: Sequence[int], data: Path = DATA) -> dict[tuple[int, str], list[float]]:
    """Kendall tau per (training size, variant) and seed: ``plain`` and ``pseudo<k>x`` (pool k x size)."""
    space = load_space("cifar")
    records = read_arch_csv(data, space)
    archs, accuracy = [record.arch for record in records], np.array([record.val_acc for record in records])
    taus: dict[tuple[int, str], list[float]] = {}
    for size in sizes:
        for seed in seeds:
            order = np.random.default_rng(seed).permutation(len(archs))
            train, test = order[:size], order[size:]
            train_archs, test_archs = [archs[i] for i in train], [archs[i] for i in test]
            plain = create_predictor("lightgbm", space, seed=seed).fit(train_archs, accuracy[train])
            taus.setdefault((size, "plain"), []).append(kendall_tau(accuracy[test], plain.predict(test_archs)))
            for factor in POOL_FACTORS:  # the registered lightgbm_seminas is factor 1
                settings = {**PREDICTORS["lightgbm"].settings, "pseudo_label_factor": factor}
                refit = LightGBMPredictor("seminas", space, seed, settings, DEFAULT_NUM_CLASSES)
                refit.fit(train_archs, accuracy[train])
                taus.setdefault((size, f"pseudo{factor}x"), []).append(
                    kendall_tau(accuracy[test], refit.predict(test_archs))
                )
    return taus


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_semisupervised", description=__doc__)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--sizes", default="25,50")
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    taus = measure([int(size) for size in args.sizes.split(",")], seeds)
    rows = []
    for (size, variant), values in taus.items():
        gain = np.array(values) - np.array(taus[(size, "plain")])
        rows.append([size, variant, float(np.mean(values)), float(np.std(values)), float(np.mean(gain))])
    print(f"Kendall tau on held-out CIFAR-10 dev archs, mean ± std over {len(seeds)} seeds")
    print_table(["train archs", "variant", "tau mean", "tau std", "gain vs plain (paired)"], rows)


if __name__ == "__main__":
    main()
