"""The analytic MAC and parameter counter (``ofa.flops``): published numbers, vectorised path, hand counts."""

from __future__ import annotations

import dataclasses
import random
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ofa.flops import count_macs, count_macs_many, count_params, count_params_many
from ofa.layer_costs import layout_macs, layout_params
from ofa.layout import network_layout
from ofa.space import Arch, SearchSpace, load_arch, load_space

ROOT = Path(__file__).resolve().parent.parent
SPACE_NAMES = sorted(path.stem for path in (ROOT / "configs" / "spaces").glob("*.yaml"))
SPACES = {name: load_space(name) for name in SPACE_NAMES}
PROPERTY = settings(max_examples=200, deadline=None)
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)

# AttentiveNAS-A0..A6 in MMACs with 1000 classes (DESIGN.md; published rounded: 203, 279, 317, 357, 444, 491, 709).
ATTENTIVENAS_MMACS = {"a0": 203.4, "a1": 279.2, "a2": 316.7, "a3": 356.5, "a4": 443.5, "a5": 490.5, "a6": 709.0}


@pytest.mark.parametrize("model", sorted(ATTENTIVENAS_MMACS))
def test_attentivenas_models_have_the_published_macs(model: str) -> None:
    space = SPACES["attentivenas"]
    arch = load_arch(ROOT / "configs" / "archs" / f"attentivenas_{model}.yaml", space)
    assert count_macs(space, arch, num_classes=1000) / 1e6 == pytest.approx(ATTENTIVENAS_MMACS[model], abs=0.05)


# ----------------------------------------------------------------------------------------------------
# vectorised path == single path
# ----------------------------------------------------------------------------------------------------


def odd_space() -> SearchSpace:
    """Odd resolutions, fractional expand ratios, identity shortcuts, per-stage choices: the unusual paths."""
    return SearchSpace.from_dict(
        {
            "name": "odd",
            "input_channels": 1,
            "resolution": [17, 23, 31],
            "granularity": "per_stage",
            "shortcut": "identity",
            "stem": {"width": [8, 12], "kernel_size": 5, "stride": 2, "activation": "relu"},
            "stages": [
                {
                    "width": [12, 20],
                    "depth": [1, 2, 3],
                    "kernel_size": [3, 7],
                    "expand_ratio": [1, 2.5, 3.5],
                    "stride": 2,
                    "se": True,
                    "activation": "swish",
                },
                {
                    "width": [20, 36],
                    "depth": [2, 4],
                    "kernel_size": [1, 5],
                    "expand_ratio": [0.5, 1, 4.5],
                    "stride": 1,
                    "se": False,
                    "activation": "h_swish",
                },
            ],
            "head": {"width": [24, 40], "expand_ratio": 2.5, "bias": True, "activation": "relu"},
        }
    )


def spaces_for_counting() -> dict[str, SearchSpace]:
    return {**SPACES, "odd": odd_space()}


@pytest.mark.parametrize("name", [*SPACE_NAMES, "odd"])
@pytest.mark.parametrize("num_classes", [1000, 10])
def test_tabulated_counts_equal_the_layer_by_layer_count(name: str, num_classes: int) -> None:
    """The per-space plan (tabulated terms) against walking the built layout layer by layer."""
    space = spaces_for_counting()[name]
    rng = random.Random(name)
    archs = [space.min_arch(), space.max_arch()] + [space.sample(rng) for _ in range(200)]
    macs = count_macs_many(space, archs, num_classes)
    params = count_params_many(space, archs, num_classes)
    assert macs.dtype == np.int64 and params.dtype == np.int64
    assert macs.shape == params.shape == (len(archs),)
    layouts = [network_layout(space, arch, num_classes) for arch in archs]
    assert macs.tolist() == [layout_macs(layout) for layout in layouts]
    assert params.tolist() == [layout_params(layout) for layout in layouts]


def test_many_of_no_archs_is_empty() -> None:
    space = SPACES["tiny"]
    assert count_macs_many(space, []).shape == (0,)
    assert count_params_many(space, []).shape == (0,)


