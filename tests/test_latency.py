"""Latency tables, subnet timing and latency estimators (``ofa.latency*``, ``ofa latency``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ofa.latency_timing as latency_timing
from ofa._genome import Genome
from ofa.budget import parse_latency
from ofa.cli import main
from ofa.flops import count_macs_many
from ofa.latency import build_latency_table, time_subnets
from ofa.latency_models import fit_estimator, latency_metrics, load_estimator
from ofa.latency_table import (
    DeviceFingerprint,
    LatencyTable,
    Timing,
    TimingSettings,
    distinct_layers,
    layer_key,
    load_latency_table,
)
from ofa.latency_timing import device_fingerprint, fold_batchnorm, make_runner
from ofa.layout import BlockLayout, HeadLayout, StemLayout, network_layout
from ofa.search import SearchSettings, search_budgets
from ofa.search_rl import Reinforce
from ofa.space import SearchSpace, load_space
from ofa.static import StaticNet
from predictors.dataset import ArchRecord, read_arch_csv, target_values, write_arch_csv
from tests.conftest import randomise_bn, seeded_archs

FAST = TimingSettings(warmup=1, repeats=1, passes=2, min_sample_ms=0.0)


@pytest.fixture(scope="module")
def small() -> SearchSpace:
    """A space with every elasticity but few choices (a few dozen distinct layers)."""
    data = load_space("tiny").to_dict()
    data["name"] = "small"
    data["resolution"] = [16, 20]
    data["stages"] = data["stages"][:2]
    data["stages"][1]["expand_ratio"] = [3, 6]
    data["stages"][1]["depth"] = [1, 2]
    return SearchSpace.from_dict(data)


def _size(layer: object, num_classes: int) -> float:
    """Roughly the MACs of a layer: what a synthetic latency grows with."""
    if isinstance(layer, StemLayout):
        return layer.in_channels * layer.out_channels * layer.kernel_size**2 * layer.output_size**2
    if isinstance(layer, BlockLayout):
        mid, expand = layer.mid_channels, layer.in_channels * layer.mid_channels * layer.has_expand
        return (expand + mid * layer.kernel_size**2 + mid * layer.out_channels) * layer.output_size**2
    assert isinstance(layer, HeadLayout)
    return layer.in_channels * layer.mid_channels * layer.input_size**2 + layer.out_channels * num_classes


def synthetic_table(space: SearchSpace, num_classes: int = 10, seed: int = 0) -> LatencyTable:
    """A table whose entries grow with each layer's size, times +-20 % noise, plus 5 us (no timing)."""
    rng = np.random.default_rng(seed)
    entries = {}
    for key, layer in sorted(distinct_layers(space, num_classes).items()):
        value = 1e-6 * _size(layer, num_classes) * rng.uniform(0.8, 1.2) + 0.005
        entries[key] = Timing(value, value * 1.2, 0.01)
    return LatencyTable(space, num_classes, device_fingerprint(), FAST, entries)


def test_folding_batchnorm_keeps_the_output(tiny: SearchSpace) -> None:
    for arch in seeded_archs(tiny, 4):
        model = StaticNet(network_layout(tiny, arch, 10)).eval()
        randomise_bn(model, seed=1)
        images = torch.randn(2, 3, arch.resolution, arch.resolution)
        with torch.no_grad():
            expected = model(images)
            folded = fold_batchnorm(model)
            assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in folded.modules())
            torch.testing.assert_close(folded(images), expected, atol=1e-5, rtol=1e-4)


def test_every_layer_of_every_subnet_is_in_the_table(tiny: SearchSpace) -> None:
    keys = set(distinct_layers(tiny, 10))
    for arch in seeded_archs(tiny, 40):
        layout = network_layout(tiny, arch, 10)
        for part in (layout.stem, *layout.blocks, layout.head):
            assert layer_key(part, 10) in keys
    assert layer_key(network_layout(tiny, tiny.max_arch(), 10).head, 1000) not in keys  # classes are in the key


def test_vectorised_table_sum_equals_the_sum_over_layouts(tiny: SearchSpace) -> None:
    table = synthetic_table(tiny)
    genome = Genome(tiny, 10)
    archs = seeded_archs(tiny, 60)
    rows = genome.encode(archs)
    np.testing.assert_allclose(genome.cost(rows, table.genome_tables(genome)), table.layer_sum(archs), rtol=1e-12)
    expected = [
        sum(table.entries[layer_key(part, 10)].best_ms for part in (lay.stem, *lay.blocks, lay.head))
        for lay in (network_layout(tiny, arch, 10) for arch in archs)
    ]
    np.testing.assert_allclose(table.layer_sum(archs), expected, rtol=1e-12)


