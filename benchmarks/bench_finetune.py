"""Train once vs training alone on the CIFAR-10 development set: subnet as taken, fine-tuned, from scratch.

For each seed a supernet is trained with the real-data recipe (``configs/train/cifar10.yaml``), or an
existing run is given with ``--runs SEED=DIR``. For each budget the benchmark takes one architecture, the
same for every seed: the best-val arch within the budget among the archs measured in the seed-0 supernet
(``benchmarks/data/cifar10_dev_archs_seed0.csv``, shipped). Each arch is then

- taken from the supernet with BN recalibrated (the test accuracy ``ofa finetune`` records as "before"),
- fine-tuned from the supernet's weights for ``--finetune-epochs`` epochs (``ofa finetune``; ``--kd``
  distils from the largest subnet, as in supernet training),
- trained alone from scratch with the recipe for as many epochs as the supernet was trained
  (``ofa finetune --from-scratch``; every seed's scratch job reads the recipe and the data from the first
  seed's run, so it need not wait for the other supernets: initialisation, shuffling and dropout follow the
  job's seed, the augmentation stream is the first run's).

Test accuracy is reported as mean ± std over seeds, with the compute of each in subnet-epochs (the supernet's
``epochs x sampler.num_subnets`` pays for every budget at once). Every job writes a normal export under
``OUT/s<seed>/<budget>M/<variant>/`` and is skipped when it exists; ``--jobs 2`` runs two processes that claim
jobs, so a killed benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.bench_sampling import _claim
from ofa.runfolder import RunFolder

if TYPE_CHECKING:
    from ofa.finetune import FinetuneSettings

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "configs" / "train" / "cifar10.yaml"
ARCH_DATA = ROOT / "benchmarks" / "data" / "cifar10_dev_archs_seed0.csv"
BUDGETS = (1.5, 3.0, 6.0, 11.4)  # MMACs; 11.4 admits the largest subnet (11.3)
FINETUNE_EPOCHS = 4


def variants(distill: bool, scratch: bool = True, finetune_epochs: int = FINETUNE_EPOCHS) -> tuple[str, ...]:
    """The job variants: fine-tuned (``finetune-<E>ep`` distilled, ``finetune-labels-<E>ep`` on the labels) and
    scratch."""
    tuned = f"finetune-{finetune_epochs}ep" if distill else f"finetune-labels-{finetune_epochs}ep"
    return (tuned, *(("scratch",) if scratch else ()))


@dataclass(frozen=True)
class Job:
    """One subnet to train: a seed, a budget and a variant."""

    seed: int
    budget: float
    variant: str

    def folder(self, out: Path) -> Path:
        """Where its export goes."""
        return out / f"s{self.seed}" / f"{self.budget:.1f}M" / self.variant


def chosen_archs(budgets: Sequence[float], arch_data: Path = ARCH_DATA) -> dict[float, dict]:
    """Per budget, the best-val arch (as a dict) within it among the measured archs of ``arch_data``."""
    from ofa.space import load_space
    from predictors.dataset import read_arch_csv

    records = read_arch_csv(arch_data, load_space("cifar"))
    chosen = {}
    for budget in budgets:
        fitting = [record for record in records if record.mmacs <= budget]
        if not fitting:
            raise ValueError(f"no measured arch in {arch_data} fits {budget} MMACs")
        chosen[budget] = max(fitting, key=lambda record: (record.val_acc, -record.mmacs)).arch.to_dict()
    return chosen


def train_supernet(seed: int, data: Path, out: Path, epochs: int | None = None) -> Path:
    """Train (or continue) the recipe's supernet of ``seed`` into ``OUT/supernet-s<seed>`` (``epochs``: the
    recipe's unless given)."""
    from ofa.pipeline import train_or_continue
    from ofa.train_config import load_train_config

    overrides = (f"seed={seed}", f"name=supernet-s{seed}", f"out_dir={out}", f"data.root={data}")
    overrides += (f"epochs={epochs}",) if epochs is not None else ()
    config = load_train_config(RECIPE, overrides)
    train_or_continue(config, progress=False, prefix=f"[supernet s{seed}] ")
    return config.run_dir


def run_job(job: Job, run_dir: Path, arch: dict, out: Path, finetune_epochs: int, distill: bool) -> bool:
    """Train one job unless it is done or another process holds it; True when its export exists."""
    from ofa.finetune import FinetuneSettings, finetune_subnet
    from ofa.runs import load_run
    from ofa.train_config import load_train_config

    target = job.folder(out)
    recipe = load_train_config(RunFolder(run_dir).config)
    scratch = job.variant == "scratch"
    settings = FinetuneSettings(
        epochs=recipe.epochs if scratch else finetune_epochs,
        distill=distill and not scratch,
        from_scratch=scratch,
        seed=job.seed,
    )
    if (target / "arch.json").is_file():
        _check_done(target, settings, settings.learning_rate(recipe.optim.lr))
        return True
    target.parent.mkdir(parents=True, exist_ok=True)
    claim = target.parent / f".{job.variant}.claim"
    if not _claim(claim):
        return False
    try:
        run = load_run(run_dir)
        started = time.perf_counter()
        finetune_subnet(run, run.space.arch_from_dict(arch), settings, target, progress=False)
        print(f"[{job.variant} s{job.seed} {job.budget:g}M] done in {time.perf_counter() - started:.0f} s", flush=True)
        return True
    finally:
        claim.unlink(missing_ok=True)


