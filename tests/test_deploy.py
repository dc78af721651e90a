"""Deploy many, end to end on a real (tiny, briefly trained) run directory: search, query, export, CLI errors."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ofa
import ofa.export
from ofa.bn import recalibrate_bn, resize_to
from ofa.budget import BUDGET_FORMS, smallest_mmacs
from ofa.checkpoint import atomic_save
from ofa.cli import main
from ofa.cost_axis import mac_axis
from ofa.data import calibration_images
from ofa.deploy import PARETO_COLUMNS, export_from_run, pareto_figure, search_run
from ofa.evaluate import Evaluation, evaluate_model
from ofa.export import load_subnet, read_export_info
from ofa.flops import count_macs, count_macs_many, count_params
from ofa.pareto import pareto_front
from ofa.query import ChosenSubnet, find_predictor, query_run
from ofa.runfolder import MissingSpaceFileError, RunFolder, read_run_space, source_record_path
from ofa.runs import LoadedRun, load_run, run_space
from ofa.search import SearchSettings, search_budgets
from ofa.space import Arch, SearchSpace, load_space
from ofa.train_config import load_train_config
from predictors.models import create_predictor

TINY = load_space("tiny")
NUM_CLASSES = 10  # digits
SMALLEST = smallest_mmacs(TINY, NUM_CLASSES)
LARGEST = float(count_macs(TINY, TINY.max_arch(), NUM_CLASSES)) / 1e6
QUICK = SearchSettings(population=16, generations=3, seed=0)
BUDGETS = [0.6, 1.5, 3.0]
OFA = [sys.executable, "-m", "ofa.cli"]


# ----------------------------------------------------------------------------------------------------
# fixtures: one briefly trained run (session), cheap predictors, copies to write into
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def loaded(trained_run: Path) -> LoadedRun:
    """The trained run reopened (shared: every evaluation recalibrates BN for its arch first)."""
    return load_run(trained_run)


def copy_run(source: Path, target: Path, checkpoints: bool = True) -> Path:
    """A copy of a run directory to write into (optionally without its checkpoints)."""
    ignore = shutil.ignore_patterns("checkpoints", "tensorboard") if not checkpoints else None
    shutil.copytree(source, target, ignore=ignore)
    return target


@pytest.fixture()
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    return copy_run(trained_run, tmp_path / "run")


@pytest.fixture(scope="module")
def cost_predictors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Predictor files of the tiny space that need no training: score = MACs, score = parameters."""
    folder = tmp_path_factory.mktemp("predictors")
    paths = {}
    for model in ("macs", "params"):
        predictor = create_predictor(model, TINY, num_classes=NUM_CLASSES)
        predictor.fit([TINY.min_arch(), TINY.max_arch()], np.array([0.1, 0.9]))
        paths[model] = folder / f"{model}.json"
        predictor.save(paths[model])
    return paths


@pytest.fixture(scope="module")
def foreign_predictor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LightGBM predictor fitted on a few synthetic rows of the ofa_mbv3 space."""
    import random

    space = load_space("ofa_mbv3")
    rng = random.Random(0)
    archs = [space.min_arch(), space.max_arch()] + [space.sample(rng) for _ in range(10)]
    targets = np.linspace(0.5, 0.8, len(archs))
    path = tmp_path_factory.mktemp("foreign") / "mbv3.json"
    create_predictor("lightgbm", space).fit(archs, targets).save(path)
    return path


@dataclasses.dataclass
class StubRun:
    """Stands in for a LoadedRun where only the search is under test: evaluation is a cheap known function."""

    run_dir: Path
    space: SearchSpace = TINY
    num_classes: int = NUM_CLASSES
    calls: list[tuple[Arch, str]] = dataclasses.field(default_factory=list)
    measurement_source: dict[str, object] = dataclasses.field(default_factory=lambda: {"checkpoint_sha256": "stub"})

    def evaluate(self, arch: Arch, split: str = "val") -> Evaluation:
        self.calls.append((arch, split))
        macs = count_macs(self.space, arch, self.num_classes) / 1e6
        accuracy = 1 - 0.5 * np.exp(-macs) - (0.01 if split == "test" else 0.0)
        return Evaluation(float(accuracy), 0.0, 100)


def cli(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``ofa`` in this process; exit code, stdout and stderr."""
    code = main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """Exit code 2 and exactly one line on stderr, naming every fragment (no traceback)."""
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ----------------------------------------------------------------------------------------------------
# budgets are always met
# ----------------------------------------------------------------------------------------------------

budget_lists = st.lists(st.floats(min_value=SMALLEST, max_value=1.2 * LARGEST), min_size=1, max_size=3)


