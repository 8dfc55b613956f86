"""Predictor transfer by residual correction: many cheap labels teach the landscape, few dear ones the shift.

APQ transfers its full-precision accuracy predictor to quantized networks by fine-tuning its
weights on a few quantized labels (``AccuracyPredictor.fit(..., warm_start=source)``). On our
MNIST-1D supernet that fine-tune ranks *worse* than a predictor trained from scratch on the
same few labels (``benchmarks/results/apq.md``): the inputs the cheap labels never saw vary
(the bits, all full precision there) start untrained, and a dozen labels cannot teach an MLP
both them and the rest again.

:class:`ResidualTransfer` keeps the source as it is and learns only what the dear labels add:

    predict(x) = source(x) + correction([x_new, source(x)])

``x_new`` are the *new* inputs — the columns that were constant in the source's training data
(for APQ, the quantization step of each stage) — and ``source(x)`` stands in for all the
others, so the correction has a handful of inputs however large the architecture encoding is.
The correction is an :class:`~autocompress.predict.AccuracyPredictor` (``kind``, a Gaussian
process by default) fitted on the residuals ``y - source(x)``; it can still bend with the
source's prediction (large networks lose less to 4 bits, say). Uncertainty is the correction's.

Measured by ``benchmarks/apq.py`` (Kendall τ on 100 held-out quantized sub-networks of an
MNIST-1D supernet, 5 draws of the labels, a GP source on 300 full-precision labels), on the
supernet it was chosen on and on three fresh ones (``--seed 1``, ``2``, ``3``): with 25 quantized
labels τ 0.82 / 0.72 / 0.76 / 0.80, where APQ's warm start reaches 0.55 / 0.51 / 0.50 / 0.52 and
the best predictor from scratch 0.71 / 0.65 / 0.59 / 0.64; from scratch needs about 100 / 50–100 /
100 / 100 labels to rank as well. Numbers in ``benchmarks/results/apq.md`` and ``apq_seed1.md`` to
``apq_seed3.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autocompress.predict.predictor import AccuracyPredictor, check_x, check_xy, ranking_metrics


class ResidualTransfer:
    """``source(x) + correction([new columns of x, source(x)])``, fitted on few labels (module docstring).

    ``source``: a fitted predictor of the cheap labels (any object with ``predict(X)``; an
    :class:`AccuracyPredictor` also tells which columns are new). ``columns``: the new columns'
    indices; default those the source saw constant, or every column if it saw none so.
    ``kind`` and ``seed``: the correction's :class:`AccuracyPredictor`."""

    def __init__(self, source: Any, *, kind: str = "gp", columns: Any = None, seed: int = 0) -> None:
        if not callable(getattr(source, "predict", None)):
            raise TypeError(f"source must be a fitted predictor with predict(X), got {type(source).__name__}")
        self.source = source
        self.kind = kind
        self.columns = columns
        self.seed = seed

    def fit(self, X: Any, y: Any) -> ResidualTransfer:
        X, y = check_xy(X, y)
        self.n_features_in_ = X.shape[1]
        self.columns_ = self._columns(X.shape[1])
        base = np.asarray(self.source.predict(X), dtype=float)
        self.correction_ = AccuracyPredictor(self.kind, seed=self.seed).fit(self._inputs(X, base), y - base)
        return self

    def predict(self, X: Any, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        X = check_x(X, self.n_features_in_)
        base = np.asarray(self.source.predict(X), dtype=float)
        mean, std = self.correction_.predict(self._inputs(X, base), return_std=True)
        return (base + mean, std) if return_std else base + mean

    def score(self, X: Any, y: Any) -> float:
        """Kendall τ between predictions and ``y``."""
        return ranking_metrics(y, self.predict(X))["kendall_tau"]

    # ------------------------------------------------------------------ internals
    def _columns(self, width: int) -> np.ndarray:
        if self.columns is not None:
            columns = np.asarray(self.columns, dtype=int).ravel()
            if columns.size and (columns.min() < 0 or columns.max() >= width):
                raise ValueError(f"columns must index the {width} features, got {columns.tolist()}")
            return columns
        seen = getattr(self.source, "x_std_", None)
        if seen is not None and len(seen) != width:
            raise ValueError(f"the source was fitted on {len(seen)} features; X has {width}")
        new = np.flatnonzero(np.asarray(seen) == 0) if seen is not None else np.array([], dtype=int)
        return new if new.size else np.arange(width)

    def _inputs(self, X: np.ndarray, base: np.ndarray) -> np.ndarray:
        return np.column_stack([X[:, self.columns_], base])

    def _check_fitted(self) -> None:
        if not hasattr(self, "correction_"):
            raise RuntimeError("this ResidualTransfer is not fitted yet: call fit(X, y) first")
