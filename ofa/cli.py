"""The ``ofa`` command: train once, deploy many.

Every command reports bad input as one line on stderr with exit code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from collections.abc import Sequence

from ofa.atomic import check_file_target
from ofa.cli_import import add_import_commands
from ofa.cli_latency import add_latency_commands
from ofa.cli_run import add_run_commands
from ofa.errors import TrainingDivergedError
from ofa.flops import DEFAULT_NUM_CLASSES, count_macs, count_params
from ofa.runfolder import MissingSpaceFileError, RunFolder, read_run_space
from ofa.runlock import run_lock
from ofa.search import STRATEGIES
from ofa.space import SearchSpace, load_arch, load_space
from predictors.cli import add_commands as add_predictor_commands

__all__ = ["build_parser", "main"]


def _command_space(args: argparse.Namespace) -> None:
    space = load_space(args.space)
    smallest, largest = space.min_arch(), space.max_arch()
    print(f"space        {space.name}: {space.description}")
    print(f"stages       {len(space.stages)} ({space.granularity} kernel/expand, {space.shortcut} shortcuts)")
    print(f"size         {space.size():.4g} architectures ({space.size()})")
    print(f"resolutions  {', '.join(map(str, space.resolution))}")
    for label, arch in (("min", smallest), ("max", largest)):
        macs = count_macs(space, arch, args.classes) / 1e6
        params = count_params(space, arch, args.classes) / 1e6
        print(f"{label} subnet   {macs:10.2f} MMACs {params:8.3f} M params  ({args.classes} classes)  {arch.short()}")


def _command_flops(args: argparse.Namespace) -> None:
    space = load_space(args.space)
    arch = load_arch(args.arch, space)
    macs, params = count_macs(space, arch, args.classes), count_params(space, arch, args.classes)
    print(f"{macs / 1e6:.2f} MMACs  {params / 1e6:.3f} M params  ({args.classes} classes)  {arch.short()}")


LATENCY_MODEL_HELP = "latency estimator file of ofa latency fit (default: RUN/latency/estimator.json)"
CLASSES_HELP = f"classifier outputs (default {DEFAULT_NUM_CLASSES}; 1000 for the ImageNet figures of the papers)"


def _add_space_commands(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("space", help="size and min/max MMACs and params of a search space")
    parser.add_argument("space", help="shipped space name (tiny, attentivenas, ofa_mbv3) or a YAML path")
    parser.add_argument("--classes", type=positive_int, default=DEFAULT_NUM_CLASSES, help=CLASSES_HELP)
    parser.set_defaults(handler=_command_space)

    parser = commands.add_parser("flops", help="MMACs and params of one architecture")
    parser.add_argument("--space", required=True, help="space name or YAML path")
    parser.add_argument("--arch", required=True, help="arch file (JSON or YAML)")
    parser.add_argument("--classes", type=positive_int, default=DEFAULT_NUM_CLASSES, help=CLASSES_HELP)
    parser.set_defaults(handler=_command_flops)


def _command_train(args: argparse.Namespace) -> None:
    from ofa.train_config import load_train_config

    config = load_train_config(args.config, tuple(args.set))  # a bad config is refused before torch loads
    from ofa.trainer import train

    result = train(config, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return
    print(
        f"trained {result.run_dir}: val acc max {result.val_acc_max:.4f} min {result.val_acc_min:.4f} "
        f"in {result.seconds:.0f} s"
    )


def _command_evaluate(args: argparse.Namespace) -> None:
    if args.num_archs is not None and args.num_archs < 1:
        raise ValueError(f"--num-archs must be >= 1, got {args.num_archs}")
    if args.out:
        check_file_target(args.out, "--out")  # before the run is loaded (seconds)
    with run_lock(args.run, "ofa evaluate"):
        _evaluate_locked(args)


def _evaluate_locked(args: argparse.Namespace) -> None:
    from ofa.archdata import archs_from_csv, measure_to_csv, spread_archs
    from ofa.data import calibration_images
    from ofa.runs import load_run

    run = load_run(args.run, args.checkpoint)
    out = check_file_target(args.out, "--out") if args.out else RunFolder(run.run_dir).arch_data
    if args.archs_from:
        archs = archs_from_csv(args.archs_from, run.space)[: args.num_archs]
    else:
        archs = spread_archs(run.space, args.num_archs or 200, run.num_classes, args.seed)
    section = run.config.calibration
    seed = section.seed if args.calibration_seed is None else args.calibration_seed
    images = run.calibration_images
    if seed != section.seed:
        images = calibration_images(
            run.data.train, section.batches_for(run.data.name), section.batch_size, seed, section.augment
        )
    test_loader = None if args.val_only else run.test_loader
    records = measure_to_csv(
        out,
        run.supernet,
        archs,
        images,
        run.val_loader,
        test_loader,
        seed,
        progress=sys.stderr.isatty(),
        source=run.measurement_source,
    )
    print(f"{len(records)} measurements in {out} ({len(archs)} archs asked, calibration seed {seed})")


def _command_export(args: argparse.Namespace) -> None:
    _check_latency_model_option(args)
    _run_space(args.run)  # a missing or malformed run is refused before torch loads
    from ofa.deploy import export_from_run

    budget = args.flops if args.latency is None else args.latency
    latency_model = None if args.latency is None else (args.latency_model or "")
    with run_lock(args.run, "ofa export"):  # it may fit and save the run's predictor
        out, info = export_from_run(
            args.run, args.arch, budget, args.out, args.force, args.onnx, args.predictor, latency_model
        )
    onnx = f", ONNX max abs diff {info['onnx']['max_abs_diff']:.2e}" if info.get("onnx") else ""
    measured = info.get("metadata") or {}
    accuracy = ", ".join(f"{split} {100 * measured[f'{split}_acc']:.2f}%" for split in ("val", "test"))
    print(f"exported {info['arch_short']} ({info['mmacs']:.2f} MMACs; {accuracy}) to {out}{onnx}")


def _command_finetune(args: argparse.Namespace) -> None:
    from ofa.finetune import FinetuneSettings, finetune_from_source

    settings = FinetuneSettings(
        epochs=args.epochs, lr=args.lr, distill=args.kd, from_scratch=args.from_scratch, seed=args.seed
    )
    result = finetune_from_source(
        args.source, args.arch, args.flops, args.run, settings, args.out, force=args.force, onnx=args.onnx
    )

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    before = result.before or {}
    print(
        f"{result.mode} {result.arch.short()} ({result.mmacs:.2f} MMACs), {result.epochs} epochs: "
        f"val {percent(before.get('val_acc'))} -> {percent(result.val_acc)}, "
        f"test {percent(before.get('test_acc'))} -> {percent(result.test_acc)}; "
        f"exported to {result.out_dir} in {result.seconds:.0f} s"
    )


def _command_search(args: argparse.Namespace) -> None:
    from ofa.budget import check_budget, check_latency_budget, parse_budgets
    from ofa.query import find_latency_estimator, find_predictor
    from ofa.search import SearchSettings, capped_settings

    # every input is checked before torch and the supernet load (which takes seconds)
    _check_latency_model_option(args)
    space, num_classes = _run_space(args.run)
    latency = None
    if args.latency is not None:
        latency = find_latency_estimator(args.run, space, args.latency_model)
        budgets = [check_latency_budget(latency, budget) for budget in _budget_list(args.latency, "--latency")]
    else:
        budgets = [check_budget(space, budget, num_classes) for budget in parse_budgets(args.budgets)]
    settings = SearchSettings(population=args.population, generations=args.generations, seed=args.seed)
    if args.finalists < 1:
        raise ValueError(f"--finalists must be >= 1, got {args.finalists}")
    capped_settings(settings, args.strategy, args.max_queries)  # a bad cap is refused before any work
    from ofa.deploy import search_run
    from ofa.runs import load_run

    with run_lock(args.run, "ofa search"):
        predictor = find_predictor(args.run, space, args.predictor, num_classes=num_classes)  # may save one
        run = load_run(args.run)
        chosen, summary = search_run(
            run,
            budgets,
            predictor,
            settings,
            args.finalists,
            progress=sys.stderr.isatty(),
            strategy=args.strategy,
            max_queries=args.max_queries,
            latency=latency,
        )
    print(format_subnets(chosen))
    print(
        f"{args.strategy}: {summary['predictor_queries']} predictor queries, "
        f"{summary['supernet_measurements']} supernet measurements"
    )
    stem = "pareto" if latency is None else "pareto-latency"
    written = RunFolder(run.run_dir).search_result(stem, "json")
    device = "" if latency is None else f" (latency on {latency.fingerprint.describe()})"
    print(f"written: {written}, {stem}.csv, {stem}.png{device}")


def _budget_list(text: str, option: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(items):
        raise ValueError(f"{option}: malformed budget list {text!r}; expected comma-separated budgets")
    return items


def _check_latency_model_option(args: argparse.Namespace) -> None:
    if args.latency_model is not None and args.latency is None:
        raise ValueError("--latency-model applies to --latency budgets only")


def _run_space(run: str) -> tuple[SearchSpace, int]:
    """The run's space and class count; torch loads only to write back a deleted ``space.json``."""
    try:
        return read_run_space(run)
    except MissingSpaceFileError:
        from ofa.runs import run_space

        return run_space(run)


