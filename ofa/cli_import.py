"""``ofa import`` (a published supernet as a run folder) and ``ofa arch convert`` (reference arch naming)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ofa.atomic import atomic_write_text, check_file_target
from ofa.reference import FAMILIES, arch_from_reference, arch_to_reference
from ofa.space import load_arch, load_space, read_yaml_or_json

__all__ = ["add_import_commands"]

DIRECTIONS = ("reference", "toolkit")


def _command_import(args: argparse.Namespace) -> None:
    from ofa.importer import import_supernet  # torch: loaded on use, `ofa --help` stays fast

    result = import_supernet(args.family, args.checkpoint, args.out, args.data, args.test_fraction, args.force)
    print(
        f"imported {result.family} ({result.tensors} tensors, {result.num_classes} classes"
        f"{f', {result.dropped} unused keys left out' if result.dropped else ''}) into {result.run_dir}; "
        f"next: `ofa evaluate {result.run_dir}` (then query, search, export, finetune)"
    )


def _command_arch_convert(args: argparse.Namespace) -> None:
    space = load_space(args.family)
    if args.to == "reference":
        data = arch_to_reference(args.family, space, load_arch(args.arch, space))
    else:
        data = arch_from_reference(args.family, space, _read_reference_arch(args.arch)).to_dict()
    text = json.dumps(data) + "\n"
    if args.out:
        atomic_write_text(check_file_target(args.out, "--out"), text)
    else:
        print(text, end="")


def _read_reference_arch(path: str) -> object:
    """A reference-named arch from a JSON or YAML file (a ``space`` key, when present, is ignored)."""
    data = read_yaml_or_json(Path(path), "arch")
    if isinstance(data, dict):
        data.pop("space", None)
    return data


def add_import_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``import`` and ``arch convert``."""
    parser = commands.add_parser("import", help="a published supernet checkpoint as a run folder")
    parser.add_argument("family", choices=list(FAMILIES), help="which published supernet")
    parser.add_argument("checkpoint", help="the published checkpoint file ({'state_dict': ...})")
    parser.add_argument("--out", required=True, help="the run folder to write")
    parser.add_argument(
        "--data", required=True, help="your image folder (ROOT/train/<class>/*, ROOT/val/<class>/*; ImageNet)"
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.0, help="part of val held out as test when ROOT has no test/"
    )
    parser.add_argument("--force", action="store_true", help="replace a previous import at --out")
    parser.set_defaults(handler=_command_import)

    arch = commands.add_parser("arch", help="architecture files").add_subparsers(
        dest="arch_command", required=True, metavar="ARCH_COMMAND"
    )
    convert = arch.add_parser("convert", help="an arch between this toolkit's and a reference's naming")
    convert.add_argument("arch", help="arch file (JSON or YAML)")
    convert.add_argument("--family", required=True, choices=list(FAMILIES), help="the space's reference family")
    convert.add_argument(
        "--to", required=True, choices=DIRECTIONS, help="reference: into the reference's naming; toolkit: back"
    )
    convert.add_argument("--out", help="write the JSON here (default: print it)")
    convert.set_defaults(handler=_command_arch_convert)