def _check_done(target: Path, settings: FinetuneSettings, lr: float) -> None:
    """A finished job's export must have been made with the job's settings (an older default lr, other epochs
    or another start would be reported under this job's name): a ``ValueError`` naming both otherwise."""
    from ofa.export import read_export_info

    made = read_export_info(target)["metadata"]
    expected = {"epochs": settings.epochs, "distill": int(settings.distill), "seed": settings.seed}
    recorded = {key: made.get(key) for key in expected}
    if recorded != expected or not math.isclose(made.get("lr", 0.0), lr, rel_tol=1e-9):
        raise ValueError(
            f"{target} was made with {recorded | {'lr': made.get('lr')}}, this job asks {expected | {'lr': lr}}: "
            "move it away (or give another --out) to measure again"
        )


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"


def summarise(
    out: Path, seeds: Sequence[int], budgets: Sequence[float], run_dirs: dict[int, Path], tuned: str = "finetune"
) -> list[list]:
    """One row per budget: MMACs, test accuracy of each variant (mean ± std), differences, compute."""
    from ofa.compare import subnet_passes
    from ofa.export import read_export_info
    from ofa.train_config import load_train_config

    recipe = load_train_config(RunFolder(run_dirs[seeds[0]]).config)
    supernet_cost = subnet_passes(recipe, 1)  # subnet-epochs (progressive shrinking: its phases' subnets)
    rows = []
    for budget in budgets:
        taken, tuned_acc, scratch, gaps, gains, mmacs, epochs = [], [], [], [], [], 0.0, 0
        for seed in seeds:
            tuned_info = read_export_info(Job(seed, budget, tuned).folder(out))
            mmacs, epochs = tuned_info["mmacs"], tuned_info["metadata"]["epochs"]
            taken.append(tuned_info["metadata"]["test_acc_before"])
            tuned_acc.append(tuned_info["metadata"]["test_acc"])
            if not (Job(seed, budget, "scratch").folder(out) / "arch.json").is_file():
                continue  # --skip-scratch
            scratch.append(read_export_info(Job(seed, budget, "scratch").folder(out))["metadata"]["test_acc"])
            gaps.append(taken[-1] - scratch[-1])
            gains.append(tuned_acc[-1] - scratch[-1])
        rows.append(
            [
                f"{budget:g}",
                f"{mmacs:.2f}",
                _mean_std(taken),
                _mean_std(tuned_acc),
                _mean_std(scratch),
                _mean_std(gaps),
                _mean_std(gains),
                f"{supernet_cost} shared",
                f"{supernet_cost} + {epochs}",
                f"{recipe.epochs}",
            ]
        )
    return rows


HEADER = [
    "budget (MMACs)",
    "arch MMACs",
    "as taken (test %)",
    "fine-tuned",
    "from scratch",
    "taken - scratch",
    "fine-tuned - scratch",
    "compute taken (subnet-epochs)",
    "fine-tuned",
    "scratch",
]


