"""Subnets timed end to end, kept as an arch CSV with a ``latency_ms`` column and a device file beside it.

``measure_to_csv`` draws subnets spread over the MACs range, times them in round-robin passes
(:func:`ofa.latency.time_subnets`) a chunk at a time and appends each finished chunk, so an interrupted
measurement keeps what it timed and a rerun continues. ``CSV.device.json`` records the device
fingerprint, classes and timing settings; rows timed on another device are never appended to the file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tqdm import tqdm

from ofa.archdata import spread_archs
from ofa.atomic import atomic_write_text
from ofa.flops import count_macs, count_params
from ofa.latency import time_subnets
from ofa.latency_table import DeviceFingerprint, TimingSettings
from ofa.space import SearchSpace, read_yaml_or_json
from predictors.dataset import ArchRecord, append_arch_records, read_arch_csv

__all__ = ["DEVICE_SUFFIX", "measure_to_csv", "read_timed_csv"]

DEVICE_SUFFIX = ".device.json"  # beside a timed CSV: the fingerprint and settings its latencies were timed with
MEASURE_CHUNK = 25  # subnets timed (in round-robin passes) before their rows are appended


def _device_file(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name + DEVICE_SUFFIX)


def read_timed_csv(path: str | Path, space: SearchSpace) -> tuple[list[ArchRecord], DeviceFingerprint, int]:
    """The timed rows of a CSV written by ``measure_to_csv``, their fingerprint and classes.

    Raises:
        ValueError: a missing file or device file, rows without latency, or an unreadable device file.
    """

    path = Path(path)
    device_file = _device_file(path)
    if not device_file.is_file():
        raise ValueError(f"{path} has no {device_file.name} beside it: time subnets with ofa latency measure")
    device = read_yaml_or_json(device_file, "device")
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


def measure_to_csv(
    space: SearchSpace,
    num_archs: int,
    num_classes: int,
    seed: int,
    fingerprint: DeviceFingerprint,
    out: str | Path,
    timing: TimingSettings | None = None,
    progress: bool = False,
) -> list[ArchRecord]:
    """Time ``num_archs`` subnets spread over the MACs range into ``out``; returns all its rows.

    Raises:
        ValueError: ``out`` holds subnets timed on another device or with other classes.
    """

    out = Path(out)
    settings = timing or TimingSettings()
    done: set = set()
    if out.exists():
        records, previous, classes = read_timed_csv(out, space)
        if (previous, classes) != (fingerprint, num_classes):
            raise ValueError(
                f"{out} holds subnets timed on {previous.describe()} with {classes} classes; "
                f"timings of different devices or settings are never mixed: choose another output"
            )
        done = {record.arch for record in records}
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        device = {"fingerprint": fingerprint.to_dict(), "num_classes": num_classes}
        atomic_write_text(_device_file(out), json.dumps({**device, "timing": dataclasses.asdict(settings)}) + "\n")
    archs = [arch for arch in spread_archs(space, num_archs, num_classes, seed) if arch not in done]
    with tqdm(total=len(archs), desc="time subnets", disable=not progress) as bar:
        for start in range(0, len(archs), MEASURE_CHUNK):
            chunk = archs[start : start + MEASURE_CHUNK]
            timings = time_subnets(space, chunk, num_classes, fingerprint, settings)
            rows = [
                ArchRecord(
                    space=space.name,
                    arch=arch,
                    mmacs=count_macs(space, arch, num_classes) / 1e6,
                    params=count_params(space, arch, num_classes),
                    resolution=arch.resolution,
                    val_acc=None,
                    test_acc=None,
                    val_loss=None,
                    seed=seed,
                    latency_ms=timed.best_ms,
                )
                for arch, timed in zip(chunk, timings)
            ]
            append_arch_records(out, rows)
            bar.update(len(chunk))
    return read_timed_csv(out, space)[0]
