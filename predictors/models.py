"""Accuracy predictors: one protocol, a registry by name, and pickle-free files.

A predictor maps archs of one space to a score where higher is better (an accuracy, or a negated loss).
The zoo follows the predictor benchmark of White et al. (NeurIPS 2021): gradient-boosted trees
(LightGBM, the default, and scikit-learn's), the random forest AttentiveNAS uses (Wang et al., CVPR
2021: 100 trees, depth 15), extra-trees, ridge, k-nearest neighbours, an MLP, a Gaussian process, and
two baselines without training that rank by cost (MACs, parameters). Inputs are ``predictors.encoding``
features; ridge, k-NN, MLP and GP see them standardised, with the costs on a log scale.

The default, ``lightgbm``, averages three LightGBM models of small trees (5 leaves) that boost from three
bases: none, least squares on log MACs, and that plus ridge on what it leaves; the average is then shrunk
towards the log-MACs fit by a factor in {0, 0.25, ..., 1} chosen by 10-fold cross-validation on the
training archs (below 50 archs by the one-standard-error rule, which prefers the MACs fit). A FLOPs
ranking is a strong baseline and linear models are strong at small training sizes (White et al. 2021);
the bases keep both and the trees add interactions. On real arch data (a digits supernet,
``benchmarks/bench_predictors.py``) the ridge base wins on the validation loss and loses on the coarse
validation accuracy, the plain trees the other way round, and their average is at or near the top on
both; the shrinkage keeps the MACs ranking when a few noisy archs cannot beat it. Settings were chosen by
that benchmark on one arch set and on the training part of another; ``lightgbm_ridge`` (the earlier
default, chosen on synthetic data), ``lightgbm_macs``, ``lightgbm_plain`` and ``lightgbm_naslib`` keep
single-base alternatives in the benchmark.

Files are JSON, never pickle: an envelope with the predictor's name, model, settings and seed, the space
name and fingerprint, the encoding, a payload, and the sha256 of all of it. LightGBM's payload is its own
text model; a scikit-learn model's payload is its training data, refitted on load with the same seed,
which gives the same predictions. Loading with another space or a modified file raises ``ValueError``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightgbm
import numpy as np
from numpy.typing import ArrayLike
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from sklearn.linear_model import RidgeCV
from sklearn.neighbors import KNeighborsRegressor
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ofa.atomic import atomic_write_text
from ofa.config import read_user_text
from ofa.flops import DEFAULT_NUM_CLASSES
from ofa.space import Arch, SearchSpace, space_fingerprint
from predictors.encoding import encode
from predictors.registry import (
    COST_MODELS,
    DEFAULT_PREDICTOR,
    LINEAR_BASES,
    PREDICTORS,
    SKLEARN_MODELS,
    STANDARDISED_MODELS,
    PredictorSpec,
)
from predictors.tree_arrays import TreeArrays, compile_boosters

__all__ = [
    "DEFAULT_PREDICTOR",
    "PREDICTORS",
    "CostPredictor",
    "LightGBMPredictor",
    "Predictor",
    "PredictorSpec",
    "SklearnPredictor",
    "create_predictor",
    "load_predictor",
    "predictor_from_envelope",
    "space_fingerprint",
]

FILE_FORMAT = "ofa-predictor"
FILE_VERSION = 2  # 2: LightGBM payloads hold several members, an anchor and a shrinkage factor
ENVELOPE_KEYS = ("name", "model", "settings", "seed", "space", "space_fingerprint", "encoding", "payload")


@runtime_checkable
class Predictor(Protocol):
    """What every predictor offers: fit on archs and targets, predict, save (``load_predictor`` reads)."""

    name: str
    space: SearchSpace

    def fit(self, archs: Sequence[Arch], targets: ArrayLike) -> Predictor:
        """Fit on archs of the space and their targets (higher = better); returns self."""
        ...

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predicted scores (float64, one per arch)."""
        ...

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Predicted scores of encoded archs (``predictors.encoding.encode``, derived costs)."""
        ...

    def save(self, path: str | Path) -> None:
        """Write the predictor to a JSON file atomically."""
        ...

    def envelope(self) -> dict[str, Any]:
        """The JSON content ``save`` writes."""
        ...


def _checksum(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _check_training_data(archs: Sequence[Arch], targets: ArrayLike) -> np.ndarray:
    values = np.asarray(targets, dtype=np.float64).ravel()
    if len(archs) != values.size:
        raise ValueError(f"got {len(archs)} archs but {values.size} targets")
    if values.size < 2:
        raise ValueError(f"need at least 2 archs to fit a predictor, got {values.size}")
    if len(set(archs)) < 2:
        raise ValueError(f"need at least 2 distinct archs to fit a predictor, got {values.size} rows of one arch")
    if not np.isfinite(values).all():
        raise ValueError("targets must be finite (no NaN or inf)")
    return values


def _log_costs(features: np.ndarray) -> np.ndarray:
    """The encoding with its derived costs (last two columns, MMACs and Mparams) on a log scale."""
    logged = features.copy()
    logged[:, -2:] = np.log(features[:, -2:])
    return logged


def _fit_linear_base(kind: str, features: np.ndarray, targets: np.ndarray, alphas: Sequence[float]) -> dict:
    """Fit the base LightGBM boosts from: least squares on [1, log MMACs], then ridge on the residual."""
    base: dict[str, Any] = {"kind": kind}
    if kind == "none":
        return base
    design = np.column_stack([np.ones(len(features)), np.log(features[:, -2])])
    coefficients, *_ = np.linalg.lstsq(design, targets, rcond=None)
    base["log_macs"] = [float(value) for value in coefficients]
    if kind == "log_macs+ridge":
        logged = _log_costs(features)
        mean, scale = logged.mean(axis=0), logged.std(axis=0)
        scale[scale == 0] = 1.0
        residual = targets - _linear_base_predict(base, features)
        ridge = RidgeCV(alphas=[float(alpha) for alpha in alphas]).fit((logged - mean) / scale, residual)
        base.update(
            mean=[float(v) for v in mean],
            scale=[float(v) for v in scale],
            coef=[float(v) for v in ridge.coef_],
            intercept=float(ridge.intercept_),
        )
    return base


def _linear_base_predict(base: Mapping[str, Any], features: np.ndarray) -> np.ndarray:
    """The base's prediction (0 for ``none``); the same arithmetic at fit time and after loading."""
    prediction = np.zeros(len(features))
    if "log_macs" in base:
        intercept, slope = base["log_macs"]
        prediction = prediction + intercept + slope * np.log(features[:, -2])
    if "coef" in base:
        standardised = (_log_costs(features) - np.asarray(base["mean"])) / np.asarray(base["scale"])
        prediction = prediction + standardised @ np.asarray(base["coef"]) + base["intercept"]
    return prediction


