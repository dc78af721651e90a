"""Architecture → accuracy data sets: the CSV format every predictor command reads.

One row per measurement of one subnet (a subnet measured twice, e.g. with two BN-calibration seeds,
gives two rows). Columns, in this order:

==============  =============================================================================
``space``       name of the search space the arch belongs to
``arch``        the arch as one-line JSON (``Arch.to_json()``)
``mmacs``       multiply-accumulates in millions (``ofa.flops``)
``params``      trainable parameters
``resolution``  input resolution (must equal the arch's)
``val_acc``     accuracy on the validation split, in [0, 1] or percent: any finite number
``test_acc``    accuracy on the test split; a cell may be empty (not measured, e.g. by the training guide)
``val_loss``    mean validation loss; optional (the column may be missing or a cell empty)
``seed``        seed of the measurement (e.g. the BN-calibration seed)
``latency_ms``  optional: median end-to-end latency in milliseconds (``ofa latency measure``); a row with
                a latency may leave ``val_acc`` empty (a timing, not an accuracy measurement)
==============  =============================================================================

Writing is either append-safe (``append_arch_records``: header when new, each row flushed and fsynced,
so an interrupted evaluation keeps what it measured) or atomic (``write_arch_csv``: temp file and
``os.replace``).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ofa.atomic import atomic_write_text
from ofa.config import read_user_text
from ofa.space import Arch, SearchSpace, load_space

__all__ = [
    "CSV_COLUMNS",
    "LATENCY_COLUMNS",
    "REQUIRED_COLUMNS",
    "TARGETS",
    "ArchRecord",
    "append_arch_records",
    "csv_space_name",
    "read_arch_csv",
    "read_arch_csvs",
    "target_values",
    "write_arch_csv",
]

CSV_COLUMNS = ("space", "arch", "mmacs", "params", "resolution", "val_acc", "test_acc", "val_loss", "seed")
LATENCY_COLUMNS = (*CSV_COLUMNS, "latency_ms")
REQUIRED_COLUMNS = tuple(column for column in CSV_COLUMNS if column != "val_loss")
TARGETS = ("val_acc", "val_loss", "test_acc", "latency_ms")


@dataclass(frozen=True)
class ArchRecord:
    """One measurement of one architecture (a row of the CSV).

    Attributes:
        space: name of the search space.
        arch: the architecture.
        mmacs: multiply-accumulates in millions.
        params: trainable parameters.
        resolution: input resolution.
        val_acc: validation accuracy, or None for a latency-only row.
        test_acc: test accuracy, or None when not measured.
        val_loss: validation loss, or None when not measured.
        seed: seed of the measurement.
        latency_ms: end-to-end latency in milliseconds, or None when not timed.
    """

    space: str
    arch: Arch
    mmacs: float
    params: int
    resolution: int
    val_acc: float | None
    test_acc: float | None
    val_loss: float | None
    seed: int
    latency_ms: float | None = None


def target_values(records: Sequence[ArchRecord], target: str = "val_acc") -> np.ndarray:
    """The values predictors learn, oriented so that higher is better.

    ``val_acc`` and ``test_acc`` are used as they are; ``val_loss`` and ``latency_ms`` are negated (a lower
    loss or latency ranks higher), so every ranking metric and every predictor treats all targets alike.

    Raises:
        ValueError: unknown target, or a record without a value for it.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; allowed: {', '.join(TARGETS)}")
    values = [getattr(record, target) for record in records]
    missing = [index for index, value in enumerate(values) if value is None]
    if missing:
        raise ValueError(
            f"target {target}: {len(missing)} record(s) have no {target} (first: record {missing[0]}); "
            f"choose a --target the data has ({', '.join(TARGETS)})"
        )
    sign = -1.0 if target in ("val_loss", "latency_ms") else 1.0
    return sign * np.array(values, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------


def _open_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    text = read_user_text(path, "arch data")
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        missing = [column for column in REQUIRED_COLUMNS if column not in header]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)}; required columns: {', '.join(REQUIRED_COLUMNS)} "
                f"(val_loss optional)"
            )
        rows = list(reader)
    return header, rows


def csv_space_name(path: str | Path) -> str:
    """The space name shared by every row of an arch CSV.

    Raises:
        ValueError: missing file or columns, no rows, or rows naming different spaces.
    """
    path = Path(path)
    _, rows = _open_rows(path)
    names = sorted({(row.get("space") or "").strip() for row in rows})
    if not rows:
        raise ValueError(f"{path}: no rows")
    if len(names) != 1 or not names[0]:
        raise ValueError(f"{path}: rows name several spaces ({', '.join(map(repr, names))}); pass --space")
    return names[0]


def _number(text: str | None, where: str, column: str, integer: bool = False) -> float:
    text = (text or "").strip()
    if not text:
        raise ValueError(f"{where}: column {column} is empty")
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{where}: column {column}: expected {kind}, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: column {column} is {text!r}; expected a finite number")
    return value


def _positive(value: float, where: str, column: str) -> float:
    if value <= 0:
        raise ValueError(f"{where}: column {column} is {value}; expected a positive number")
    return value


