"""Predictors: accuracy on a synthetic ground truth, pickle-free files, space and checksum checks."""

import json
import random
from dataclasses import replace

import numpy as np
import pytest

from ofa.flops import count_macs_many, count_params_many
from ofa.space import load_space
from predictors.encoding import encode, feature_names
from predictors.metrics import kendall_tau
from predictors.models import (
    DEFAULT_PREDICTOR,
    PREDICTORS,
    LightGBMPredictor,
    Predictor,
    _checksum,
    _linear_base_predict,
    choose_shrinkage,
    create_predictor,
    load_predictor,
    space_fingerprint,
)


@pytest.fixture(scope="module")
def space():
    return load_space("tiny")


@pytest.fixture(scope="module")
def synthetic(space):
    """700 distinct tiny archs; truth = log(MMACs) + weighted depth, width and expand sums; 2% noise."""
    rng = random.Random(0)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(900)))[:700]
    features = encode(space, archs)
    column = {name: index for index, name in enumerate(feature_names(space))}
    depth = features[:, [column[f"depth.{stage.name}"] for stage in space.stages]].sum(axis=1)
    width = features[:, [column[f"width.{stage.name}"] for stage in space.stages]].sum(axis=1)
    expand = features[:, [index for name, index in column.items() if name.startswith("expand_ratio")]].sum(axis=1)
    truth = np.log(features[:, column["mmacs"]]) + 0.06 * depth + 0.0018 * width + 0.012 * expand
    targets = truth + np.random.default_rng(1).normal(0, 0.02 * truth.std(), len(archs))
    return archs, targets


@pytest.mark.parametrize("name", ["lightgbm", "random_forest", "extra_trees", "gbdt"])
def test_tree_models_rank_the_synthetic_truth(space, synthetic, name):
    archs, targets = synthetic
    train, test = slice(0, 400), slice(500, 700)
    predictor = create_predictor(name, space, seed=0).fit(archs[train], targets[train])
    tau = kendall_tau(targets[test], predictor.predict(archs[test]))
    macs_tau = kendall_tau(targets[test], count_macs_many(space, archs[test]))
    assert tau >= 0.9
    assert tau > macs_tau  # learns more than the MACs ranking


def test_default_is_registered_and_unknown_names_are_listed(space):
    assert DEFAULT_PREDICTOR in PREDICTORS
    with pytest.raises(ValueError, match=r"registered: .*lightgbm.*random_forest"):
        create_predictor("xgboost", space)


@pytest.mark.parametrize("name", list(PREDICTORS))
def test_save_load_gives_identical_predictions(space, synthetic, tmp_path, name):
    archs, targets = synthetic
    predictor = create_predictor(name, space, seed=3).fit(archs[:60], targets[:60])
    assert isinstance(predictor, Predictor)
    expected = predictor.predict(archs[600:])
    assert expected.shape == (100,) and expected.dtype == np.float64 and np.isfinite(expected).all()
    path = tmp_path / f"{name}.json"
    predictor.save(path)
    assert isinstance(json.loads(path.read_text()), dict)  # plain JSON: nothing is unpickled on load
    loaded = load_predictor(path, space)
    assert loaded.name == name
    np.testing.assert_array_equal(loaded.predict(archs[600:]), expected)


def test_cost_baselines_predict_the_cost(space, synthetic):
    archs, targets = synthetic
    macs = create_predictor("macs", space).fit(archs[:10], targets[:10])
    params = create_predictor("params", space).fit(archs[:10], targets[:10])
    np.testing.assert_array_equal(macs.predict(archs[:50]), count_macs_many(space, archs[:50], num_classes=10))
    np.testing.assert_array_equal(params.predict(archs[:50]), count_params_many(space, archs[:50], num_classes=10))


def test_same_seed_same_predictions(space, synthetic):
    archs, targets = synthetic
    first = create_predictor("lightgbm", space, seed=5).fit(archs[:100], targets[:100]).predict(archs[600:])
    second = create_predictor("lightgbm", space, seed=5).fit(archs[:100], targets[:100]).predict(archs[600:])
    np.testing.assert_array_equal(first, second)