# ----------------------------------------------------------------------------------------------------
# predictors
# ----------------------------------------------------------------------------------------------------


def choose_shrinkage(grid: Sequence[float], squared_errors: np.ndarray, one_standard_error: bool) -> float:
    """The shrinkage factor of ``grid`` (ascending) given each factor's squared errors (one row per factor).

    The factor with the lowest mean error; with ``one_standard_error``, the smallest factor (closest to the
    MACs fit) whose mean error is within one standard error of the lowest (Hastie et al., ESL 7.10), the
    standard error being that of the paired differences to the lowest-error factor.
    """
    means = squared_errors.mean(axis=1)
    best = int(np.argmin(means))
    if not one_standard_error:
        return float(grid[best])
    differences = squared_errors - squared_errors[best]
    margins = differences.std(axis=1, ddof=1) / np.sqrt(squared_errors.shape[1])
    within = [factor for factor, mean, margin in zip(grid, means, margins, strict=True) if mean <= means[best] + margin]
    return float(within[0])


class _FilePredictor:
    """Shared by every predictor: identity, features and the JSON envelope."""

    def __init__(
        self, name: str, model: str, space: SearchSpace, seed: int, settings: Mapping[str, Any], num_classes: int
    ) -> None:
        self.name = name
        self.model = model
        self.space = space
        self.seed = int(seed)
        self.settings = dict(settings)
        self.num_classes = int(num_classes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, space={self.space.name!r}, seed={self.seed})"

    def features(self, archs: Sequence[Arch]) -> np.ndarray:
        """The encoded archs this predictor sees."""
        return encode(self.space, archs, derived=True, num_classes=self.num_classes)

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predicted scores (float64, one per arch)."""
        return self.predict_encoded(self.features(archs))

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Predicted scores of archs already encoded (``predictors.encoding.encode`` with derived costs and
        this predictor's ``num_classes``; the search computes it from its own arrays)."""
        raise NotImplementedError

    def _payload(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        """Write the predictor as checksummed JSON (temp file + ``os.replace``)."""
        atomic_write_text(Path(path), json.dumps(self.envelope(), indent=1) + "\n")

    def envelope(self) -> dict[str, Any]:
        """The checksummed JSON content ``save`` writes (``predictor_from_envelope`` reads it back)."""
        body = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "name": self.name,
            "model": self.model,
            "settings": self.settings,
            "seed": self.seed,
            "space": self.space.name,
            "space_fingerprint": space_fingerprint(self.space),
            "encoding": {"derived": True, "num_classes": self.num_classes},
            "payload": self._payload(),
        }
        return {**body, "checksum": _checksum(body)}


