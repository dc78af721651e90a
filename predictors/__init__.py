"""Accuracy predictors for once-for-all supernets: data, encoding, models, metrics and their benchmark.

Modules (imported on demand, so ``import predictors`` stays light):

- ``predictors.dataset``: the architecture → accuracy CSV format (``ArchRecord``, read/append/write)
- ``predictors.encoding``: arch → fixed-length feature vector (``encode``, ``feature_names``)
- ``predictors.models``: the ``Predictor`` protocol, the registry ``PREDICTORS``, ``create_predictor``,
  ``load_predictor``
- ``predictors.metrics``: Kendall tau, Spearman, Pearson, RMSE, MAE, precision@k
- ``predictors.bench``: the predictor benchmark (learning curves, table, CSV, plot, noise ceiling)
- ``predictors.cli``: the ``predictors fit`` and ``predictors bench`` commands
"""

__all__: list[str] = []
