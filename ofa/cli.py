"""The ``ofa`` command: train once, deploy many.

Every command reports bad input as one line on stderr with exit code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ofa.flops import count_macs, count_params
from ofa.space import load_arch, load_space

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


def _add_space_commands(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("space", help="size and min/max MMACs and params of a search space")
    parser.add_argument("space", help="shipped space name (tiny, attentivenas, ofa_mbv3) or a YAML path")
    parser.add_argument("--classes", type=int, default=1000, help="classifier outputs (default 1000)")
    parser.set_defaults(handler=_command_space)

    parser = commands.add_parser("flops", help="MMACs and params of one architecture")
    parser.add_argument("--space", required=True, help="space name or YAML path")
    parser.add_argument("--arch", required=True, help="arch file (JSON or YAML)")
    parser.add_argument("--classes", type=int, default=1000, help="classifier outputs (default 1000)")
    parser.set_defaults(handler=_command_flops)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``ofa`` command."""
    parser = argparse.ArgumentParser(prog="ofa", description="Once-for-all supernets with attentive sampling.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_space_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ofa`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except ValueError as error:
        print(f"ofa {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ofa {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
