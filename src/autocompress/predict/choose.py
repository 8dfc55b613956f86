"""``kind="auto"``: the predictor chosen by cross-validated rank correlation on the labels it is given.

A rule chosen on one labelled set fails on another (the GP ranked best on our MNIST-1D labels and
worst on another group's ResNet labels), so ``"auto"`` measures instead of assuming:

- fewer than :data:`FEW_LABELS` labels: Bayesian ridge (too few to cross-validate; the
  most constrained model);
- otherwise each kind of :data:`AUTO_KINDS` is fitted ``folds`` times (twice over: two assignments
  of folds, their τ averaged) and scored by the Kendall τ
  of its pooled out-of-fold predictions against the labels (a kind whose predictions are
  near-constant scores -inf: it cannot rank); a non-negative blend of those out-of-fold
  predictions (stacking, weights by NNLS) is scored by a second cross-validation over the same
  rows and competes too;
- the choice follows the one-standard-error rule: the first kind of :data:`PREFERENCE` whose
  τ is within one standard error (over the folds) of the best one's. With 25-50 labels the
  kinds' τ differ by less than the folds' noise, and the best-scoring kind is then picked by
  chance (on five label sets it fell 0.02-0.03 below the best kind at 5 of 15 set sizes:
  docs/results.md); the residual GP on Bayesian ridge comes first because it contains ridge
  and keeps ridge's ranking where the labels show no structure beyond it. The stack's standard
  error counts as any kind's: without it a stack that scored best by chance was always chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

#: the kinds "auto" cross-validates, cheapest first (ties go to the earlier)
AUTO_KINDS = ("linear", "gp", "gbt", "ensemble")
#: the order the one-standard-error rule prefers (the most constrained model that contains the others' strengths first)
PREFERENCE = ("gp", "linear", "stack", "ensemble", "gbt")
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


def blend_weights(columns: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative weights of ``columns`` (n, k) around the mean of ``y`` (NNLS), summing to 1 when any is > 0."""
    from scipy.optimize import nnls

    centre = y.mean()
    weights, _ = nnls(columns - centre, y - centre)
    total = weights.sum()
    return weights / total if total > 0 else np.full(columns.shape[1], 1.0 / columns.shape[1])


def cross_validate(make: Callable[[str], Any], X: np.ndarray, y: np.ndarray, kinds: Sequence[str], folds: int,
                   seed: int) -> tuple[dict[str, float], dict[str, list[float]], dict[str, float]]:
    """One cross-validation: (pooled τ per kind and ``"stack"``, τ per fold, the stack's weights)."""
    parts = folds_of(len(y), min(folds, len(y) // 3), seed)
    predictions = {k: out_of_fold(lambda a, b, k=k: make(k).fit(a, b), X, y, parts) for k in kinds}
    # near-constant within every fold: pooled, the folds' different constants would still "rank"
    scores = {k: -np.inf if all(np.std(p[held]) <= 1e-6 * (np.std(y) or 1.0) for held in parts) else tau(y, p)
              for k, p in predictions.items()}
    fold_parts = {k: parts for k in kinds}
    usable = [k for k in kinds if np.isfinite(scores[k])]
    weights: dict[str, float] = {}
    if len(usable) > 1:
        columns = np.stack([predictions[k] for k in usable], axis=1)
        blended = np.empty(len(y))
        fold_parts["stack"] = folds_of(len(y), len(parts), seed + 1)
        for held in fold_parts["stack"]:
            keep = np.setdiff1d(np.arange(len(y)), held)
            blended[held] = columns[held] @ blend_weights(columns[keep], y[keep])  # weights sum to 1
        predictions["stack"] = blended
        scores["stack"] = tau(y, blended)
        weights = dict(zip(usable, blend_weights(columns, y).tolist(), strict=True))
    per_fold = {k: [t for t in (tau(y[held], predictions[k][held]) for held in fold_parts[k]) if np.isfinite(t)] for k in scores}
    return scores, per_fold, weights


def choose_kind(make: Callable[[str], Any], X: np.ndarray, y: np.ndarray, *, kinds: Sequence[str] = AUTO_KINDS,
                folds: int = 4, repeats: int = 2, seed: int = 0) -> tuple[str, dict[str, float], dict[str, float]]:
    """(chosen kind, cross-validated τ per kind and for ``"stack"``, the stack's weights per kind).

    ``make(kind)`` returns an unfitted predictor of that kind. The cross-validation is repeated
    ``repeats`` times over different folds and its τ averaged: with 25-50 labels one assignment of
    folds alone picks a kind by chance (ext-d, 50 labels: 0.027 below the best kind; 0.013 with two)."""
    if len(y) < FEW_LABELS:
        return "linear", {}, {}
    runs = [cross_validate(make, X, y, kinds, folds, seed + 1000 * r) for r in range(max(1, repeats))]
    order = [*kinds, "stack"]
    scores = {k: float(np.mean([run[0][k] for run in runs])) for k in order if all(k in run[0] for run in runs)}
    weights = runs[0][2]
    best = max(scores, key=lambda k: (scores[k], -order.index(k)))
    if not np.isfinite(scores[best]):
        return "linear", scores, weights
    # one standard error of the best kind's τ over one repetition's folds (the stack's too: it is no less noisy)
    per_fold = [t for run in runs for t in run[1][best]]
    error = float(np.std(per_fold, ddof=1) / np.sqrt(len(per_fold) / len(runs))) if len(per_fold) > 1 else 0.0
    preferred = [k for k in PREFERENCE if k in scores] + [k for k in order if k in scores and k not in PREFERENCE]
    chosen = next(k for k in preferred if scores[k] >= scores[best] - error)
    return chosen, scores, weights