class CostPredictor(_FilePredictor):
    """Baseline without training: the predicted score is the MACs or the parameter count itself."""

    def fit(self, archs: Sequence[Arch], targets: ArrayLike) -> CostPredictor:
        """Check the inputs; nothing is learned."""
        _check_training_data(archs, targets)
        for arch in archs:
            self.space.validate(arch)
        return self

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """MACs (``macs``) or parameters (``params``) of each arch, as float64, from the encoding's millions
        (exact: the counts are integers)."""
        column = -2 if self.model == "macs" else -1
        return np.round(encoded[:, column] * 1e6)

    def _payload(self) -> dict[str, Any]:
        return {}


class LightGBMPredictor(_FilePredictor):
    """Gradient-boosted trees by LightGBM (deterministic, one thread), boosted from linear bases.

    One booster per entry of ``linear_bases``, the predictions averaged. With base ``log_macs`` the trees
    fit what least squares on [1, log MMACs] leaves; with ``log_macs+ridge`` a ridge regression on the
    standardised encoding (log costs) fits that residual first; with ``none`` the trees fit the targets.
    With several values in ``shrinkage_grid`` the prediction is ``anchor + s * (average - anchor)``, the
    anchor being least squares on [1, log MMACs] and ``s`` the grid value with the lowest squared error
    of out-of-fold predictions (``cv_folds``-fold cross-validation on the training archs, seeded); with
    fewer than ``one_standard_error_below`` training archs, the smallest ``s`` whose error is within one
    standard error of the lowest (the MACs ranking is kept unless the trees are clearly better).
    The file holds each member's LightGBM text model and base coefficients, the anchor and ``s``.
    """

    def __init__(self, name: str, space: SearchSpace, seed: int, settings: Mapping[str, Any], num_classes: int) -> None:
        super().__init__(name, "lightgbm", space, seed, settings, num_classes)
        bases = self.settings.get("linear_bases")
        if isinstance(bases, str) or not bases or any(base not in LINEAR_BASES for base in bases):
            raise ValueError(f"linear_bases {bases!r}: give one or more of {', '.join(LINEAR_BASES)}")
        grid = self.settings.get("shrinkage_grid", (1.0,))
        if isinstance(grid, str) or not grid or any(not 0.0 <= float(value) <= 1.0 for value in grid):
            raise ValueError(f"shrinkage_grid {grid!r}: give one or more factors in [0, 1]")
        self._members: list[tuple[dict[str, Any], lightgbm.Booster]] = []
        self._trees: TreeArrays | None = None  # every member's trees as arrays (None: LightGBM predicts)
        self._anchor: dict[str, Any] = {"kind": "none"}
        self._shrinkage = 1.0

    def _params(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "objective": "regression",
            "num_leaves": int(settings["num_leaves"]),
            "min_data_in_leaf": int(settings["min_data_in_leaf"]),
            "min_data_in_bin": 1,
            "learning_rate": float(settings["learning_rate"]),
            "feature_fraction": float(settings["feature_fraction"]),
            "lambda_l2": float(settings["lambda_l2"]),
            "linear_tree": bool(settings["linear_tree"]),
            "linear_lambda": float(settings["linear_lambda"]),
            "verbose": -1,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 1,
            "seed": self.seed,
        }

    def _fit_members(self, features: np.ndarray, values: np.ndarray) -> list[tuple[dict[str, Any], lightgbm.Booster]]:
        """For every base: fit it, then boost ``num_boost_round`` trees on what it leaves."""
        params = self._params()
        members = []
        for kind in self.settings["linear_bases"]:
            base = _fit_linear_base(kind, features, values, self.settings["ridge_alphas"])
            residual = values - _linear_base_predict(base, features)
            data = lightgbm.Dataset(features, label=residual, params=params, free_raw_data=False)
            members.append((base, lightgbm.train(params, data, num_boost_round=int(self.settings["num_boost_round"]))))
        return members

    @staticmethod
    def _members_predict(
        members: Sequence[tuple[dict[str, Any], lightgbm.Booster]],
        features: np.ndarray,
        trees: TreeArrays | None = None,
    ) -> np.ndarray:
        """The members' mean of base + trees; the trees summed by ``trees`` (their arrays) when given, else by
        each booster (cross-validation folds are predicted once: compiling would cost more)."""
        total = sum(_linear_base_predict(base, features) for base, _ in members)
        if trees is not None:
            return (total + trees.predict(features)) / len(members)
        for _, booster in members:
            total = total + np.asarray(booster.predict(features, num_threads=1), dtype=np.float64)
        return total / len(members)

    def _choose_shrinkage(self, features: np.ndarray, values: np.ndarray) -> float:
        """The grid factor whose out-of-fold predictions have the lowest squared error (or the 1-SE rule)."""
        grid = sorted(float(value) for value in self.settings.get("shrinkage_grid", (1.0,)))
        folds = min(int(self.settings.get("cv_folds", 10)), len(values) // 2)
        if len(grid) == 1 or folds < 2:
            return grid[-1]
        fold_of = np.random.default_rng(self.seed).permutation(len(values)) % folds
        average, anchor = np.zeros(len(values)), np.zeros(len(values))
        for fold in range(folds):
            train, held = fold_of != fold, fold_of == fold
            members = self._fit_members(features[train], values[train])
            average[held] = self._members_predict(members, features[held])
            fold_anchor = _fit_linear_base("log_macs", features[train], values[train], ())
            anchor[held] = _linear_base_predict(fold_anchor, features[held])
        squared = np.array([(anchor + factor * (average - anchor) - values) ** 2 for factor in grid])
        one_standard_error = len(values) < int(self.settings.get("one_standard_error_below", 0))
        return choose_shrinkage(grid, squared, one_standard_error)

    def fit(self, archs: Sequence[Arch], targets: ArrayLike) -> LightGBMPredictor:
        """Choose the shrinkage factor (cross-validation), then fit the members and the anchor on all archs.

        With ``pseudo_label_factor`` k > 0 (SemiNAS, Luo et al., 2020): then predict k x as many seeded random
        archs of the space and fit again on the measured and the pseudo-labelled archs together.
        """
        values = _check_training_data(archs, targets)
        features = self.features(archs)
        self._fit_features(features, values)
        factor = int(self.settings.get("pseudo_label_factor", 0))
        if factor > 0:
            rng = random.Random(self.seed)
            pool = self.features([self.space.sample(rng) for _ in range(factor * len(archs))])
            pseudo = self.predict_encoded(pool)
            self._fit_features(np.vstack([features, pool]), np.concatenate([values, pseudo]))
        return self

    def _fit_features(self, features: np.ndarray, values: np.ndarray) -> None:
        shrinkage = self._choose_shrinkage(features, values)
        self._members = self._fit_members(features, values)
        self._trees = compile_boosters([booster for _, booster in self._members])
        self._anchor = _fit_linear_base("log_macs", features, values, ()) if shrinkage < 1.0 else {"kind": "none"}
        self._shrinkage = shrinkage

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Predicted scores: the members' mean of base + trees, shrunk towards the anchor."""
        if not self._members:
            raise ValueError(f"predictor {self.name!r} is not fitted; call fit first")
        features = encoded
        if self._shrinkage == 0.0:  # the MACs fit alone: the members would be multiplied by zero
            return _linear_base_predict(self._anchor, features)
        average = self._members_predict(self._members, features, self._trees)
        if self._shrinkage == 1.0:
            return average
        anchor = _linear_base_predict(self._anchor, features)
        return anchor + self._shrinkage * (average - anchor)

    @property
    def shrinkage(self) -> float:
        """The factor the fitted members' average is scaled by around the log-MACs anchor (1: not shrunk)."""
        return self._shrinkage

    def _payload(self) -> dict[str, Any]:
        if not self._members:
            raise ValueError(f"predictor {self.name!r} is not fitted; nothing to save")
        return {
            "members": [
                {"linear_base": base, "model_text": booster.model_to_string()} for base, booster in self._members
            ],
            "anchor": self._anchor,
            "shrinkage": self._shrinkage,
        }

    def _restore(self, payload: Mapping[str, Any]) -> None:
        self._members = [
            (dict(member["linear_base"]), lightgbm.Booster(model_str=member["model_text"]))
            for member in payload["members"]
        ]
        self._trees = compile_boosters([booster for _, booster in self._members])
        self._anchor = dict(payload["anchor"])
        self._shrinkage = float(payload["shrinkage"])


def _build_sklearn(model: str, settings: Mapping[str, Any], seed: int, n_train: int, n_features: int) -> Any:
    """A fresh, seeded scikit-learn estimator for ``model``."""
    if model == "gbdt":
        return GradientBoostingRegressor(
            n_estimators=int(settings["n_estimators"]),
            learning_rate=float(settings["learning_rate"]),
            max_depth=int(settings["max_depth"]),
            min_samples_leaf=int(settings["min_samples_leaf"]),
            subsample=float(settings["subsample"]),
            random_state=seed,
        )
    if model in ("random_forest", "extra_trees"):
        forest = RandomForestRegressor if model == "random_forest" else ExtraTreesRegressor
        depth = settings["max_depth"]
        return forest(
            n_estimators=int(settings["n_estimators"]),
            max_depth=None if depth is None else int(depth),
            random_state=seed,
            n_jobs=1,
        )
    if model == "ridge":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=[float(alpha) for alpha in settings["alphas"]]))
    if model == "knn":
        neighbours = max(1, min(int(settings["n_neighbors"]), n_train))
        return make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=neighbours, weights="distance"))
    if model == "mlp":
        network = MLPRegressor(
            hidden_layer_sizes=tuple(int(size) for size in settings["hidden_layer_sizes"]),
            alpha=float(settings["alpha"]),
            solver="lbfgs",
            max_iter=int(settings["max_iter"]),
            random_state=seed,
        )
        return make_pipeline(
            StandardScaler(), TransformedTargetRegressor(regressor=network, transformer=StandardScaler())
        )
    if model == "gp":
        # standardised features: distances grow like sqrt(n_features), so the length scale starts there
        kernel = ConstantKernel(1.0) * Matern(length_scale=math.sqrt(n_features), nu=2.5) + WhiteKernel(0.1)
        process = GaussianProcessRegressor(
            kernel=kernel,
            normalize_y=True,
            n_restarts_optimizer=int(settings["n_restarts_optimizer"]),
            random_state=seed,
        )
        return make_pipeline(StandardScaler(), process)
    raise ValueError(f"unknown scikit-learn model {model!r}; allowed: {', '.join(SKLEARN_MODELS)}")


