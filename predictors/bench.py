"""The accuracy-predictor benchmark: learning curves over training-set sizes, repeated over seeds.

Follows the protocol of White et al. (NeurIPS 2021): one held-out test set chosen once with a fixed
seed; for every predictor × training-set size × seed, fit on a sample of the remaining archs (the
samples of one seed are nested across sizes and shared by all predictors, so comparisons are paired)
and score on the test set with Kendall tau, Spearman, Pearson, RMSE, MAE and precision@k, plus fit time
and predict time per arch. Archs measured more than once are averaged first, so no arch is in both the
training and the test set. ``noise_ceiling`` bounds what any predictor can reach on noisy measurements.
"""

from __future__ import annotations

import csv
import io
import math
import random
import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter
from numpy.typing import ArrayLike
from tqdm import tqdm

from ofa.atomic import atomic_write, atomic_write_text
from ofa.flops import DEFAULT_NUM_CLASSES, count_macs_many, count_params_many
from ofa.space import Arch, SearchSpace
from predictors.dataset import ArchRecord, target_values
from predictors.encoding import encode
from predictors.metrics import kendall_tau, mae, pearson, precision_at_k, rmse, spearman
from predictors.models import COST_MODELS, DEFAULT_PREDICTOR, PREDICTORS, CostPredictor, create_predictor

__all__ = [
    "METRICS",
    "BenchmarkRow",
    "format_table",
    "noise_ceiling",
    "noise_summary",
    "plot_learning_curves",
    "repeated_measurements",
    "run_benchmark",
    "synthetic_records",
    "write_results_csv",
]

METRICS = ("kendall_tau", "spearman", "pearson", "precision_at_k", "rmse", "mae", "fit_seconds", "predict_microseconds")


@dataclass(frozen=True)
class BenchmarkRow:
    """Scores of one predictor fitted on one training sample, on the fixed test set.

    ``rmse`` and ``mae`` are NaN for the cost baselines, whose predictions are costs, not accuracies.
    ``predict_microseconds`` is the prediction time per arch.
    """

    predictor: str
    train_size: int
    seed: int
    test_size: int
    top_k: int
    kendall_tau: float
    spearman: float
    pearson: float
    precision_at_k: float
    rmse: float
    mae: float
    fit_seconds: float
    predict_microseconds: float


def _unique_archs(archs: Sequence[Arch], values: np.ndarray) -> tuple[list[Arch], np.ndarray]:
    """Average the values of archs measured several times, keeping first-seen order."""
    groups: dict[Arch, list[float]] = {}
    for arch, value in zip(archs, values):
        groups.setdefault(arch, []).append(float(value))
    return list(groups), np.array([np.mean(group) for group in groups.values()], dtype=np.float64)


def _positive_ints(values: Sequence[int], what: str, minimum: int = 1) -> list[int]:
    values = list(values)
    if not values:
        raise ValueError(f"{what}: give at least one value")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{what}: {value!r} is not an integer >= {minimum}")
    return [int(value) for value in values]


def _checked_data(
    data: Sequence[ArchRecord] | tuple[Sequence[Arch], ArrayLike], space: SearchSpace, target: str
) -> tuple[list[Arch], np.ndarray]:
    """Distinct archs of ``space`` and their finite targets (higher = better)."""
    if isinstance(data, tuple):
        archs, values = list(data[0]), np.asarray(data[1], dtype=np.float64).ravel()
    else:
        archs, values = [record.arch for record in data], target_values(data, target)
    if len(archs) != values.size:
        raise ValueError(f"got {len(archs)} archs but {values.size} targets")
    if not np.isfinite(values).all():
        raise ValueError("targets must be finite (no NaN or inf)")
    for arch in archs:
        space.validate(arch)
    return _unique_archs(archs, values)


