"""Files and folders given in the wrong place: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from ofa.cli import main as cli_main
from tests.conftest import ROOT

DIGITS_CONFIG = ROOT / "configs" / "train" / "digits.yaml"
ARCH_DATA = ROOT / "benchmarks" / "data" / "digits_tiny_archs_seed0.csv"


def _files(folder: Path) -> dict[str, Path]:
    """A folder, a file and malformed config files inside ``folder``."""
    (folder / "a_folder").mkdir()
    (folder / "a_file").write_text("x")
    (folder / "unclosed.yaml").write_text("name: [a\nseed: 1\n")
    (folder / "python_tag.yaml").write_text("name: !!python/object:os.system a\n")
    (folder / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    (folder / "latin1_csv.csv").write_bytes(b"space,arch\ncaf\xe9,1\n")
    header, row = ARCH_DATA.read_text().splitlines()[:2]
    (folder / "one_arch.csv").write_text("\n".join([header] + [row] * 30) + "\n")
    mmacs, params = row.split(",")[-7:-5]
    (folder / "negative_mmacs.csv").write_text(f"{header}\n{row.replace(f',{mmacs},', f',-{mmacs},')}\n")
    (folder / "negative_params.csv").write_text(f"{header}\n{row.replace(f',{params},', f',-{params},')}\n")
    return {path.stem: path for path in folder.iterdir()}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "{a_folder}"], "config file {a_folder} is a folder; expected a file"),
        (["train", "{unclosed}"], "malformed YAML: expected ',' or ']', but got ':' at line 2, column 5"),
        (["train", "{python_tag}"], "malformed YAML: could not determine a constructor for the tag"),
        (["train", "{latin1}"], "config file {latin1} is not UTF-8 text (byte 0xe9 at offset 9)"),
        (["flops", "--space", "tiny", "--arch", "{a_folder}"], "arch file {a_folder} is a folder"),
        (["predictors", "fit", str(ARCH_DATA), "--out", "{a_folder}"], "--out {a_folder} is a folder"),
        (["predictors", "fit", "{a_folder}", "--out", "{a_file}"], "arch data file {a_folder} is a folder"),
        (["predictors", "bench", str(ARCH_DATA), "--out", "{a_file}"], "--out {a_file} is a file; expected a folder"),
        (["compare", str(DIGITS_CONFIG), "--out", "{a_file}"], "--out {a_file} is a file; expected a folder"),
        (["flops", "--space"], "argument --space: expected one argument"),
        (["no-such-command"], "invalid choice: 'no-such-command'"),
        (["space", "tiny", "--classes", "0"], "argument --classes: expected an integer >= 1, got 0"),
        (["space", "tiny", "--classes", "-5"], "argument --classes: expected an integer >= 1, got -5"),
        (["evaluate", "{a_folder}", "--out", "{a_folder}"], "--out {a_folder} is a folder; expected a file path"),
        (["flops", "--space", "tiny", "--arch", "{latin1}"], "arch file {latin1} is not UTF-8 text (byte 0xe9"),
        (["predictors", "fit", "{latin1_csv}", "--out", "{a_folder}/p.json"], "{latin1_csv} is not UTF-8 text"),
        (["predictors", "fit", "{one_arch}", "--out", "{a_folder}/p.json"], "got 30 rows of one arch"),
        (["predictors", "fit", "{negative_mmacs}", "--out", "{a_folder}/p.json"], "column mmacs is -0."),
        (["predictors", "fit", "{negative_params}", "--out", "{a_folder}/p.json"], "column params is -"),
    ],
)
def test_wrong_file_or_folder_is_one_line_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    files = _files(tmp_path)
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")}
    assert _exit_code([argument.format_map(files) for argument in arguments]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert message.format_map(files) in error
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")} == before  # nothing written


def _exit_code(argv: list[str]) -> int:
    """``ofa ARGV``'s exit code, whether it returns it or argparse exits with it."""
    try:
        return cli_main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
