"""The run folder: every file a training run and the deploy-many commands keep in it, named in one place.

No other module spells a file name of a run; they ask a :class:`RunFolder` for the path (and
:func:`read_run_space` / :func:`write_run_space` for ``space.json``, :func:`write_result` for result files)::

    RUN/
      config.yaml            the resolved training config (``ofa train``; ``ofa import`` writes one for its data)
      provenance.json        where imported weights came from (``ofa import``)
      space.json             the space and class count, readable without torch
      metrics.csv            one row per epoch
      archs.jsonl            the subnets trained at every step
      tensorboard/           TensorBoard events
      checkpoints/           latest.pt and best.pt (format ``RUN_FORMAT``)
      archs.csv              archs measured in the supernet (``ofa evaluate``), with archs.csv.source.json
      compare_archs.csv      the same for ``ofa compare`` variants
      predictor/             final.json (the search predictor), with final.json.source.json (the archs.csv digest it
                             was fitted on); the guide's archs.csv and predictor files
      search/                pareto.json, pareto.csv, pareto.png (``ofa search``); pareto-latency.* for latency budgets
      latency/               table.json, timed.csv, estimator.json of this machine (``ofa run --latency``)
      export/                one standalone export per budget (``ofa run``)
      report/                report.md, summary.json and figures (``ofa run``)
      .lock                  held by the process writing the run (see :mod:`ofa.runlock`)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ofa.atomic import atomic_write_text
from ofa.space import SearchSpace

__all__ = [
    "CHECKPOINT_NAMES",
    "RESULT_FILE_MODE",
    "RUN_FORMAT",
    "MissingSpaceFileError",
    "RunFolder",
    "read_run_space",
    "read_source_record",
    "source_record_path",
    "write_result",
    "write_run_space",
]

RUN_FORMAT = 1  # the checkpoint ``format`` this version writes and reads
CHECKPOINT_NAMES = ("latest", "best")
RESULT_FILE_MODE = 0o644  # result files are readable like the rest of the run


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder (nothing is created or read on construction)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        """The resolved training config."""
        return self.root / "config.yaml"

    @property
    def provenance(self) -> Path:
        """Where an imported run's weights came from (absent in trained runs)."""
        return self.root / "provenance.json"

    @property
    def space(self) -> Path:
        """The space and class count as JSON."""
        return self.root / "space.json"

    @property
    def metrics(self) -> Path:
        """One CSV row per trained epoch."""
        return self.root / "metrics.csv"

    @property
    def trained_archs(self) -> Path:
        """The sampled subnets of every training step (JSON lines)."""
        return self.root / "archs.jsonl"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard's event folder."""
        return self.root / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        """The checkpoint folder."""
        return self.root / "checkpoints"

    def checkpoint(self, which: str) -> Path:
        """``latest`` (the final weights) or ``best`` (best largest-subnet val accuracy)."""
        if which not in CHECKPOINT_NAMES:
            raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINT_NAMES)}, got {which!r}")
        return self.checkpoints / f"{which}.pt"

    def existing_checkpoint(self, which: str) -> Path:
        """:meth:`checkpoint` when the run folder and the file exist (a one-line ``ValueError`` otherwise)."""
        path = self.checkpoint(which)
        if not self.root.is_dir():
            raise ValueError(f"run directory not found: {self.root}")
        if not path.is_file():
            raise ValueError(f"run directory {self.root} has no checkpoint ({path} is missing): train it first")
        return path

    @property
    def latest(self) -> Path:
        """The checkpoint of the last finished epoch."""
        return self.checkpoint("latest")

    @property
    def best(self) -> Path:
        """The checkpoint with the best largest-subnet val accuracy."""
        return self.checkpoint("best")

    @property
    def lock(self) -> Path:
        """The writers' lock file."""
        return self.root / ".lock"

    @property
    def arch_data(self) -> Path:
        """Archs measured in the supernet (``ofa evaluate``, ``ofa run``)."""
        return self.root / "archs.csv"

    @property
    def compare_arch_data(self) -> Path:
        """Archs measured for ``ofa compare``."""
        return self.root / "compare_archs.csv"

    @property
    def predictor_folder(self) -> Path:
        """Fitted accuracy predictors."""
        return self.root / "predictor"

    @property
    def final_predictor(self) -> Path:
        """The predictor search uses, fitted on :attr:`arch_data`."""
        return self.predictor_folder / "final.json"

    @property
    def guide_arch_data(self) -> Path:
        """Archs the training guide measured."""
        return self.predictor_folder / "archs.csv"

    @property
    def guide_predictor(self) -> Path:
        """The guide's latest predictor."""
        return self.predictor_folder / "predictor.json"

    def guide_predictor_of_epoch(self, epoch: int) -> Path:
        """The guide's predictor fitted before ``epoch`` (0-based)."""
        return self.predictor_folder / f"predictor_epoch{epoch:03d}.json"

    @property
    def search_folder(self) -> Path:
        """``ofa search`` results."""
        return self.root / "search"

    def search_result(self, stem: str, suffix: str) -> Path:
        """A search result file: ``search/STEM.SUFFIX`` (stem ``pareto`` or ``pareto-latency``)."""
        return self.search_folder / f"{stem}.{suffix}"

    @property
    def latency_folder(self) -> Path:
        """The latency table, timed subnets and estimator of this machine (``ofa run --latency``)."""
        return self.root / "latency"

    @property
    def latency_table(self) -> Path:
        """This machine's layer latency table."""
        return self.latency_folder / "table.json"

    @property
    def latency_timed(self) -> Path:
        """Subnets timed end to end on this machine (with ``timed.csv.device.json``)."""
        return self.latency_folder / "timed.csv"

    @property
    def latency_estimator(self) -> Path:
        """The run's latency estimator (default of ``--latency-model``)."""
        return self.latency_folder / "estimator.json"

    @property
    def pareto_json(self) -> Path:
        """The search summary: settings, chosen subnets, front."""
        return self.search_result("pareto", "json")

    @property
    def pareto_csv(self) -> Path:
        """The chosen subnets as CSV."""
        return self.search_result("pareto", "csv")

    @property
    def pareto_plot(self) -> Path:
        """The front's figure."""
        return self.search_result("pareto", "png")

    @property
    def export_folder(self) -> Path:
        """Exports written by ``ofa run``."""
        return self.root / "export"

    def export(self, budget: float, finetuned: bool = False, unit: str = "mmacs") -> Path:
        """The export of one budget's subnet: ``<budget>M`` or ``<budget>ms`` (``-finetuned``: fine-tuned)."""
        suffix = "ms" if unit == "latency_ms" else "M"
        return self.export_folder / f"{budget:g}{suffix}{'-finetuned' if finetuned else ''}"

    @property
    def report_folder(self) -> Path:
        """``ofa run``'s report."""
        return self.root / "report"

    @property
    def report(self) -> Path:
        """The report's markdown."""
        return self.report_folder / "report.md"

    def report_figure(self, name: str) -> Path:
        """A figure of the report (``pareto``, ``predictor``, ``training``)."""
        return self.report_folder / f"{name}.png"

    @property
    def summary(self) -> Path:
        """``ofa run``'s rows and stage timings as JSON."""
        return self.report_folder / "summary.json"


