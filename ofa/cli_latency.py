"""The ``ofa latency`` commands: build a layer table, time subnets, fit and validate latency estimators."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ofa.atomic import atomic_write_text, check_file_target
from ofa.flops import DEFAULT_NUM_CLASSES

__all__ = ["add_latency_commands", "read_timed_csv"]

DEVICE_SUFFIX = ".device.json"  # beside a timed CSV: the fingerprint and settings its latencies were timed with
MEASURE_CHUNK = 25  # subnets timed (in round-robin passes) before their rows are appended


def _fingerprint(args: argparse.Namespace) -> Any:
    from ofa.latency_timing import device_fingerprint

    return device_fingerprint(args.device, args.backend, args.threads, args.batch)


def _timing(args: argparse.Namespace) -> Any:
    from ofa.latency_timing import TimingSettings

    return TimingSettings(passes=args.passes)


def _command_build(args: argparse.Namespace) -> None:
    from ofa.latency import build_latency_table, load_latency_table
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
    medians = sorted(entry.best_ms for entry in table.entries.values())
    print(
        f"timed {len(table.entries)} layers of space {space.name} on {fingerprint.describe()}: "
        f"{medians[0]:.4f} to {medians[-1]:.4f} ms per layer -> {out}"
    )


def _device_file(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name + DEVICE_SUFFIX)


def read_timed_csv(path: str | Path, space: Any) -> tuple[list[Any], Any, int]:
    """The timed rows of a CSV written by ``ofa latency measure``, their fingerprint and classes.

    Raises:
        ValueError: a missing file or device file, rows without latency, or an unreadable device file.
    """
    from ofa.latency_timing import DeviceFingerprint
    from predictors.dataset import read_arch_csv

    path = Path(path)
    device_file = _device_file(path)
    if not device_file.is_file():
        raise ValueError(f"{path} has no {device_file.name} beside it: time subnets with ofa latency measure")
    try:
        device = json.loads(device_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{device_file} is corrupt ({error})") from None
    if not isinstance(device, dict):
        raise ValueError(f"{device_file} must hold an object with fingerprint and num_classes")
    fingerprint = DeviceFingerprint.from_dict(device.get("fingerprint"), str(device_file))
    num_classes = device.get("num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{device_file}: num_classes must be an integer >= 1, got {num_classes!r}")
    records = read_arch_csv(path, space)
    untimed = [index for index, record in enumerate(records, start=1) if record.latency_ms is None]
    if untimed:
        raise ValueError(f"{path}: row {untimed[0]} has no latency_ms; time subnets with ofa latency measure")
    return records, fingerprint, num_classes


def _command_measure(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from ofa.archdata import spread_archs
    from ofa.flops import count_macs, count_params
    from ofa.latency import time_subnets
    from ofa.space import load_space
    from predictors.dataset import ArchRecord, append_arch_records

    space = load_space(args.space)
    out = check_file_target(args.out, "--out")
    fingerprint, timing = _fingerprint(args), _timing(args)
    device = {"fingerprint": fingerprint.to_dict(), "num_classes": args.classes, "timing": timing.__dict__}
    done: set = set()
    if out.exists():
        records, previous, classes = read_timed_csv(out, space)
        if (previous, classes) != (fingerprint, args.classes):
            raise ValueError(
                f"{out} holds subnets timed on {previous.describe()} with {classes} classes; "
                f"timings of different devices or settings are never mixed: choose another --out"
            )
        done = {record.arch for record in records}
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(_device_file(out), json.dumps(device, indent=1) + "\n")
    archs = [arch for arch in spread_archs(space, args.num_archs, args.classes, args.seed) if arch not in done]
    with tqdm(total=len(archs), desc="time subnets") as bar:
        for start in range(0, len(archs), MEASURE_CHUNK):
            chunk = archs[start : start + MEASURE_CHUNK]
            timings = time_subnets(space, chunk, args.classes, fingerprint, timing)
            append_arch_records(
                out,
                [
                    ArchRecord(
                        space=space.name,
                        arch=arch,
                        mmacs=count_macs(space, arch, args.classes) / 1e6,
                        params=count_params(space, arch, args.classes),
                        resolution=arch.resolution,
                        val_acc=None,
                        test_acc=None,
                        val_loss=None,
                        seed=args.seed,
                        latency_ms=timing_of.best_ms,
                    )
                    for arch, timing_of in zip(chunk, timings)
                ],
            )
            bar.update(len(chunk))
    print(f"{len(done) + len(archs)} subnets of space {space.name} timed on {fingerprint.describe()} -> {out}")


def _command_fit(args: argparse.Namespace) -> None:
    from ofa.latency import load_latency_table
    from ofa.latency_models import fit_estimator, latency_metrics
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
    from ofa.latency_models import DEFAULT_LEARNED_PREDICTOR, ESTIMATORS

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
    parser.add_argument("--out", required=True, help=f"arch CSV with a latency_ms column (+ {DEVICE_SUFFIX})")
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