def _command_query(args: argparse.Namespace) -> None:
    from ofa.query import find_latency_estimator, query_run

    _check_latency_model_option(args)
    space, _ = _run_space(args.run)
    latency = None
    if args.latency is not None:
        latency = find_latency_estimator(args.run, space, args.latency_model)
    budget = args.flops if latency is None else args.latency
    answer = query_run(args.run, budget, args.predictor, latency=latency)
    print(format_subnets([answer]))
    print(json.dumps(answer.arch.to_dict()))


def format_subnets(subnets: Sequence) -> str:
    """A table of chosen subnets: budget, arch, MMACs (and latency), params, predicted / val / test accuracy."""

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}"

    timed = any(subnet.latency_ms is not None for subnet in subnets)
    latency_header = f" {'ms':>7}" if timed else ""
    lines = [f"{'budget':>8} {'MMACs':>7}{latency_header} {'params':>8} {'pred':>6} {'val':>6} {'test':>6}  arch"]
    for subnet in subnets:
        budget = f"{subnet.budget:>6.2f}ms" if subnet.latency_ms is not None else f"{subnet.budget:>7.2f}M"
        latency = f" {subnet.latency_ms:>7.3f}" if timed else ""
        lines.append(
            f"{budget} {subnet.mmacs:>7.3f}{latency} {subnet.params / 1e3:>7.1f}K "
            f"{percent(subnet.predicted_acc):>6} {percent(subnet.val_acc):>6} {percent(subnet.test_acc):>6}  "
            f"{subnet.arch.short()}"
        )
    return "\n".join(lines)


