"""P0: command-line start-up, wall seconds of ``ofa --help``, ``ofa flops`` and a refused ``ofa train`` config in a
fresh interpreter.

Each command runs as its own process (``python -m ofa.cli ...``, what the ``ofa`` script runs), interleaved
with a bare ``python -c pass`` so the interpreter's own start is shown beside them; the median of the repeats
is reported, and which heavy libraries (torch, scikit-learn, LightGBM) the command imported. Goal: under
0.5 s each (the command line imports those only in the commands that need them).

Run: ``python -m benchmarks.bench_startup``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import interleaved_times, median, print_table

__all__ = ["COMMANDS", "heavy_imports", "main"]

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ARCH = CONFIGS / "archs" / "attentivenas_a0.yaml"
BAD_TRAIN = ["train", str(CONFIGS / "train" / "digits.yaml"), "--set", "sampler.num_candidates=0"]
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "ofa --help": ["-m", "ofa.cli", "--help"],
    "ofa flops": ["-m", "ofa.cli", "flops", "--space", "attentivenas", "--arch", str(ARCH)],
    "ofa train, bad config (exit 2)": ["-m", "ofa.cli", *BAD_TRAIN],
}
EXIT_CODES = {"ofa train, bad config (exit 2)": 2}  # the others exit 0
HEAVY = ("torch", "sklearn", "lightgbm")


def _run(arguments: list[str], exit_code: int = 0) -> Callable[[], object]:
    def call() -> object:
        result = subprocess.run([sys.executable, *arguments], capture_output=True, text=True)
        if result.returncode != exit_code:
            raise RuntimeError(f"{' '.join(arguments)} exited {result.returncode}: {result.stderr.strip()}")
        return result

    return call


def heavy_imports(arguments: list[str], exit_code: int = 0) -> list[str]:
    """The heavy libraries a command leaves imported (run in-process after its ``main`` returns).

    Raises:
        RuntimeError: the command exited with another code than ``exit_code`` (its exit code and stderr).
    """
    if arguments[:1] != ["-m"]:
        return []
    script = (
        "import sys\nfrom ofa.cli import main\n"
        f"try:\n    code = main({arguments[2:]!r})\nexcept SystemExit as stop:\n    code = stop.code\n"
        f"print('heavy:' + ','.join(name for name in {HEAVY!r} if name in sys.modules))\n"
        "sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if result.returncode != exit_code:
        raise RuntimeError(f"{' '.join(arguments)} exited {result.returncode}: {result.stderr.strip()}")
    line = result.stdout.splitlines()[-1].removeprefix("heavy:")
    return [name for name in line.split(",") if name]


def main(repeats: int = 7) -> dict[str, float]:
    """Time every command, print a table, return ``{"<command> seconds": median}``."""
    calls = {name: _run(arguments, EXIT_CODES.get(name, 0)) for name, arguments in COMMANDS.items()}
    times = interleaved_times(calls, repeats, warmup=1)
    results, rows = {}, []
    for name, arguments in COMMANDS.items():
        seconds = median(times[name][0])
        results[f"{name} seconds"] = seconds
        heavy = heavy_imports(arguments, EXIT_CODES.get(name, 0))
        rows.append((name, seconds, min(times[name][0]), ", ".join(heavy) or "-"))
    print(f"P0 command-line start-up (wall seconds per process, median of {repeats} interleaved runs)")
    print_table(("command", "median s", "fastest s", "heavy libraries imported"), rows)
    return results


if __name__ == "__main__":
    main()