def run_benchmark(
    data: Sequence[ArchRecord] | tuple[Sequence[Arch], ArrayLike],
    space: SearchSpace,
    predictors: Sequence[str],
    train_sizes: Sequence[int],
    seeds: Sequence[int],
    test_size: int,
    target: str = "val_acc",
    top_k: int = 10,
    split_seed: int = 0,
    progress: bool = True,
) -> list[BenchmarkRow]:
    """Score every predictor at every training-set size for every seed on one fixed test set.

    Args:
        data: arch records (scored on ``target``), or archs and their targets (higher = better).
        space: the space of the archs.
        predictors: registered predictor names.
        train_sizes: training-set sizes; each at most the number of distinct archs minus ``test_size``.
        seeds: one training sample (and predictor seed) per seed.
        test_size: archs held out once, chosen with ``split_seed``.
        target: ``val_acc`` or ``val_loss`` (negated), for records.
        top_k: k of precision@k (capped at ``test_size``).
        split_seed: seed of the test-set choice.
        progress: show a progress bar over the grid (only on a terminal).

    Raises:
        ValueError: unknown predictor, sizes that do not fit the data, or bad data.
    """
    archs, values = _checked_data(data, space, target)
    predictors = list(predictors)
    if not predictors:
        raise ValueError("predictors: give at least one registered predictor name")
    for name in predictors:
        create_predictor(name, space)  # unknown names fail here, before any fitting
    train_sizes = _positive_ints(train_sizes, "train sizes", minimum=2)
    seeds = _positive_ints(seeds, "seeds", minimum=0)
    (test_size,) = _positive_ints([test_size], "test size", minimum=2)
    (top_k,) = _positive_ints([top_k], "top k")
    pool_size = len(archs) - test_size
    if pool_size < max(train_sizes):
        raise ValueError(
            f"train size {max(train_sizes)} is too large: {len(archs)} distinct archs minus a test set of "
            f"{test_size} leave {max(pool_size, 0)} for training"
        )
    order = np.random.default_rng(split_seed).permutation(len(archs))
    test_index, pool_index = order[:test_size], order[test_size:]
    test_archs, test_values = [archs[i] for i in test_index], values[test_index]
    k = min(top_k, test_size)
    rows, total = [], len(predictors) * len(train_sizes) * len(seeds)
    with tqdm(total=total, desc="predictor benchmark", disable=None if progress else True, leave=False) as bar:
        for seed in seeds:
            sample = np.random.default_rng([split_seed, seed]).permutation(pool_index)
            for size in sorted(train_sizes):
                train_archs, train_values = [archs[i] for i in sample[:size]], values[sample[:size]]
                for name in predictors:
                    bar.set_postfix_str(f"{name} n={size} seed={seed}")
                    rows.append(_score(name, space, seed, train_archs, train_values, test_archs, test_values, k))
                    bar.update()
    return rows


def _score(
    name: str,
    space: SearchSpace,
    seed: int,
    train_archs: list[Arch],
    train_values: np.ndarray,
    test_archs: list[Arch],
    test_values: np.ndarray,
    top_k: int,
) -> BenchmarkRow:
    predictor = create_predictor(name, space, seed=seed)
    start = time.perf_counter()
    predictor.fit(train_archs, train_values)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    predicted = predictor.predict(test_archs)
    predict_seconds = time.perf_counter() - start
    is_cost = isinstance(predictor, CostPredictor)
    return BenchmarkRow(
        predictor=name,
        train_size=len(train_archs),
        seed=seed,
        test_size=len(test_archs),
        top_k=top_k,
        kendall_tau=kendall_tau(test_values, predicted),
        spearman=spearman(test_values, predicted),
        pearson=pearson(test_values, predicted),
        precision_at_k=precision_at_k(test_values, predicted, top_k),
        rmse=math.nan if is_cost else rmse(test_values, predicted),
        mae=math.nan if is_cost else mae(test_values, predicted),
        fit_seconds=fit_seconds,
        predict_microseconds=1e6 * predict_seconds / len(test_archs),
    )


# ----------------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------------


def _groups(rows: Sequence[BenchmarkRow]) -> dict[tuple[str, int], list[BenchmarkRow]]:
    groups: dict[tuple[str, int], list[BenchmarkRow]] = {}
    for row in sorted(rows, key=lambda row: row.train_size):
        groups.setdefault((row.predictor, row.train_size), []).append(row)
    names = list(dict.fromkeys(row.predictor for row in rows))
    return dict(sorted(groups.items(), key=lambda item: (names.index(item[0][0]), item[0][1])))