def source_record_path(result: Path) -> Path:
    """Where what the result file ``result`` was made from is recorded: ``<name>.source.json`` beside it (the
    checkpoint digest and calibration of an arch CSV's measurements, the arch data digest of a predictor)."""
    return result.with_name(f"{result.name}.source.json")


def read_source_record(result: Path) -> dict[str, object] | None:
    """What ``result`` was made from (see :func:`source_record_path`), None if unrecorded.

    Raises:
        ValueError: the record is not a JSON object.
    """
    path = source_record_path(result)
    if not path.is_file():
        return None
    try:
        source = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is malformed ({type(error).__name__}: {error}); delete it to measure again") from None
    if not isinstance(source, dict):
        raise ValueError(f"{path} holds a {type(source).__name__}, not a JSON object; delete it to measure again")
    return source


_REWRITES_SPACE = (
    "`ofa query`, `ofa search`, `ofa export` or `ofa finetune` on the run writes it back from the checkpoint"
)


class MissingSpaceFileError(ValueError):
    """A run with a checkpoint but no ``space.json`` (deleted): :func:`ofa.runs.run_space` writes it back."""


def read_run_space(run_dir: str | Path) -> tuple[SearchSpace, int]:
    """The space and class count of a run, read from ``RUN/space.json`` (written when training starts).

    Raises:
        MissingSpaceFileError: the run has a checkpoint but no ``space.json`` (:func:`ofa.runs.run_space` and the
            CLI write it back; they load torch, which this does not).
        ValueError: a missing folder, one that holds neither ``space.json`` nor a checkpoint, or a malformed
            ``space.json``.
    """
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    path = folder.space
    if not run_dir.is_dir():
        raise ValueError(f"run directory not found: {run_dir}")
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return SearchSpace.from_dict(data["space"], source=str(path)), int(data["num_classes"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
            raise ValueError(
                f"{path} is malformed ({type(error).__name__}: {error}); delete it: {_REWRITES_SPACE}"
            ) from None
    if not any(folder.checkpoint(name).is_file() for name in CHECKPOINT_NAMES):
        raise ValueError(f"{run_dir} is not a training run (no {path.name} and no checkpoint): train it first")
    raise MissingSpaceFileError(f"{path} is missing; {_REWRITES_SPACE} (in Python: ofa.runs.run_space)")


def write_run_space(run_dir: str | Path, space: SearchSpace, num_classes: int) -> None:
    """Write ``RUN/space.json`` (the space and class count, read by :func:`read_run_space`) atomically."""
    text = json.dumps({"space": space.to_dict(), "num_classes": num_classes}, indent=1) + "\n"
    write_result(RunFolder(Path(run_dir)).space, text)


def write_result(path: Path, text: str) -> None:
    """Write a result file atomically, readable like the rest of the run (the temp file is private)."""
    atomic_write_text(path, text)
    path.chmod(RESULT_FILE_MODE)
