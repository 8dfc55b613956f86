"""The scikit-learn regressors behind :class:`~autocompress.predict.AccuracyPredictor`'s kinds.

Each takes standardized inputs ``Z`` and targets ``t`` and offers ``predict(Z, return_std=True)``
-> ``(mean, std)`` in those units:

- :class:`LinearMeanGP` (``"gp"``): Bayesian ridge as the mean, and a Gaussian process (constant ×
  RBF with bounded length scales, one per input up to :data:`ARD_UP_TO` inputs, + white noise, hyperparameters by marginal likelihood
  with restarts) on its residuals. Where the GP finds no structure beyond the linear trend it
  falls back to the ridge's predictions instead of a constant: a plain GP on 100 labels of 36-57
  three-valued genes, accuracies in a 6-10 point band, put everything in the noise term and
  predicted a constant (std 3e-7; Kendall τ 0.18-0.25 where ridge had 0.53-0.70).
- :class:`Ridge` (``"linear"``): Bayesian ridge and its predictive std.
- :class:`Boosted` (``"gbt"``): scikit-learn's ``HistGradientBoostingRegressor`` (small trees,
  shrinkage, L2 leaves), the spread of a few seeds' subsampled fits as the uncertainty.
"""

from __future__ import annotations

import warnings

import numpy as np

#: the GP's length-scale bounds in standardized input units: below 0.1 one gene would explain each
#: label alone (overfit); above 1e3 the gene is ignored
LENGTH_BOUNDS = (0.1, 1e3)
#: up to this many inputs the GP has one length scale per input (ARD); above, one for all: 36-57
#: length scales from 100 labels are not identifiable, and fitting them took 10 s per fit
ARD_UP_TO = 24


class Ridge:
    def __init__(self, Z: np.ndarray, t: np.ndarray) -> None:
        from sklearn.linear_model import BayesianRidge

        self.model = BayesianRidge().fit(Z, t)

    def predict(self, Z: np.ndarray, return_std: bool = True) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.model.predict(Z, return_std=True)
        return np.asarray(mean), np.asarray(std)


class LinearMeanGP:
    def __init__(self, Z: np.ndarray, t: np.ndarray, seed: int = 0, restarts: int = 2) -> None:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        self.mean = Ridge(Z, t)
        residual = t - self.mean.predict(Z)[0]
        self.scale = float(residual.std()) or 1.0
        kernel = (ConstantKernel(1.0, (1e-3, 1e2)) * RBF(np.full(Z.shape[1], 3.0) if Z.shape[1] <= ARD_UP_TO else 3.0, LENGTH_BOUNDS)
                  + WhiteKernel(0.5, (1e-4, 2.0)))
        self.gp = GaussianProcessRegressor(kernel, normalize_y=False, n_restarts_optimizer=restarts, random_state=seed)
        with warnings.catch_warnings():  # a length scale at its bound means "this gene adds nothing": fine
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.gp.fit(Z, residual / self.scale)

    def predict(self, Z: np.ndarray, return_std: bool = True) -> tuple[np.ndarray, np.ndarray]:
        trend, trend_std = self.mean.predict(Z)
        residual, std = self.gp.predict(Z, return_std=True)
        return trend + residual * self.scale, np.sqrt(trend_std**2 + (std * self.scale) ** 2)


class Boosted:
    def __init__(self, Z: np.ndarray, t: np.ndarray, seed: int = 0, members: int = 3) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor

        rng = np.random.default_rng(seed)
        self.models = []
        for member in range(members):
            rows = rng.choice(len(Z), size=max(2, int(0.8 * len(Z))), replace=False) if members > 1 else np.arange(len(Z))
            model = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, max_leaf_nodes=7, min_samples_leaf=max(2, len(Z) // 20),
                                                  l2_regularization=1.0, early_stopping=False, random_state=seed * 100 + member)
            self.models.append(model.fit(Z[rows], t[rows]))

    def predict(self, Z: np.ndarray, return_std: bool = True) -> tuple[np.ndarray, np.ndarray]:
        outs = np.stack([m.predict(Z) for m in self.models])
        return outs.mean(0), outs.std(0)