@settings(max_examples=25, deadline=None)
@given(budgets=budget_lists, seed=st.integers(0, 1000), model=st.sampled_from(["macs", "params"]))
def test_search_run_answers_fit_their_budgets(
    budgets: list[float], seed: int, model: str, cost_predictors: dict[str, Path], tmp_path_factory
) -> None:
    from predictors.models import load_predictor

    run = StubRun(tmp_path_factory.mktemp("stub"))
    predictor = load_predictor(cost_predictors[model], TINY)
    settings_ = dataclasses.replace(QUICK, seed=seed)
    chosen, summary = search_run(run, budgets, predictor, settings_, finalists=2, plot=False)
    assert [subnet.budget for subnet in chosen] == pytest.approx(budgets)
    for subnet, budget in zip(chosen, budgets):
        exact = count_macs(TINY, subnet.arch, NUM_CLASSES) / 1e6
        assert exact <= budget + 1e-9
        assert subnet.mmacs == pytest.approx(exact, abs=0)
    for result in summary["search"]["results"]:
        for point in result["top"] + result["front"]:
            arch = TINY.arch_from_dict(point["arch"])
            assert count_macs(TINY, arch, NUM_CLASSES) / 1e6 <= result["budget_mmacs"] + 1e-9


@dataclasses.dataclass
class FlatRun(StubRun):
    """Every arch measures the same: the choice among finalists falls to the tie-breaks."""

    def evaluate(self, arch: Arch, split: str = "val") -> Evaluation:
        self.calls.append((arch, split))
        return Evaluation(0.5, 0.0, 100)


def test_finalist_ties_go_to_the_cheaper(cost_predictors: dict[str, Path], tmp_path: Path) -> None:
    from predictors.models import load_predictor

    run = FlatRun(tmp_path / "flat")
    predictor = load_predictor(cost_predictors["params"], TINY)
    chosen, summary = search_run(run, BUDGETS, predictor, QUICK, finalists=4, plot=False)
    evaluated = [arch for arch, split in run.calls if split == "val"]
    assert len(evaluated) == len(set(evaluated)) >= 4  # every finalist evaluated, none twice
    for subnet, result in zip(chosen, summary["search"]["results"]):
        assert len(result["top"]) == 4
        # every measured arch within the budget ties on val: the cheapest wins, then the better predicted
        inside = [
            (count_macs(TINY, arch, NUM_CLASSES) / 1e6, -float(predictor.predict([arch])[0]))
            for arch in evaluated
            if count_macs(TINY, arch, NUM_CLASSES) / 1e6 <= subnet.budget
        ]
        assert (subnet.mmacs, -subnet.predicted_acc) == min(inside)
    tested = [arch for arch, split in run.calls if split == "test"]
    assert len(tested) == len(set(tested)) and set(tested) == {subnet.arch for subnet in chosen}


@pytest.mark.parametrize("recorded", ["stub", "other weights"])
def test_search_reuses_measured_archs_only_from_the_same_weights(
    recorded: str, cost_predictors: dict[str, Path], tmp_path: Path, capsys
) -> None:
    """An arch in RUN/archs.csv competes with the finalists only if it was measured on the run's weights."""
    from predictors.dataset import ArchRecord, write_arch_csv
    from predictors.models import load_predictor

    run = StubRun(tmp_path / "run")
    run.run_dir.mkdir()
    arch = TINY.min_arch()  # within every budget, measured far above what the stub run measures
    mmacs = count_macs(TINY, arch, NUM_CLASSES) / 1e6
    params = count_params(TINY, arch, NUM_CLASSES)
    record = ArchRecord(TINY.name, arch, mmacs, params, arch.resolution, 0.99, 0.98, 0.1, 0)
    write_arch_csv(run.run_dir / "archs.csv", [record])
    source_record_path(run.run_dir / "archs.csv").write_text(json.dumps({"checkpoint_sha256": recorded}))
    predictor = load_predictor(cost_predictors["macs"], TINY)
    chosen, _ = search_run(run, BUDGETS, predictor, QUICK, finalists=2, plot=False)
    reused = [subnet.val_acc == 0.99 for subnet in chosen]
    if recorded == "stub":
        assert all(reused) and "not reused" not in capsys.readouterr().err
    else:
        assert not any(reused) and "not reused" in capsys.readouterr().err


@pytest.fixture(scope="module")
def query_dir(trained_run: Path, tmp_path_factory: pytest.TempPathFactory, cost_predictors: dict[str, Path]) -> Path:
    """A run copy without checkpoints (queries need none) with a saved search, so both answer paths run."""
    from predictors.models import load_predictor

    folder = copy_run(trained_run, tmp_path_factory.mktemp("query") / "run", checkpoints=False)
    predictor = load_predictor(cost_predictors["params"], TINY)
    source = load_train_config(RunFolder(folder).config).measurement_source(None)  # the weights of a run without any
    search_run(StubRun(folder, measurement_source=source), BUDGETS, predictor, QUICK, finalists=1, plot=False)
    return folder


@settings(max_examples=25, deadline=None)
@given(
    budget=st.floats(min_value=SMALLEST, max_value=1.2 * LARGEST),
    model=st.sampled_from(["macs", "params"]),
    form=st.sampled_from(["number", "M", "K"]),
)
def test_query_answer_fits_its_budget(budget: float, model: str, form: str, query_dir: Path, cost_predictors) -> None:
    text: str | float = {"number": budget, "M": f"{budget!r}M", "K": f"{budget * 1000!r}K"}[form]
    answer = query_run(query_dir, text, cost_predictors[model], settings=QUICK)
    exact = count_macs(TINY, answer.arch, NUM_CLASSES) / 1e6
    assert exact <= answer.budget + 1e-9
    assert answer.budget == pytest.approx(budget, rel=1e-12)
    assert answer.mmacs == pytest.approx(exact, abs=1e-12)
    assert answer.params == count_params(TINY, answer.arch, NUM_CLASSES)


