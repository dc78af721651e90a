"""The ``ofa run`` (whole main job) and ``ofa compare`` (uniform vs BestUp) commands."""

from __future__ import annotations

import argparse

from ofa.atomic import check_folder_target
from ofa.runfolder import RunFolder

__all__ = ["add_run_commands"]


def _command_run(args: argparse.Namespace) -> None:
    from ofa.budget import parse_budgets, parse_latency
    from ofa.pipeline import PipelineSettings, run_pipeline
    from ofa.report import format_rows

    overrides = list(args.set)
    if args.epochs is not None:
        overrides.append(f"epochs={args.epochs}")
    if args.name is not None:
        overrides.append(f"name={args.name}")
    if args.out_dir is not None:
        overrides.append(f"out_dir={args.out_dir}")
    settings = PipelineSettings(
        num_archs=args.num_archs,
        budgets=tuple(parse_budgets(args.budgets)) if args.budgets else (),
        num_budgets=args.num_budgets,
        generations=args.generations,
        onnx=args.onnx,
        seed=args.seed,
        finetune_epochs=args.finetune_epochs,
        latency_budgets=tuple(parse_latency(item) for item in args.latency.split(",")) if args.latency else (),
        latency_archs=args.latency_archs,
    )
    result = run_pipeline(args.config, overrides, settings)
    print(format_rows(result.rows))
    if result.latency_rows:
        print(f"\nlatency budgets on {result.latency_device}:")
        print(format_rows(result.latency_rows))
    print(
        f"\nsupernet val acc: max {100 * result.val_acc_max:.2f}%  min {100 * result.val_acc_min:.2f}%   "
        f"predictor Kendall tau {result.predictor_kendall_tau:.3f} on {result.predictor_holdout_size} held-out archs"
    )
    stages = "  ".join(f"{name} {seconds:.0f}s" for name, seconds in result.stage_seconds.items())
    print(f"wall time {result.seconds:.0f} s ({stages})")
    folder = RunFolder(result.run_dir)
    print(f"report: {folder.report}   exports: {folder.export_folder}")


def _command_compare(args: argparse.Namespace) -> None:
    from ofa.budget import parse_budgets
    from ofa.compare import compare_samplers, format_comparison

    comparison = compare_samplers(
        args.config,
        list(args.set),
        out_dir=check_folder_target(args.out, "--out"),
        num_archs=args.num_archs,
        budgets=parse_budgets(args.budgets) if args.budgets else None,
        variants=tuple(args.variants.split(",")),
    )
    print(format_comparison(comparison))
    print(f"written: {args.out}/comparison.md, comparison.csv, comparison.png")


def add_run_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``run`` and ``compare``."""
    from ofa.train_config import DEFAULT_RUN_CONFIG

    parser = commands.add_parser(
        "run", help="the main job: train (predictor-guided BestUp) -> evaluate -> fit -> search -> export -> report"
    )
    parser.add_argument("--config", default=str(DEFAULT_RUN_CONFIG), help="training config (default: digits_guided)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training config override")
    parser.add_argument("--epochs", type=int, help="training epochs (longer: better subnets)")
    parser.add_argument("--name", help="run name (folder under out_dir); an existing run of it is continued")
    parser.add_argument("--out-dir", help="parent folder of the run (default: runs)")
    parser.add_argument("--num-archs", type=int, default=200, help="archs measured for the final predictor")
    parser.add_argument("--budgets", help="MMAC budgets, e.g. 0.3M,1M,3M (default: spread over the space)")
    parser.add_argument("--num-budgets", type=int, default=4, help="budgets to spread when --budgets is not given")
    parser.add_argument("--generations", type=int, default=30, help="evolution generations per budget")
    parser.add_argument("--onnx", action="store_true", help="also export ONNX models")
    parser.add_argument("--seed", type=int, default=0, help="seed of arch sampling, hold-out split and search")
    parser.add_argument(
        "--finetune-epochs", type=int, default=0, help="also fine-tune every exported subnet this many epochs"
    )
    parser.add_argument("--latency", help="also latency budgets on this machine (CPU, 1 thread, batch 1), e.g. 2ms,4ms")
    parser.add_argument(
        "--latency-archs", type=int, default=60, help="subnets timed end to end for the latency table's correction"
    )
    parser.set_defaults(handler=_command_run)

    parser = commands.add_parser(
        "compare",
        help="training variants (uniform, BestUp-3, alpha-divergence, progressive shrinking) at identical compute",
    )
    parser.add_argument("config", help="base training config, e.g. configs/train/digits.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every variant")
    parser.add_argument("--out", required=True, help="folder for the runs and the comparison")
    parser.add_argument("--num-archs", type=int, default=100, help="archs measured in every supernet (same archs)")
    parser.add_argument("--budgets", help="MMAC budgets for accuracy-at-budget (default: spread over the space)")
    parser.add_argument(
        "--variants",
        default="uniform,bestup_loss,bestup_predictor",
        help="comma-separated variants: uniform, bestup_loss, bestup_predictor, bestup_alpha (AlphaNet's loss), "
        "progressive (once-for-all's progressive shrinking, epochs set for equal subnet passes)",
    )
    parser.set_defaults(handler=_command_compare)