def _mean_std(rows: Sequence[BenchmarkRow], metric: str) -> tuple[float, float]:
    values = np.array([getattr(row, metric) for row in rows], dtype=np.float64)
    if np.isnan(values).all():
        return math.nan, math.nan
    return float(np.nanmean(values)), float(np.nanstd(values))


_FORMATS = {
    "kendall_tau": ("kendall", ".3f"),
    "spearman": ("spearman", ".3f"),
    "pearson": ("pearson", ".3f"),
    "precision_at_k": ("p@k", ".2f"),
    "rmse": ("rmse", ".4f"),
    "mae": ("mae", ".4f"),
    "fit_seconds": ("fit s", ".3f"),
    "predict_microseconds": ("predict µs/arch", ".1f"),
}


def format_table(rows: Sequence[BenchmarkRow]) -> str:
    """A plain-text table: one line per predictor and training size, mean ± std over seeds per metric."""
    if not rows:
        return "(no results)"
    top_k = sorted({row.top_k for row in rows})
    header = ["predictor", "n", "seeds"] + [
        _FORMATS[m][0].replace("@k", f"@{top_k[0]}" if len(top_k) == 1 else "@k") for m in METRICS
    ]
    lines = [header]
    for (name, size), group in _groups(rows).items():
        cells = [name, str(size), str(len(group))]
        for metric in METRICS:
            mean, std = _mean_std(group, metric)
            spec = _FORMATS[metric][1]
            cells.append("n/a" if math.isnan(mean) else f"{mean:{spec}} ± {std:{spec}}")
        lines.append(cells)
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    text = [
        "  ".join(
            cell.ljust(width) if column < 1 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths))
        )
        for line in lines
    ]
    text.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in text)


