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
- ``"rank"``: the ensemble trained on the squared error plus a pairwise logistic ranking loss
  (weight ``ranking``): a search uses the predictor to rank, not to read off values.
- ``"gp"``: Bayesian ridge as the mean and a Gaussian process on its residuals (bounded length
  scales, restarts; :class:`~autocompress.predict.models.LinearMeanGP`): never a constant where
  the ridge ranks.
- ``"linear"``: Bayesian ridge regression (scikit-learn), its predictive std.
- ``"gbt"``: gradient-boosted trees (scikit-learn's ``HistGradientBoostingRegressor``).
- ``"blend"``: the plain average of the ``"gp"`` and ``"gbt"`` predictions (and of their stds).
- ``"stack"``: a non-negative blend of the kinds of :data:`~autocompress.predict.choose.STACK_KINDS`,
  weighted by their out-of-fold predictions.

``kind="auto"`` chooses by the labels it is given (:func:`~autocompress.predict.choose.choose_kind`):
``"gp"`` or ``"blend"``, whichever's out-of-fold predictions rank the labels better (Kendall τ),
Bayesian ridge for very few labels; a near-constant predictor is never chosen. ``kind_`` is the choice and
``cv_scores_`` the τ it was made on.
Every model also gives the gradient of its prediction (:meth:`AccuracyPredictor.gradient`)
for policy optimization: by autograd for the MLPs, by central differences otherwise.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from autocompress.threads import single_threaded

KINDS = ("mlp", "ensemble", "rank", "gp", "linear", "gbt", "blend", "stack")
MLP_KINDS = ("mlp", "ensemble", "rank")
#: kinds that average fitted predictors of other kinds
BLENDS = ("blend", "stack")


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
        ranking: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.kind = kind
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.members = members
        self.ranking = ranking
        self.seed = seed

    # ------------------------------------------------------------------ fit / predict
    def fit(self, X: Any, y: Any, *, warm_start: AccuracyPredictor | None = None) -> AccuracyPredictor:
        """Fit on ``(X, y)``. ``warm_start``: a fitted MLP/ensemble predictor to start from (predictor
        transfer, APQ): its networks are copied and trained further on ``(X, y)``, with its input and
        target standardization kept, so few labels refine what many cheaper ones taught."""
        X, y = check_xy(X, y)
        if warm_start is not None:
            return self._fit_warm(X, y, warm_start)
        if self.kind != "auto" and self.kind not in KINDS:
            raise ValueError(f"kind must be 'auto' or one of {list(KINDS)}, got {self.kind!r}")
        if len(X) < 2:
            raise ValueError(f"need at least 2 labelled policies to fit, got {len(X)}")
        self.cv_scores_: dict[str, float] = {}
        kind = self.kind
        if kind == "auto":
            from autocompress.predict.choose import choose_kind

            kind, self.cv_scores_ = choose_kind(self._sibling, X, y, seed=self.seed)
        self.kind_ = kind
        self.n_features_in_ = X.shape[1]
        self.x_mean_, self.x_std_ = X.mean(0), X.std(0)
        self.x_scale_ = np.where(self.x_std_ > 0, self.x_std_, 1.0)  # a constant column carries no information
        self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std()) or 1.0
        Z, t = self._z(X), (y - self.y_mean_) / self.y_scale_
        if kind in BLENDS:
            from autocompress.predict.choose import BLEND, stack_weights

            weights = stack_weights(self._sibling, X, y, seed=self.seed) if kind == "stack" else dict.fromkeys(BLEND, 1 / len(BLEND))
            self.blend_ = [(w, self._sibling(k).fit(X, y)) for k, w in weights.items() if w > 0]
        elif kind in MLP_KINDS:
            rng = np.random.default_rng(self.seed)
            count = 1 if kind == "mlp" else self.members
            self.nets_ = []
            with single_threaded():
                for member in range(count):
                    rows = np.arange(len(Z)) if kind == "mlp" else rng.integers(0, len(Z), len(Z))
                    self.nets_.append(self._train_mlp(Z[rows], t[rows], self.seed * 1000 + member,
                                                      ranking=self.ranking if kind == "rank" else 0.0))
        else:
            from autocompress.predict import models

            with single_threaded():
                self.model_ = {"gp": lambda: models.LinearMeanGP(Z, t, self.seed), "linear": lambda: models.Ridge(Z, t),
                               "gbt": lambda: models.Boosted(Z, t, self.seed)}[kind]()
        return self

    def _sibling(self, kind: str) -> AccuracyPredictor:
        """An unfitted predictor of ``kind`` with this one's hyperparameters."""
        return AccuracyPredictor(kind, hidden=self.hidden, epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay,
                                 members=self.members, ranking=self.ranking, seed=self.seed)

    def _fit_warm(self, X: np.ndarray, y: np.ndarray, source: AccuracyPredictor) -> AccuracyPredictor:
        source._check_fitted()
        if source.kind_ not in MLP_KINDS:
            raise ValueError(f"warm_start needs an 'mlp', 'ensemble' or 'rank' predictor, got a {source.kind_!r} one")
        if X.shape[1] != source.n_features_in_:
            raise ValueError(f"warm_start was fitted on {source.n_features_in_} features; X has {X.shape[1]}")
        self.kind_, self.n_features_in_, self.cv_scores_ = source.kind_, source.n_features_in_, {}
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
            self.nets_ = [self._train_mlp(Z, t, self.seed * 1000 + i, start=net, ranking=self.ranking if self.kind_ == "rank" else 0.0)
                          for i, net in enumerate(source.nets_)]
        return self

    def predict(self, X: Any, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predicted metric per row (and its uncertainty, in the metric's units, with ``return_std``)."""
        self._check_fitted()
        X = check_x(X, self.n_features_in_)
        if self.kind_ in BLENDS:
            parts = [(w, *m.predict(X, return_std=True)) for w, m in self.blend_]
            mean, std = sum(w * m for w, m, _ in parts), sum(w * s for w, _, s in parts)
            return (mean, std) if return_std else mean
        Z = self._z(X)
        if self.kind_ in MLP_KINDS:
            with torch.no_grad(), single_threaded():
                outs = np.stack([net(torch.as_tensor(Z, dtype=torch.float32)).squeeze(-1).numpy() for net in self.nets_])
            mean, std = outs.mean(0), (outs.std(0) if len(outs) > 1 else np.zeros(len(Z)))
        else:
            mean, std = self.model_.predict(Z)
        mean = mean * self.y_scale_ + self.y_mean_
        return (mean, np.asarray(std) * self.y_scale_) if return_std else mean

    def gradient(self, X: Any, step: float | None = None) -> np.ndarray:
        """d prediction / d X per row (same shape as X): autograd for the MLPs, central differences otherwise
        (``step`` in units of each input's std: 1e-3, or 0.25 for the piecewise-constant trees, whose
        gradient is zero almost everywhere)."""
        self._check_fitted()
        X = check_x(X, self.n_features_in_)
        if self.kind_ in BLENDS:
            return sum(w * m.gradient(X, step) for w, m in self.blend_)
        step = step if step is not None else (0.25 if self.kind_ == "gbt" else 1e-3)
        if self.kind_ in MLP_KINDS:
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

    def _train_mlp(self, Z: np.ndarray, t: np.ndarray, seed: int, start: nn.Module | None = None, ranking: float = 0.0) -> nn.Module:
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
        order = torch.sign(targets[:, None] - targets[None, :])  # +1 where row i should rank above row j
        for _ in range(self.epochs):
            optimizer.zero_grad(set_to_none=True)
            out = net(inputs).squeeze(-1)
            loss = nn.functional.mse_loss(out, targets)
            if ranking > 0:  # pairwise logistic (RankNet) loss over every ordered pair
                margin = order * (out[:, None] - out[None, :])
                loss = loss + ranking * (nn.functional.softplus(-margin) * order.abs()).sum() / order.abs().sum().clamp(min=1)
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


def check_x(X: Any, width: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D (n_policies, n_features) array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values")
    if width is not None and X.shape[1] != width:
        raise ValueError(f"X has {X.shape[1]} features; the predictor was fitted on {width}")
    return X


def check_xy(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    X = check_x(X)
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
