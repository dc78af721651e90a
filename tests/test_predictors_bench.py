"""Arch CSV data sets, the predictor benchmark, and the ``predictors`` commands."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from ofa.space import load_space
from predictors.bench import (
    BenchmarkRow,
    format_table,
    noise_ceiling,
    noise_summary,
    plot_learning_curves,
    repeated_measurements,
    run_benchmark,
    synthetic_records,
    write_results_csv,
)
from predictors.cli import main
from predictors.dataset import (
    CSV_COLUMNS,
    append_arch_records,
    csv_space_name,
    read_arch_csv,
    target_values,
    write_arch_csv,
)
from predictors.models import load_predictor


@pytest.fixture(scope="module")
def space():
    return load_space("tiny")


@pytest.fixture(scope="module")
def records(space):
    return synthetic_records(space, 160, seed=0, noise=0.003)


# ----------------------------------------------------------------------------------------------------
# data sets
# ----------------------------------------------------------------------------------------------------


def test_write_read_round_trip(space, records, tmp_path):
    path = tmp_path / "archs.csv"
    write_arch_csv(path, records)
    assert read_arch_csv(path, space) == records
    assert csv_space_name(path) == "tiny"
    with path.open() as handle:
        assert tuple(next(csv.reader(handle))) == CSV_COLUMNS


def test_append_writes_header_once_and_keeps_rows(space, records, tmp_path):
    path = tmp_path / "sub" / "archs.csv"
    append_arch_records(path, records[:3])
    append_arch_records(path, records[3:5])
    assert read_arch_csv(path, space) == records[:5]
    assert path.read_text().count("space,arch") == 1


def test_append_drops_a_row_cut_short(space, records, tmp_path):
    path = tmp_path / "archs.csv"
    append_arch_records(path, records[:2])
    with path.open("a") as handle:
        handle.write('tiny,"{""resolution"":2')  # an interrupted write
    append_arch_records(path, records[2:4])
    assert read_arch_csv(path, space) == records[:4]


def test_append_refuses_another_header(records, tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="existing header"):
        append_arch_records(path, records[:1])
    assert path.read_text() == "a,b\n1,2\n"


def test_test_acc_may_be_missing_and_is_then_no_target(space, records, tmp_path):
    path = tmp_path / "val_only.csv"
    val_only = [replace(record, test_acc=None) for record in records[:3]]
    write_arch_csv(path, val_only)
    assert all(row["test_acc"] == "" for row in csv.DictReader(path.open()))  # an empty cell, not a made-up number
    read = read_arch_csv(path, space)
    assert read == val_only
    np.testing.assert_array_equal(target_values(read, "val_acc"), [r.val_acc for r in records[:3]])
    with pytest.raises(ValueError, match="no test_acc"):
        target_values(read, "test_acc")


def test_val_loss_is_optional_and_negated_as_target(space, records, tmp_path):
    path = tmp_path / "archs.csv"
    write_arch_csv(path, records[:4])
    rows = list(csv.DictReader(path.open()))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, [c for c in CSV_COLUMNS if c != "val_loss"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    read = read_arch_csv(path, space)
    assert all(record.val_loss is None for record in read)
    np.testing.assert_array_equal(target_values(read, "val_acc"), [r.val_acc for r in records[:4]])
    np.testing.assert_array_equal(target_values(records[:4], "val_loss"), [-r.val_loss for r in records[:4]])
    np.testing.assert_array_equal(target_values(read, "test_acc"), [r.test_acc for r in records[:4]])
    with pytest.raises(ValueError, match="no val_loss"):
        target_values(read, "val_loss")
    with pytest.raises(ValueError, match="unknown target"):
        target_values(read, "accuracy")


def _edited(path, row_index, column, value):
    rows = list(csv.DictReader(path.open()))
    rows[row_index][column] = value
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("val_acc", "nan", "row 2: column val_acc is 'nan'"),
        ("test_acc", "inf", "row 2: column test_acc is 'inf'"),
        ("val_acc", "", "row 2: column val_acc is empty"),
        ("val_acc", "high", "row 2: column val_acc: expected a number"),
        ("arch", '{"resolution": 16', "row 2: column arch: arch: malformed JSON"),
        ("mmacs", "-1.5", "row 2: column mmacs is -1.5; expected a positive number"),
        ("params", "0", "row 2: column params is 0; expected a positive number"),
        ("space", "attentivenas", "row 2: column space is 'attentivenas'"),
        ("resolution", "99", "row 2: column resolution is 99"),
    ],
)
def test_bad_cells_name_file_row_and_column(space, records, tmp_path, column, value, message):
    path = tmp_path / "bad.csv"
    write_arch_csv(path, records[:3])
    _edited(path, 1, column, value)
    with pytest.raises(ValueError, match=message) as error:
        read_arch_csv(path, space)
    assert "bad.csv" in str(error.value)


def test_archs_of_another_space_fail(space, records, tmp_path):
    other = load_space("attentivenas").min_arch()
    path = tmp_path / "bad.csv"
    write_arch_csv(path, records[:3])
    _edited(path, 0, "arch", other.to_json())
    with pytest.raises(ValueError, match=r"row 1: column arch: .*another space"):
        read_arch_csv(path, space)
    _edited(path, 0, "arch", json.dumps({**records[0].arch.to_dict(), "resolution": 17}))
    with pytest.raises(ValueError, match=r"row 1: column arch: arch.resolution: 17 is not one of"):
        read_arch_csv(path, space)


def test_missing_columns_and_files(space, records, tmp_path):
    path = tmp_path / "archs.csv"
    path.write_text("space,arch,mmacs,params,resolution,val_acc,seed\n")
    with pytest.raises(ValueError, match=r"missing column.*test_acc"):
        read_arch_csv(path, space)
    with pytest.raises(ValueError, match="not found"):
        read_arch_csv(tmp_path / "none.csv", space)


# ----------------------------------------------------------------------------------------------------
# benchmark
# ----------------------------------------------------------------------------------------------------


def test_benchmark_end_to_end(space, records, tmp_path):
    rows = run_benchmark(
        records, space, ["lightgbm", "macs", "ridge"], train_sizes=[10, 40], seeds=[0, 1], test_size=50, progress=False
    )
    assert len(rows) == 3 * 2 * 2
    assert {(row.predictor, row.train_size, row.seed) for row in rows} == {
        (name, size, seed) for name in ("lightgbm", "macs", "ridge") for size in (10, 40) for seed in (0, 1)
    }
    for row in rows:
        assert row.test_size == 50 and row.top_k == 10
        assert -1 <= row.kendall_tau <= 1 and 0 <= row.precision_at_k <= 1
        assert np.isnan(row.rmse) == (row.predictor == "macs")
    macs = [row for row in rows if row.predictor == "macs"]
    assert len({row.kendall_tau for row in macs}) == 1  # same test set for every cell
    learned = np.mean([row.kendall_tau for row in rows if row.predictor == "lightgbm" and row.train_size == 40])
    assert learned > 0.6

    table = format_table(rows)
    assert "lightgbm" in table and "±" in table and "p@10" in table and "n/a" in table
    assert len(table.splitlines()) == 2 + 3 * 2

    write_results_csv(rows, tmp_path / "results.csv")
    read = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(read) == len(rows) and read[0]["predictor"] == rows[0].predictor
    assert float(read[0]["kendall_tau"]) == rows[0].kendall_tau

    plot_learning_curves(rows, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_accepts_archs_and_targets_and_averages_repeats(space, records):
    archs = [record.arch for record in records]
    values = np.array([record.val_acc for record in records])
    doubled = (archs + archs, np.concatenate([values, values + 0.001]))
    rows = run_benchmark(doubled, space, ["ridge"], [20], [0], test_size=40, progress=False)
    direct = run_benchmark((archs, values), space, ["ridge"], [20], [0], test_size=40, progress=False)
    assert rows[0].kendall_tau == pytest.approx(direct[0].kendall_tau)  # 160 distinct archs either way


def test_benchmark_rejects_bad_settings(space, records):
    with pytest.raises(ValueError, match="unknown predictor 'forest'"):
        run_benchmark(records, space, ["forest"], [10], [0], test_size=20, progress=False)
    with pytest.raises(ValueError, match="train size 200 is too large: 160 distinct archs"):
        run_benchmark(records, space, ["ridge"], [200], [0], test_size=20, progress=False)
    with pytest.raises(ValueError, match="seeds"):
        run_benchmark(records, space, ["ridge"], [10], [], test_size=20, progress=False)
    with pytest.raises(ValueError, match="another space"):
        run_benchmark(([load_space("attentivenas").min_arch()] * 3, [0.1, 0.2, 0.3]), space, ["ridge"], [2], [0], 2)


def test_noise_ceiling(space, records):
    values = np.array([record.val_acc for record in records])
    assert noise_ceiling(values, values) == 1.0
    tests = np.array([record.test_acc for record in records])
    assert 0.3 < noise_ceiling(values, tests) < 1.0
    repeated = list(records[:30]) + [replace(record, val_acc=record.val_acc + 0.01, seed=1) for record in records[:20]]
    first, second = repeated_measurements(repeated)
    assert first.size == 20
    np.testing.assert_allclose(second - first, 0.01)
    assert repeated_measurements(records)[0].size == 0
    summary = noise_summary(repeated)
    assert summary["repeat_archs"] == 20 and summary["repeat_tau"] == pytest.approx(1.0)  # a shift keeps the order
    assert "repeat_tau" not in noise_summary(records)
    assert noise_summary(records)["val_test_acc_tau"] == pytest.approx(noise_ceiling(values, tests))
    partly = [replace(record, test_acc=None) for record in records[:10]] + list(records[10:])  # val-only rows
    assert noise_summary(partly)["val_test_acc_tau"] == pytest.approx(noise_ceiling(values[10:], tests[10:]))


def test_format_table_of_nothing():
    assert format_table([]) == "(no results)"
    assert BenchmarkRow.__dataclass_params__.frozen


# ----------------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------------


@pytest.mark.slow  # the benchmark through the command line: ~8 s
def test_cli_fit_and_bench(space, records, tmp_path, capsys):
    data = tmp_path / "archs.csv"
    write_arch_csv(data, records)
    model = tmp_path / "model.json"
    assert main(["predictors", "fit", str(data), "--model", "ridge", "--out", str(model)]) == 0  # space from CSV
    assert "fitted ridge on 160 rows" in capsys.readouterr().out
    loaded = load_predictor(model, space)
    assert loaded.predict([records[0].arch]).shape == (1,)
    refit = ["predictors", "fit", str(data), "--space", "tiny", "--target", "val_loss", "--out", str(model)]
    before = model.read_bytes()
    assert main(refit) == 2  # an existing predictor is never replaced silently
    assert "exists; pass --force" in capsys.readouterr().err and model.read_bytes() == before
    assert main([*refit, "--force"]) == 0 and model.read_bytes() != before

    out = tmp_path / "bench"
    arguments = ["predictors", "bench", str(data), "--predictors", "lightgbm,macs", "--train-sizes", "10,30"]
    assert main([*arguments, "--seeds", "0,1", "--test-size", "40", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lightgbm" in printed and "val_acc vs test_acc agreement" in printed
    assert {path.name for path in out.iterdir()} == {"results.csv", "table.txt", "learning_curves.png"}


def test_cli_bench_reads_repeated_measurements_from_several_files(space, records, tmp_path, capsys):
    first, second = tmp_path / "seed0.csv", tmp_path / "seed1.csv"
    write_arch_csv(first, records[:80])
    write_arch_csv(second, [replace(record, val_loss=record.val_loss * 1.01, seed=1) for record in records[:80]])
    arguments = ["predictors", "bench", str(first), str(second), "--target", "val_loss", "--predictors", "macs"]
    assert main([*arguments, "--train-sizes", "10", "--seeds", "0", "--test-size", "40"]) == 0
    printed = capsys.readouterr().out
    assert "seed0.csv + " in printed and "160 rows" in printed
    # a lower loss ranks higher: a loss scaled by 1.01 keeps the order exactly
    assert "noise ceiling (Kendall tau of val_loss between two measurements of 80 archs): 1.000" in printed
    assert main(["predictors", "bench", str(first), str(tmp_path / "none.csv"), "--predictors", "macs"]) == 2
    assert "none.csv" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["fit", "{data}", "--model", "xgboost", "--out", "{tmp}/m.json"], "unknown predictor 'xgboost'"),
        (["fit", "{tmp}/missing.csv", "--out", "{tmp}/m.json"], "not found"),
        (["bench", "{data}", "--train-sizes", "10,x"], "--train-sizes: expected comma-separated integers"),
        (["bench", "{data}", "--space", "attentivenas", "--test-size", "40"], "column space is 'tiny'"),
    ],
)
def test_cli_bad_input_exits_2(records, tmp_path, capsys, arguments, message):
    data = tmp_path / "archs.csv"
    write_arch_csv(data, records[:60])
    filled = [argument.format(data=data, tmp=tmp_path) for argument in arguments]
    assert main(["predictors", *filled]) == 2
    assert message in capsys.readouterr().err