def test_counters_validate_the_arch() -> None:
    tiny, attentive = SPACES["tiny"], SPACES["attentivenas"]
    bad = dataclasses.replace(tiny.max_arch(), resolution=30)
    for count in (count_macs, count_params):
        with pytest.raises(ValueError, match=r"arch\.resolution.*\[16, 20, 24, 28, 32\]"):
            count(tiny, bad)
        with pytest.raises(ValueError, match="another space"):
            count(attentive, tiny.max_arch())
    for count_many in (count_macs_many, count_params_many):
        with pytest.raises(ValueError, match=r"arch\.resolution"):
            count_many(tiny, [tiny.min_arch(), bad])


def _odd_types(arch: Arch) -> dict[str, Arch]:
    """``arch`` with numbers of other types: equal values, some of which the space must refuse."""
    return {
        "numpy resolution": dataclasses.replace(arch, resolution=np.int64(arch.resolution)),
        "numpy widths": dataclasses.replace(arch, width=tuple(np.int64(width) for width in arch.width)),
        "numpy depths": dataclasses.replace(arch, depth=tuple(np.int64(depth) for depth in arch.depth)),
        "float depths": dataclasses.replace(arch, depth=tuple(float(depth) for depth in arch.depth)),
        "bool depths": dataclasses.replace(arch, depth=tuple(depth == 1 or depth for depth in arch.depth)),
        "decimal depths": dataclasses.replace(arch, depth=tuple(Decimal(depth) for depth in arch.depth)),
        "fraction depths": dataclasses.replace(arch, depth=tuple(Fraction(depth) for depth in arch.depth)),
        "list kernels": dataclasses.replace(arch, kernel_size=tuple(list(kernels) for kernels in arch.kernel_size)),
        "float expands": dataclasses.replace(
            arch, expand_ratio=tuple(tuple(float(value) for value in values) for values in arch.expand_ratio)
        ),
    }


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_counters_accept_exactly_what_the_space_accepts(name: str) -> None:
    """The table look-ups of one arch and of many agree with ``SearchSpace.validate`` on numbers of other types:
    an arch it accepts is counted as the layer-by-layer count does, one it refuses raises its error."""
    space, rng = SPACES[name], random.Random(0)
    for _ in range(20):
        arch = space.sample(rng)
        expected = layout_macs(network_layout(space, arch, 10)), layout_params(network_layout(space, arch, 10))
        for kind, odd in _odd_types(arch).items():
            try:
                space.validate(odd)
            except ValueError as error:
                for count in (count_macs, count_params, lambda s, a: count_macs_many(s, [a])):
                    with pytest.raises(ValueError, match=re.escape(str(error))):
                        count(space, odd)
                continue
            counts = count_macs(space, odd), count_params(space, odd)
            assert counts == expected, kind
            assert (count_macs_many(space, [odd])[0], count_params_many(space, [odd])[0]) == expected, kind


# ----------------------------------------------------------------------------------------------------
# monotonicity
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_macs_lie_between_min_and_max(name: str) -> None:
    space = SPACES[name]
    rng = random.Random(1)
    archs = [space.sample(rng) for _ in range(200)]
    low, high = count_macs(space, space.min_arch()), count_macs(space, space.max_arch())
    assert 0 < low < high
    macs = count_macs_many(space, archs)
    assert (macs >= low).all() and (macs <= high).all()
    params = count_params_many(space, archs)
    assert (params >= count_params(space, space.min_arch())).all()
    assert (params <= count_params(space, space.max_arch())).all()


def replace_at(values: tuple, index: int, value: object) -> tuple:
    return (*values[:index], value, *values[index + 1 :])


def next_choice(choices: tuple, value: object) -> object | None:
    """The next larger choice, or None at the top."""
    larger = [choice for choice in choices if choice > value]
    return min(larger) if larger else None