def _parse_row(row: dict[str, str], where: str, space: SearchSpace) -> ArchRecord:
    if None in row:  # csv puts surplus cells under the key None
        raise ValueError(f"{where}: more cells than columns")
    name = (row["space"] or "").strip()
    if name != space.name:
        raise ValueError(f"{where}: column space is {name!r}, but the data is read for space {space.name!r}")
    try:
        arch = space.validate(Arch.from_json(row["arch"] or ""))
    except ValueError as error:
        raise ValueError(f"{where}: column arch: {error}") from None
    resolution = int(_number(row["resolution"], where, "resolution", integer=True))
    if resolution != arch.resolution:
        raise ValueError(f"{where}: column resolution is {resolution} but the arch has resolution {arch.resolution}")
    loss_text = (row.get("val_loss") or "").strip()
    test_text = (row.get("test_acc") or "").strip()
    latency_text = (row.get("latency_ms") or "").strip()
    latency = _positive(_number(latency_text, where, "latency_ms"), where, "latency_ms") if latency_text else None
    accuracy_text = (row["val_acc"] or "").strip()
    return ArchRecord(
        space=name,
        arch=arch,
        mmacs=_positive(_number(row["mmacs"], where, "mmacs"), where, "mmacs"),
        params=int(_positive(_number(row["params"], where, "params", integer=True), where, "params")),
        resolution=resolution,
        val_acc=None if latency is not None and not accuracy_text else _number(accuracy_text, where, "val_acc"),
        test_acc=_number(test_text, where, "test_acc") if test_text else None,
        val_loss=_number(loss_text, where, "val_loss") if loss_text else None,
        seed=int(_number(row["seed"], where, "seed", integer=True)),
        latency_ms=latency,
    )


def read_arch_csv(path: str | Path, space: SearchSpace) -> list[ArchRecord]:
    """Read and validate an arch CSV written for ``space``.

    Raises:
        ValueError: naming the file, row (1 = first data row, as a spreadsheet shows it after the header)
            and column, for missing columns, empty or non-finite numbers, malformed arch JSON, or archs of
            another space.
    """
    path = Path(path)
    _, rows = _open_rows(path)
    return [_parse_row(row, f"{path}: row {index}", space) for index, row in enumerate(rows, start=1)]


# ----------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------


def _format_row(record: ArchRecord, columns: Sequence[str] = CSV_COLUMNS) -> list[str]:
    if record.arch.resolution != record.resolution:
        raise ValueError(f"record resolution {record.resolution} differs from its arch's {record.arch.resolution}")
    if record.val_acc is None and record.latency_ms is None:
        raise ValueError("record val_acc is None; only a row with a latency may leave val_acc empty")
    if record.latency_ms is not None and "latency_ms" not in columns:
        raise ValueError("record has a latency_ms but the file has no latency_ms column")
    for column in ("val_acc", "test_acc", "mmacs", "latency_ms"):
        if column != "mmacs" and getattr(record, column) is None:
            continue
        if not math.isfinite(getattr(record, column)):
            raise ValueError(f"record {column} is {getattr(record, column)!r}; expected a finite number")
    latency = [] if "latency_ms" not in columns else ["" if record.latency_ms is None else repr(record.latency_ms)]
    return [
        record.space,
        record.arch.to_json(),
        repr(float(record.mmacs)),
        str(int(record.params)),
        str(int(record.resolution)),
        "" if record.val_acc is None else repr(float(record.val_acc)),
        "" if record.test_acc is None else repr(float(record.test_acc)),
        "" if record.val_loss is None else repr(float(record.val_loss)),
        str(int(record.seed)),
        *latency,
    ]


def _csv_line(cells: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def _repair_tail(path: Path, columns: Sequence[str]) -> None:
    """Make an existing file end with a newline; drop a last row cut short by an interrupted write."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    cells = next(csv.reader([data[start:].decode()]), [])
    with path.open("r+b") as handle:
        if len(cells) == len(columns):
            handle.seek(0, os.SEEK_END)
            handle.write(b"\n")
        else:
            handle.truncate(start)
        handle.flush()
        os.fsync(handle.fileno())


def append_arch_records(path: str | Path, records: Sequence[ArchRecord]) -> None:
    """Append rows to an arch CSV, writing the header if the file is new.

    Every row is flushed and fsynced, so an interrupted run keeps each finished measurement; a last row
    cut short by an earlier interruption is dropped before appending.

    Raises:
        ValueError: the existing file has another header, or a record is not finite.
    """
    path = Path(path)
    timed = any(record.latency_ms is not None for record in records)
    columns = LATENCY_COLUMNS if timed else CSV_COLUMNS
    if path.is_file() and path.stat().st_size > 0:
        with path.open(newline="") as handle:
            header = tuple(next(csv.reader(handle), []))
        if header not in (CSV_COLUMNS, LATENCY_COLUMNS) or (timed and header != LATENCY_COLUMNS):
            raise ValueError(f"{path}: existing header {list(header)} differs from {list(columns)}; not appending")
        columns = header
        _repair_tail(path, columns)
        new = path.stat().st_size == 0
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = True
    lines = [_csv_line(_format_row(record, columns)) for record in records]
    with path.open("a", newline="") as handle:
        if new:
            handle.write(_csv_line(columns))
            handle.flush()
            os.fsync(handle.fileno())
        for line in lines:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def read_arch_csvs(
    paths: Sequence[str | Path], space: SearchSpace | None = None
) -> tuple[SearchSpace, list[ArchRecord]]:
    """The records of several arch CSVs read as one data set, in the space of the first (or ``space``).

    Raises:
        ValueError: no paths, a missing, invalid or empty file, or a file of another space.
    """
    if not paths:
        raise ValueError("give at least one arch CSV")
    space = space if space is not None else load_space(csv_space_name(paths[0]))
    records: list[ArchRecord] = []
    for path in paths:
        file_records = read_arch_csv(path, space)
        if not file_records:
            raise ValueError(f"{path}: no rows")
        records.extend(file_records)
    return space, records


def write_arch_csv(path: str | Path, records: Sequence[ArchRecord]) -> None:
    """Write an arch CSV atomically (temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    columns = LATENCY_COLUMNS if any(record.latency_ms is not None for record in records) else CSV_COLUMNS
    text = _csv_line(columns) + "".join(_csv_line(_format_row(record, columns)) for record in records)
    atomic_write_text(path, text)
