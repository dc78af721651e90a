"""Architecture -> accuracy data sets measured inside a trained supernet.

Archs are spread over the whole FLOPs range (equal-width MMAC bins visited in turn, not uniform samples,
which crowd the middle), each is BN-recalibrated and evaluated on val (and test, reported separately),
and every finished measurement is appended to the CSV at once, so an interrupted run keeps what it
measured and a rerun continues where it stopped.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from ofa.evaluate import evaluate_arch
from ofa.flops import count_macs, count_params
from ofa.sampling import FlopsTargetSampler, build_flops_table
from ofa.space import Arch, SearchSpace
from ofa.supernet import Supernet
from predictors.dataset import ArchRecord, append_arch_records, read_arch_csv

__all__ = ["measure_archs", "measure_to_csv", "spread_archs"]


def spread_archs(space: SearchSpace, count: int, num_classes: int, seed: int, max_tries: int = 200) -> list[Arch]:
    """``count`` distinct archs spread evenly over the MMACs range: min and max first, then bins in turn."""
    if count < 1:
        raise ValueError(f"the number of archs must be >= 1, got {count}")
    if count > space.size():
        raise ValueError(f"asked for {count} distinct archs but space {space.name!r} has only {space.size()}")
    table = build_flops_table(space, num_classes, num_samples=2000, num_bins=max(1, min(count, 25)), seed=seed)
    sampler = FlopsTargetSampler(space, table, num_classes, max_tries)
    rng = random.Random(seed)
    archs = list(dict.fromkeys([space.min_arch(), space.max_arch()]))[:count]
    seen = set(archs)
    edges = table.edges
    attempts = 0
    while len(archs) < count:
        attempts += 1
        if attempts > 50 * count:
            raise ValueError(f"could not draw {count} distinct archs from space {space.name!r}")
        index = (attempts - 1) % (len(edges) - 1)
        arch = sampler.sample_in(edges[index], edges[index + 1], rng)
        if arch not in seen:
            seen.add(arch)
            archs.append(arch)
    return archs


def measure_archs(
    supernet: Supernet,
    archs: Sequence[Arch],
    calibration_images: Sequence[torch.Tensor],
    val_batches: Iterable,
    test_batches: Iterable,
    seed: int,
) -> Iterator[ArchRecord]:
    """Evaluate each arch (BN recalibrated) on val and test; yield one record per arch as it is done."""
    space, num_classes = supernet.space, supernet.num_classes
    for arch in archs:
        val = evaluate_arch(supernet, arch, calibration_images, val_batches)
        supernet.eval()
        test = evaluate_arch(supernet, arch, calibration_images, test_batches)
        yield ArchRecord(
            space=space.name,
            arch=arch,
            mmacs=count_macs(space, arch, num_classes) / 1e6,
            params=count_params(space, arch, num_classes),
            resolution=arch.resolution,
            val_acc=val.accuracy,
            test_acc=test.accuracy,
            val_loss=val.loss,
            seed=seed,
        )


def measure_to_csv(
    path: Path,
    supernet: Supernet,
    archs: Sequence[Arch],
    calibration_images: Sequence[torch.Tensor],
    val_batches: Iterable,
    test_batches: Iterable,
    seed: int,
    progress: bool = False,
) -> list[ArchRecord]:
    """Measure the archs not yet in ``path`` and append them; returns every record of the file."""
    done = {record.arch for record in read_arch_csv(path, supernet.space)} if path.is_file() else set()
    todo = [arch for arch in archs if arch not in done]
    if todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="evaluate archs", disable=not progress, leave=False)
        for record in measure_archs(supernet, todo, calibration_images, val_batches, test_batches, seed):
            append_arch_records(path, [record])
            bar.update(1)
        bar.close()
    return read_arch_csv(path, supernet.space)
