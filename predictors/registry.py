"""The registered predictors: names, models and settings (plain data; ``predictors.models`` builds them).

Kept apart from the models so that listing the names (the command line's help) does not import LightGBM
or scikit-learn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = [
    "COST_MODELS",
    "DEFAULT_PREDICTOR",
    "LINEAR_BASES",
    "PREDICTORS",
    "SKLEARN_MODELS",
    "STANDARDISED_MODELS",
    "PredictorSpec",
]

DEFAULT_PREDICTOR = "lightgbm"


@dataclass(frozen=True)
class PredictorSpec:
    """A registered predictor: which model it uses, with which settings.

    Attributes:
        model: ``macs`` | ``params`` | ``lightgbm`` | a scikit-learn model name (see ``SKLEARN_MODELS``).
        description: one line for listings.
        settings: the model's hyper-parameters.
    """

    model: str
    description: str
    settings: Mapping[str, Any]


def _spec(model: str, description: str, settings: dict[str, Any] | None = None) -> PredictorSpec:
    return PredictorSpec(model, description, MappingProxyType(dict(settings or {})))


LINEAR_BASES = ("none", "log_macs", "log_macs+ridge")
_RIDGE_ALPHAS = [10.0**exponent for exponent in range(-2, 5)]

# The default, chosen by the real-data benchmark (benchmarks/bench_predictors.py, tuned on one measured
# arch set of the digits supernet and on the training part of another, reported on that one's held-out
# archs): one booster per linear base, predictions averaged; small trees (5 leaves, 2 points per leaf),
# half the features per tree and some L2; the average is shrunk towards the log-MACs fit by a factor
# chosen by 10-fold cross-validation, so few or noisy training archs keep the MACs ranking. Below 50
# training archs (under 5 per fold) the factor follows the one-standard-error rule: on the real data the
# lowest-error factor of such small folds overfits the folds (Kendall tau 0.458 vs 0.472 at 25 archs).
_LIGHTGBM_DEFAULT = {
    "linear_bases": LINEAR_BASES,
    "shrinkage_grid": (0.0, 0.25, 0.5, 0.75, 1.0),
    "cv_folds": 10,
    "one_standard_error_below": 50,
    "ridge_alphas": _RIDGE_ALPHAS,
    "num_leaves": 5,
    "min_data_in_leaf": 2,
    "learning_rate": 0.05,
    "num_boost_round": 400,
    "feature_fraction": 0.5,
    "lambda_l2": 5.0,
    "linear_tree": False,
    "linear_lambda": 0.0,
}
# The earlier default, chosen on synthetic data: one booster from the log-MACs + ridge base, 3 leaves.
_LIGHTGBM_RIDGE = {
    **_LIGHTGBM_DEFAULT,
    "linear_bases": ("log_macs+ridge",),
    "shrinkage_grid": (1.0,),
    "num_leaves": 3,
    "num_boost_round": 300,
    "feature_fraction": 0.8,
    "lambda_l2": 1.0,
}
# Without a linear base: the best plain small-tree setting of the synthetic benchmark.
_LIGHTGBM_PLAIN = {**_LIGHTGBM_RIDGE, "linear_bases": ("none",), "num_leaves": 4, "num_boost_round": 500}
# The large-data defaults of the NASLib benchmark, kept for comparison.
_LIGHTGBM_NASLIB = {
    **_LIGHTGBM_PLAIN,
    "num_leaves": 31,
    "min_data_in_leaf": 5,
    "num_boost_round": 500,
    "feature_fraction": 1.0,
    "lambda_l2": 0.0,
}

PREDICTORS: Mapping[str, PredictorSpec] = MappingProxyType(
    {
        "lightgbm": _spec(
            "lightgbm", "LightGBM from three bases (none, log-MACs, + ridge), averaged (default)", _LIGHTGBM_DEFAULT
        ),
        "lightgbm_ridge": _spec("lightgbm", "LightGBM boosted from a log-MACs + ridge base", _LIGHTGBM_RIDGE),
        "lightgbm_macs": _spec(
            "lightgbm",
            "LightGBM boosted from a log-MACs least-squares base",
            {**_LIGHTGBM_RIDGE, "linear_bases": ("log_macs",), "num_boost_round": 500},
        ),
        "lightgbm_seminas": _spec(
            "lightgbm",
            "the default refitted on its own labels of as many random archs again (SemiNAS self-training)",
            {**_LIGHTGBM_DEFAULT, "pseudo_label_factor": 1},
        ),
        "lightgbm_plain": _spec("lightgbm", "LightGBM without a base, small trees", _LIGHTGBM_PLAIN),
        "lightgbm_naslib": _spec("lightgbm", "LightGBM with NASLib's large-data defaults", _LIGHTGBM_NASLIB),
        "gbdt": _spec(
            "gbdt",
            "scikit-learn gradient boosting",
            {"n_estimators": 300, "learning_rate": 0.05, "max_depth": 3, "min_samples_leaf": 2, "subsample": 1.0},
        ),
        "random_forest": _spec(
            "random_forest", "random forest (AttentiveNAS: 100 trees, depth 15)", {"n_estimators": 100, "max_depth": 15}
        ),
        "extra_trees": _spec("extra_trees", "extremely randomised trees", {"n_estimators": 100, "max_depth": None}),
        "macs": _spec("macs", "baseline: rank by MACs (no training)"),
        "params": _spec("params", "baseline: rank by parameters (no training)"),
        "ridge": _spec("ridge", "ridge regression, alpha by leave-one-out", {"alphas": _RIDGE_ALPHAS}),
        "knn": _spec("knn", "k-nearest neighbours, distance-weighted", {"n_neighbors": 5}),
        "mlp": _spec(
            "mlp", "multi-layer perceptron (L-BFGS)", {"hidden_layer_sizes": [64, 64], "alpha": 1e-3, "max_iter": 500}
        ),
        "gp": _spec("gp", "Gaussian process, Matern 5/2 + white noise", {"n_restarts_optimizer": 0}),
    }
)

SKLEARN_MODELS = ("gbdt", "random_forest", "extra_trees", "ridge", "knn", "mlp", "gp")
COST_MODELS = ("macs", "params")
STANDARDISED_MODELS = ("ridge", "knn", "mlp", "gp")
