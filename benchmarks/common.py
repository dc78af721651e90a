"""Small timing helpers shared by the benchmarks: interleaved repeats, medians and a plain table printer.

Timings that are compared are measured side by side in one run: each repeat calls every candidate once
(in a rotating order), so slow drifts of the machine touch all candidates alike; the median of the
repeats is reported. Besides the wall clock, the calling thread's CPU time (``time.thread_time``) can be
read around each call: with single-threaded torch it is the work itself, and other processes on a busy
machine disturb it much less.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

__all__ = ["interleaved_medians", "interleaved_times", "median", "print_table", "time_call"]


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    if not values:
        raise ValueError("median of an empty sequence; give at least one value")
    return float(statistics.median(values))


def time_call(function: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of one call by ``clock`` (wall clock by default; ``time.thread_time`` for CPU time)."""
    start = clock()
    function()
    return clock() - start


def interleaved_times(
    candidates: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 2,
    clocks: Sequence[Callable[[], float]] = (time.perf_counter,),
) -> dict[str, list[list[float]]]:
    """Seconds of every timed call of each candidate by each clock, in interleaved rounds.

    Args:
        candidates: name -> zero-argument function to time.
        repeats: timed rounds; each round calls every candidate once, in an order rotated per round.
        warmup: untimed rounds first.
        clocks: clocks read around each call (e.g. the wall clock and the calling thread's CPU time).

    Returns:
        name -> per clock, the list of per-call seconds.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    times: dict[str, list[list[float]]] = {name: [[] for _ in clocks] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            starts = [clock() for clock in clocks]
            candidates[name]()
            ends = [clock() for clock in clocks]
            for values, start, end in zip(times[name], starts, ends):
                values.append(end - start)
    return times


def interleaved_medians(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median wall-clock seconds per call of each candidate, timed in interleaved rounds."""
    times = interleaved_times(candidates, repeats, warmup)
    return {name: median(per_clock[0]) for name, per_clock in times.items()}


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print rows under headers as a Markdown table (floats: 4 significant digits below 1000, else whole)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    cells = [[cell(value) for value in row] for row in rows]
    widths = [max(len(str(header)), *(len(row[index]) for row in cells)) for index, header in enumerate(headers)]
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        padded = [value.ljust(w) if index == 0 else value.rjust(w) for index, (value, w) in enumerate(zip(row, widths))]
        print("| " + " | ".join(padded) + " |")