@pytest.fixture()
def saved(space, synthetic, tmp_path):
    archs, targets = synthetic
    path = tmp_path / "ridge.json"
    create_predictor("ridge", space).fit(archs[:30], targets[:30]).save(path)
    return path


def test_loading_with_another_space_fails(saved):
    with pytest.raises(ValueError, match="fitted for space 'tiny', not 'attentivenas'"):
        load_predictor(saved, load_space("attentivenas"))


def test_loading_with_a_changed_space_definition_fails(space, saved):
    changed = replace(space, resolution=(16, 24, 32))
    assert space_fingerprint(changed) != space_fingerprint(space)
    with pytest.raises(ValueError, match="another definition of space 'tiny'"):
        load_predictor(saved, changed)
    described = replace(space, description="renamed only")
    assert isinstance(load_predictor(saved, described), Predictor)  # the description is not the definition


def test_tampered_and_corrupt_files_fail(space, saved, tmp_path):
    data = json.loads(saved.read_text())
    data["payload"]["targets"][0] += 0.5
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="checksum"):
        load_predictor(tampered, space)
    data = json.loads(saved.read_text())
    data["settings"]["alphas"] = [1.0]
    tampered.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="checksum"):
        load_predictor(tampered, space)
    truncated = tmp_path / "truncated.json"
    truncated.write_text(saved.read_text()[:200])
    with pytest.raises(ValueError, match="corrupt"):
        load_predictor(truncated, space)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a predictor file"):
        load_predictor(other, space)
    with pytest.raises(ValueError, match="not found"):
        load_predictor(tmp_path / "missing.json", space)


def test_lightgbm_file_is_tamper_checked(space, synthetic, tmp_path):
    archs, targets = synthetic
    path = tmp_path / "lightgbm.json"
    create_predictor("lightgbm", space).fit(archs[:50], targets[:50]).save(path)
    data = json.loads(path.read_text())
    member = data["payload"]["members"][0]
    member["model_text"] = member["model_text"].replace("leaf_value=", "leaf_value=1", 1)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="checksum"):
        load_predictor(path, space)


def test_a_checksummed_file_without_its_space_is_refused_in_one_line(space, tmp_path):
    path = tmp_path / "macs.json"
    create_predictor("macs", space).fit([space.min_arch(), space.max_arch()], [0.1, 0.2]).save(path)
    body = {key: value for key, value in json.loads(path.read_text()).items() if key not in ("checksum", "space")}
    path.write_text(json.dumps({**body, "checksum": _checksum(body)}))  # consistent checksum, no space
    with pytest.raises(ValueError, match=r"lacks space; expected the keys name, model") as caught:
        load_predictor(path, space)
    assert "\n" not in str(caught.value)


def test_bad_fit_and_predict_inputs(space, synthetic, tmp_path):
    archs, targets = synthetic
    predictor = create_predictor("lightgbm", space)
    with pytest.raises(ValueError, match="not fitted"):
        predictor.predict(archs[:3])
    with pytest.raises(ValueError, match="not fitted"):
        predictor.save(tmp_path / "unfitted.json")
    with pytest.raises(ValueError, match="5 archs but 4 targets"):
        predictor.fit(archs[:5], targets[:4])
    with pytest.raises(ValueError, match="finite"):
        predictor.fit(archs[:5], [0.1, 0.2, np.nan, 0.3, 0.4])
    with pytest.raises(ValueError, match="need at least 2 distinct archs to fit a predictor, got 30 rows of one arch"):
        predictor.fit([archs[0]] * 30, np.linspace(0, 1, 30))
    with pytest.raises(ValueError, match="another space"):
        other = load_space("attentivenas")
        predictor.fit([other.min_arch(), other.max_arch(), other.min_arch()], [0.1, 0.2, 0.3])


