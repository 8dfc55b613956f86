"""``kind="auto"``: the predictor chosen by cross-validated rank correlation on the labels it is given.

A rule chosen on one labelled set fails on another (the GP ranked best on our MNIST-1D labels and
worst on another group's ResNet labels), so ``"auto"`` measures instead of assuming:

- fewer than :data:`FEW_LABELS` labels: Bayesian ridge (too few to cross-validate; the
  most constrained model);
- otherwise each candidate of :data:`AUTO_KINDS` — the residual GP on Bayesian ridge, and
  ``"blend"``, the plain average of that GP and gradient-boosted trees (:data:`BLEND`) — is
  scored by the Kendall τ of its pooled out-of-fold predictions against the labels, over
  ``folds`` folds, twice over different folds (τ averaged); the higher τ wins, a tie goes to
  the GP. A candidate whose predictions are near-constant scores -inf: it cannot rank.

Why these two (benchmarks/label_sets.py over 8 label sets, 25/50/100 labels, 5 splits): the GP
is the best single kind on the synthetic sets shaped like the external ResNet labels (many
three-valued genes, additive effects, a narrow band) and on smooth ones, and 0.05-0.13 behind
the trees on the labels of real searches (random policies of zoo models: thresholds and
interactions); the average of the two is within 0.01 of the best kind on the real sets and
up to 0.05 below it on the synthetic ones. Choosing among more candidates (every single kind
and a weighted stack) by the same cross-validation, with or without a one-standard-error rule,
fell more than 0.02 below the best kind at 2-5 of 24 (set, size) cells: with 25-50 labels the
folds' noise picks among many candidates by chance; between two it fell below at one
(docs/results.md). No neural network is fitted, so ``"auto"`` costs a few GP and tree fits.

:func:`stack_weights` gives ``kind="stack"`` its non-negative weights over :data:`STACK_KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

#: the candidates "auto" cross-validates (a tie goes to the earlier)
AUTO_KINDS = ("gp", "blend")
#: the kinds ``"blend"`` averages with equal weights
BLEND = ("gp", "gbt")
#: the kinds ``"stack"`` weights by their out-of-fold predictions
STACK_KINDS = ("linear", "gp", "gbt", "ensemble")
#: below this many labels "auto" is Bayesian ridge without cross-validation
FEW_LABELS = 12


def tau(y: np.ndarray, predicted: np.ndarray) -> float:
    """Kendall τ, -inf for (near-)constant predictions or an undefined τ."""
    if np.std(predicted) <= 1e-6 * (np.std(y) or 1.0):
        return -np.inf
    value = stats.kendalltau(y, predicted).statistic
    return float(value) if np.isfinite(value) else -np.inf


def folds_of(n: int, folds: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::folds] for i in range(folds)]


def out_of_fold(fit: Callable[[np.ndarray, np.ndarray], Any], X: np.ndarray, y: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    """Each row predicted by a model fitted without its fold (``fit(X, y)`` returns a fitted predictor)."""
    out = np.empty(len(y))
    for held in parts:
        keep = np.setdiff1d(np.arange(len(y)), held)
        out[held] = fit(X[keep], y[keep]).predict(X[held])
    return out


def members(kind: str) -> tuple[str, ...]:
    """The single kinds whose predictions ``kind`` averages (itself, unless it is ``"blend"``)."""
    return BLEND if kind == "blend" else (kind,)


def blend_weights(columns: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative weights of ``columns`` (n, k) around the mean of ``y`` (NNLS), summing to 1 when any is > 0."""
    from scipy.optimize import nnls

    centre = y.mean()
    weights, _ = nnls(columns - centre, y - centre)
    total = weights.sum()
    return weights / total if total > 0 else np.full(columns.shape[1], 1.0 / columns.shape[1])


def out_of_fold_all(make: Callable[[str], Any], X: np.ndarray, y: np.ndarray, kinds: Sequence[str], folds: int,
                    seed: int) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Out-of-fold predictions of each single kind over one assignment of folds, and the folds."""
    parts = folds_of(len(y), min(folds, len(y) // 3), seed)
    return {k: out_of_fold(lambda a, b, k=k: make(k).fit(a, b), X, y, parts) for k in kinds}, parts


def ranks(y: np.ndarray, predicted: np.ndarray, parts: list[np.ndarray]) -> float:
    """Pooled τ of out-of-fold predictions; -inf where they are near-constant within every fold
    (pooled, the folds' different constants would still "rank")."""
    if all(np.std(predicted[held]) <= 1e-6 * (np.std(y) or 1.0) for held in parts):
        return -np.inf
    return tau(y, predicted)


def choose_kind(make: Callable[[str], Any], X: np.ndarray, y: np.ndarray, *, kinds: Sequence[str] = AUTO_KINDS,
                folds: int = 4, repeats: int = 2, seed: int = 0) -> tuple[str, dict[str, float]]:
    """(chosen kind, cross-validated τ per candidate of ``kinds``).

    ``make(kind)`` returns an unfitted predictor of a single kind; ``"blend"`` among ``kinds`` is
    scored by the average of its :data:`BLEND` members' out-of-fold predictions. The
    cross-validation is repeated ``repeats`` times over different folds and its τ averaged: with
    25-50 labels one assignment of folds alone picks a kind by chance."""
    if len(y) < FEW_LABELS:
        return "linear", {}
    singles = list(dict.fromkeys(k for kind in kinds for k in members(kind)))
    runs = [out_of_fold_all(make, X, y, singles, folds, seed + 1000 * r) for r in range(max(1, repeats))]
    scores = {kind: float(np.mean([ranks(y, np.mean([predictions[k] for k in members(kind)], axis=0), parts)
                                   for predictions, parts in runs])) for kind in kinds}
    best = max(kinds, key=lambda k: (scores[k], -list(kinds).index(k)))
    return (best if np.isfinite(scores[best]) else "linear"), scores


def stack_weights(make: Callable[[str], Any], X: np.ndarray, y: np.ndarray, *, kinds: Sequence[str] = STACK_KINDS,
                  folds: int = 4, seed: int = 0) -> dict[str, float]:
    """Non-negative weights (summing to 1) of the kinds whose out-of-fold predictions can rank, fitted
    to the labels by NNLS; ``{"linear": 1.0}`` with fewer than :data:`FEW_LABELS` labels."""
    if len(y) < FEW_LABELS:
        return {"linear": 1.0}
    predictions, parts = out_of_fold_all(make, X, y, kinds, folds, seed)
    usable = [k for k in kinds if np.isfinite(ranks(y, predictions[k], parts))] or ["linear"]
    if len(usable) == 1:
        return {usable[0]: 1.0}
    columns = np.stack([predictions[k] for k in usable], axis=1)
    return dict(zip(usable, blend_weights(columns, y).tolist(), strict=True))
