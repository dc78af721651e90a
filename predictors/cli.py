"""The ``predictors`` commands of the ``ofa`` CLI: fit a predictor on arch data, benchmark predictors.

``add_commands(subparsers)`` registers ``predictors fit`` and ``predictors bench``; each parsed namespace
carries ``handler(args) -> int``. Handlers raise ``ValueError`` for bad input (the caller prints it on one
line and exits with code 2). ``python -m predictors.cli predictors ...`` runs them on their own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ofa.atomic import atomic_write_text, check_file_target, check_folder_target
from ofa.space import SearchSpace, load_space
from predictors.dataset import TARGETS, ArchRecord, read_arch_csvs, target_values
from predictors.registry import DEFAULT_PREDICTOR, PREDICTORS

__all__ = ["add_commands", "main"]

DEFAULT_TRAIN_SIZES = "25,50,100,200,400"


def add_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``predictors fit`` and ``predictors bench`` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "predictors",
        help="fit and benchmark accuracy predictors on arch->accuracy CSV data",
        description="Accuracy predictors on arch->accuracy CSV data (columns: " + _columns_help() + ").",
    )
    commands = parser.add_subparsers(dest="predictors_command", metavar="{fit,bench}", required=True)

    fit = commands.add_parser("fit", help="fit one predictor on all rows of a CSV and save it")
    _add_data_arguments(fit)
    fit.add_argument(
        "--model",
        default=DEFAULT_PREDICTOR,
        help=f"predictor name (default {DEFAULT_PREDICTOR}): {', '.join(PREDICTORS)}",
    )
    fit.add_argument("--out", required=True, type=Path, help="predictor file to write (JSON)")
    fit.add_argument("--force", action="store_true", help="replace an existing predictor file")
    fit.add_argument("--seed", type=int, default=0, help="seed of the predictor (default 0)")
    fit.set_defaults(handler=run_fit)

    bench = commands.add_parser("bench", help="learning curves of predictors on a fixed held-out test set")
    _add_data_arguments(bench)
    bench.add_argument(
        "--predictors", default=",".join(PREDICTORS), help="comma-separated predictor names (default: all registered)"
    )
    bench.add_argument(
        "--train-sizes",
        default=DEFAULT_TRAIN_SIZES,
        help=f"comma-separated training sizes (default {DEFAULT_TRAIN_SIZES})",
    )
    bench.add_argument(
        "--seeds", default="0,1,2", help="comma-separated seeds, one training sample each (default 0,1,2)"
    )
    bench.add_argument("--test-size", type=int, default=200, help="held-out archs (default 200)")
    bench.add_argument("--top-k", type=int, default=10, help="k of precision@k (default 10)")
    bench.add_argument("--split-seed", type=int, default=0, help="seed of the test-set choice (default 0)")
    bench.add_argument("--out", type=Path, default=None, help="folder for results.csv, table.txt, learning_curves.png")
    bench.set_defaults(handler=run_bench)
    return parser


def _columns_help() -> str:
    return "space, arch (JSON), mmacs, params, resolution, val_acc, test_acc, val_loss (optional), seed"


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data",
        type=Path,
        nargs="+",
        help="arch->accuracy CSV(s) (" + _columns_help() + "); several files are read as one data set, "
        "archs measured more than once are averaged",
    )
    parser.add_argument("--space", default=None, help="space name or YAML path (default: the CSV's space column)")
    parser.add_argument(
        "--target", default="val_acc", choices=TARGETS, help="what to predict (val_loss is negated: higher = better)"
    )


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise ValueError(f"{option}: expected at least one integer, got {text!r}")
    return values


def _load_data(args: argparse.Namespace) -> tuple[SearchSpace, list[ArchRecord]]:
    """The space and the records of every data file (all read for the same space)."""
    return read_arch_csvs(args.data, load_space(args.space) if args.space is not None else None)


def _data_label(paths: Sequence[Path]) -> str:
    return " + ".join(str(path) for path in paths)


def run_fit(args: argparse.Namespace) -> int:
    """``predictors fit``: fit ``--model`` on every row and save it to ``--out``."""
    from predictors.metrics import kendall_tau
    from predictors.models import create_predictor

    check_file_target(args.out, "--out")
    space, records = _load_data(args)
    if args.out.exists() and not args.force:
        raise ValueError(f"--out {args.out} exists; pass --force to replace it (nothing was fitted)")
    targets = target_values(records, args.target)
    predictor = create_predictor(args.model, space, seed=args.seed)
    archs = [record.arch for record in records]
    predictor.fit(archs, targets)
    predictor.save(args.out)
    tau = kendall_tau(targets, predictor.predict(archs))
    print(
        f"fitted {args.model} on {len(records)} rows of space {space.name} (target {args.target}); "
        f"Kendall tau on its training data {tau:.3f}; saved {args.out}"
    )
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """``predictors bench``: the benchmark table, and the CSV and plot when ``--out`` is given."""
    # the benchmark's imports (matplotlib, scipy) load only here: the other commands start faster
    from predictors.bench import format_table, plot_learning_curves, run_benchmark, write_results_csv

    if args.out is not None:
        check_folder_target(args.out, "--out")
    space, records = _load_data(args)
    names = [name.strip() for name in args.predictors.split(",") if name.strip()]
    rows = run_benchmark(
        records,
        space,
        predictors=names,
        train_sizes=_int_list(args.train_sizes, "--train-sizes"),
        seeds=_int_list(args.seeds, "--seeds"),
        test_size=args.test_size,
        target=args.target,
        top_k=args.top_k,
        split_seed=args.split_seed,
    )
    lines = [
        f"predictor benchmark: {_data_label(args.data)} ({len(records)} rows, space {space.name}, "
        f"target {args.target}); "
        "mean ± std over seeds",
        format_table(rows),
        *_ceiling_lines(records, args.target),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_results_csv(rows, args.out / "results.csv")
        plot_learning_curves(rows, args.out / "learning_curves.png")
        atomic_write_text(args.out / "table.txt", text + "\n")
        print(f"wrote {args.out / 'results.csv'}, {args.out / 'table.txt'}, {args.out / 'learning_curves.png'}")
    return 0


def _ceiling_lines(records: Sequence[ArchRecord], target: str) -> list[str]:
    from predictors.bench import noise_summary

    noise = noise_summary(records, target)
    lines = []
    if "repeat_tau" in noise:
        lines.append(
            f"noise ceiling (Kendall tau of {target} between two measurements of {noise['repeat_archs']:.0f} archs): "
            f"{noise['repeat_tau']:.3f}"
        )
    if "val_test_acc_tau" in noise:
        lines.append(
            f"val_acc vs test_acc agreement (Kendall tau over {len(records)} rows): {noise['val_test_acc_tau']:.3f}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the predictor commands on their own (``python -m predictors.cli predictors ...``)."""
    parser = argparse.ArgumentParser(prog="python -m predictors.cli")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