def test_runner_backends_time_a_module() -> None:
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    for backend in ("torch", "onnxruntime"):
        fingerprint = device_fingerprint(backend=backend)
        timing = latency_timing.time_runner(make_runner(module, (3, 16, 16), fingerprint), FAST)
        assert 0 < timing.best_ms <= timing.median_ms and timing.spread_ms >= 0


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"backend": "tvm"}, "unknown backend 'tvm'"),
        ({"threads": 0}, "threads must be an integer >= 1"),
        ({"batch": -2}, "batch must be an integer >= 1"),
    ],
)
def test_bad_device_settings_are_refused(arguments: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        device_fingerprint(**arguments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_a_gpu_asked_for_without_one_is_refused() -> None:
    with pytest.raises(ValueError, match="no usable GPU"):
        device_fingerprint(device="cuda")


def test_build_writes_a_complete_table_and_refuses_other_devices(small: SearchSpace, tmp_path: Path) -> None:
    fingerprint = device_fingerprint()
    out = tmp_path / "table.json"
    table = build_latency_table(small, 10, fingerprint, out, FAST)
    assert set(table.entries) == set(distinct_layers(small, 10))
    assert not (tmp_path / "table.json.partial").exists()
    again = load_latency_table(out, small, fingerprint)
    assert again.entries == table.entries and again.fingerprint == fingerprint
    other = dataclasses.replace(fingerprint, threads=2)
    with pytest.raises(ValueError, match="never mixed"):
        load_latency_table(out, small, other)
    with pytest.raises(ValueError, match="built for space 'small', not 'tiny'"):
        load_latency_table(out, load_space("tiny"))


def test_an_interrupted_build_resumes_with_the_same_fingerprint_only(
    small: SearchSpace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fingerprint, out = device_fingerprint(), tmp_path / "table.json"
    layers = len(distinct_layers(small, 10))
    calls = {"count": 0}
    real_samples = latency_timing._samples

    def interrupted(run, settings):
        calls["count"] += 1
        if calls["count"] > layers + 3:  # during the second pass
            raise KeyboardInterrupt
        return real_samples(run, settings)

    monkeypatch.setattr(latency_timing, "_samples", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_latency_table(small, 10, fingerprint, out, FAST)
    partial = tmp_path / "table.json.partial"
    assert not out.exists() and json.loads(partial.read_text())["passes_done"] == 1
    with pytest.raises(ValueError, match="interrupted build"):
        build_latency_table(small, 10, dataclasses.replace(fingerprint, batch=4), out, FAST)
    calls["count"] = -(10**9)  # no more interruptions; count the resumed calls
    table = build_latency_table(small, 10, fingerprint, out, FAST)
    assert calls["count"] == -(10**9) + layers  # only the second pass ran
    assert set(table.entries) == set(distinct_layers(small, 10)) and not partial.exists()


@pytest.mark.parametrize(
    ("spoil", "fragment"),
    [
        (lambda text: text[: len(text) // 2], "malformed"),
        (lambda text: text.replace('"entries": {', '"entries": {"stem x": [NaN, 1.0, 0.0], ', 1), "finite"),
        (lambda text: text.replace('"entries": {', '"entries": {"stem x": [-1.0, 1.0, 0.0], ', 1), "best_ms > 0"),
        (lambda text: text.replace('"version": 1', '"version": 7', 1), "version 7"),
        (lambda text: text.replace('"threads": 1', '"threads": "one"', 1), "threads must be an integer"),
    ],
)
def test_bad_table_files_are_refused(small: SearchSpace, tmp_path: Path, spoil, fragment: str) -> None:
    path = tmp_path / "table.json"
    synthetic_table(small).save(path)
    path.write_text(spoil(path.read_text()))
    with pytest.raises(ValueError, match=fragment):
        load_latency_table(path, small)


def test_a_table_missing_layers_is_refused(small: SearchSpace, tmp_path: Path) -> None:
    table = synthetic_table(small)
    entries = dict(table.entries)
    entries.pop(sorted(entries)[0])
    path = tmp_path / "table.json"
    dataclasses.replace(table, entries=entries).save(path)
    with pytest.raises(ValueError, match="lacks 1 layer"):
        load_latency_table(path, small)


def test_table_estimator_recovers_a_line_and_searches_in_the_same_unit(small: SearchSpace, tmp_path: Path) -> None:
    table = synthetic_table(small)
    archs = seeded_archs(small, 30)
    latencies = 1.5 * table.layer_sum(archs) + 0.25
    estimator = fit_estimator("table", small, 10, table.fingerprint, archs, latencies, table)
    assert estimator.slope == pytest.approx(1.5) and estimator.intercept == pytest.approx(0.25)
    np.testing.assert_allclose(estimator.predict(archs), latencies, rtol=1e-9)
    genome = Genome(small, 10)
    rows = genome.encode(archs)
    np.testing.assert_allclose(estimator.row_cost(genome)(rows), latencies, rtol=1e-9)
    estimator.save(tmp_path / "estimator.json")
    again = load_estimator(tmp_path / "estimator.json", small, table.fingerprint)
    np.testing.assert_allclose(again.predict(archs), latencies, rtol=1e-9)
    with pytest.raises(ValueError, match="not cpu"):
        load_estimator(tmp_path / "estimator.json", small, dataclasses.replace(table.fingerprint, device_name="x"))


@pytest.mark.parametrize("kind", ["learned", "macs"])
def test_learned_and_macs_estimators_round_trip(small: SearchSpace, tmp_path: Path, kind: str) -> None:
    table = synthetic_table(small)
    archs = seeded_archs(small, 40)
    macs = count_macs_many(small, archs, 10).astype(np.float64)
    latencies = 2.0 * table.layer_sum(archs) + 0.1 if kind == "learned" else 3e-6 * macs + 0.2
    estimator = fit_estimator(kind, small, 10, table.fingerprint, archs, latencies)
    predicted = estimator.predict(archs)
    if kind == "macs":  # the line is recovered
        np.testing.assert_allclose(predicted, latencies, rtol=1e-9)
    else:  # the learned fit ranks the training subnets well
        assert np.all(predicted > 0) and latency_metrics(latencies, predicted)["kendall_tau"] > 0.6
    genome = Genome(small, 10)
    np.testing.assert_allclose(estimator.row_cost(genome)(genome.encode(archs)), predicted, rtol=1e-9)
    estimator.save(tmp_path / "estimator.json")
    np.testing.assert_allclose(load_estimator(tmp_path / "estimator.json", small).predict(archs), predicted)


@pytest.mark.parametrize(
    ("latencies", "fragment"),
    [([1.0, float("nan"), 2.0], "positive finite"), ([1.0, -2.0, 3.0], "positive finite"), ([1.0, 2.0], "got 3")],
)
def test_unusable_timings_are_refused(small: SearchSpace, latencies: list[float], fragment: str) -> None:
    archs = seeded_archs(small, 1)  # min, max and one random arch
    with pytest.raises(ValueError, match=fragment):
        fit_estimator("macs", small, 10, device_fingerprint(), archs, latencies)


def test_latency_metrics_are_relative() -> None:
    metrics = latency_metrics([1.0, 2.0, 4.0, 8.0], [1.05, 2.4, 4.0, 7.0])
    assert metrics["within_10"] == pytest.approx(0.5)
    assert metrics["rmspe"] == pytest.approx(np.sqrt((0.05**2 + 0.2**2 + 0.125**2) / 4))
    assert metrics["kendall_tau"] == pytest.approx(1.0)


def test_timed_rows_round_trip_through_the_arch_csv(small: SearchSpace, tmp_path: Path) -> None:
    archs = seeded_archs(small, 1)
    records = [
        ArchRecord(small.name, arch, 1.0 + i, 100, arch.resolution, None, None, None, 0, latency_ms=0.5 + i)
        for i, arch in enumerate(archs)
    ]
    write_arch_csv(tmp_path / "timed.csv", records)
    again = read_arch_csv(tmp_path / "timed.csv", small)
    assert again == records
    np.testing.assert_allclose(target_values(again, "latency_ms"), [-0.5, -1.5, -2.5])
    with pytest.raises(ValueError, match="3 record"):
        target_values(again, "val_acc")


def test_subnets_are_timed_end_to_end(small: SearchSpace) -> None:
    archs = [small.min_arch(), small.max_arch()]
    timings = time_subnets(small, archs, 10, device_fingerprint(), FAST)
    assert len(timings) == 2 and all(timing.best_ms > 0 for timing in timings)


def test_fingerprint_round_trips_and_names_the_device() -> None:
    fingerprint = device_fingerprint(threads=2, batch=3)
    assert DeviceFingerprint.from_dict(json.loads(json.dumps(fingerprint.to_dict())), "x") == fingerprint
    assert "2 threads, batch 3" in fingerprint.describe()
    with pytest.raises(ValueError, match="exactly the keys"):
        DeviceFingerprint.from_dict({"device": "cpu"}, "x")


def test_cli_builds_measures_fits_and_validates(
    small: SearchSpace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space_file = tmp_path / "small.json"
    space_file.write_text(json.dumps(small.to_dict()))
    space, table, data = str(space_file), str(tmp_path / "table.json"), str(tmp_path / "timed.csv")
    assert main(["latency", "build", "--space", space, "--passes", "1", "--out", table]) == 0
    assert main(["latency", "measure", "--space", space, "--num-archs", "12", "--passes", "1", "--out", data]) == 0
    assert len(read_arch_csv(data, small)) == 12
    assert main(["latency", "measure", "--space", space, "--num-archs", "12", "--passes", "1", "--out", data]) == 0
    assert len(read_arch_csv(data, small)) == 12  # nothing timed twice
    estimators = []
    for kind in ("table", "macs", "learned"):
        estimators.append(str(tmp_path / f"{kind}.json"))
        assert main(["latency", "fit", "--space", space, "--data", data, "--estimator", kind, "--table", table,
                     "--out", estimators[-1]]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["latency", "validate", "--space", space, "--data", data, *estimators]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and "(table)" in lines[2] and "(learned)" in lines[4]
    # another device's measurement is never appended to
    code = main(["latency", "measure", "--space", space, "--num-archs", "12", "--threads", "2", "--out", data])
    err = capsys.readouterr().err
    assert code == 2 and "never mixed" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "arguments",
    [
        ["latency", "build", "--space", "tiny", "--device", "cuda", "--out", "{tmp}/t.json"],
        ["latency", "build", "--space", "tiny", "--backend", "tvm", "--out", "{tmp}/t.json"],
        ["latency", "build", "--space", "tiny", "--out", "{tmp}"],
        ["latency", "fit", "--space", "tiny", "--data", "{tmp}/missing.csv", "--out", "{tmp}/e.json"],
        ["latency", "validate", "--space", "tiny", "--data", "{tmp}/missing.csv", "{tmp}/e.json"],
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str]) -> None:
    if "cuda" in arguments and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = main([argument.replace("{tmp}", str(tmp_path)) for argument in arguments])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "error" in err
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "e.json").exists()


@pytest.mark.parametrize(("text", "ms"), [("5ms", 5.0), ("800us", 0.8), ("0.2s", 200.0), ("3", 3.0), (2.5, 2.5)])
def test_latency_budgets_parse(text: str | float, ms: float) -> None:
    assert parse_latency(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["5 fps", "-3ms", "0ms", "nan", "inf ms", ""])
def test_malformed_latency_budgets_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="latency budget"):
        parse_latency(text)


@pytest.mark.parametrize("strategy", ["evolution", "random", Reinforce()], ids=["evolution", "random", "rl"])
def test_search_under_latency_budgets_stays_within_them(small: SearchSpace, strategy: str | Reinforce) -> None:
    table = synthetic_table(small)
    archs = seeded_archs(small, 30)
    estimator = fit_estimator("table", small, 10, table.fingerprint, archs, 1.2 * table.layer_sum(archs) + 0.3, table)
    latencies = estimator.predict(archs)
    budgets = [float(np.quantile(latencies, 0.3)), float(np.quantile(latencies, 0.8))]
    settings = SearchSettings(population=20, generations=3)
    result = search_budgets(
        small, lambda found: count_macs_many(small, found, 10), budgets, settings, 10, strategy, None
        if strategy == "evolution" else 40, latency=estimator
    )  # fmt: skip
    assert result.unit == "latency_ms" and "budgets_latency_ms" in result.to_dict()
    for budget, searched in zip(budgets, result.results):
        assert np.all(searched.costs <= budget + 1e-9)
        np.testing.assert_allclose(estimator.predict(list(searched.archs)), searched.costs, rtol=1e-9)
    fastest = estimator.fastest_ms
    with pytest.raises(ValueError, match=f"estimated at {fastest:.4g} ms"):
        search_budgets(small, lambda found: np.zeros(len(found)), [fastest * 0.9], settings, 10, latency=estimator)


def test_cli_build_never_overwrites_another_devices_table(
    small: SearchSpace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space_file = tmp_path / "small.json"
    space_file.write_text(json.dumps(small.to_dict()))
    table = tmp_path / "table.json"
    synthetic_table(small).save(table)
    before = table.read_bytes()
    for extra in (["--threads", "2"], ["--batch", "8"], ["--space", "tiny"]):
        arguments = ["latency", "build", "--space", str(space_file), "--out", str(table), *extra]
        code = main(arguments)
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert table.read_bytes() == before
    assert main(["latency", "build", "--space", str(space_file), "--passes", "1", "--out", str(table)]) == 2
    assert "other classes or timing settings; pass --force" in capsys.readouterr().err