def main(
    data: str | Path,
    out: str | Path,
    seeds: Sequence[int],
    run_dirs: dict[int, Path],
    finetune_epochs: int = FINETUNE_EPOCHS,
    distill: bool = True,
    jobs: int = 1,
    worker: bool = False,
    epochs: int | None = None,
    scratch: bool = True,
) -> list[list]:
    """Run every job not yet done (``jobs`` processes), then print and write the summary table.

    ``epochs`` trains the supernets that long instead of the recipe's epochs (scratch follows the supernet);
    without ``scratch`` only the subnets taken from the supernets and fine-tuned are measured.
    """
    data, out = Path(data).resolve(), Path(out)
    if not (data / "train").is_dir():
        raise ValueError(f"--data {data}: expected the CIFAR-10 development set there (train/, val/, test/)")
    out.mkdir(parents=True, exist_ok=True)
    archs = chosen_archs(BUDGETS)
    helper_command = helper_command_of(data, out, seeds, run_dirs, finetune_epochs, distill, epochs, scratch)
    helpers = [] if worker else [subprocess.Popen(helper_command, cwd=ROOT) for _ in range(max(0, jobs - 1))]
    for seed in seeds:
        if seed not in run_dirs and _claim(out / f".supernet-s{seed}.claim"):
            try:
                run_dirs[seed] = train_supernet(seed, data, out, epochs)
            finally:
                (out / f".supernet-s{seed}.claim").unlink(missing_ok=True)
    recipe_run = run_dirs.get(seeds[0])  # scratch needs the recipe and the data, not the supernet's weights
    for seed in seeds:
        for variant in variants(distill, scratch, finetune_epochs):
            run_dir = recipe_run if variant == "scratch" else run_dirs.get(seed)
            for budget in BUDGETS if run_dir is not None else ():
                run_job(Job(seed, budget, variant), run_dir, archs[budget], out, finetune_epochs, distill)
    for helper in helpers:
        helper.wait()
    if worker:
        return []
    jobs_asked = _jobs(seeds, distill, scratch, finetune_epochs)
    missing = [str(job.folder(out)) for job in jobs_asked if not (job.folder(out) / "arch.json").is_file()]
    if missing:
        raise RuntimeError(f"jobs not finished (another process may still hold them): {', '.join(missing)}")
    for seed in seeds:
        run_dirs.setdefault(seed, out / f"supernet-s{seed}")
    rows = summarise(out, seeds, BUDGETS, run_dirs, variants(distill, finetune_epochs=finetune_epochs)[0])
    _write(out, rows, len(seeds), finetune_epochs, distill)
    return rows


def _jobs(seeds: Sequence[int], distill: bool, scratch: bool, finetune_epochs: int) -> list[Job]:
    every = variants(distill, scratch, finetune_epochs)
    return [Job(seed, budget, variant) for seed in seeds for variant in every for budget in BUDGETS]


def helper_command_of(
    data: Path,
    out: Path,
    seeds: Sequence[int],
    run_dirs: dict[int, Path],
    finetune_epochs: int,
    distill: bool,
    epochs: int | None,
    scratch: bool,
) -> list[str]:
    """The command of a helper process: the same settings as this one, running claimed jobs only."""
    command = [sys.executable, "-m", "benchmarks.bench_finetune", "--data", str(data), "--out", str(out)]
    command += ["--seeds", ",".join(map(str, seeds)), "--finetune-epochs", str(finetune_epochs), "--worker"]
    command += [f"--runs={seed}={folder}" for seed, folder in run_dirs.items()]
    command += [] if epochs is None else [f"--epochs={epochs}"]
    return command + ([] if distill else ["--no-kd"]) + ([] if scratch else ["--skip-scratch"])


def _write(out: Path, rows: Sequence[Sequence[str]], seeds: int, finetune_epochs: int, distill: bool) -> None:
    from ofa.atomic import atomic_write_text

    title = (
        f"Train once vs alone, CIFAR-10 dev set, test accuracy mean ± std over {seeds} seeds "
        f"(fine-tuned {finetune_epochs} epochs{', distilled' if distill else ''})"
    )
    lines = [title, "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    stem = variants(distill, scratch=False, finetune_epochs=finetune_epochs)[0]  # one table per fine-tuning setting
    atomic_write_text(out / f"{stem}.md", text)
    atomic_write_text(out / f"{stem}.json", json.dumps({"header": HEADER, "rows": rows}, indent=1))


def _run_dirs(values: Sequence[str]) -> dict[int, Path]:
    run_dirs = {}
    for value in values:
        seed, separator, folder = value.partition("=")
        if not separator or not seed.isdigit():
            raise ValueError(f"--runs {value!r}: expected SEED=RUN_DIR, e.g. 0=runs/cifar10")
        run_dirs[int(seed)] = Path(folder)
    return run_dirs


def cli(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_finetune", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("OFA_DEV_DATA"), help="the CIFAR-10 dev set folder")
    parser.add_argument("--out", default="runs/bench_finetune")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--runs", action="append", default=[], metavar="SEED=DIR", help="use a trained supernet")
    parser.add_argument("--epochs", type=int, help="supernet epochs (default: the recipe's); scratch gets as many")
    parser.add_argument("--finetune-epochs", type=int, default=FINETUNE_EPOCHS)
    parser.add_argument("--no-kd", action="store_true", help="fine-tune on the labels instead of distilling")
    parser.add_argument("--jobs", type=int, default=1, help="processes (one core each)")
    parser.add_argument("--worker", action="store_true", help="run claimed jobs only, no summary")
    parser.add_argument("--skip-scratch", action="store_true", help="only the taken and fine-tuned subnets")
    args = parser.parse_args(argv)
    if not args.data:
        parser.error("give --data PATH (or set OFA_DEV_DATA) to the extracted cifar10-dev folder")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    main(
        args.data,
        args.out,
        seeds,
        _run_dirs(args.runs),
        args.finetune_epochs,
        not args.no_kd,
        args.jobs,
        args.worker,
        args.epochs,
        not args.skip_scratch,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