def _add_search_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("search", help="Pareto-optimal subnets of a run for FLOPs or latency budgets")
    parser.add_argument("run", help="run directory")
    budgets = parser.add_mutually_exclusive_group(required=True)
    budgets.add_argument("--budgets", help="comma-separated MMAC budgets, e.g. 2M,4M,8M")
    budgets.add_argument("--latency", help=f"comma-separated latency budgets, e.g. 2ms,5ms ({LATENCY_MODEL_HELP})")
    parser.add_argument("--latency-model", help=LATENCY_MODEL_HELP)
    parser.add_argument("--predictor", help="fitted predictor file (default: the run's own)")
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--finalists", type=int, default=3, help="candidates per budget evaluated for real")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="evolution",
        help="evolution (default), random or rl (LSTM controller): rl and random score as many distinct archs "
        "per budget as evolution; dnas: differentiable search over the supernet on the val split (MAC budgets)",
    )
    parser.add_argument("--max-queries", type=int, help="at most this many predictor queries per budget")
    parser.set_defaults(handler=_command_search)


def _add_pipeline_commands(commands: argparse._SubParsersAction) -> None:
    _add_search_command(commands)

    parser = commands.add_parser("query", help="the best subnet of a run within one FLOPs or latency budget")
    parser.add_argument("run", help="run directory")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--flops", help="budget, e.g. 5M")
    budget.add_argument("--latency", help="latency budget, e.g. 5ms")
    parser.add_argument("--latency-model", help=LATENCY_MODEL_HELP)
    parser.add_argument("--predictor", help="fitted predictor file (default: the run's own)")
    parser.set_defaults(handler=_command_query)

    parser = commands.add_parser("train", help="train a supernet (sandwich rule + attentive sampling)")
    parser.add_argument("config", help="training config YAML (configs/train/*.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. optim.lr=0.05")
    parser.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    parser.set_defaults(handler=_command_train)

    parser = commands.add_parser("evaluate", help="measure archs spread over the FLOPs range into a CSV")
    parser.add_argument("run", help="run directory")
    parser.add_argument("--num-archs", type=int, help="distinct archs to measure (default 200, or all of --archs-from)")
    parser.add_argument("--out", help="CSV path (default RUN/archs.csv); an existing file is continued")
    parser.add_argument("--seed", type=int, default=0, help="which archs are drawn")
    parser.add_argument("--archs-from", help="measure the archs of this arch CSV instead of drawing new ones")
    parser.add_argument("--val-only", action="store_true", help="measure val only (test_acc left empty)")
    parser.add_argument(
        "--calibration-seed", type=int, help="BN-calibration seed, written to the seed column (default: the run's)"
    )
    parser.add_argument(
        "--checkpoint",
        choices=("best", "latest"),
        default="latest",
        help="weights to measure: latest = the final weights (default); best = best largest-subnet val acc",
    )
    parser.set_defaults(handler=_command_evaluate)

    parser = commands.add_parser("export", help="write a standalone subnet (arch.json + model.safetensors)")
    parser.add_argument("run", help="run directory")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="arch file (JSON or YAML)")
    which.add_argument("--flops", help="the best subnet within this budget, e.g. 5M")
    which.add_argument("--latency", help="the best subnet within this latency budget, e.g. 5ms")
    parser.add_argument("--latency-model", help=LATENCY_MODEL_HELP)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--force", action="store_true", help="replace an existing export")
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx (checked with onnxruntime)")
    parser.add_argument("--predictor", help="with --flops: fitted predictor file (default: the run's own)")
    parser.set_defaults(handler=_command_export)