def grow(space: SearchSpace, arch: Arch, rng: random.Random) -> tuple[str, Arch] | None:
    """Raise one of resolution, a kernel size, an expand ratio or a depth to its next choice."""
    field = rng.choice(["resolution", "kernel_size", "expand_ratio", "depth"])
    if field == "resolution":
        larger = next_choice(space.resolution, arch.resolution)
        return None if larger is None else (field, dataclasses.replace(arch, resolution=larger))
    stage_index = rng.randrange(len(space.stages))
    stage = space.stages[stage_index]
    depth = arch.depth[stage_index]
    if field == "depth":
        larger = next_choice(stage.depth, depth)
        if larger is None:
            return None
        extra = larger - depth  # new blocks repeat the stage's last block: valid in both granularities
        kernels = (*arch.kernel_size[stage_index], *(arch.kernel_size[stage_index][-1],) * extra)
        expands = (*arch.expand_ratio[stage_index], *(arch.expand_ratio[stage_index][-1],) * extra)
        return field, dataclasses.replace(
            arch,
            depth=replace_at(arch.depth, stage_index, larger),
            kernel_size=replace_at(arch.kernel_size, stage_index, kernels),
            expand_ratio=replace_at(arch.expand_ratio, stage_index, expands),
        )
    values = getattr(arch, field)[stage_index]
    blocks = range(depth) if space.granularity == "per_stage" else [rng.randrange(depth)]
    larger = next_choice(getattr(stage, field), values[blocks[0]])
    if larger is None:
        return None
    stage_values = tuple(larger if block in blocks else value for block, value in enumerate(values))
    return field, dataclasses.replace(arch, **{field: replace_at(getattr(arch, field), stage_index, stage_values)})


@pytest.mark.parametrize("name", SPACE_NAMES)
@PROPERTY
@given(seed=SEEDS)
def test_macs_grow_with_resolution_kernel_expand_and_depth(name: str, seed: int) -> None:
    space = SPACES[name]
    rng = random.Random(seed)
    arch = space.sample(rng)
    grown = grow(space, arch, rng)
    if grown is None:
        return
    field, bigger = grown
    space.validate(bigger)
    before, after = count_macs(space, arch), count_macs(space, bigger)
    if field == "expand_ratio":  # mid channels are rounded to multiples of 8, so they may stay put
        assert after >= before
    else:
        assert after > before
    params_before, params_after = count_params(space, arch), count_params(space, bigger)
    if field == "resolution":  # weights do not depend on the input size
        assert params_after == params_before
    elif field == "expand_ratio":
        assert params_after >= params_before
    else:
        assert params_after > params_before


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_classifier_size_changes_macs_and_params_by_the_linear_layer(name: str) -> None:
    space = SPACES[name]
    arch = space.sample(random.Random(3))
    features = arch.width[-1]
    assert count_macs(space, arch, 1000) - count_macs(space, arch, 10) == features * 990
    # weight features x classes + bias per class
    assert count_params(space, arch, 1000) - count_params(space, arch, 10) == (features + 1) * 990


# ----------------------------------------------------------------------------------------------------
# a network counted by hand
# ----------------------------------------------------------------------------------------------------


def hand_space() -> SearchSpace:
    """One SE stage of up to two blocks, projected shortcuts, a 10-px input (odd sizes after striding)."""
    return SearchSpace.from_dict(
        {
            "name": "hand",
            "input_channels": 3,
            "resolution": [10],
            "granularity": "per_block",
            "shortcut": "projected",
            "stem": {"width": [8], "kernel_size": 3, "stride": 2, "activation": "relu"},
            "stages": [
                {
                    "width": [16],
                    "depth": [1, 2],
                    "kernel_size": [3, 5],
                    "expand_ratio": [3],
                    "stride": 2,
                    "se": True,
                    "activation": "relu",
                }
            ],
            "head": {"width": [24], "expand_ratio": 2, "bias": True, "activation": "relu"},
        }
    )