def test_default_averages_one_booster_per_linear_base(space, synthetic, tmp_path):
    archs, targets = synthetic
    predictor = create_predictor("lightgbm", space, seed=1).fit(archs[:80], targets[:80])
    path = tmp_path / "lightgbm.json"
    predictor.save(path)
    members = json.loads(path.read_text())["payload"]["members"]
    assert [member["linear_base"]["kind"] for member in members] == ["none", "log_macs", "log_macs+ridge"]
    single = [
        create_predictor(name, space, seed=1).fit(archs[:80], targets[:80]) for name in ("lightgbm_plain", "lightgbm")
    ]
    assert not np.array_equal(single[0].predict(archs[600:]), single[1].predict(archs[600:]))
    assert kendall_tau(targets[600:], predictor.predict(archs[600:])) > 0.8


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("linear_bases", "none"),
        ("linear_bases", ()),
        ("linear_bases", ("none", "quadratic")),
        ("shrinkage_grid", ()),
        ("shrinkage_grid", (0.5, 1.5)),
    ],
)
def test_bad_lightgbm_settings_fail(space, key, value):
    settings = {**PREDICTORS["lightgbm"].settings, key: value}
    with pytest.raises(ValueError, match=key):
        LightGBMPredictor("bad", space, 0, settings, 10)


def test_default_shrinks_towards_the_macs_fit_only_when_the_rest_is_noise(space, synthetic, tmp_path):
    archs, targets = synthetic
    log_macs = np.log(count_macs_many(space, archs[:60], num_classes=10) / 1e6)
    noisy = log_macs + np.random.default_rng(1).normal(0, 1, 60) * log_macs.std()  # MACs + noise, nothing else
    shrunk = create_predictor("lightgbm", space, seed=1).fit(archs[:60], noisy)
    assert shrunk.shrinkage < 1.0
    clean = create_predictor("lightgbm", space, seed=1).fit(archs[:60], targets[:60])
    assert clean.shrinkage == 1.0  # a learnable signal beyond MACs: the ensemble is used as it is
    path = tmp_path / "shrunk.json"
    shrunk.save(path)
    loaded = load_predictor(path, space)
    assert loaded.shrinkage == shrunk.shrinkage
    np.testing.assert_array_equal(loaded.predict(archs[600:]), shrunk.predict(archs[600:]))


def test_shrinkage_choice_lowest_error_and_one_standard_error_rule():
    grid = [0.0, 0.5, 1.0]
    lowest = [1.0, 1.0, 1.0, 1.0]  # factor 1.0 has the lowest mean squared error in every case
    noisy_close = [1.2, 0.9, 1.1, 0.9]  # mean +0.025, standard error of the differences 0.075
    noisier_close = [1.5, 0.8, 1.3, 0.8]  # mean +0.1, standard error 0.178
    clearly_worse = [2.0, 2.1, 1.9, 2.0]  # mean +1.0, standard error 0.041
    cases = [
        (noisier_close, noisy_close, 0.0),  # both within one standard error: the MACs fit
        (clearly_worse, noisy_close, 0.5),
        (clearly_worse, [1.5, 1.4, 1.6, 1.5], 1.0),
    ]
    for at_zero, at_half, expected in cases:
        errors = np.array([at_zero, at_half, lowest])
        assert choose_shrinkage(grid, errors, one_standard_error=False) == 1.0
        assert choose_shrinkage(grid, errors, one_standard_error=True) == expected


def test_default_uses_the_one_standard_error_rule_only_below_50_archs(space, synthetic, monkeypatch):
    archs, targets = synthetic
    asked = []

    def spy(grid, squared_errors, one_standard_error):
        asked.append((squared_errors.shape[1], one_standard_error))
        return choose_shrinkage(grid, squared_errors, one_standard_error)

    monkeypatch.setattr("predictors.models.choose_shrinkage", spy)
    for size in (49, 50):
        create_predictor("lightgbm", space, seed=3).fit(archs[:size], targets[:size])
    assert asked == [(49, True), (50, False)]


def test_a_predictor_shrunk_to_the_macs_fit_ranks_by_macs(space, synthetic, tmp_path):
    archs, _ = synthetic
    log_macs = np.log(count_macs_many(space, archs[:30], num_classes=10) / 1e6)
    noisy = log_macs + np.random.default_rng(2).normal(0, 1, 30) * log_macs.std()
    predictor = create_predictor("lightgbm", space, seed=3).fit(archs[:30], noisy)
    assert predictor.shrinkage == 0.0  # MACs + noise and 30 archs: the MACs fit is kept
    predicted = predictor.predict(archs[600:])
    macs = count_macs_many(space, archs[600:], num_classes=10)
    assert kendall_tau(predicted, macs) == pytest.approx(1.0)  # rank by MACs exactly, trees unused
    predictor.save(tmp_path / "shrunk.json")
    np.testing.assert_array_equal(load_predictor(tmp_path / "shrunk.json", space).predict(archs[600:]), predicted)


