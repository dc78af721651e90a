"""Latency budgets on a real (tiny, briefly trained) run: ``ofa search|query|export --latency``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ofa.cli import main
from ofa.deploy import LATENCY_PARETO_COLUMNS
from ofa.export import read_export_info
from ofa.latency_models import LatencyEstimator, fit_estimator
from ofa.space import load_space
from tests.conftest import seeded_archs
from tests.test_latency import synthetic_table

QUICK = ["--population", "16", "--generations", "2", "--finalists", "1"]


@pytest.fixture(scope="module")
def estimator_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LatencyEstimator]:
    """A table estimator of the tiny space (10 classes) with synthetic layer timings."""
    tiny = load_space("tiny")
    table = synthetic_table(tiny)
    archs = seeded_archs(tiny, 40)
    estimator = fit_estimator("table", tiny, 10, table.fingerprint, archs, 1.1 * table.layer_sum(archs) + 0.2, table)
    path = tmp_path_factory.mktemp("latency") / "estimator.json"
    estimator.save(path)
    return path, estimator


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("tensorboard"))
    return target


def test_search_query_and_export_under_latency_budgets(
    trained_run: Path, tmp_path: Path, estimator_file: tuple[Path, LatencyEstimator], capsys
) -> None:
    path, estimator = estimator_file
    run = copy_run(trained_run, tmp_path / "run")
    fastest = estimator.fastest_ms
    budgets = [round(fastest * 1.5, 3), round(fastest * 3, 3)]
    text = ",".join(f"{budget}ms" for budget in budgets)
    assert main(["search", str(run), "--latency", text, "--latency-model", str(path), *QUICK]) == 0
    assert "pareto-latency.json" in capsys.readouterr().out
    summary = json.loads((run / "search" / "pareto-latency.json").read_text())
    assert summary["objective"] == "latency_ms" and summary["device"] == estimator.fingerprint.to_dict()
    space = load_space("tiny")
    for budget, chosen in zip(budgets, summary["chosen"]):
        assert chosen["budget_latency_ms"] == pytest.approx(budget)
        assert chosen["latency_ms"] <= budget + 1e-9
        predicted = estimator.predict([space.arch_from_dict(chosen["arch"])])[0]
        assert chosen["latency_ms"] == pytest.approx(predicted, rel=1e-9)
    with (run / "search" / "pareto-latency.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == LATENCY_PARETO_COLUMNS and len(rows) == len(budgets)
    for row, chosen in zip(rows, summary["chosen"]):
        assert None not in row  # no cell beyond the header
        assert float(row["latency_ms"]) == pytest.approx(chosen["latency_ms"], abs=1e-6)
        assert float(row["test_acc"]) == pytest.approx(chosen["test_acc"], abs=1e-6)
    assert (run / "search" / "pareto-latency.png").stat().st_size > 0
    assert not (run / "search" / "pareto.json").exists()  # the MACs front is a different file

    assert main(["query", str(run), "--latency", f"{budgets[1]}ms", "--latency-model", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    answer = space.arch_from_dict(json.loads(lines[-1]))
    assert estimator.predict([answer])[0] <= budgets[1] + 1e-9 and "ms" in lines[1]

    out = tmp_path / "export"
    command = ["export", str(run), "--latency", f"{budgets[0]}ms", "--latency-model", str(path), "--out", str(out)]
    assert main(command) == 0
    exported = space.arch_from_dict(read_export_info(out)["arch"])
    assert estimator.predict([exported])[0] <= budgets[0] + 1e-9


def test_latency_budget_below_the_fastest_subnet_is_refused(
    trained_run: Path, estimator_file: tuple[Path, LatencyEstimator], capsys
) -> None:
    path, estimator = estimator_file
    fastest = estimator.fastest_ms
    for command in ("search", "query"):
        option = "--latency"
        code = main([command, str(trained_run), option, f"{fastest / 2}ms", "--latency-model", str(path)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and f"{fastest:.4g} ms" in err


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["--latency", "5ms"], "need a latency estimator"),
        (["--latency", "5 fps", "--latency-model", "{model}"], "malformed latency budget"),
        (["--latency", "5ms", "--latency-model", "{tmp}/missing.json"], "not found"),
        (["--flops", "5M", "--latency-model", "{model}"], "--latency-model applies to --latency"),
    ],
)
def test_bad_latency_input_is_one_line(
    trained_run: Path,
    tmp_path: Path,
    estimator_file: tuple[Path, LatencyEstimator],
    capsys,
    arguments: list[str],
    fragment: str,
) -> None:
    run = copy_run(trained_run, tmp_path / "run")
    filled = [item.replace("{model}", str(estimator_file[0])).replace("{tmp}", str(tmp_path)) for item in arguments]
    code = main(["query", str(run), *filled])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err
    assert not np.any([path.name.startswith("pareto-latency") for path in (run / "search").glob("*")])