def test_hand_counted_network() -> None:
    space = hand_space()
    arch = Arch(resolution=10, width=(8, 16, 24), depth=(2,), kernel_size=((3, 5),), expand_ratio=((3, 3),))

    # Stem: 3 -> 8 channels, 3x3, stride 2: 10x10 -> 5x5 (25 positions); conv weight + BN gamma/beta.
    stem_macs = 3 * 8 * 3 * 3 * 25
    stem_params = 3 * 8 * 3 * 3 + 2 * 8

    # Block 1: 8 -> 16 channels, stride 2: 5x5 -> 3x3 ((5 + 1) // 2 = 3, 9 positions); mid = 8 * 3 = 24.
    b1_expand = 8 * 24 * 25  # 1x1 expand at the input size 5x5
    b1_depthwise = 24 * 3 * 3 * 9  # 3x3 depthwise, one filter per channel, at the output size 3x3
    b1_se = 24 * 8 + 8 * 24  # SE: 24 -> make_divisible(24 // 4 = 6) = 8 -> 24, at 1x1
    b1_project = 24 * 16 * 9  # 1x1 project 24 -> 16
    b1_shortcut = 8 * 16 * 9  # avg-pool then 1x1 conv 8 -> 16 (channels differ), no BN
    b1_macs = b1_expand + b1_depthwise + b1_se + b1_project + b1_shortcut
    b1_params = (
        (8 * 24 + 2 * 24)  # expand weight + BN
        + (24 * 3 * 3 + 2 * 24)  # depthwise weight + BN
        + (24 * 8 + 8 + 8 * 24 + 24)  # SE reduce and expand convs with biases
        + (24 * 16 + 2 * 16)  # project weight + BN
        + 8 * 16  # shortcut conv weight (no bias, no BN)
    )

    # Block 2: 16 -> 16 channels, stride 1, 3x3 -> 3x3 (9 positions); mid = 16 * 3 = 48; identity shortcut.
    b2_expand = 16 * 48 * 9
    b2_depthwise = 48 * 5 * 5 * 9  # kernel 5 in this block
    b2_se = 48 * 16 + 16 * 48  # SE: make_divisible(48 // 4 = 12) = 16 (12 rounds up to 16)
    b2_project = 48 * 16 * 9
    b2_macs = b2_expand + b2_depthwise + b2_se + b2_project
    b2_params = (16 * 48 + 2 * 48) + (48 * 5 * 5 + 2 * 48) + (48 * 16 + 16 + 16 * 48 + 48) + (48 * 16 + 2 * 16)

    # Head: 1x1 conv 16 -> 16 * 2 = 32 at 3x3 + BN; pool; 1x1 conv 32 -> 24 with bias at 1x1; linear 24 -> 10.
    head_macs = 16 * 32 * 9 + 32 * 24 + 24 * 10
    head_params = (16 * 32 + 2 * 32) + (32 * 24 + 24) + (24 * 10 + 10)

    expected_macs = stem_macs + b1_macs + b2_macs + head_macs
    expected_params = stem_params + b1_params + b2_params + head_params
    assert expected_macs == 48912 and expected_params == 7874  # the sums above, written out
    assert count_macs(space, arch, num_classes=10) == expected_macs
    assert count_params(space, arch, num_classes=10) == expected_params
    assert count_macs_many(space, [arch], num_classes=10).tolist() == [expected_macs]
    assert count_params_many(space, [arch], num_classes=10).tolist() == [expected_params]

    # Depth 1 drops block 2: the head then reads block 1's 16 channels at 3x3, unchanged.
    shallow = Arch(resolution=10, width=(8, 16, 24), depth=(1,), kernel_size=((3,),), expand_ratio=((3,),))
    assert count_macs(space, shallow, num_classes=10) == stem_macs + b1_macs + head_macs
    assert count_params(space, shallow, num_classes=10) == stem_params + b1_params + head_params


def test_identity_policy_drops_projection_convs() -> None:
    # The same network with shortcut "identity": block 1 (shape changes) gets no shortcut at all.
    data = hand_space().to_dict()
    data["shortcut"] = "identity"
    plain = SearchSpace.from_dict(data)
    arch = Arch(resolution=10, width=(8, 16, 24), depth=(1,), kernel_size=((3,),), expand_ratio=((3,),))
    assert count_macs(hand_space(), arch) - count_macs(plain, arch) == 8 * 16 * 9
    assert count_params(hand_space(), arch) - count_params(plain, arch) == 8 * 16


@pytest.mark.parametrize("classes", [0, -5, 2.5, True])
def test_counts_refuse_a_classifier_without_classes(tiny: SearchSpace, classes: object) -> None:
    for count in (count_macs, count_params):
        with pytest.raises(ValueError, match=f"num_classes must be an integer >= 1, got {classes!r}"):
            count(tiny, tiny.max_arch(), classes)
    with pytest.raises(ValueError, match="num_classes"):
        count_macs_many(tiny, [tiny.max_arch()], classes)
