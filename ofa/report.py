"""The report folder of ``ofa run``: ``report.md``, the Pareto plot, the predictor scatter, training curves."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ofa.runfolder import RunFolder
from ofa.train_config import TrainConfig

if TYPE_CHECKING:
    from ofa.pipeline import PipelineResult

__all__ = ["format_rows", "plot_predictor", "plot_training", "write_report"]

_COLUMNS = ("budget", "MMACs", "params", "pred", "val", "test", "export test", "arch")
_FINETUNED = "fine-tuned test"


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The table's columns: a fine-tuned one when any row was fine-tuned."""
    columns = list(_COLUMNS)
    if any("finetuned_test_acc" in row for row in rows):
        columns.insert(-1, _FINETUNED)
    return columns


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _budget_cell(row: dict[str, Any]) -> str:
    if "budget_latency_ms" in row:
        return f"{row['budget_latency_ms']:g}ms ({row['latency_ms']:.3f})"
    return f"{row['budget_mmacs']:g}M"


def _cells(row: dict[str, Any], columns: Sequence[str]) -> list[str]:
    cells = [
        _budget_cell(row),
        f"{row['mmacs']:.3f}",
        f"{row['params'] / 1e3:.1f}K",
        _percent(row["predicted_acc"]),
        _percent(row["val_acc"]),
        _percent(row["test_acc"]),
        _percent(row.get("export_test_acc")),
        row["arch_short"],
    ]
    if _FINETUNED in columns:
        cells.insert(-1, _percent(row.get("finetuned_test_acc")))
    return cells


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """The summary table as aligned plain text (accuracies in %)."""
    columns = _columns(rows)
    table = [columns] + [_cells(row, columns) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns) - 1)]
    lines = []
    for line in table:
        lines.append("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) + "  " + line[-1])
    return "\n".join(lines)


def _markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = _columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = _cells(row, columns)
        cells[-1] = "`" + cells[-1].replace("|", "\\|") + "`"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figure(width: float, height: float) -> Figure:
    """A figure drawn with the Agg canvas (no pyplot: no global figure registry, no backend switch)."""
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def plot_predictor(path: Path, measured: Sequence[float], predicted: Sequence[float], kendall_tau: float) -> None:
    """Predicted vs measured val accuracy of the held-out archs, with the Kendall tau in the title."""
    figure = _figure(4.8, 4.5)
    axis = figure.subplots()
    axis.scatter(measured, predicted, s=12, color="tab:blue")
    low = min(min(measured), min(predicted))
    high = max(max(measured), max(predicted))
    axis.plot([low, high], [low, high], color="0.5", lw=0.8, ls="--")
    axis.set_xlabel("measured val accuracy (held-out archs)")
    axis.set_ylabel("predicted val accuracy")
    axis.set_title(f"predictor on {len(measured)} held-out archs: Kendall tau {kendall_tau:.3f}", fontsize=9)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def plot_training(path: Path, metrics_csv: Path) -> None:
    """Training losses per sandwich slot and val accuracy of the max and min subnets per epoch."""
    rows = _read_metrics(metrics_csv)
    epochs = [int(row["epoch"]) for row in rows]

    def column(name: str) -> list[float]:
        return [float(row[name]) if row[name] else float("nan") for row in rows]

    figure = _figure(9, 3.6)
    left, right = figure.subplots(1, 2)
    for name, label in (("loss_max", "max (CE)"), ("loss_sampled", "sampled (KD)"), ("loss_min", "min (KD)")):
        left.plot(epochs, column(name), label=label)
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    left.legend(fontsize=8)
    right.plot(epochs, column("val_acc_max"), label="max subnet")
    right.plot(epochs, column("val_acc_min"), label="min subnet")
    guided = [epoch for epoch, row in zip(epochs, rows) if row["sampler"] != "uniform-warmup"]
    if guided and len(guided) < len(epochs):
        right.axvline(guided[0] - 0.5, color="0.5", lw=0.8, ls=":", label="predictor-guided from here")
    right.set_xlabel("epoch")
    right.set_ylabel("val accuracy")
    right.legend(fontsize=8)
    for axis in (left, right):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _finetuned_note(rows: Sequence[dict[str, Any]]) -> str:
    if _FINETUNED not in _columns(rows):
        return ""
    return (
        "; `fine-tuned test`: the subnet fine-tuned from the supernet's weights, distilled from the largest "
        "subnet (`export/<budget>M-finetuned/`)"
    )


def _latency_section(run: RunFolder, result: PipelineResult) -> str:
    """The latency budgets' table and front, when the run searched any."""
    if not result.latency_rows:
        return ""
    shutil.copyfile(run.search_result("pareto-latency", "png"), run.report_figure("pareto-latency"))
    fit = result.latency_fit
    within = all(row["latency_ms"] <= row["budget_latency_ms"] + 1e-9 for row in result.latency_rows)
    return f"""
## Latency budgets on {result.latency_device}

{_markdown_table(result.latency_rows)}

`budget`: the latency budget and (in brackets) the chosen subnet's estimated latency in ms, by the layer
table of this machine (`latency/table.json`) corrected by a line fitted on {fit["count"]:.0f} subnets timed end
to end (`latency/timed.csv`; on them RMSPE {100 * fit["rmspe"]:.1f} %, {100 * fit["within_10"]:.0f} % within
10 %, Kendall tau {fit["kendall_tau"]:.3f}). Every subnet is within its latency budget: {within}. Exports:
`export/<budget>ms/`.

![Pareto front, latency](pareto-latency.png)
"""


def write_report(run_dir: Path, result: PipelineResult, holdout: dict[str, Any], config: TrainConfig) -> Path:
    """Write ``RUN/report/`` for a finished :func:`ofa.pipeline.run_pipeline`; returns ``report.md``'s path."""
    run = RunFolder(run_dir)
    folder = run.report_folder
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run.pareto_plot, run.report_figure("pareto"))
    plot_predictor(run.report_figure("predictor"), holdout["measured"], holdout["predicted"], holdout["kendall_tau"])
    plot_training(run.report_figure("training"), run.metrics)
    metrics = _read_metrics(run.metrics)
    train_seconds = sum(float(row["epoch_seconds"]) for row in metrics)
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.stage_seconds.items())
    reproduced = all(
        row["test_acc"] is not None and abs(row["export_test_acc"] - row["test_acc"]) < 1e-9 for row in result.rows
    )
    latency = _latency_section(run, result)
    text = f"""# Train once, deploy many: {config.name}

Space `{config.model.space}` on `{config.data.name}`, {config.epochs} epochs, sampler `{config.sampler.name}`
(k = {config.sampler.num_candidates}, n = {config.sampler.num_subnets}), predictor-guided: {config.guide.enabled}.

## Pareto subnets

{_markdown_table(result.rows)}

Accuracies in %. `pred`: the predictor's estimate; `val`/`test`: measured inside the supernet (BN
recalibrated); `export test`: the exported model reloaded with `ofa.load_subnet`, on the same test
split{_finetuned_note(result.rows)}.
Every subnet is within its budget: {all(row["mmacs"] <= row["budget_mmacs"] for row in result.rows)}.
Exported models reproduce the supernet's test accuracy: {reproduced}.

![Pareto front](pareto.png)
{latency}
## Accuracy predictor

`{holdout["model"]}` fitted on {holdout["train_size"]} archs measured in the supernet, scored on
{len(holdout["measured"])} held-out archs: Kendall tau **{holdout["kendall_tau"]:.3f}**. The final predictor
(`predictor/final.json`) is refitted on all of them.

![predicted vs measured](predictor.png)

## Training

Final val accuracy: max subnet {_percent(result.val_acc_max)}, min subnet {_percent(result.val_acc_min)};
training epochs took {train_seconds:.0f} s in total. Stage wall times of this invocation: {stages}.

![training curves](training.png)
"""
    path = run.report
    path.write_text(text)
    return path