def test_compiled_trees_predict_what_lightgbm_predicts() -> None:
    """The default predictor scores from numpy arrays of its trees; they must agree with LightGBM itself."""
    import lightgbm

    from predictors.tree_arrays import compile_boosters

    space = load_space("tiny")
    rng = random.Random(3)
    archs = [space.sample(rng) for _ in range(120)]
    features = encode(space, archs, derived=True, num_classes=10)
    targets = features[:, -2] ** 0.5 + 0.1 * features[:, 0] * (features[:, 5] > 2)
    params = {"num_leaves": 5, "min_data_in_leaf": 2, "verbose": -1, "num_threads": 1, "deterministic": True}
    booster = lightgbm.train(params, lightgbm.Dataset(features, label=targets), num_boost_round=60)
    stump = lightgbm.train({**params, "min_data_in_leaf": 1000}, lightgbm.Dataset(features, label=targets), 3)
    held = encode(space, [space.sample(rng) for _ in range(200)], derived=True, num_classes=10)
    for boosters in ([booster], [booster, stump]):
        compiled = compile_boosters(boosters)
        assert compiled is not None
        expected = sum(np.asarray(b.predict(held, num_threads=1)) for b in boosters)
        assert np.allclose(compiled.predict(held), expected, rtol=0, atol=1e-12)
    large = lightgbm.train({**params, "num_leaves": 31}, lightgbm.Dataset(features, label=targets), 5)
    assert compile_boosters([large]) is None  # more than MAX_SPLITS splits: LightGBM predicts
    zeros = lightgbm.train({**params, "zero_as_missing": True}, lightgbm.Dataset(features, label=targets), 5)
    assert compile_boosters([zeros]) is None


def test_default_predictor_agrees_with_its_boosters() -> None:
    space = load_space("tiny")
    rng = random.Random(4)
    archs = [space.sample(rng) for _ in range(80)]
    predictor = create_predictor("lightgbm", space, seed=0, num_classes=10)
    predictor.fit(archs, encode(space, archs, derived=True, num_classes=10)[:, -2] ** 0.5)
    held = [space.sample(rng) for _ in range(100)]
    features = predictor.features(held)
    assert predictor._trees is not None
    direct = LightGBMPredictor._members_predict(predictor._members, features)  # LightGBM's own predict
    if predictor.shrinkage < 1.0:
        anchor = _linear_base_predict(predictor._anchor, features)
        direct = anchor + predictor.shrinkage * (direct - anchor)
    expected = direct
    assert np.allclose(predictor.predict(held), expected, rtol=0, atol=1e-12)


@pytest.mark.slow  # 4-6 s: four default-predictor fits
def test_seminas_predictor_refits_on_its_own_labels_of_random_archs(tmp_path) -> None:
    """The registered self-training predictor is: fit, label as many seeded random archs, fit on both."""
    space = load_space("tiny")
    rng = random.Random(7)
    archs = [space.sample(rng) for _ in range(40)]
    targets = encode(space, archs, derived=True, num_classes=10)[:, -2] ** 0.5
    seminas = create_predictor("lightgbm_seminas", space, seed=3, num_classes=10).fit(archs, targets)
    plain = create_predictor("lightgbm", space, seed=3, num_classes=10).fit(archs, targets)
    pool_rng = random.Random(3)
    pool = [space.sample(pool_rng) for _ in range(len(archs))]
    by_hand = create_predictor("lightgbm", space, seed=3, num_classes=10)
    by_hand.fit(archs + pool, np.concatenate([targets, plain.predict(pool)]))
    held = [space.sample(rng) for _ in range(50)]
    assert np.allclose(seminas.predict(held), by_hand.predict(held), rtol=0, atol=1e-12)
    assert not np.allclose(seminas.predict(held), plain.predict(held))
    seminas.save(tmp_path / "seminas.json")
    assert np.array_equal(load_predictor(tmp_path / "seminas.json", space).predict(held), seminas.predict(held))
