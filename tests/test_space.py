"""Search spaces as data and archs as values (``ofa.space``): loading, round trips, validation, operators, size."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ofa.space import Arch, SearchSpace, load_arch, load_space

ROOT = Path(__file__).resolve().parent.parent
SPACE_FILES = sorted((ROOT / "configs" / "spaces").glob("*.yaml"))
SPACE_NAMES = [path.stem for path in SPACE_FILES]
SPACES = {name: load_space(name) for name in SPACE_NAMES}
ARCH_DIR = ROOT / "configs" / "archs"

PROPERTY = settings(max_examples=200, deadline=None)
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
PROBABILITIES = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def expect_error(*fragments: str) -> Any:
    """``pytest.raises`` for a ValueError whose message holds every fragment, in order."""
    return pytest.raises(ValueError, match=".*".join(re.escape(fragment) for fragment in fragments))


# ----------------------------------------------------------------------------------------------------
# shipped spaces
# ----------------------------------------------------------------------------------------------------


def test_the_three_spaces_are_shipped() -> None:
    assert set(SPACE_NAMES) >= {"tiny", "attentivenas", "ofa_mbv3"}


@pytest.mark.parametrize("path", SPACE_FILES, ids=SPACE_NAMES)
def test_space_loads_by_name_and_by_path(path: Path) -> None:
    by_name = load_space(path.stem)
    assert by_name == load_space(path)
    assert by_name.name == path.stem
    assert by_name.size() > 1


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_space_dict_round_trip(name: str) -> None:
    space = SPACES[name]
    data = space.to_dict()
    again = SearchSpace.from_dict(json.loads(json.dumps(data)))
    assert again == space
    assert again.description == space.description
    assert again.to_dict() == data


def test_attentivenas_space_matches_the_paper_table() -> None:
    space = SPACES["attentivenas"]
    assert space.resolution == (192, 224, 256, 288)
    assert space.granularity == "per_stage"
    assert space.stem.width == (16, 24)
    widths = [(16, 24), (24, 32), (32, 40), (64, 72), (112, 120, 128), (192, 200, 208, 216), (216, 224)]
    assert [stage.width for stage in space.stages] == widths
    depths = [(1, 2), (3, 4, 5), (3, 4, 5, 6), (3, 4, 5, 6), tuple(range(3, 9)), tuple(range(3, 9)), (1, 2)]
    assert [stage.depth for stage in space.stages] == depths
    assert [stage.stride for stage in space.stages] == [1, 2, 2, 2, 1, 2, 1]
    assert [stage.se for stage in space.stages] == [False, False, True, False, True, True, True]
    assert space.head.width == (1792, 1984)


def test_shipped_space_sizes_are_the_product_of_their_choices() -> None:
    # attentivenas, per stage: width x depth x kernel x expand of each stage, times resolution, stem, head.
    stages = [2 * 2 * 2 * 1, 2 * 3 * 2 * 3, 2 * 4 * 2 * 3, 2 * 4 * 2 * 3, 3 * 6 * 2 * 3, 4 * 6 * 2 * 1, 2 * 2 * 2 * 1]
    expected = 4 * 2 * 2
    for count in stages:
        expected *= count
    assert SPACES["attentivenas"].size() == expected
    # ofa_mbv3, per block: 9 (kernel, expand) pairs per block, depth 2..4 in 5 stages, 25 resolutions.
    assert SPACES["ofa_mbv3"].size() == 25 * (9**2 + 9**3 + 9**4) ** 5


# ----------------------------------------------------------------------------------------------------
# Arch values: round trips, hashing, equality
# ----------------------------------------------------------------------------------------------------


def some_archs(space: SearchSpace, count: int = 30, seed: int = 0) -> list[Arch]:
    rng = random.Random(seed)
    return [space.min_arch(), space.max_arch()] + [space.sample(rng) for _ in range(count)]


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_arch_round_trips(name: str) -> None:
    space = SPACES[name]
    for arch in some_archs(space):
        again = Arch.from_dict(arch.to_dict())
        assert again == arch and hash(again) == hash(arch)
        assert Arch.from_json(arch.to_json()) == arch
        assert json.loads(arch.to_json()) == arch.to_dict()
        assert space.arch_from_dict(json.loads(arch.to_json())) == arch
        assert "\n" not in arch.to_json()


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_arch_file_round_trip(name: str, tmp_path: Path) -> None:
    space = SPACES[name]
    arch = space.sample(random.Random(7))
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"space": name, **arch.to_dict()}))
    assert load_arch(path, space) == arch
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"space": name, "arch": arch.to_dict()}))
    assert load_arch(wrapped, space) == arch


def test_equal_archs_hash_alike() -> None:
    space = SPACES["tiny"]
    arch = space.max_arch()
    assert len({arch, Arch.from_json(arch.to_json()), space.min_arch()}) == 2
    assert {arch: "max"}[Arch.from_dict(arch.to_dict())] == "max"
    assert arch != space.min_arch()
    assert arch != arch.to_dict()


def test_arch_equality_ignores_number_spelling_and_single_value_stages() -> None:
    # A number per stage means that value for every active block; 4 and 4.0 are the same ratio.
    common = {"resolution": 32, "width": [8, 8, 16], "depth": [1, 2]}
    listed = Arch.from_dict({**common, "kernel_size": [[3], [5, 5]], "expand_ratio": [[1], [4, 4]]})
    short = Arch.from_dict({**common, "kernel_size": [3, 5], "expand_ratio": [1, 4.0]})
    assert listed == short and hash(listed) == hash(short)
    assert listed.kernel_size == ((3,), (5, 5))
    other = dataclasses.replace(listed, kernel_size=((3,), (5, 3)))
    assert other != listed


def test_arch_short_form() -> None:
    arch = Arch(24, (8, 16, 24), (1, 2), ((3,), (5, 3)), ((1,), (4, 6)))
    assert arch.short() == "r24 w8-16-24 d1-2 k3|5.3 e1|4.6"


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (lambda d: d.pop("depth"), ["arch", "missing key(s) depth"]),
        (lambda d: d.update(colour=1), ["arch", "unknown key(s) colour"]),
        (lambda d: d.update(resolution="32"), ["arch.resolution", "expected an integer"]),
        (lambda d: d.update(resolution=True), ["arch.resolution", "expected an integer"]),
        (lambda d: d.update(width=[]), ["arch.width", "non-empty list"]),
        (lambda d: d.update(depth=[1, 0]), ["arch.depth[1]", ">= 1"]),
        (lambda d: d.update(kernel_size=[[3]]), ["arch.kernel_size", "2 stages"]),
        (lambda d: d.update(kernel_size=[[3], [3]]), ["arch.kernel_size[1]", "expected 2 values"]),
        (lambda d: d.update(expand_ratio=[[1], [4, "6"]]), ["arch.expand_ratio[1]", "positive number"]),
        (lambda d: d.update(expand_ratio=[[1], [4, -1]]), ["arch.expand_ratio[1]", "positive number"]),
    ],
)
def test_arch_from_dict_rejects_bad_data(change: Callable[[dict], Any], fragments: list[str]) -> None:
    data = {"resolution": 32, "width": [8, 8, 16], "depth": [1, 2], "kernel_size": [3, 5], "expand_ratio": [1, 4]}
    change(data)
    with expect_error(*fragments):
        Arch.from_dict(data)


def test_arch_from_dict_rejects_non_mapping() -> None:
    with expect_error("arch: expected a mapping", "list"):
        Arch.from_dict([1, 2, 3])


@pytest.mark.parametrize("text", ["{", '{"resolution": 32,}', "not json", ""])
def test_arch_from_json_rejects_malformed_json(text: str) -> None:
    with expect_error("arch: malformed JSON"):
        Arch.from_json(text)


# ----------------------------------------------------------------------------------------------------
# validate
# ----------------------------------------------------------------------------------------------------


def replace_stage(values: tuple, index: int, stage_values: Any) -> tuple:
    return (*values[:index], stage_values, *values[index + 1 :])


DROP = object()  # spoil by removing the entry

# (id, field, index (None: the whole field), spoiled value, fragments the error must hold) for tiny's max arch.
TINY_CASES = [
    ("resolution", "resolution", None, 30, ["arch.resolution", "30", "[16, 20, 24, 28, 32]"]),
    ("stem width", "width", 0, 12, ["arch.width[0] (stem)", "12", "[8, 16]"]),
    ("stage width", "width", 2, 20, ["arch.width[2] (s2)", "20", "[16, 24]"]),
    ("head width", "width", 5, 96, ["arch.width[5] (head)", "96", "[64, 128]"]),
    ("depth", "depth", 1, 4, ["arch.depth[1] (s2)", "4", "[1, 2, 3]"]),
    ("kernel size", "kernel_size", 1, (5, 7, 5), ["arch.kernel_size[1][1] (s2)", "7", "[3, 5]"]),
    ("expand ratio", "expand_ratio", 2, (6, 6, 5), ["arch.expand_ratio[2][2] (s3)", "5", "[3, 4, 6]"]),
    ("fixed expand ratio", "expand_ratio", 0, (1, 2), ["arch.expand_ratio[0][1] (s1)", "2", "[1]"]),
    ("too many kernels", "kernel_size", 3, (5, 5, 5), ["arch.kernel_size[3] (s4)", "expected 2 values", "got 3"]),
    ("too few expands", "expand_ratio", 1, (6,), ["arch.expand_ratio[1] (s2)", "expected 3 values", "got 1"]),
    ("missing stage", "depth", 3, DROP, ["arch.depth", "expected 4 stages", "'tiny'", "another space"]),
    ("missing width", "width", 5, DROP, ["arch.width", "expected 6 values", "another space"]),
]


def spoil(arch: Arch, field: str, index: int | None, value: Any) -> Arch:
    if index is None:
        return dataclasses.replace(arch, **{field: value})
    values = getattr(arch, field)
    spoiled = (*values[:index], *values[index + 1 :]) if value is DROP else replace_stage(values, index, value)
    return dataclasses.replace(arch, **{field: spoiled})


@pytest.mark.parametrize(
    ("field", "index", "value", "fragments"), [c[1:] for c in TINY_CASES], ids=[c[0] for c in TINY_CASES]
)
def test_validate_rejects_out_of_space_values(field: str, index: int | None, value: Any, fragments: list[str]) -> None:
    space = SPACES["tiny"]
    arch = space.max_arch()
    assert space.validate(arch) is arch
    with expect_error(*fragments):
        space.validate(spoil(arch, field, index, value))


@pytest.mark.parametrize("field", ["kernel_size", "expand_ratio"])
def test_validate_rejects_differing_blocks_in_a_per_stage_space(field: str) -> None:
    space = SPACES["attentivenas"]
    arch = space.max_arch()  # mb2 has 5 blocks, kernel {3, 5}, expand {4, 5, 6}
    stage = (5, 5, 3, 5, 5) if field == "kernel_size" else (6, 6, 6, 4, 6)
    spoiled = dataclasses.replace(arch, **{field: replace_stage(getattr(arch, field), 1, stage)})
    with expect_error(f"arch.{field}[1] (mb2)", "per stage", str(list(stage))):
        space.validate(spoiled)


@pytest.mark.parametrize(
    ("source", "target", "fragments"),
    [
        ("tiny", "attentivenas", ["arch.width", "expected 9 values", "'attentivenas'", "another space"]),
        ("attentivenas", "tiny", ["arch.width", "expected 6 values", "'tiny'", "another space"]),
        ("ofa_mbv3", "attentivenas", ["arch.width", "expected 9 values", "another space"]),
        ("attentivenas", "ofa_mbv3", ["arch.width", "expected 8 values", "another space"]),
    ],
)
def test_validate_rejects_an_arch_of_another_space(source: str, target: str, fragments: list[str]) -> None:
    with expect_error(*fragments):
        SPACES[target].validate(SPACES[source].max_arch())


@pytest.mark.parametrize("value", [None, {"resolution": 32}, "r32", 42])
def test_validate_rejects_non_arch_input(value: Any) -> None:
    with expect_error("expected an Arch", type(value).__name__):
        SPACES["tiny"].validate(value)


# ----------------------------------------------------------------------------------------------------
# random operators (property tests)
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPACE_NAMES)
@PROPERTY
@given(seed=SEEDS)
def test_sample_is_valid_and_reproducible(name: str, seed: int) -> None:
    space = SPACES[name]
    arch = space.sample(random.Random(seed))
    assert space.validate(arch) is arch
    assert space.sample(random.Random(seed)) == arch
    assert Arch.from_json(arch.to_json()) == arch


@pytest.mark.parametrize("name", SPACE_NAMES)
@PROPERTY
@given(seed=SEEDS, prob=PROBABILITIES)
def test_mutate_is_valid_and_reproducible(name: str, seed: int, prob: float) -> None:
    space = SPACES[name]
    rng = random.Random(seed)
    parent = space.sample(rng)
    child = space.mutate(parent, random.Random(seed + 1), prob)
    space.validate(child)
    assert space.mutate(parent, random.Random(seed + 1), prob) == child
    assert space.mutate(parent, rng, prob, resolution_prob=0.0).resolution == parent.resolution


@pytest.mark.parametrize("name", SPACE_NAMES)
@PROPERTY
@given(seed=SEEDS)
def test_mutate_with_zero_probability_keeps_the_arch(name: str, seed: int) -> None:
    space = SPACES[name]
    rng = random.Random(seed)
    arch = space.sample(rng)
    assert space.mutate(arch, rng, 0.0) == arch


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_mutate_with_full_probability_usually_changes_the_arch(name: str) -> None:
    space = SPACES[name]
    rng = random.Random(0)
    changed = 0
    for _ in range(200):
        arch = space.sample(rng)
        changed += space.mutate(arch, rng, 1.0) != arch
    assert changed >= 190


@pytest.mark.parametrize("name", SPACE_NAMES)
@PROPERTY
@given(seed=SEEDS)
def test_crossover_is_valid_and_reproducible(name: str, seed: int) -> None:
    space = SPACES[name]
    rng = random.Random(seed)
    first, second = space.sample(rng), space.sample(rng)
    child = space.crossover(first, second, random.Random(seed + 1))
    space.validate(child)
    assert space.crossover(first, second, random.Random(seed + 1)) == child
    assert child.resolution in (first.resolution, second.resolution)
    for index, pair in enumerate(zip(first.width, second.width)):
        assert child.width[index] in pair
    for index, pair in enumerate(zip(first.depth, second.depth)):
        assert child.depth[index] in pair
    assert space.crossover(first, first, rng) == first


def test_crossover_of_extremes_mixes_both_parents() -> None:
    space = SPACES["tiny"]
    low, high = space.min_arch(), space.max_arch()
    children = {space.crossover(low, high, random.Random(seed)) for seed in range(50)}
    assert len(children) > 40
    assert any(child.width[0] == low.width[0] and child.width[-1] == high.width[-1] for child in children)


@pytest.mark.parametrize("prob", [-0.1, 1.5, float("nan")])
def test_mutate_rejects_bad_probability(prob: float) -> None:
    space = SPACES["tiny"]
    with expect_error("mutation probability", "[0, 1]"):
        space.mutate(space.min_arch(), random.Random(0), prob)


def test_operators_reject_archs_of_another_space() -> None:
    tiny, attentive = SPACES["tiny"], SPACES["attentivenas"]
    with expect_error("another space"):
        tiny.mutate(attentive.min_arch(), random.Random(0), 0.5)
    with expect_error("another space"):
        tiny.crossover(tiny.min_arch(), attentive.min_arch(), random.Random(0))


def test_sample_reaches_every_choice() -> None:
    space = SPACES["tiny"]
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(500)]
    assert {arch.resolution for arch in archs} == set(space.resolution)
    for index, choices in enumerate(space.width_choices):
        assert {arch.width[index] for arch in archs} == set(choices)
    for index, stage in enumerate(space.stages):
        assert {arch.depth[index] for arch in archs} == set(stage.depth)
        assert {k for arch in archs for k in arch.kernel_size[index]} == set(stage.kernel_size)
        assert {e for arch in archs for e in arch.expand_ratio[index]} == set(stage.expand_ratio)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_min_and_max_arch_are_the_extremes(name: str) -> None:
    space = SPACES[name]
    low, high = space.validate(space.min_arch()), space.validate(space.max_arch())
    assert low.resolution == min(space.resolution) and high.resolution == max(space.resolution)
    assert low.width == tuple(map(min, space.width_choices))
    assert high.width == tuple(map(max, space.width_choices))
    assert low.depth == tuple(min(stage.depth) for stage in space.stages)
    assert high.depth == tuple(max(stage.depth) for stage in space.stages)
    assert sum(high.depth) == space.max_blocks


# ----------------------------------------------------------------------------------------------------
# size against brute force on very small spaces
# ----------------------------------------------------------------------------------------------------


def small_space(granularity: str, depths: list[list[int]], kernels: list[int], expands: list[float]) -> SearchSpace:
    """A space of len(depths) stages, small enough to enumerate."""
    stages = [
        {
            "width": [8, 16] if index == 0 else [16],
            "depth": depth,
            "kernel_size": kernels,
            "expand_ratio": expands,
            "stride": 2 if index else 1,
            "se": bool(index),
            "activation": "relu",
        }
        for index, depth in enumerate(depths)
    ]
    return SearchSpace.from_dict(
        {
            "name": "small",
            "resolution": [8, 12],
            "granularity": granularity,
            "shortcut": "projected",
            "stem": {"width": [8], "kernel_size": 3, "stride": 2, "activation": "relu"},
            "stages": stages,
            "head": {"width": [16, 32], "expand_ratio": 2, "bias": False, "activation": "relu"},
        }
    )


def brute_force_count(space: SearchSpace) -> int:
    """Archs built from every combination of allowed values per block, kept when ``validate`` accepts them."""
    values = sorted({v for stage in space.stages for v in stage.kernel_size})
    ratios = sorted({v for stage in space.stages for v in stage.expand_ratio})
    stage_options = []
    for stage in space.stages:
        options = []
        for depth in range(1, max(stage.depth) + 2):
            for kernels in itertools.product(values, repeat=depth):
                for expands in itertools.product(ratios, repeat=depth):
                    options.append((depth, kernels, expands))
        stage_options.append(options)
    count = 0
    for resolution in space.resolution:
        for width in itertools.product(*space.width_choices):
            for combo in itertools.product(*stage_options):
                arch = Arch(
                    resolution,
                    width,
                    tuple(option[0] for option in combo),
                    tuple(option[1] for option in combo),
                    tuple(option[2] for option in combo),
                )
                try:
                    space.validate(arch)
                except ValueError:
                    continue
                count += 1
    return count


SMALL_SPACES = [
    ("per_stage", [[1, 2]], [3, 5], [3, 6]),
    ("per_block", [[1, 2]], [3, 5], [3, 6]),
    ("per_stage", [[1], [1, 2, 3]], [3, 5], [2, 4]),
    ("per_block", [[1], [1, 2, 3]], [3, 5], [2, 4]),
    ("per_block", [[1, 2], [2]], [3, 5, 7], [4]),
    ("per_stage", [[1, 2], [1, 2]], [3], [2.5, 4]),
]


@pytest.mark.parametrize(("granularity", "depths", "kernels", "expands"), SMALL_SPACES)
def test_size_equals_enumeration(granularity: str, depths: list, kernels: list, expands: list) -> None:
    space = small_space(granularity, depths, kernels, expands)
    archs = space.enumerate()
    assert len(set(archs)) == len(archs) == space.size()
    for arch in archs:
        space.validate(arch)


@pytest.mark.parametrize(("granularity", "depths", "kernels", "expands"), SMALL_SPACES[:4])
def test_size_equals_brute_force(granularity: str, depths: list, kernels: list, expands: list) -> None:
    space = small_space(granularity, depths, kernels, expands)
    assert brute_force_count(space) == space.size()


def test_size_by_hand() -> None:
    # 2 resolutions x 1 stem x 2 stage-1 widths x 2 heads = 8, times the block choices of each stage.
    # One stage of depth 1 or 2 with (kernel, expand) in {3, 5} x {3, 6}: 4 pairs per block or per stage.
    assert small_space("per_block", [[1, 2]], [3, 5], [3, 6]).size() == 8 * (4 + 4**2)
    assert small_space("per_stage", [[1, 2]], [3, 5], [3, 6]).size() == 8 * (4 + 4)
    # A second stage (one width) of depth 1..3 with 4 pairs per block.
    assert small_space("per_block", [[1], [1, 2, 3]], [3, 5], [2, 4]).size() == 8 * 4 * (4 + 4**2 + 4**3)
    assert small_space("per_stage", [[1], [1, 2, 3]], [3, 5], [2, 4]).size() == 8 * 4 * (4 * 3)


# ----------------------------------------------------------------------------------------------------
# bad space data
# ----------------------------------------------------------------------------------------------------


def set_at(path: tuple, value: Any) -> Callable[[dict], None]:
    """Set (or with ``DROP`` delete) the entry at ``path`` of a nested space dict."""

    def change(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        if value is DROP:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return change


BAD_SPACES = [
    ("unknown top key", set_at(("colour",), 1), ["unknown key(s) colour", "allowed"]),
    ("unknown stage key", set_at(("stages", 1, "kernel"), [3]), ["stages[1]", "unknown key(s) kernel"]),
    ("unknown stem key", set_at(("stem", "depth"), 1), ["stem", "unknown key(s) depth"]),
    ("missing top key", set_at(("head",), DROP), ["missing key(s) head"]),
    ("missing stage key", set_at(("stages", 0, "depth"), DROP), ["stages[0]", "missing key(s) depth"]),
    ("missing head key", set_at(("head", "bias"), DROP), ["head", "missing key(s) bias"]),
    (
        "string for int",
        set_at(("stages", 1, "kernel_size"), ["3"]),
        ["stages[1].kernel_size[0]", "expected an integer"],
    ),
    ("bool for int", set_at(("stages", 0, "width"), [True]), ["stages[0].width[0]", "expected an integer"]),
    ("bool input channels", set_at(("input_channels",), True), ["input_channels", "expected an integer"]),
    ("float resolution", set_at(("resolution",), [32.0]), ["resolution[0]", "expected an integer"]),
    ("list for mapping", set_at(("stem",), [8, 16]), ["stem", "expected a mapping"]),
    ("int for stage mapping", set_at(("stages", 2), 3), ["stages[2]", "expected a mapping"]),
    ("scalar for list", set_at(("resolution",), 32), ["resolution", "expected a list of choices"]),
    ("mapping for list", set_at(("head", "width"), {"a": 1}), ["head.width", "expected a list of choices"]),
    ("empty stages", set_at(("stages",), []), ["stages", "non-empty list"]),
    ("empty resolution", set_at(("resolution",), []), ["resolution", "empty"]),
    ("empty expand", set_at(("stages", 2, "expand_ratio"), []), ["stages[2].expand_ratio", "empty"]),
    ("empty head width", set_at(("head", "width"), []), ["head.width", "empty"]),
    ("duplicate choices", set_at(("stages", 1, "depth"), [1, 2, 2]), ["stages[1].depth", "duplicate"]),
    ("zero depth", set_at(("stages", 1, "depth"), [0, 1]), ["stages[1].depth[0]", ">= 1"]),
    ("huge width", set_at(("stages", 1, "width"), [16, 10**11]), ["stages[1].width[1]", "<= 100000"]),
    ("huge ratio", set_at(("stages", 1, "expand_ratio"), [3, 1e20]), ["stages[1].expand_ratio[1]", "<= 100000"]),
    ("negative expand", set_at(("stages", 1, "expand_ratio"), [-3]), ["stages[1].expand_ratio[0]", "positive"]),
    ("nan expand", set_at(("stages", 1, "expand_ratio"), [float("nan")]), ["stages[1].expand_ratio[0]", "positive"]),
    ("string expand", set_at(("head", "expand_ratio"), "4"), ["head.expand_ratio", "positive number"]),
    ("even kernel", set_at(("stages", 1, "kernel_size"), [3, 4]), ["stages[1].kernel_size", "odd", "4"]),
    ("even stem kernel", set_at(("stem", "kernel_size"), 2), ["stem.kernel_size", "odd"]),
    ("stride 3", set_at(("stages", 1, "stride"), 3), ["stages[1].stride", "1 or 2", "3"]),
    ("float stride", set_at(("stages", 1, "stride"), 2.0), ["stages[1].stride", "1 or 2"]),
    ("bool stride", set_at(("stem", "stride"), True), ["stem.stride", "1 or 2"]),
    (
        "activation",
        set_at(("stages", 0, "activation"), "gelu"),
        ["stages[0].activation", "gelu", "relu, swish, h_swish"],
    ),
    ("head activation", set_at(("head", "activation"), None), ["head.activation", "relu, swish, h_swish"]),
    ("granularity", set_at(("granularity",), "per_layer"), ["granularity", "per_layer", "per_stage, per_block"]),
    ("shortcut", set_at(("shortcut",), "dense"), ["shortcut", "dense", "projected, identity"]),
    ("se not bool", set_at(("stages", 3, "se"), "yes"), ["stages[3].se", "true or false"]),
    ("bias not bool", set_at(("head", "bias"), 1), ["head.bias", "true or false"]),
    ("empty name", set_at(("name",), ""), ["name", "non-empty string"]),
    ("stage name not a string", set_at(("stages", 0, "name"), ["s1"]), ["stages[0].name", "string"]),
    ("description not a string", set_at(("description",), 3), ["description", "string"]),
    (
        "transform with one kernel size",
        lambda data: data.update(
            kernel_transform=True, stages=[{**stage, "kernel_size": [3]} for stage in data["stages"]]
        ),
        ["kernel_transform", "single kernel size"],
    ),
]


@pytest.mark.parametrize(("change", "fragments"), [case[1:] for case in BAD_SPACES], ids=[c[0] for c in BAD_SPACES])
def test_space_from_dict_rejects_bad_data(change: Callable[[dict], Any], fragments: list[str]) -> None:
    data = copy.deepcopy(SPACES["tiny"].to_dict())
    SearchSpace.from_dict(copy.deepcopy(data))  # the unspoiled data is fine
    change(data)
    with expect_error(*fragments):
        SearchSpace.from_dict(data)


@pytest.mark.parametrize("data", [[1, 2], "tiny", None, 3])
def test_space_from_dict_rejects_non_mapping(data: Any) -> None:
    with expect_error("space: expected a mapping", type(data).__name__):
        SearchSpace.from_dict(data)


def test_load_space_names_the_file_and_key(tmp_path: Path) -> None:
    data = SPACES["tiny"].to_dict()
    data["stages"][1]["kernel_size"] = [3, 6]
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(data))  # JSON is valid YAML
    with expect_error("bad.yaml", "stages[1].kernel_size", "odd"):
        load_space(path)


@pytest.mark.parametrize("text", ["name: [tiny\n", "stages: {a: 1\n", "a: b: c\n", "\tname: tiny\n"])
def test_load_space_rejects_malformed_yaml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with expect_error("broken.yaml", "malformed YAML"):
        load_space(path)


def test_load_space_rejects_empty_yaml(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    with expect_error("expected a mapping"):
        load_space(path)


def test_load_space_rejects_unknown_name_listing_shipped_names() -> None:
    with expect_error("unknown space 'resnet'", ", ".join(SPACE_NAMES)):
        load_space("resnet")


def test_load_space_rejects_missing_file(tmp_path: Path) -> None:
    with expect_error("not found", "nowhere.yaml"):
        load_space(tmp_path / "nowhere.yaml")


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_load_arch_rejects_malformed_files(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"arch{suffix}"
    path.write_text('{"resolution": 32, "width": [8, 16' if suffix == ".json" else "resolution: [32\n")
    with expect_error(f"arch{suffix}", "malformed"):
        load_arch(path)


def test_load_arch_rejects_missing_file(tmp_path: Path) -> None:
    with expect_error("arch file not found"):
        load_arch(tmp_path / "missing.json")


@pytest.mark.parametrize("wrapped", [False, True])
def test_load_arch_rejects_a_file_of_another_space(tmp_path: Path, wrapped: bool) -> None:
    arch = SPACES["tiny"].max_arch().to_dict()
    data = {"space": "tiny", "arch": arch} if wrapped else {"space": "tiny", **arch}
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(data))
    assert load_arch(path, SPACES["tiny"]) == SPACES["tiny"].max_arch()
    assert load_arch(path) == SPACES["tiny"].max_arch()
    with expect_error("for space 'tiny'", "not 'attentivenas'"):
        load_arch(path, SPACES["attentivenas"])


def test_load_arch_validates_against_the_space(tmp_path: Path) -> None:
    data = SPACES["tiny"].max_arch().to_dict()
    data["resolution"] = 30
    path = tmp_path / "arch.yaml"
    path.write_text(json.dumps(data))
    assert load_arch(path).resolution == 30  # no space given: parsed, not validated
    with expect_error("arch.resolution", "[16, 20, 24, 28, 32]"):
        load_arch(path, SPACES["tiny"])


# ----------------------------------------------------------------------------------------------------
# AttentiveNAS A0-A6
# ----------------------------------------------------------------------------------------------------

# REFERENCE table: resolution, width (stem, mb1..mb7, head), depth, kernel and expand (mb1..mb7).
ATTENTIVENAS_MODELS = {
    "a0": (192, "16,16,24,32,64,112,192,216,1792", "1,3,3,3,3,3,1", "3,3,3,3,3,3,3", "1,4,4,4,4,6,6"),
    "a1": (224, "16,16,24,32,64,112,192,216,1984", "1,3,3,3,3,3,1", "3,3,3,5,3,5,3", "1,4,4,4,4,6,6"),
    "a2": (224, "16,16,24,32,64,112,200,224,1984", "1,3,3,3,3,4,1", "3,3,3,3,3,5,3", "1,4,5,4,4,6,6"),
    "a3": (224, "16,16,24,32,64,112,208,224,1984", "2,3,3,4,3,5,1", "3,3,3,5,3,3,3", "1,4,4,4,4,6,6"),
    "a4": (256, "16,16,24,32,64,112,192,216,1984", "1,3,3,4,3,5,1", "3,3,3,5,3,5,3", "1,4,4,5,4,6,6"),
    "a5": (256, "16,16,24,32,72,112,192,216,1792", "1,3,3,3,4,6,1", "3,3,3,5,3,3,3", "1,4,5,4,4,6,6"),
    "a6": (288, "16,16,24,32,64,112,216,224,1984", "1,3,3,4,4,6,1", "3,3,3,3,3,5,3", "1,4,6,5,4,6,6"),
}


def numbers(text: str) -> tuple[int, ...]:
    return tuple(int(item) for item in text.split(","))


@pytest.mark.parametrize("model", sorted(ATTENTIVENAS_MODELS))
def test_attentivenas_arch_files_load_and_match_the_table(model: str) -> None:
    space = SPACES["attentivenas"]
    arch = load_arch(ARCH_DIR / f"attentivenas_{model}.yaml", space)
    resolution, width, depth, kernel, expand = ATTENTIVENAS_MODELS[model]
    depths = numbers(depth)
    assert arch.resolution == resolution
    assert arch.width == numbers(width)
    assert arch.depth == depths
    assert arch.kernel_size == tuple((k,) * d for k, d in zip(numbers(kernel), depths))
    assert arch.expand_ratio == tuple((e,) * d for e, d in zip(numbers(expand), depths))


def test_attentivenas_a0_is_the_smallest_subnet() -> None:
    space = SPACES["attentivenas"]
    assert load_arch(ARCH_DIR / "attentivenas_a0.yaml", space) == space.min_arch()


def test_attentivenas_arch_files_are_not_tiny_archs() -> None:
    with expect_error("for space 'attentivenas'", "not 'tiny'"):
        load_arch(ARCH_DIR / "attentivenas_a3.yaml", SPACES["tiny"])