def write_results_csv(rows: Sequence[BenchmarkRow], path: str | Path) -> None:
    """Write one CSV line per row (every seed), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([field.name for field in fields(BenchmarkRow)])
    for row in rows:
        writer.writerow(["" if isinstance(value, float) and math.isnan(value) else value for value in astuple(row)])
    atomic_write_text(Path(path), buffer.getvalue())


def plot_learning_curves(rows: Sequence[BenchmarkRow], path: str | Path) -> None:
    """Save a PNG of Kendall tau against training-set size (log axis), mean ± std band per predictor."""
    path = Path(path)
    figure = Figure(figsize=(9.0, 5.0), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    names = list(dict.fromkeys(row.predictor for row in rows))
    sizes = sorted({row.train_size for row in rows})
    groups = _groups(rows)
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    for index, name in enumerate(names):
        points = [(size, *_mean_std(groups[(name, size)], "kendall_tau")) for size in sizes if (name, size) in groups]
        x, mean, std = (np.array(column) for column in zip(*points))
        style = "--" if name in PREDICTORS and PREDICTORS[name].model in COST_MODELS else "-"
        color = palette(index % palette.N)
        width = 2.2 if name == DEFAULT_PREDICTOR else 1.2
        axes.plot(x, mean, style, color=color, linewidth=width, marker="o", markersize=3, label=name)
        axes.fill_between(x, mean - std, mean + std, color=color, alpha=0.12, linewidth=0)
    axes.set_xscale("log")
    axes.set_xticks(sizes)
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("training archs")
    axes.set_ylabel("Kendall tau on the test set")
    test_sizes = sorted({row.test_size for row in rows})
    axes.set_title(f"Accuracy predictors: learning curves (test set {', '.join(map(str, test_sizes))} archs)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png"))


# ----------------------------------------------------------------------------------------------------
# noise ceiling and synthetic data
# ----------------------------------------------------------------------------------------------------


def noise_ceiling(first: ArrayLike, second: ArrayLike) -> float:
    """Kendall tau between two independent measurements of the same archs (same order).

    No predictor can be expected to rank one measurement better than the other measurement does.
    """
    return kendall_tau(first, second)


def repeated_measurements(records: Sequence[ArchRecord], target: str = "val_acc") -> tuple[np.ndarray, np.ndarray]:
    """The first two measurements of every arch measured at least twice (e.g. two calibration seeds).

    Returns:
        Two equally long arrays of ``target`` values (higher = better), empty when no arch repeats.
    """
    values = target_values(records, target)
    seen: dict[Arch, list[float]] = {}
    for record, value in zip(records, values):
        seen.setdefault(record.arch, []).append(float(value))
    pairs = [group[:2] for group in seen.values() if len(group) >= 2]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    first, second = zip(*pairs)
    return np.array(first), np.array(second)


def noise_summary(
    records: Sequence[ArchRecord], target: str = "val_acc", repeats: Sequence[ArchRecord] = ()
) -> dict[str, float]:
    """What bounds a predictor on these records: ``repeat_tau`` (the noise ceiling of ``target`` over the
    ``repeat_archs`` archs measured twice in ``records`` + ``repeats``, when any are) and ``val_test_acc_tau``
    (val vs test accuracy of the ``records`` measured on both)."""
    result = {}
    first, second = repeated_measurements([*records, *repeats], target)
    if first.size >= 2:
        result["repeat_archs"] = float(first.size)
        result["repeat_tau"] = noise_ceiling(first, second)
    with_test = [record for record in records if record.test_acc is not None]  # val-only rows have no test
    if len(with_test) >= 2:
        result["val_test_acc_tau"] = kendall_tau([r.val_acc for r in with_test], [r.test_acc for r in with_test])
    return result


def synthetic_records(
    space: SearchSpace, count: int, seed: int = 0, noise: float = 0.005, nonlinear: bool = False
) -> list[ArchRecord]:
    """Distinct random archs with a known synthetic accuracy, for testing and tuning predictors.

    The truth is ``0.80 + 0.05 * log(MMACs) + 0.06 * (u @ w) / sqrt(F)``, where ``u`` is the encoding (without costs)
    divided by that of the largest arch, and ``w`` fixed random weights (the same for every ``seed``).
    With ``nonlinear`` the score saturates and mixes in interactions: ``0.98 - 0.2 * exp(-(s - s_min))``
    with ``s`` the linear truth above plus depth x resolution and kernel x expand terms. ``val_acc`` and
    ``test_acc`` are the truth plus independent Gaussian noise of std ``noise``; ``val_loss`` is
    ``1 - val_acc`` plus its own noise, halved.

    Raises:
        ValueError: the space has fewer than ``count`` archs to draw from.
    """
    (count,) = _positive_ints([count], "count")
    rng = random.Random(seed)
    unique: dict[Arch, None] = {}
    for _ in range(50 * count):
        unique[space.sample(rng)] = None
        if len(unique) == count:
            break
    if len(unique) < count:
        raise ValueError(f"could only draw {len(unique)} distinct archs of space {space.name!r}, not {count}")
    archs = list(unique)
    raw = encode(space, archs, derived=False)
    scale = encode(space, [space.max_arch()], derived=False)[0]
    units = raw / scale
    weights = np.random.default_rng(20240601).normal(size=units.shape[1])
    macs = count_macs_many(space, archs, num_classes=DEFAULT_NUM_CLASSES) / 1e6
    truth = 0.80 + 0.05 * np.log(macs) + 0.06 * (units @ weights) / math.sqrt(units.shape[1])
    if nonlinear:
        n_stages = len(space.stages)
        depth = units[:, n_stages + 3 : 2 * n_stages + 3].mean(axis=1)
        kernels, expands = units[:, 2 * n_stages + 3 :: 2], units[:, 2 * n_stages + 4 :: 2]
        truth = truth + 0.03 * depth * units[:, 0] + 0.03 * (kernels * expands).mean(axis=1)
        truth = 0.98 - 0.2 * np.exp(-8 * (truth - truth.min()))
    noise_rng = np.random.default_rng([seed, 1])
    val = truth + noise_rng.normal(0, noise, len(archs))
    test = truth + noise_rng.normal(0, noise, len(archs))
    loss = 1 - val + noise_rng.normal(0, noise / 2, len(archs))
    params = count_params_many(space, archs, num_classes=DEFAULT_NUM_CLASSES)
    return [
        ArchRecord(space.name, arch, float(m), int(p), arch.resolution, float(v), float(t), float(v_loss), seed)
        for arch, m, p, v, t, v_loss in zip(archs, macs, params, val, test, loss)
    ]
