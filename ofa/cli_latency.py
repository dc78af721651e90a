"""The ``ofa latency`` commands: build a layer table, time subnets, fit and validate latency estimators."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ofa.atomic import check_file_target
from ofa.flops import DEFAULT_NUM_CLASSES

__all__ = ["add_latency_commands"]


def _fingerprint(args: argparse.Namespace) -> Any:
    from ofa.latency_timing import device_fingerprint

    return device_fingerprint(args.device, args.backend, args.threads, args.batch)


def _timing(args: argparse.Namespace) -> Any:
    from ofa.latency_table import TimingSettings

    return TimingSettings(passes=args.passes)


def _command_build(args: argparse.Namespace) -> None:
    from ofa.latency import build_latency_table
    from ofa.latency_table import load_latency_table
    from ofa.space import load_space

    space = load_space(args.space)
    out = check_file_target(args.out, "--out")
    fingerprint, timing = _fingerprint(args), _timing(args)
    if out.exists() and not args.force:
        table = load_latency_table(out, space, fingerprint)  # refuses a table of another space or device
        if table.num_classes != args.classes or table.timing != timing:
            raise ValueError(f"--out {out} holds a table with other classes or timing settings; pass --force")
        print(f"{out}: the table for this space and device exists ({len(table.entries)} layers); --force rebuilds it")
        return
    table = build_latency_table(space, args.classes, fingerprint, out, timing, progress=True)
    fastest = sorted(entry.best_ms for entry in table.entries.values())
    print(
        f"timed {len(table.entries)} layers of space {space.name} on {fingerprint.describe()}: "
        f"{fastest[0]:.4f} to {fastest[-1]:.4f} ms per layer -> {out}"
    )


def _command_measure(args: argparse.Namespace) -> None:
    from ofa.latency_data import measure_to_csv
    from ofa.space import load_space

    space = load_space(args.space)
    out = check_file_target(args.out, "--out")
    fingerprint, timing = _fingerprint(args), _timing(args)
    records = measure_to_csv(space, args.num_archs, args.classes, args.seed, fingerprint, out, timing, progress=True)
    print(f"{len(records)} subnets of space {space.name} timed on {fingerprint.describe()} -> {out}")


def _command_fit(args: argparse.Namespace) -> None:
    from ofa.latency_data import read_timed_csv
    from ofa.latency_models import fit_estimator, latency_metrics
    from ofa.latency_table import load_latency_table
    from ofa.space import load_space

    space = load_space(args.space)
    out = check_file_target(args.out, "--out")
    records, fingerprint, num_classes = read_timed_csv(args.data, space)
    table = None
    if args.estimator == "table":
        if args.table is None:
            raise ValueError("--estimator table needs --table FILE (ofa latency build)")
        table = load_latency_table(args.table, space, fingerprint)
    archs, latencies = [record.arch for record in records], [record.latency_ms for record in records]
    estimator = fit_estimator(
        args.estimator, space, num_classes, fingerprint, archs, latencies, table, args.predictor, args.seed
    )
    metrics = latency_metrics(latencies, estimator.predict(archs))
    estimator.save(out)
    print(
        f"fitted the {args.estimator} latency estimator on {len(records)} subnets "
        f"(training RMSPE {100 * metrics['rmspe']:.1f} %, Kendall tau {metrics['kendall_tau']:.3f}) -> {out}"
    )


def _command_validate(args: argparse.Namespace) -> None:
    from ofa.latency_data import read_timed_csv
    from ofa.latency_models import latency_metrics, load_estimator
    from ofa.space import load_space

    space = load_space(args.space)
    records, fingerprint, _ = read_timed_csv(args.data, space)
    archs, latencies = [record.arch for record in records], [record.latency_ms for record in records]
    print(f"{len(records)} subnets timed on {fingerprint.describe()}")
    print(f"{'estimator':<32} {'RMSPE %':>8} {'within 10 %':>12} {'Kendall tau':>12}")
    for path in args.estimators:
        estimator = load_estimator(path, space, fingerprint)
        metrics = latency_metrics(latencies, estimator.predict(archs))
        print(
            f"{Path(path).name + ' (' + estimator.kind + ')':<32} {100 * metrics['rmspe']:>8.1f} "
            f"{100 * metrics['within_10']:>11.0f}% {metrics['kendall_tau']:>12.3f}"
        )


def _add_device_options(parser: argparse.ArgumentParser) -> None:
    from ofa.cli import positive_int

    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--backend", default="torch", help="torch or onnxruntime (default torch)")
    parser.add_argument("--threads", type=positive_int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--batch", type=positive_int, default=1, help="images per inference (default 1)")
    parser.add_argument("--passes", type=positive_int, default=8, help="round-robin timing passes (default 8)")


def add_latency_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``ofa latency build|measure|fit|validate``."""
    from ofa.cli import CLASSES_HELP, positive_int
    from ofa.cost_axis import DEFAULT_LEARNED_PREDICTOR, ESTIMATORS

    latency = commands.add_parser("latency", help="latency tables and estimators for this machine")
    actions = latency.add_subparsers(dest="latency_command", required=True, metavar="ACTION")

    parser = actions.add_parser("build", help="time every distinct layer of a space (resumable)")
    parser.add_argument("--space", required=True, help="space name or YAML path")
    parser.add_argument("--classes", type=positive_int, default=DEFAULT_NUM_CLASSES, help=CLASSES_HELP)
    _add_device_options(parser)
    parser.add_argument("--force", action="store_true", help="rebuild an existing table")
    parser.add_argument("--out", required=True, help="table file (JSON)")
    parser.set_defaults(handler=_command_build)

    parser = actions.add_parser("measure", help="time whole subnets end to end into an arch CSV (resumable)")
    parser.add_argument("--space", required=True, help="space name or YAML path")
    parser.add_argument("--num-archs", type=positive_int, required=True, help="subnets, spread over the MACs range")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subnets drawn (default 0)")
    parser.add_argument("--classes", type=positive_int, default=DEFAULT_NUM_CLASSES, help=CLASSES_HELP)
    _add_device_options(parser)
    parser.add_argument("--out", required=True, help="arch CSV with a latency_ms column (+ .device.json)")
    parser.set_defaults(handler=_command_measure)

    parser = actions.add_parser("fit", help="fit a latency estimator on timed subnets")
    parser.add_argument("--space", required=True, help="space name or YAML path")
    parser.add_argument("--data", required=True, help="CSV of ofa latency measure")
    parser.add_argument("--estimator", choices=ESTIMATORS, default="table", help="default table")
    parser.add_argument("--table", help="table of ofa latency build (for --estimator table)")
    parser.add_argument("--predictor", default=DEFAULT_LEARNED_PREDICTOR, help="zoo predictor of --estimator learned")
    parser.add_argument("--seed", type=int, default=0, help="seed of the learned predictor")
    parser.add_argument("--out", required=True, help="estimator file (JSON)")
    parser.set_defaults(handler=_command_fit)

    parser = actions.add_parser("validate", help="RMSPE, share within 10 %% and Kendall tau on timed subnets")
    parser.add_argument("--space", required=True, help="space name or YAML path")
    parser.add_argument("--data", required=True, help="held-out CSV of ofa latency measure")
    parser.add_argument("estimators", nargs="+", help="estimator files")
    parser.set_defaults(handler=_command_validate)