def _add_finetune_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "finetune", help="fine-tune an extracted subnet (or train its arch from scratch) and export it"
    )
    parser.add_argument("source", help="run directory (with --flops or --arch) or an exported subnet folder")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--flops", help="with a run: the best subnet within this budget, e.g. 5M")
    which.add_argument("--arch", help="with a run: arch file (JSON or YAML)")
    parser.add_argument("--run", help="with an export: the run it came from (default: the one it records)")
    parser.add_argument("--epochs", type=int, required=True, help="training epochs (>= 1)")
    parser.add_argument("--lr", type=float, help="peak lr (default: 0.3 x the run's lr; from scratch: the run's lr)")
    parser.add_argument("--kd", action="store_true", help="distil from the supernet's largest subnet")
    parser.add_argument(
        "--from-scratch", action="store_true", help="train the arch from random initialisation with the run's recipe"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of shuffling, dropout and initialisation")
    parser.add_argument("--out", required=True, help="output folder (a normal export)")
    parser.add_argument("--force", action="store_true", help="replace an existing export; restart a job")
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx (checked with onnxruntime)")
    parser.set_defaults(handler=_command_finetune)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit code 2 (no usage block)."""

    def error(self, message: str) -> typing.NoReturn:
        """Print ``PROG: error: MESSAGE`` and exit 2; ``PROG --help`` shows the usage."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``ofa`` command."""
    parser = OneLineParser(prog="ofa", description="Once-for-all supernets with attentive sampling.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_space_commands(commands)
    _add_pipeline_commands(commands)
    _add_finetune_command(commands)
    add_predictor_commands(commands)
    add_run_commands(commands)
    add_import_commands(commands)
    add_latency_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ofa`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except ValueError as error:
        print(f"ofa {args.command}: error: {' '.join(str(error).split())}", file=sys.stderr)  # always one line
        return 2
    except TrainingDivergedError as error:  # the last good checkpoint is kept: no traceback, exit 1
        print(f"ofa {args.command}: failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ofa {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
