"""Training variants at identical compute: uniform sandwich, BestUp-3 (loss or predictor scorer), BestUp-3 with
the alpha-divergence, and progressive shrinking.

AttentiveNAS's main claim is that attentive sampling improves the Pareto front of a supernet. This trains
one supernet per variant from the same config, seed and number of steps, measures the SAME archs (spread
over the FLOPs range) inside each, and compares the measured fronts: hypervolume and the best accuracy
within each budget. Runs are kept under ``OUT/<variant>/`` and continued when the command is repeated.
Compute is counted in subnet forward-backward passes: a progressive-shrinking variant gets the epochs whose
passes come closest to the sandwich's (``num_subnets`` per step) at the same steps per epoch.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ofa.archdata import spread_archs
from ofa.budget import check_budget
from ofa.flops import count_macs_many
from ofa.pareto import hypervolume, pareto_front
from ofa.pipeline import default_budgets, train_or_continue
from ofa.progressive import build_schedule, equal_compute_epochs
from ofa.runfolder import RunFolder
from ofa.runlock import run_lock
from ofa.runs import load_run
from ofa.space import load_space
from ofa.train_config import load_train_config
from ofa.trainer import build_data

if TYPE_CHECKING:
    from ofa.space import Arch
    from ofa.train_config import TrainConfig

__all__ = [
    "DEFAULT_VARIANTS",
    "VARIANTS",
    "Comparison",
    "at_equal_compute",
    "compare_samplers",
    "format_comparison",
    "subnet_passes",
]

VARIANTS: dict[str, tuple[str, ...]] = {
    "uniform": ("sampler.name=uniform", "guide.enabled=false"),
    "bestup_loss": ("sampler.name=bestup", "sampler.scorer=loss", "guide.enabled=false"),
    "bestup_predictor": ("sampler.name=bestup", "sampler.scorer=predictor", "guide.enabled=true"),
    # AlphaNet: BestUp-3 (loss) with the adaptive alpha-divergence instead of KL
    "bestup_alpha": ("sampler.name=bestup", "sampler.scorer=loss", "guide.enabled=false", "kd.loss=alpha"),
    # once-for-all: full network, then kernel, depth, expand phases distilled from it (epochs: equal compute)
    "progressive": ("progressive.enabled=true", "guide.enabled=false"),
}
DEFAULT_VARIANTS = ("uniform", "bestup_loss", "bestup_predictor")


def at_equal_compute(config: TrainConfig) -> TrainConfig:
    """``config`` itself, or for progressive shrinking the epochs whose subnet passes come closest to the
    sandwich run of the same config (``epochs`` x ``sampler.num_subnets`` per step)."""
    if not config.progressive.enabled:
        return config
    space = load_space(config.model.space)
    epochs = equal_compute_epochs(space, config.progressive.phases, config.epochs, config.sampler.num_subnets)
    return dataclasses.replace(config, epochs=epochs)


def subnet_passes(config: TrainConfig, steps_per_epoch: int) -> int:
    """Subnet forward-backward passes of a run of ``config`` at ``steps_per_epoch``."""
    if not config.progressive.enabled:
        return config.epochs * config.sampler.num_subnets * steps_per_epoch
    return build_schedule(load_space(config.model.space), config.progressive.phases, config.epochs).passes(
        steps_per_epoch
    )


@dataclass
class VariantResult:
    """One trained variant, measured on the shared archs."""

    name: str
    mmacs: np.ndarray
    val_acc: np.ndarray
    test_acc: np.ndarray
    val_loss: np.ndarray
    val_acc_max: float
    val_acc_min: float


@dataclass
class Comparison:
    """The variants side by side."""

    budgets: list[float]
    reference: tuple[float, float]
    variants: list[VariantResult] = field(default_factory=list)

    def hypervolume(self, variant: VariantResult) -> float:
        """Area dominated by the measured (MMACs, val accuracy) front up to the shared reference point."""
        return hypervolume(variant.mmacs, variant.val_acc, *self.reference)

    def at_budget(self, variant: VariantResult, budget: float) -> tuple[float, float, float]:
        """Best val accuracy within ``budget`` and that arch's test accuracy and val loss."""
        inside = np.flatnonzero(variant.mmacs <= budget + 1e-9)
        best = inside[np.lexsort((variant.val_loss[inside], -variant.val_acc[inside]))[0]]
        return float(variant.val_acc[best]), float(variant.test_acc[best]), float(variant.val_loss[best])


