"""Arch encoding: fixed length, documented order, inactive slots zero, derived costs."""

import dataclasses
import random

import numpy as np
import pytest

from ofa._genome import genome_of
from ofa.flops import count_macs_many, count_params_many
from ofa.space import load_space
from predictors.encoding import encode, feature_names

SPACES = ("tiny", "attentivenas", "ofa_mbv3")


@pytest.fixture(scope="module", params=SPACES)
def space(request):
    return load_space(request.param)


def _archs(space, count=40, seed=0):
    rng = random.Random(seed)
    return [space.min_arch(), space.max_arch()] + [space.sample(rng) for _ in range(count)]


def test_fixed_length_matches_feature_names(space):
    archs = _archs(space)
    assert len({sum(arch.depth) for arch in archs}) > 1  # archs of different depths
    for derived in (True, False):
        features = encode(space, archs, derived=derived)
        assert features.dtype == np.float64
        assert features.shape == (len(archs), len(feature_names(space, derived=derived)))
    assert len(feature_names(space, derived=True)) == len(feature_names(space, derived=False)) + 2
    assert len(set(feature_names(space))) == len(feature_names(space))


def test_feature_order_is_the_documented_one(space):
    names = feature_names(space)
    n_stages = len(space.stages)
    assert names[0] == "resolution"
    assert names[1] == "width.stem" and names[n_stages + 2] == "width.head"
    assert names[n_stages + 3] == f"depth.{space.stages[0].name}"
    assert names[-2:] == ["mmacs", "mparams"]
    slots = names[2 * n_stages + 3 : -2]
    assert len(slots) == 2 * space.max_blocks
    assert slots[:2] == [f"kernel_size.{space.stages[0].name}.0", f"expand_ratio.{space.stages[0].name}.0"]
    for arch in _archs(space, count=10, seed=1):
        row = dict(zip(names, encode(space, [arch])[0]))
        assert row["resolution"] == arch.resolution
        assert row["width.head"] == arch.width[-1]
        for index, stage in enumerate(space.stages):
            assert row[f"depth.{stage.name}"] == arch.depth[index]
            for block in range(arch.depth[index]):
                assert row[f"kernel_size.{stage.name}.{block}"] == arch.kernel_size[index][block]
                assert row[f"expand_ratio.{stage.name}.{block}"] == arch.expand_ratio[index][block]


def test_inactive_slots_are_zero_and_active_ones_are_real_choices(space):
    names = feature_names(space)
    for arch in _archs(space, count=20, seed=2):
        row = dict(zip(names, encode(space, [arch])[0]))
        for index, stage in enumerate(space.stages):
            for block in range(max(stage.depth)):
                kernel, expand = row[f"kernel_size.{stage.name}.{block}"], row[f"expand_ratio.{stage.name}.{block}"]
                if block < arch.depth[index]:
                    assert kernel >= 1 and expand >= 1
                else:
                    assert kernel == 0 and expand == 0


def test_derived_costs_match_the_counter(space):
    archs = _archs(space, count=15, seed=3)
    features = encode(space, archs, num_classes=10)
    np.testing.assert_allclose(features[:, -2], count_macs_many(space, archs, num_classes=10) / 1e6)
    np.testing.assert_allclose(features[:, -1], count_params_many(space, archs, num_classes=10) / 1e6)
    np.testing.assert_array_equal(features[:, :-2], encode(space, archs, derived=False))


def test_distinct_archs_have_distinct_encodings():
    space = load_space("tiny")
    rng = random.Random(4)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(300)))
    features = encode(space, archs, derived=False)
    assert len({tuple(row) for row in features}) == len(archs)


def test_empty_and_foreign_archs():
    tiny, other = load_space("tiny"), load_space("attentivenas")
    assert encode(tiny, []).shape == (0, len(feature_names(tiny)))
    assert encode(tiny, [], derived=False).shape == (0, len(feature_names(tiny, derived=False)))
    with pytest.raises(ValueError, match="another space"):
        encode(tiny, [other.min_arch()])
    with pytest.raises(ValueError, match="another space"):
        encode(tiny, [other.min_arch()], derived=False)


@pytest.mark.parametrize("derived", [True, False])
def test_an_arch_with_a_value_outside_the_space_is_refused(derived: bool) -> None:
    """With derived costs the counter validates; without them the encoder does: the same errors either way."""
    tiny = load_space("tiny")
    wrong_width = dataclasses.replace(tiny.max_arch(), width=(99, *tiny.max_arch().width[1:]))
    wrong_kernel = dataclasses.replace(tiny.min_arch(), kernel_size=((7,), *tiny.min_arch().kernel_size[1:]))
    for arch, field in ((wrong_width, r"arch\.width\[0\]"), (wrong_kernel, r"arch\.kernel_size")):
        with pytest.raises(ValueError, match=field):
            encode(tiny, [tiny.min_arch(), arch], derived=derived)


@pytest.mark.parametrize("num_classes", [10, 1000])
def test_costs_from_the_search_rows_are_the_counters_exactly(space, num_classes):
    """The encoding's costs come from the search's tables; the per-arch counter is the independent check."""
    genome = genome_of(space, num_classes)
    archs = _archs(space, count=60, seed=num_classes)
    rows = genome.encode(archs)
    assert np.array_equal(genome.macs(rows), count_macs_many(space, archs, num_classes))
    assert np.array_equal(genome.params(rows), count_params_many(space, archs, num_classes))
    features = encode(space, archs, num_classes=num_classes)
    assert np.array_equal(features[:, -2], count_macs_many(space, archs, num_classes) / 1e6)
    assert genome_of(space, num_classes) is genome  # built once per space and class count
