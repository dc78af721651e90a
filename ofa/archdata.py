"""Architecture -> accuracy data sets measured inside a trained supernet.

Archs are spread over the whole FLOPs range (equal-width MMAC bins visited in turn, not uniform samples,
which crowd where most archs are and rarely reach the large end), each is BN-recalibrated and evaluated
on val (and test, reported separately), and every finished measurement is appended to the CSV at once,
so an interrupted run keeps what it measured and a rerun continues where it stopped.

A measurement is identified by (arch, seed): the same archs measured again with another BN-calibration
seed (``archs_from_csv`` + ``ofa.data.calibration_images``) give a second, independent measurement, which
bounds how well any predictor can rank the archs (the noise ceiling).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ofa.atomic import atomic_write_text
from ofa.evaluate import evaluate_arch, evaluate_model
from ofa.flops import count_macs, count_params
from ofa.runfolder import read_source_record, source_record_path
from ofa.sampling import FlopsTable, FlopsTargetSampler, space_fingerprint
from ofa.space import Arch, SearchSpace
from ofa.supernet import Supernet
from predictors.dataset import ArchRecord, append_arch_records, read_arch_csv

__all__ = [
    "archs_from_csv",
    "measure_archs",
    "measure_to_csv",
    "spread_archs",
]

_MUTATION_PROBABILITY = 0.15  # per choice, when moving a drawn arch towards its MMACs bin
_BIN_PATIENCE = 20  # misses in a row (outside the bin, or already drawn) before a bin is closed


def _draw_in(
    space: SearchSpace, sampler: FlopsTargetSampler, low: float, high: float, rng: random.Random, max_tries: int
) -> tuple[Arch, bool]:
    """An arch with MMACs in [low, high]: the closest of ``max_tries`` uniform draws, then mutated towards it.

    Returns the arch and whether it lies in the bin.
    """

    def distance(arch: Arch) -> float:
        mmacs = count_macs(space, arch, sampler.num_classes) / 1e6
        return max(low - mmacs, mmacs - high, 0.0)

    arch = sampler.sample_in(low, high, rng)
    best = distance(arch)
    for _ in range(max_tries):
        if best == 0.0:
            break
        candidate = space.mutate(arch, rng, _MUTATION_PROBABILITY)
        candidate_distance = distance(candidate)
        if candidate_distance <= best:
            arch, best = candidate, candidate_distance
    return arch, best == 0.0


def spread_archs(space: SearchSpace, count: int, num_classes: int, seed: int, max_tries: int = 200) -> list[Arch]:
    """``count`` distinct archs spread evenly over the MMACs range: min and max first, then bins in turn.

    The range from the smallest to the largest subnet is cut into equal-width bins visited round-robin.
    In a bin, the closest of ``max_tries`` uniform draws is mutated towards the bin (uniform draws
    rarely reach the large end of the range, and keeping their closest misses would pile archs up below
    it). A draw outside its bin or already drawn is a miss; a bin with ``_BIN_PATIENCE`` misses in a row
    is closed. When every bin is closed, distinct uniform draws fill up what is left.

    Raises:
        ValueError: ``count`` < 1, or more than the space holds or can be drawn.
    """
    if count < 1:
        raise ValueError(f"the number of archs must be >= 1, got {count}")
    if count > space.size():
        raise ValueError(f"asked for {count} distinct archs but space {space.name!r} has only {space.size()}")
    num_bins = max(1, min(count, 25))
    smallest, largest = space.min_arch(), space.max_arch()
    low, high = (count_macs(space, arch, num_classes) / 1e6 for arch in (smallest, largest))
    edges = np.linspace(low, high, num_bins + 1)
    table = FlopsTable(space_fingerprint(space), num_classes, 0, seed, tuple(map(float, edges)), (1,) * num_bins)
    sampler = FlopsTargetSampler(space, table, num_classes, max_tries)
    rng = random.Random(seed)
    archs = list(dict.fromkeys([smallest, largest]))[:count]
    seen = set(archs)
    misses = dict.fromkeys(range(num_bins), 0)
    turn = 0
    while len(archs) < count and misses:
        open_bins = list(misses)
        index = open_bins[turn % len(open_bins)]
        turn += 1
        arch, inside = _draw_in(space, sampler, edges[index], edges[index + 1], rng, max_tries)
        if inside and arch not in seen:
            seen.add(arch)
            archs.append(arch)
            misses[index] = 0
            continue
        misses[index] += 1
        if misses[index] >= _BIN_PATIENCE:
            del misses[index]
    for _ in range(50 * count):
        if len(archs) == count:
            break
        arch = space.sample(rng)
        if arch not in seen:
            seen.add(arch)
            archs.append(arch)
    if len(archs) < count:
        raise ValueError(f"could not draw {count} distinct archs from space {space.name!r}")
    return archs


def measure_archs(
    supernet: Supernet,
    archs: Sequence[Arch],
    calibration_images: Sequence[torch.Tensor],
    val_batches: Iterable,
    test_batches: Iterable | None,
    seed: int,
) -> Iterator[ArchRecord]:
    """Evaluate each arch (BN recalibrated once) on val and, unless ``test_batches`` is None, on test.

    Yields one record per arch as it is done.
    """
    space, num_classes = supernet.space, supernet.num_classes
    for arch in archs:
        val = evaluate_arch(supernet, arch, calibration_images, val_batches)
        test = None if test_batches is None else evaluate_model(supernet, test_batches, arch.resolution)
        yield ArchRecord(
            space=space.name,
            arch=arch,
            mmacs=count_macs(space, arch, num_classes) / 1e6,
            params=count_params(space, arch, num_classes),
            resolution=arch.resolution,
            val_acc=val.accuracy,
            test_acc=None if test is None else test.accuracy,
            val_loss=val.loss,
            seed=seed,
        )


def measure_to_csv(
    path: Path,
    supernet: Supernet,
    archs: Sequence[Arch],
    calibration_images: Sequence[torch.Tensor],
    val_batches: Iterable,
    test_batches: Iterable | None,
    seed: int,
    progress: bool = False,
    source: Mapping[str, object] | None = None,
) -> list[ArchRecord]:
    """Measure the archs not yet in ``path`` with this ``seed`` and append them; returns every record of the file.

    ``seed`` is written to the CSV's seed column and identifies the measurement: an arch already in the
    file with the same seed is not measured again, one with another seed is (a repeated measurement).
    ``source`` (e.g. :attr:`ofa.runs.LoadedRun.measurement_source`: checkpoint digest, calibration) is kept
    beside the CSV; when an existing CSV was measured from another source its rows are stale: the file is
    moved aside (``<name>.stale-<n>.csv``, nothing is lost) and every arch is measured again.
    """
    path = Path(path)
    if source is not None:
        _retire_if_stale(path, dict(source))
    done = {(record.arch, record.seed) for record in read_arch_csv(path, supernet.space)} if path.is_file() else set()
    todo = list(dict.fromkeys(arch for arch in archs if (arch, seed) not in done))
    if todo:
        bar = tqdm(total=len(todo), desc="evaluate archs", disable=not progress, leave=False)
        for record in measure_archs(supernet, todo, calibration_images, val_batches, test_batches, seed):
            append_arch_records(path, [record])
            bar.update(1)
        bar.close()
    return read_arch_csv(path, supernet.space)


def _retire_if_stale(path: Path, source: dict[str, object]) -> None:
    if path.is_file():
        if read_source_record(path) == source:
            return
        number = 1
        while (aside := path.with_name(f"{path.stem}.stale-{number}{path.suffix}")).exists():
            number += 1
        path.rename(aside)
        print(
            f"{path}: measured on other weights or calibration; moved to {aside.name}, measuring again", file=sys.stderr
        )
    atomic_write_text(source_record_path(path), json.dumps(source, indent=1, sort_keys=True))


def archs_from_csv(path: str | Path, space: SearchSpace) -> list[Arch]:
    """The distinct archs of an arch CSV in file order, e.g. to measure them again with another seed.

    Raises:
        ValueError: the file is missing, invalid (see ``read_arch_csv``), empty, or of another space.
    """
    records = read_arch_csv(path, space)
    if not records:
        raise ValueError(f"{path}: no rows")
    return list(dict.fromkeys(record.arch for record in records))