def test_query_at_the_smallest_budget_gives_the_smallest_subnet(query_dir: Path, cost_predictors) -> None:
    answer = query_run(query_dir, SMALLEST, cost_predictors["macs"], settings=QUICK)
    assert answer.arch == TINY.min_arch()


def test_query_prefers_the_better_saved_choice(query_dir: Path, cost_predictors) -> None:
    """With the predictor that saved the search, a query at a saved budget scores at least the saved choice."""
    from predictors.models import load_predictor

    saved = json.loads((query_dir / "search" / "pareto.json").read_text())["chosen"]
    predictor = load_predictor(cost_predictors["params"], TINY)
    tiny_settings = SearchSettings(population=2, generations=0, seed=0)  # a weak search: the saved one wins
    for item in saved:
        answer = query_run(query_dir, item["budget_mmacs"], cost_predictors["params"], settings=tiny_settings)
        saved_arch = TINY.arch_from_dict(item["arch"])
        assert answer.predicted_acc >= float(predictor.predict([saved_arch])[0])
        if answer.arch == saved_arch:
            assert (answer.val_acc, answer.test_acc) == (item["val_acc"], item["test_acc"])


def test_query_does_not_report_accuracies_measured_on_other_weights(
    query_dir: Path, tmp_path: Path, cost_predictors, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once the run's final weights change (training resumed), the saved search's accuracies are stale."""
    saved = json.loads((query_dir / "search" / "pareto.json").read_text())["chosen"]
    tiny_settings = SearchSettings(population=2, generations=0, seed=0)
    fresh = [
        query_run(query_dir, item["budget_mmacs"], cost_predictors["params"], settings=tiny_settings) for item in saved
    ]
    assert any(answer.val_acc is not None for answer in fresh)
    assert "measured on other weights" not in capsys.readouterr().err
    stale_dir = copy_run(query_dir, tmp_path / "run")
    latest = RunFolder(stale_dir).checkpoint("latest")
    latest.parent.mkdir(parents=True)
    latest.write_bytes(b"weights of a longer training")  # a query hashes the file, it never loads it
    for item, before in zip(saved, fresh):
        answer = query_run(stale_dir, item["budget_mmacs"], cost_predictors["params"], settings=tiny_settings)
        assert answer.arch == before.arch
        assert (answer.val_acc, answer.test_acc) == (None, None)
    assert "pareto.json: measured on other weights or calibration" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# infeasible budgets fail at once
# ----------------------------------------------------------------------------------------------------


def test_infeasible_budget_is_refused_at_once(query_dir: Path, tmp_path: Path, cost_predictors) -> None:
    smallest = f"{SMALLEST:.6g}"
    # the budget is checked before the predictor is read: a missing predictor file is not reached
    with pytest.raises(ValueError, match=rf"below the smallest subnet.*{smallest} MMACs"):
        query_run(query_dir, SMALLEST * 0.99, tmp_path / "missing.json")
    with pytest.raises(ValueError, match=rf"{smallest} MMACs"):
        query_run(query_dir, "100K")
    run = StubRun(tmp_path / "stub")
    from predictors.models import load_predictor

    predictor = load_predictor(cost_predictors["macs"], TINY)
    with pytest.raises(ValueError, match=rf"{smallest} MMACs"):
        search_run(run, [2.0, 0.05], predictor, QUICK)
    assert run.calls == []  # nothing evaluated: refused before any work, not after a slow search
    assert not (tmp_path / "stub").exists()  # nothing written


def test_cli_infeasible_budget_is_refused_before_loading_the_supernet(
    trained_run: Path, tmp_path: Path, capsys
) -> None:
    """The budget error comes first: a run without checkpoints shows it, not the missing checkpoint."""
    folder = copy_run(trained_run, tmp_path / "run", checkpoints=False)
    for command in (["search", folder, "--budgets", "1M,0.05M"], ["query", folder, "--flops", "0.05M"]):
        code, _, err = cli(command, capsys)
        assert_one_line_error(code, err, "below the smallest subnet", f"{SMALLEST:.6g} MMACs")
    code, _, err = cli(["export", folder, "--flops", "50K", "--out", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, f"{SMALLEST:.6g} MMACs")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------
# search_run on the real run: files, consistency, reproducibility
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def searched(loaded: LoadedRun, trained_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """search_run on a copy of the trained run with the run's own (LightGBM) predictor."""
    folder = copy_run(trained_run, tmp_path_factory.mktemp("searched") / "run")
    run = dataclasses.replace(loaded, run_dir=folder)
    predictor = find_predictor(folder, run.space, num_classes=run.num_classes)
    chosen, summary = search_run(run, BUDGETS, predictor, QUICK, finalists=2)
    return run, chosen, summary


def test_search_writes_json_csv_and_png(searched) -> None:
    run, chosen, summary = searched
    folder = run.run_dir / "search"
    assert json.loads((folder / "pareto.json").read_text()) == summary
    assert (folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "pareto.png").stat().st_size > 10_000
    with (folder / "pareto.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == PARETO_COLUMNS
    assert len(rows) == len(summary["chosen"]) == len(chosen) == len(BUDGETS)
    for row, item, subnet, budget in zip(rows, summary["chosen"], chosen, BUDGETS):
        arch = run.space.arch_from_dict(json.loads(row["arch"]))
        assert arch == run.space.arch_from_dict(item["arch"]) == subnet.arch
        exact = count_macs(run.space, arch, run.num_classes) / 1e6
        assert float(row["mmacs"]) == pytest.approx(exact, abs=1e-6)
        assert item["mmacs"] == pytest.approx(exact, abs=1e-12)
        assert exact <= budget
        assert float(row["budget_mmacs"]) == item["budget_mmacs"] == budget
        assert int(row["params"]) == item["params"] == count_params(run.space, arch, run.num_classes)
        for column in ("predicted_acc", "val_acc", "test_acc"):
            assert float(row[column]) == pytest.approx(item[column], abs=1e-6)


def test_search_reports_real_accuracies(searched) -> None:
    """val and test accuracy of each chosen subnet are what the supernet measures; val is at least the best
    finalist's, and never lower than a smaller budget's (measured archs compete within every larger budget)."""
    run, chosen, summary = searched
    for subnet, result in zip(chosen, summary["search"]["results"]):
        assert subnet.val_acc == run.evaluate(subnet.arch, "val").accuracy
        assert subnet.test_acc == run.evaluate(subnet.arch, "test").accuracy
        finalists = [run.space.arch_from_dict(point["arch"]) for point in result["top"]]
        assert subnet.val_acc >= max(run.evaluate(arch, "val").accuracy for arch in finalists)
    by_budget = sorted(chosen, key=lambda subnet: subnet.budget)
    assert all(a.val_acc <= b.val_acc for a, b in itertools.pairwise(by_budget))


def test_search_front_is_nondominated_and_sorted(
    loaded: LoadedRun, trained_run: Path, cost_predictors: dict[str, Path], tmp_path: Path
) -> None:
    """With a score that grows with MACs the front has many points: sorted, non-dominated, costs exact."""
    from predictors.models import load_predictor

    run = dataclasses.replace(loaded, run_dir=copy_run(trained_run, tmp_path / "run"))
    predictor = load_predictor(cost_predictors["macs"], TINY)
    _, summary = search_run(run, BUDGETS, predictor, QUICK, finalists=1, plot=False)
    front = summary["search"]["front"]
    costs = np.array([point["mmacs"] for point in front])
    scores = np.array([point["score"] for point in front])
    assert len(front) >= 2
    assert np.all(np.diff(costs) > 0) and np.all(np.diff(scores) > 0)
    assert sorted(pareto_front(costs, scores).tolist()) == list(range(len(front)))
    archs = [run.space.arch_from_dict(point["arch"]) for point in front]
    assert np.array_equal(count_macs_many(run.space, archs, run.num_classes) / 1e6, costs)


def test_same_seed_same_pareto_files(searched, trained_run: Path, tmp_path: Path) -> None:
    """A second search in a fresh copy (predictor fitted again from archs.csv) writes identical files."""
    first_run, _, _ = searched
    folder = copy_run(trained_run, tmp_path / "again")
    run = dataclasses.replace(first_run, run_dir=folder)
    predictor = find_predictor(folder, run.space, num_classes=run.num_classes)
    search_run(run, BUDGETS, predictor, QUICK, finalists=2, plot=False)
    for name in ("pareto.json", "pareto.csv"):
        assert (folder / "search" / name).read_bytes() == (first_run.run_dir / "search" / name).read_bytes()
    # and the predictor saved by the first search gives the same files as the one fitted now
    saved = find_predictor(first_run.run_dir, run.space)
    search_run(run, BUDGETS, saved, QUICK, finalists=2, plot=False)
    assert (folder / "search" / "pareto.json").read_bytes() == (first_run.run_dir / "search/pareto.json").read_bytes()


def test_pareto_figure_shows_cloud_fronts_and_choices() -> None:
    archs = [TINY.min_arch(), TINY.max_arch()]
    result = search_budgets(TINY, lambda batch: count_macs_many(TINY, batch, NUM_CLASSES) / 1e6, [1.0, 2.0], QUICK)
    chosen = [
        ChosenSubnet(budget, arch, count_macs(TINY, arch, NUM_CLASSES) / 1e6, 1, 0.5, 0.5, 0.5)
        for budget, arch in zip(result.budgets, [r.best_arch for r in result.results])
    ]
    cloud = (np.array([0.2, 1.0, 3.0]), np.array([0.3, 0.4, 0.6]))
    figure = pareto_figure(
        chosen, result, cloud, {arch: (0.2, 0.2) for arch in archs}, mac_axis(TINY, NUM_CLASSES), TINY.name
    )
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert labels == [
        "random archs (predicted, 3)",
        "measured archs (val)",
        "measured front (val)",
        "predicted front (search)",
        "chosen (val)",
    ]
    chosen_points = figure.axes[0].collections[-1].get_offsets()
    assert np.allclose(chosen_points, [[subnet.mmacs, subnet.val_acc] for subnet in chosen])
    assert figure.axes[0].get_xlabel() == "MMACs"


# ----------------------------------------------------------------------------------------------------
# the run's predictor: cached, refitted when the arch data changes
# ----------------------------------------------------------------------------------------------------


def test_predictor_is_fitted_once_and_refitted_when_arch_data_changes(run_copy: Path) -> None:
    final = run_copy / "predictor" / "final.json"
    assert not final.exists()
    first = find_predictor(run_copy, TINY, num_classes=NUM_CLASSES)
    written = final.stat().st_mtime_ns
    again = find_predictor(run_copy, TINY, num_classes=NUM_CLASSES)
    assert final.stat().st_mtime_ns == written  # loaded, not refitted
    probe = [TINY.min_arch(), TINY.max_arch()]
    assert np.array_equal(first.predict(probe), again.predict(probe))
    # fewer measured archs (a newer archs.csv) -> refitted on them
    lines = (run_copy / "archs.csv").read_text().splitlines(keepends=True)
    time.sleep(0.01)
    (run_copy / "archs.csv").write_text("".join(lines[:5]))
    refitted = find_predictor(run_copy, TINY, num_classes=NUM_CLASSES)
    assert final.stat().st_mtime_ns > written
    assert not np.array_equal(refitted.predict(probe), first.predict(probe))
    # the same rows written again (a newer file, same content) -> kept: the digest decides, not the time
    written = final.stat().st_mtime_ns
    (run_copy / "archs.csv").write_text("".join(lines[:5]))
    find_predictor(run_copy, TINY, num_classes=NUM_CLASSES)
    assert final.stat().st_mtime_ns == written
    # a predictor file without the record of what it was fitted on -> refitted
    source_record_path(run_copy / "predictor" / "final.json").unlink()
    find_predictor(run_copy, TINY, num_classes=NUM_CLASSES)
    assert final.stat().st_mtime_ns > written and source_record_path(run_copy / "predictor" / "final.json").is_file()


def test_a_deleted_space_json_is_written_back_from_the_checkpoint(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = read_run_space(run_copy)
    space_file = run_copy / "space.json"
    space_file.unlink()
    # the light reader (no torch) names the file and the way back ...
    with pytest.raises(MissingSpaceFileError, match=r"space\.json is missing; `ofa query`.*ofa\.runs\.run_space"):
        read_run_space(run_copy)
    # ... the heavy side writes it back from the checkpoint
    assert run_space(run_copy) == expected
    assert space_file.is_file() and read_run_space(run_copy) == expected
    # a damaged space.json is named, with the way back: delete it ...
    space_file.write_text('{"space": ')
    code, _, err = cli(["query", run_copy, "--flops", "2M"], capsys)
    assert_one_line_error(code, err, str(space_file), "malformed", "delete it")
    # ... and the CLI writes it back, even for a query (which loads torch only then)
    space_file.unlink()
    code, out, err = cli(["query", run_copy, "--flops", "2M"], capsys)
    assert code == 0, err
    answer = expected[0].arch_from_dict(json.loads(out.splitlines()[-1]))  # the answer's arch, printed last
    assert count_macs(expected[0], answer, expected[1]) <= 2e6
    assert space_file.is_file() and read_run_space(run_copy) == expected


def test_run_reopens_the_final_weights_unless_best_is_asked(run_copy: Path) -> None:
    checkpoints = run_copy / "checkpoints"
    state = torch.load(checkpoints / "latest.pt", weights_only=True)
    name = "head.classifier.weight"
    final = state["model"][name].clone()
    state["model"][name] = final + 1.0  # best.pt now holds other weights than latest.pt
    atomic_save(state, checkpoints / "best.pt")
    assert torch.equal(load_run(run_copy).supernet.state_dict()[name], final)
    assert torch.equal(load_run(run_copy, "best").supernet.state_dict()[name], final + 1.0)


def test_cli_evaluate_reads_latest_by_default(run_copy: Path, tmp_path: Path, capsys) -> None:
    (run_copy / "checkpoints" / "best.pt").unlink()
    out = tmp_path / "archs.csv"
    code, printed, err = cli(["evaluate", run_copy, "--num-archs", "1", "--val-only", "--out", out], capsys)
    assert code == 0, err
    assert "1 measurements" in printed and out.is_file()
    code, _, err = cli(["evaluate", run_copy, "--num-archs", "1", "--checkpoint", "best", "--out", out], capsys)
    assert_one_line_error(code, err, "best.pt", "no checkpoint")


# ----------------------------------------------------------------------------------------------------
# export from the run
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(loaded: LoadedRun, trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The best subnet within 2 MMACs of a run copy, exported with ONNX."""
    folder = copy_run(trained_run, tmp_path_factory.mktemp("export") / "run")
    out, _ = export_from_run(folder, None, "2M", folder.parent / "subnet", onnx=True)
    return folder, out


@torch.no_grad()
def test_exported_subnet_matches_the_supernet(exported: tuple[Path, Path], loaded: LoadedRun) -> None:
    _, out = exported
    model = ofa.load_subnet(out)
    arch = model.arch
    assert count_macs(TINY, arch, NUM_CLASSES) / 1e6 <= 2.0
    loaded.supernet.set_active(arch)
    recalibrate_bn(loaded.supernet, loaded.calibration_images, arch.resolution)
    loaded.supernet.eval()
    images, _ = next(iter(loaded.val_loader))
    inputs = resize_to(images, arch.resolution)
    expected = loaded.supernet(inputs)
    actual = model(inputs)
    assert actual.shape == (len(images), NUM_CLASSES)
    assert torch.max(torch.abs(actual - expected)).item() <= 1e-5
    assert torch.std(expected).item() > 1e-3  # not a degenerate constant output


def test_exported_accuracy_equals_the_in_supernet_accuracy(exported: tuple[Path, Path], loaded: LoadedRun) -> None:
    _, out = exported
    model = load_subnet(out)
    info = read_export_info(out)
    for split, loader in (("val", loaded.val_loader), ("test", loaded.test_loader)):
        inside = loaded.evaluate(model.arch, split).accuracy
        assert evaluate_model(model, loader, model.resolution).accuracy == inside
        assert info["metadata"][f"{split}_acc"] == inside


def test_exported_onnx_matches_pytorch(exported: tuple[Path, Path], loaded: LoadedRun) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    _, out = exported
    model = load_subnet(out)
    info = read_export_info(out)
    assert info["onnx"]["max_abs_diff"] <= 1e-4
    images, _ = next(iter(loaded.test_loader))
    inputs = resize_to(images, model.resolution)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": inputs.numpy()})
    with torch.no_grad():
        expected = model(inputs).numpy()
    assert logits.shape == expected.shape
    assert np.max(np.abs(logits - expected)) <= 1e-4


def test_export_target_is_refused_unless_forced_and_kept_on_failure(
    exported: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    folder, first = exported
    out = tmp_path / "subnet"
    shutil.copytree(first, out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    arch_file = tmp_path / "min.json"
    arch_file.write_text(TINY.min_arch().to_json())
    code, _, err = cli(["export", folder, "--arch", arch_file, "--out", out], capsys)
    assert_one_line_error(code, err, str(out), "--force")
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before

    def broken(*args: object, **keywords: object) -> float:
        raise ValueError("ONNX output differs from PyTorch by 1 (allowed <= 0.0001)")

    monkeypatch.setattr(ofa.export, "_export_onnx", broken)
    code, _, err = cli(["export", folder, "--arch", arch_file, "--out", out, "--force", "--onnx"], capsys)
    assert_one_line_error(code, err, "ONNX output differs")
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before  # nothing lost
    assert sorted(path.name for path in tmp_path.iterdir()) == ["min.json", "subnet"]  # no staging left
    monkeypatch.undo()

    code, out_text, err = cli(["export", folder, "--arch", arch_file, "--out", out, "--force"], capsys)
    assert code == 0, err
    assert load_subnet(out).arch == TINY.min_arch()
    assert str(out) in out_text


def test_export_to_a_symlink_of_an_export_is_refused_even_with_force(
    exported: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    folder, first = exported
    real, link = tmp_path / "real", tmp_path / "link"
    shutil.copytree(first, real)
    link.symlink_to(real)
    before = {path.name: path.read_bytes() for path in real.iterdir()}
    arch_file = tmp_path / "min.json"
    arch_file.write_text(TINY.min_arch().to_json())
    code, _, err = cli(["export", folder, "--arch", arch_file, "--out", link, "--force"], capsys)
    assert_one_line_error(code, err, str(link), "symbolic link")
    assert {path.name: path.read_bytes() for path in real.iterdir()} == before
    assert link.is_symlink()


# ----------------------------------------------------------------------------------------------------
# bad input: one line, exit code 2 (CLI); ValueError (API)
# ----------------------------------------------------------------------------------------------------

BAD_BUDGETS = ["abc", "-5M", "0", "", "5X"]


@pytest.mark.parametrize("budget", BAD_BUDGETS)
def test_cli_refuses_malformed_budgets(budget: str, trained_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    for command in (
        ["search", trained_run, f"--budgets={budget}"],
        ["search", trained_run, f"--budgets=1M,{budget}"],
        ["query", trained_run, f"--flops={budget}"],
        ["export", trained_run, f"--flops={budget}", "--out", out],
    ):
        code, _, err = cli(command, capsys)
        assert_one_line_error(code, err, "budget", repr(budget))
    assert not out.exists()
    assert not (trained_run / "search").exists()


@pytest.mark.parametrize("budget", BAD_BUDGETS)
def test_api_refuses_malformed_budgets(budget: str, trained_run: Path, loaded: LoadedRun, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="budget"):
        query_run(trained_run, budget)
    with pytest.raises(ValueError, match="budget"):
        export_from_run(trained_run, None, budget, tmp_path / "out")
    stub = StubRun(tmp_path / "stub")
    with pytest.raises(ValueError, match="budget"):
        search_run(stub, [1.0, budget], create_predictor("macs", TINY), QUICK)
    assert stub.calls == []


@pytest.mark.parametrize("command", ["search", "query", "export", "evaluate"])
def test_missing_run_directory(command: str, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no_such_run"
    extra = {
        "search": ["--budgets", "1M"],
        "query": ["--flops", "1M"],
        "export": ["--flops", "1M", "--out", tmp_path / "out"],
        "evaluate": [],
    }[command]
    code, _, err = cli([command, missing, *extra], capsys)
    assert_one_line_error(code, err, str(missing))
    assert "not found" in err


@pytest.mark.parametrize("command", ["search", "export", "evaluate"])
def test_run_without_checkpoint(command: str, trained_run: Path, tmp_path: Path, capsys) -> None:
    folder = copy_run(trained_run, tmp_path / "run", checkpoints=False)
    extra = {
        "search": ["--budgets", "1M"],
        "export": ["--flops", "1M", "--out", tmp_path / "out"],
        "evaluate": ["--num-archs", "2"],
    }[command]
    code, _, err = cli([command, folder, *extra], capsys)
    assert_one_line_error(code, err, str(folder), "no checkpoint")
    assert not (tmp_path / "out").exists()


def test_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("not a run")
    code, _, err = cli(["query", tmp_path, "--flops", "1M"], capsys)
    assert_one_line_error(code, err, "not a training run")
    with pytest.raises(ValueError, match="no checkpoint"):
        load_run(tmp_path)
    with pytest.raises(ValueError, match="not found"):
        load_run(tmp_path / "missing")


@pytest.mark.parametrize(
    "content", ['{"format": "ofa-predictor"}', '{"space": {"name": "tiny"}}', "[1, 2]", "{"], ids=str
)
def test_malformed_predictor_file_is_one_line(content: str, trained_run: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "predictor.json"
    path.write_text(content)
    code, _, err = cli(["query", trained_run, "--flops", "1M", "--predictor", path], capsys)
    assert_one_line_error(code, err, str(path))


def test_predictor_of_another_space(
    foreign_predictor: Path, trained_run: Path, run_copy: Path, tmp_path: Path, capsys
) -> None:
    for command in (
        ["query", trained_run, "--flops", "1M", "--predictor", foreign_predictor],
        ["search", run_copy, "--budgets", "1M", "--predictor", foreign_predictor],
        ["export", run_copy, "--flops", "1M", "--out", tmp_path / "out", "--predictor", foreign_predictor],
    ):
        code, _, err = cli(command, capsys)
        assert_one_line_error(code, err, str(foreign_predictor), "'ofa_mbv3'", "'tiny'")
    assert not (run_copy / "search").exists()
    with pytest.raises(ValueError, match="ofa_mbv3"):
        find_predictor(trained_run, TINY, foreign_predictor)


def test_arch_file_of_another_space(trained_run: Path, tmp_path: Path, capsys) -> None:
    mbv3 = load_space("ofa_mbv3")
    plain = tmp_path / "mbv3_arch.json"
    plain.write_text(mbv3.min_arch().to_json())
    declared = tmp_path / "declared.json"
    declared.write_text(json.dumps({"space": "ofa_mbv3", "arch": mbv3.min_arch().to_dict()}))
    for arch_file in (plain, declared):
        code, _, err = cli(["export", trained_run, "--arch", arch_file, "--out", tmp_path / "out"], capsys)
        assert_one_line_error(code, err, str(arch_file), "'tiny'")
        with pytest.raises(ValueError):
            export_from_run(trained_run, arch_file, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_needs_exactly_one_of_arch_and_budget(trained_run: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        export_from_run(trained_run, None, None, tmp_path / "out")
    with pytest.raises(SystemExit):  # argparse: the two options exclude each other
        main(["export", str(trained_run), "--arch", "a.json", "--flops", "1M", "--out", str(tmp_path / "out")])
    capsys.readouterr()


def test_cli_query_and_search_print_their_answers(trained_run: Path, run_copy: Path, cost_predictors, capsys) -> None:
    code, out, err = cli(["query", trained_run, "--flops", "1.5M", "--predictor", cost_predictors["macs"]], capsys)
    assert code == 0, err
    arch = TINY.arch_from_dict(json.loads(out.splitlines()[-1]))
    assert count_macs(TINY, arch, NUM_CLASSES) / 1e6 <= 1.5
    arguments = ["--budgets", "1M,2M", "--population", "12", "--generations", "2", "--finalists", "1"]
    code, out, err = cli(["search", run_copy, *arguments], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 5  # header, two budgets, the strategy's counts, the files written
    summary = json.loads((run_copy / "search" / "pareto.json").read_text())
    expected = f"{summary['predictor_queries']} predictor queries, {summary['supernet_measurements']} supernet"
    assert lines[3].startswith("evolution: ") and expected in lines[3]
    assert (run_copy / "search" / "pareto.png").is_file()


def test_installed_command_reports_one_line(trained_run: Path) -> None:
    """The real entry point in a fresh interpreter: exit code 2, one stderr line, no traceback."""
    result = subprocess.run(
        [*OFA, "query", str(trained_run), "--flops", "5X"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"ofa query: error: malformed budget '5X'; expected {BUDGET_FORMS}"]


def test_a_reopened_run_calibrates_on_the_training_augmented_images(loaded: LoadedRun) -> None:
    section = loaded.config.calibration
    count = section.batches_for(loaded.data.name)
    augmented = calibration_images(loaded.data.train, count, section.batch_size, section.seed, augment=True)
    plain = calibration_images(loaded.data.train, count, section.batch_size, section.seed)
    assert section.augment  # the default
    assert all(torch.equal(mine, theirs) for mine, theirs in zip(loaded.calibration_images, augmented, strict=True))
    assert not torch.equal(loaded.calibration_images[0], plain[0])


def test_calibrated_subnet_carries_the_statistics_evaluate_used(loaded: LoadedRun) -> None:
    """The extracted model's outputs equal the supernet's as measured, whatever was calibrated in between;
    extracting without recalibrating would keep the other arch's BN statistics."""
    run, arch = loaded, loaded.space.min_arch()
    images = resize_to(next(iter(run.val_loader))[0][:16], arch.resolution)
    run.evaluate(arch, "val")  # the supernet calibrated for arch, active, in eval mode
    with torch.no_grad():
        measured = run.supernet(images)
    run.evaluate(run.space.max_arch(), "val")  # another arch's calibration in between
    with torch.no_grad():
        stale = run.supernet.extract(arch).eval()(images)
        model = run.calibrated_subnet(arch)
        assert not model.training
        torch.testing.assert_close(model(images), measured, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(stale, measured, atol=1e-3)


def test_search_run_counts_queries_and_measurements_for_each_strategy(
    cost_predictors: dict[str, Path], tmp_path_factory
) -> None:
    from predictors.models import load_predictor

    predictor = load_predictor(cost_predictors["macs"], TINY)
    for strategy in ("evolution", "random", "rl"):
        run = StubRun(tmp_path_factory.mktemp(strategy))
        chosen, summary = search_run(run, [2.0, 4.0], predictor, QUICK, finalists=2, plot=False, strategy=strategy)
        assert summary["strategy"] == strategy
        assert summary["supernet_measurements"] == len(run.calls) > 0
        assert summary["predictor_queries"] == summary["search"]["num_evaluations"] > 0
        assert all(count_macs(TINY, subnet.arch, NUM_CLASSES) / 1e6 <= subnet.budget + 1e-9 for subnet in chosen)
    with pytest.raises(ValueError, match="unknown search strategy 'bogus'"):
        search_run(StubRun(tmp_path_factory.mktemp("bogus")), [2.0], predictor, QUICK, strategy="bogus")
    with pytest.raises(ValueError, match="strategy 'dnas' searches inside the supernet: StubRun holds no supernet"):
        search_run(StubRun(tmp_path_factory.mktemp("dnas")), [2.0], predictor, QUICK, strategy="dnas")


def test_cli_search_refuses_an_unknown_strategy(trained_run: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:  # argparse's own choice check, one line (OneLineParser)
        main(["search", str(trained_run), "--budgets", "2M", "--strategy", "darts"])
    assert_one_line_error(exit_info.value.code, capsys.readouterr().err, "--strategy", "'darts'")


def test_search_run_caps_predictor_queries_per_budget(cost_predictors: dict[str, Path], tmp_path_factory) -> None:
    from predictors.models import load_predictor

    predictor = load_predictor(cost_predictors["macs"], TINY)
    settings_ = dataclasses.replace(QUICK, population=10, generations=20)
    for strategy in ("evolution", "random", "rl"):
        run = StubRun(tmp_path_factory.mktemp(strategy))
        _, summary = search_run(run, [2.0], predictor, settings_, 1, plot=False, strategy=strategy, max_queries=35)
        assert 0 < summary["predictor_queries"] <= 35
    for cap, message in ((0, "max_queries must be an integer >= 1, got 0"), (5, "below one population (10)")):
        with pytest.raises(ValueError, match=re.escape(message)):
            search_run(StubRun(tmp_path_factory.mktemp("cap")), [2.0], predictor, settings_, 1, max_queries=cap)


def test_cli_search_refuses_a_zero_cap_before_loading(trained_run: Path, tmp_path: Path, capsys) -> None:
    folder = copy_run(trained_run, tmp_path / "run", checkpoints=False)  # no weights: refused before loading
    code, _, err = cli(["search", folder, "--budgets", "2M", "--max-queries", "0"], capsys)
    assert_one_line_error(code, err, "max_queries must be an integer >= 1, got 0")


@pytest.mark.slow  # a differentiable search of 150 supernet steps: ~6 s
def test_cli_dnas_search_writes_its_answers_without_predictor_queries(run_copy: Path, cost_predictors, capsys) -> None:
    arguments = ["--budgets", "1.5M", "--finalists", "2", "--predictor", cost_predictors["macs"]]
    code, out, err = cli(["search", run_copy, *arguments, "--strategy", "dnas"], capsys)
    assert code == 0, err
    summary = json.loads((run_copy / "search" / "pareto.json").read_text())
    assert summary["strategy"] == "dnas" and summary["predictor_queries"] == 0
    (result,) = summary["search"]["results"]
    assert result["best"]["mmacs"] <= 1.5 and result["memory_mib"] > 0
    assert abs(np.mean(result["history"][-10:]) / 1.5 - 1) < 0.1  # the expected MACs reached the budget
    assert "dnas: 0 predictor queries" in out
    code, out, err = cli(["search", run_copy, *arguments, "--strategy", "dnas", "--max-queries", "50"], capsys)
    assert code == 2 and "dnas makes no predictor queries" in err
