"""Accuracy predictors: from a numeric policy encoding to the metric it reaches (SeerNet's first half).

:class:`AccuracyPredictor` is scikit-learn style — ``fit(X, y)``, ``predict(X)``,
``predict(X, return_std=True)`` — on any ``(n, d)`` float array, so it can be fitted on
another source's (policy, accuracy) data as well as ours. Inputs are standardized per
column and targets per fit; every model predicts in the original units.

Models (``kind``):

- ``"mlp"``: SeerNet's predictor (official code ZiweiWangTHU/SeerNet, ``PGD/regression/MLP.py``):
  Linear(d, h) - ELU - Linear(h, h) - ELU - Linear(h, 1), trained full-batch with Adam on
  the mean squared error. No uncertainty: ``return_std`` gives zeros.
- ``"ensemble"``: ``members`` such MLPs, each on a bootstrap resample with its own
  initialization; the mean is the prediction and the spread across members the
  uncertainty (a deep ensemble).
- ``"gp"``: a Gaussian process (scikit-learn; constant × RBF with one length scale per
  input + white noise, hyperparameters by marginal likelihood), posterior std as the
  uncertainty.
- ``"linear"``: Bayesian ridge regression (scikit-learn), its predictive std.

Which one is the default (``kind="auto"``) is decided by ``benchmarks/predictor.py`` —
Kendall τ on 100 held-out MNIST-1D CNN policies, 5 seeds: with 25 labels the ensemble ranks
best (τ 0.36; the GP 0.10, its length scales are not identifiable yet), from 100 labels the GP
does (τ 0.63 at 100, 0.71 at 200; the MLPs 0.48 / 0.60). So ``"auto"`` is the ensemble below
:data:`GP_FROM` labels and the GP from there on (:func:`default_kind`).
Every model also gives the gradient of its prediction (:meth:`AccuracyPredictor.gradient`)
for policy optimization: by autograd for the MLPs, by central differences otherwise.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from autocompress.threads import single_threaded

KINDS = ("mlp", "ensemble", "gp", "linear")
GP_FROM = 75  # labels; below it "auto" is the ensemble (benchmarks/predictor.py, see the module docstring)


def default_kind(labels: int) -> str:
    """The predictor ``kind="auto"`` fits on ``labels`` labelled policies."""
    return "gp" if labels >= GP_FROM else "ensemble"


class AccuracyPredictor:
    """Predict a policy's metric from its encoding. Constructor arguments are the hyperparameters."""

    def __init__(
        self,
        kind: str = "auto",
        *,
        hidden: int = 32,
        epochs: int = 600,
        lr: float = 0.01,
        weight_decay: float = 1e-4,
        members: int = 5,
        seed: int = 0,
    ) -> None:
        self.kind = kind
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.members = members
        self.seed = seed

    # ------------------------------------------------------------------ fit / predict
    def fit(self, X: Any, y: Any, *, warm_start: AccuracyPredictor | None = None) -> AccuracyPredictor:
        """Fit on ``(X, y)``. ``warm_start``: a fitted MLP/ensemble predictor to start from (predictor
        transfer, APQ): its networks are copied and trained further on ``(X, y)``, with its input and
        target standardization kept, so few labels refine what many cheaper ones taught."""
        X, y = _check_xy(X, y)
        if warm_start is not None:
            return self._fit_warm(X, y, warm_start)
        kind = default_kind(len(X)) if self.kind == "auto" else self.kind
        if kind not in KINDS:
            raise ValueError(f"kind must be 'auto' or one of {list(KINDS)}, got {self.kind!r}")
        if len(X) < 2:
            raise ValueError(f"need at least 2 labelled policies to fit, got {len(X)}")
        self.kind_ = kind
        self.n_features_in_ = X.shape[1]
        self.x_mean_, self.x_std_ = X.mean(0), X.std(0)
        self.x_scale_ = np.where(self.x_std_ > 0, self.x_std_, 1.0)  # a constant column carries no information
        self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std()) or 1.0
        Z, t = self._z(X), (y - self.y_mean_) / self.y_scale_
        if kind in ("mlp", "ensemble"):
            rng = np.random.default_rng(self.seed)
            count = 1 if kind == "mlp" else self.members
            self.nets_ = []
            with single_threaded():
                for member in range(count):
                    rows = np.arange(len(Z)) if kind == "mlp" else rng.integers(0, len(Z), len(Z))
                    self.nets_.append(self._train_mlp(Z[rows], t[rows], self.seed * 1000 + member))
        elif kind == "gp":
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.gaussian_process import GaussianProcessRegressor
            from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

            kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(np.ones(Z.shape[1]), (1e-2, 1e5)) + WhiteKernel(0.1, (1e-6, 1.0))
            self.model_ = GaussianProcessRegressor(kernel, normalize_y=False, n_restarts_optimizer=2, random_state=self.seed)
            with warnings.catch_warnings():  # a length scale at its bound means "this gene does not matter": fine
                warnings.simplefilter("ignore", ConvergenceWarning)
                self.model_.fit(Z, t)
        else:
            from sklearn.linear_model import BayesianRidge

            self.model_ = BayesianRidge().fit(Z, t)
        return self

    def _fit_warm(self, X: np.ndarray, y: np.ndarray, source: AccuracyPredictor) -> AccuracyPredictor:
        source._check_fitted()
        if source.kind_ not in ("mlp", "ensemble"):
            raise ValueError(f"warm_start needs an 'mlp' or 'ensemble' predictor, got a {source.kind_!r} one")
        if X.shape[1] != source.n_features_in_:
            raise ValueError(f"warm_start was fitted on {source.n_features_in_} features; X has {X.shape[1]}")
        self.kind_, self.n_features_in_ = source.kind_, source.n_features_in_
        self.x_mean_, self.x_scale_ = source.x_mean_.copy(), source.x_scale_.copy()
        # inputs the source never saw vary (e.g. bits, all full precision there) get the new data's scale:
        # kept at the source's (mean, 1) they would be too small for the copied networks to learn from
        constant = source.x_std_ == 0
        if constant.any():
            self.x_mean_[constant] = X[:, constant].mean(0)
            scale = X[:, constant].std(0)
            self.x_scale_[constant] = np.where(scale > 0, scale, 1.0)
        self.x_std_ = np.where(constant, X.std(0), source.x_std_)
        self.y_mean_, self.y_scale_ = source.y_mean_, source.y_scale_
        Z, t = self._z(X), (y - self.y_mean_) / self.y_scale_
        with single_threaded():
            self.nets_ = [self._train_mlp(Z, t, self.seed * 1000 + i, start=net) for i, net in enumerate(source.nets_)]
        return self

    def predict(self, X: Any, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predicted metric per row (and its uncertainty, in the metric's units, with ``return_std``)."""
        self._check_fitted()
        X = _check_x(X, self.n_features_in_)
        Z = self._z(X)
        if self.kind_ in ("mlp", "ensemble"):
            with torch.no_grad(), single_threaded():
                outs = np.stack([net(torch.as_tensor(Z, dtype=torch.float32)).squeeze(-1).numpy() for net in self.nets_])
            mean, std = outs.mean(0), (outs.std(0) if len(outs) > 1 else np.zeros(len(Z)))
        else:
            mean, std = self.model_.predict(Z, return_std=True)
        mean = mean * self.y_scale_ + self.y_mean_
        return (mean, np.asarray(std) * self.y_scale_) if return_std else mean

    def gradient(self, X: Any, step: float = 1e-3) -> np.ndarray:
        """d prediction / d X per row (same shape as X): autograd for the MLPs, central differences otherwise."""
        self._check_fitted()
        X = _check_x(X, self.n_features_in_)
        if self.kind_ in ("mlp", "ensemble"):
            z = torch.as_tensor(self._z(X), dtype=torch.float32).requires_grad_(True)
            with single_threaded():
                torch.stack([net(z).squeeze(-1) for net in self.nets_]).mean(0).sum().backward()
            return z.grad.numpy().astype(float) * self.y_scale_ / self.x_scale_
        d = X.shape[1]
        offsets = np.eye(d) * step * self.x_scale_
        points = np.concatenate([X[:, None, :] + offsets, X[:, None, :] - offsets], axis=1).reshape(-1, d)
        values = self.predict(points).reshape(len(X), 2, d)
        return (values[:, 0] - values[:, 1]) / (2 * step * self.x_scale_)

    def score(self, X: Any, y: Any) -> float:
        """Kendall τ between predictions and ``y`` (ranking is what a search needs)."""
        return ranking_metrics(y, self.predict(X))["kendall_tau"]

    # ------------------------------------------------------------------ internals
    def _z(self, X: np.ndarray) -> np.ndarray:
        return (X - self.x_mean_) / self.x_scale_

    def _train_mlp(self, Z: np.ndarray, t: np.ndarray, seed: int, start: nn.Module | None = None) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if start is not None:
                net = copy.deepcopy(start).train()
            else:
                net = nn.Sequential(nn.Linear(Z.shape[1], self.hidden), nn.ELU(), nn.Linear(self.hidden, self.hidden),
                                    nn.ELU(), nn.Linear(self.hidden, 1))
        inputs, targets = torch.as_tensor(Z, dtype=torch.float32), torch.as_tensor(t, dtype=torch.float32)
        optimizer = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.epochs)
        for _ in range(self.epochs):
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(net(inputs).squeeze(-1), targets)
            loss.backward()
            optimizer.step()
            schedule.step()
        return net.eval()

    def _check_fitted(self) -> None:
        if not hasattr(self, "kind_"):
            raise RuntimeError("this AccuracyPredictor is not fitted yet: call fit(X, y) first")


def ranking_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Kendall τ, Spearman ρ and RMSE of predictions against the truth."""
    y_true, y_pred = np.asarray(y_true, dtype=float).ravel(), np.asarray(y_pred, dtype=float).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {len(y_true)} vs {len(y_pred)}")
    return {
        "kendall_tau": float(stats.kendalltau(y_true, y_pred).statistic),
        "spearman_rho": float(stats.spearmanr(y_true, y_pred).statistic),
        "rmse": float(np.sqrt(np.mean((y_true - y_pred) ** 2))),
    }


def _check_x(X: Any, width: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D (n_policies, n_features) array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values")
    if width is not None and X.shape[1] != width:
        raise ValueError(f"X has {X.shape[1]} features; the predictor was fitted on {width}")
    return X


def _check_xy(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    X = _check_x(X)
    y = np.asarray(y, dtype=float).ravel()
    if len(y) != len(X):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)} values")
    if not np.isfinite(y).all():
        raise ValueError("y contains NaN or infinite values (drop the failed evaluations first)")
    return X, y


def policy_features(space: Any, policies: Any) -> np.ndarray:
    """Policies -> the predictors' input: ``space.encode`` with bit-widths as log2(bits).

    32 → 5, 8 → 3, 4 → 2: a step in bits then weighs by its effect (halving), not its size.
    Prune ratios and ranks stay as they are. Columns follow ``space.genes``.
    """
    return vector_features(space, np.array([space.encode(p) for p in policies], dtype=float))


def vector_features(space: Any, vectors: Any) -> np.ndarray:
    """:func:`policy_features` of raw ``space.encode`` vectors (rows)."""
    rows = np.array(vectors, dtype=float).reshape(-1, len(space.genes))
    for i, gene in enumerate(space.genes):
        if gene.field.endswith("bits"):
            rows[:, i] = np.log2(rows[:, i])
    return rows