class SklearnPredictor(_FilePredictor):
    """A scikit-learn regressor; its file keeps the training data and is refitted on load (same seed)."""

    def __init__(
        self, name: str, model: str, space: SearchSpace, seed: int, settings: Mapping[str, Any], num_classes: int
    ) -> None:
        if model not in SKLEARN_MODELS:
            raise ValueError(f"unknown scikit-learn model {model!r}; allowed: {', '.join(SKLEARN_MODELS)}")
        super().__init__(name, model, space, seed, settings, num_classes)
        self._estimator: Any = None
        self._train_archs: list[Arch] = []
        self._train_targets = np.zeros(0)

    def _inputs(self, encoded: np.ndarray) -> np.ndarray:
        """What the estimator sees of the encoding: models on standardised inputs see the costs on a log scale."""
        return _log_costs(encoded) if self.model in STANDARDISED_MODELS else encoded

    def fit(self, archs: Sequence[Arch], targets: ArrayLike) -> SklearnPredictor:
        """Fit a fresh estimator seeded with ``seed``."""
        values = _check_training_data(archs, targets)
        features = self._inputs(self.features(archs))
        estimator = _build_sklearn(self.model, self.settings, self.seed, len(archs), features.shape[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator.fit(features, values)
        self._estimator = estimator
        self._train_archs = list(archs)
        self._train_targets = values.copy()
        return self

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Predicted scores."""
        if self._estimator is None:
            raise ValueError(f"predictor {self.name!r} is not fitted; call fit first")
        return np.asarray(self._estimator.predict(self._inputs(encoded)), dtype=np.float64).ravel()

    def _payload(self) -> dict[str, Any]:
        if self._estimator is None:
            raise ValueError(f"predictor {self.name!r} is not fitted; nothing to save")
        return {
            "archs": [arch.to_dict() for arch in self._train_archs],
            "targets": [float(value) for value in self._train_targets],
        }

    def _restore(self, payload: Mapping[str, Any]) -> None:
        archs = [self.space.arch_from_dict(data) for data in payload["archs"]]
        self.fit(archs, np.asarray(payload["targets"], dtype=np.float64))


# ----------------------------------------------------------------------------------------------------
# registry and files
# ----------------------------------------------------------------------------------------------------


def _instantiate(
    name: str, model: str, space: SearchSpace, seed: int, settings: Mapping[str, Any], num_classes: int
) -> CostPredictor | LightGBMPredictor | SklearnPredictor:
    if model in COST_MODELS:
        return CostPredictor(name, model, space, seed, settings, num_classes)
    if model == "lightgbm":
        return LightGBMPredictor(name, space, seed, settings, num_classes)
    return SklearnPredictor(name, model, space, seed, settings, num_classes)


def create_predictor(name: str, space: SearchSpace, seed: int = 0, num_classes: int = DEFAULT_NUM_CLASSES) -> Predictor:
    """A fresh predictor of the registered ``name`` for ``space``.

    Raises:
        ValueError: unknown name (the message lists the registered ones).
    """
    if name not in PREDICTORS:
        raise ValueError(f"unknown predictor {name!r}; registered: {', '.join(PREDICTORS)}")
    spec = PREDICTORS[name]
    return _instantiate(name, spec.model, space, seed, spec.settings, num_classes)


def load_predictor(path: str | Path, space: SearchSpace) -> Predictor:
    """Read a predictor file written by ``save`` for ``space``.

    Raises:
        ValueError: missing, corrupt or modified file (checksum), another format, or another space.
    """
    path = Path(path)
    try:
        envelope = json.loads(read_user_text(path, "predictor"))
    except json.JSONDecodeError as error:
        raise ValueError(f"predictor file {path} is corrupt (not JSON: {error})") from None
    return predictor_from_envelope(envelope, space, path)


def predictor_from_envelope(envelope: Any, space: SearchSpace, path: str | Path) -> Predictor:
    """The predictor of a file's JSON content (``path`` names where it came from in errors).

    Raises:
        ValueError: another format or version, a failed checksum, missing keys, or another space.
    """
    if not isinstance(envelope, dict) or envelope.get("format") != FILE_FORMAT:
        raise ValueError(f"{path} is not a predictor file (format {FILE_FORMAT!r} expected)")
    if envelope.get("version") != FILE_VERSION:
        raise ValueError(f"predictor file {path} has version {envelope.get('version')!r}; this reads {FILE_VERSION}")
    body = {key: value for key, value in envelope.items() if key != "checksum"}
    if envelope.get("checksum") != _checksum(body):
        raise ValueError(f"predictor file {path} failed its sha256 checksum: it was modified or is corrupt")
    missing = [key for key in ENVELOPE_KEYS if key not in body]
    if missing:
        raise ValueError(
            f"predictor file {path} lacks {', '.join(missing)}; expected the keys {', '.join(ENVELOPE_KEYS)}"
        )
    if body["space"] != space.name:
        raise ValueError(f"predictor file {path} was fitted for space {body['space']!r}, not {space.name!r}")
    if body["space_fingerprint"] != space_fingerprint(space):
        raise ValueError(
            f"predictor file {path} was fitted for another definition of space {space.name!r} "
            f"(fingerprint {body['space_fingerprint'][:12]}, this space {space_fingerprint(space)[:12]})"
        )
    model = body["model"]
    if model not in (*COST_MODELS, "lightgbm", *SKLEARN_MODELS):
        raise ValueError(f"predictor file {path}: unknown model {model!r}")
    try:
        predictor = _instantiate(
            str(body["name"]), model, space, int(body["seed"]), body["settings"], int(body["encoding"]["num_classes"])
        )
        if not isinstance(predictor, CostPredictor):
            predictor._restore(body["payload"])
    except (KeyError, TypeError, lightgbm.basic.LightGBMError) as error:
        raise ValueError(f"predictor file {path}: invalid content ({type(error).__name__}: {error})") from None
    return predictor