def compare_samplers(
    config_path: str | Path,
    overrides: Sequence[str],
    out_dir: str | Path,
    num_archs: int = 100,
    budgets: Sequence[float] | None = None,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    seed: int = 0,
    progress: bool | None = None,
) -> Comparison:
    """Train each variant (same config, seed and steps), measure the same archs in each, compare the fronts."""
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"variants {unknown or '(none)'}: choose from {', '.join(VARIANTS)}")
    out_dir = Path(out_dir)
    show = sys.stderr.isatty() if progress is None else progress
    configs = {
        name: at_equal_compute(
            load_train_config(config_path, (*overrides, *VARIANTS[name], f"name={name}", f"out_dir={out_dir}"))
        )
        for name in variants
    }  # every config is checked before the first training starts
    first = next(iter(configs.values()))
    space = load_space(first.model.space)
    data = build_data(first, space)
    data.require_test()  # test accuracy is reported: refuse a data set without a test split before training
    num_classes = data.num_classes
    high = float(count_macs_many(space, [space.max_arch()], num_classes)[0]) / 1e6
    budgets = [check_budget(space, budget, num_classes) for budget in budgets] if budgets else None
    budgets = budgets or default_budgets(space, num_classes, 4)
    archs = spread_archs(space, num_archs, num_classes, seed)
    results = [_train_and_measure(name, config, archs, show) for name, config in configs.items()]
    floor = min(float(result.val_acc.min()) for result in results)
    comparison = Comparison(list(budgets), (high, floor), results)
    _write(out_dir, comparison)
    return comparison


def _train_and_measure(name: str, config: TrainConfig, archs: Sequence[Arch], show: bool) -> VariantResult:
    """Train one variant (or keep its finished run) and measure ``archs`` in its final weights (rows measured
    on other weights are re-measured)."""
    val_max, val_min = train_or_continue(config, show, f"[{name}] ")
    with run_lock(config.run_dir, "ofa compare"):
        run = load_run(config.run_dir, "latest")  # identical compute: compare the final weights
        records = run.measure_into(RunFolder(config.run_dir).compare_arch_data, archs, progress=show)
    by_arch = {record.arch: record for record in records}
    chosen = [by_arch[arch] for arch in archs]
    return VariantResult(
        name=name,
        mmacs=np.array([record.mmacs for record in chosen]),
        val_acc=np.array([record.val_acc for record in chosen]),
        test_acc=np.array([record.test_acc for record in chosen]),
        val_loss=np.array([record.val_loss for record in chosen]),
        val_acc_max=val_max,
        val_acc_min=val_min,
    )


def _rows(comparison: Comparison) -> list[list[str]]:
    header = ["variant", "hypervolume", "front size", "mean val acc", "mean val loss"]
    header += [f"val/test @{budget:g}M" for budget in comparison.budgets]
    rows = [header]
    for variant in comparison.variants:
        front = pareto_front(variant.mmacs, variant.val_acc)
        cells = [variant.name, f"{comparison.hypervolume(variant):.4f}", str(len(front))]
        cells += [f"{100 * variant.val_acc.mean():.2f}", f"{variant.val_loss.mean():.4f}"]
        for budget in comparison.budgets:
            val, test, _ = comparison.at_budget(variant, budget)
            cells.append(f"{100 * val:.2f}/{100 * test:.2f}")
        rows.append(cells)
    return rows


def format_comparison(comparison: Comparison) -> str:
    """Aligned plain-text table (accuracies in %)."""
    rows = _rows(comparison)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows)


def _write(out_dir: Path, comparison: Comparison) -> None:
    rows = _rows(comparison)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    (out_dir / "comparison.csv").write_text(buffer.getvalue())
    table = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    table += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    cost, score = comparison.reference
    text = (
        "# Uniform vs BestUp at identical compute\n\n"
        "Same config, seed and number of steps for every variant; the same "
        f"{len(comparison.variants[0].mmacs)} archs measured in each supernet (BN recalibrated, val split).\n"
        f"Hypervolume of the measured (MMACs, val accuracy) front, reference point ({cost:.3f} MMACs, "
        f"{score:.4f}); accuracy at a budget: the best measured arch within it (val / test, %); mean val\n"
        "accuracy and loss over all the measured archs (the loss separates supernets whose accuracies saturate).\n\n"
        + "\n".join(table)
        + "\n\n![fronts](comparison.png)\n"
    )
    (out_dir / "comparison.md").write_text(text)
    _plot(out_dir / "comparison.png", comparison)


def _plot(path: Path, comparison: Comparison) -> None:
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    for variant in comparison.variants:
        front = pareto_front(variant.mmacs, variant.val_acc)  # ordered by cost
        line = axis.step(variant.mmacs[front], variant.val_acc[front], where="post", label=variant.name)
        axis.scatter(variant.mmacs, variant.val_acc, s=5, alpha=0.3, color=line[0].get_color())
    for budget in comparison.budgets:
        axis.axvline(budget, color="0.6", lw=0.5, ls=":")
    axis.set_xlabel("MMACs")
    axis.set_ylabel("val accuracy")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
