"""ODF2NNA's quality gate: how far a refined model may fall below the original on the validation split
(metric and loss tolerances, the confidence margin) and the choice of epsilon from a sweep."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from autocompress.finetune import evaluate_loss, evaluate_metric
from autocompress.search.refine_report import SweepPoint
from autocompress.task import Task

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_LOSS_TOLERANCE",
    "DEFAULT_REGRESSION_LOSS_TOLERANCE",
    "choose_epsilon",
    "default_loss_tolerance",
    "default_tolerance",
    "passes",
]

#: ``refine_dense(epsilon="auto")``: the refined model's validation cross-entropy may exceed the original's by this
DEFAULT_LOSS_TOLERANCE = 0.05
#: ... and for other losses (regression's MSE) by this fraction of the original's validation loss
#: (2 % of the MSE is about 1 % of the RMSE, the default metric tolerance)
DEFAULT_REGRESSION_LOSS_TOLERANCE = 0.02
#: ... and not only by the luck of a small validation set: the loss gap plus this many standard
#: errors of the paired per-sample differences must be within the loss tolerance (one-sided 95 %);
#: chosen on development seeds by ``benchmarks/odf2nna_choice.py``
DEFAULT_CONFIDENCE = 1.645


def default_tolerance(task: Task, original_metric: float) -> float:
    """0.5 points for an accuracy (percent); otherwise 1 % of the original metric's magnitude."""
    return 0.5 if task.metric == "accuracy" else 0.01 * abs(original_metric)


def choose_epsilon(points: Sequence[SweepPoint], original_metric: float, tolerance: float, *,
                   original_loss: float | None = None, loss_tolerance: float | None = None,
                   confidence: float = 0.0) -> SweepPoint | None:
    """The point with the largest epsilon that :func:`passes`; None when no point qualifies."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 (in the metric's units), got {tolerance}")
    good = [p for p in points if passes(p, original_metric, tolerance, original_loss, loss_tolerance, confidence)]
    return max(good, key=lambda p: (p.epsilon, -p.params)) if good else None


def passes(point: SweepPoint, original_metric: float, tolerance: float, original_loss: float | None = None,
           loss_tolerance: float | None = None, confidence: float = 0.0) -> bool:
    """Whether a sweep point is good enough: its validation metric at most ``tolerance`` below the
    original's and, with ``loss_tolerance``, its validation loss at most ``loss_tolerance`` above the
    original's, by a margin: ``loss_gap + confidence * loss_gap_se <= loss_tolerance`` (the mean and
    standard error of the per-sample loss differences; without them ``point.loss - original_loss``).
    """
    if point.metric < original_metric - tolerance:
        return False
    if loss_tolerance is None:
        return True
    if point.loss_gap is not None:
        return point.loss_gap + confidence * (point.loss_gap_se or 0.0) <= loss_tolerance
    if original_loss is None or point.loss is None:
        return True
    return point.loss - original_loss <= loss_tolerance


def default_loss_tolerance(task: Task, original_loss: float) -> float:
    """0.05 nats of validation cross-entropy for classification; otherwise 2 % of the original's validation loss."""
    if task.is_classification:
        return DEFAULT_LOSS_TOLERANCE
    return DEFAULT_REGRESSION_LOSS_TOLERANCE * abs(original_loss)


@dataclass(frozen=True)
class Gate:
    """What a refined model must reach on the validation split (see :func:`passes`)."""

    metric: float  # the original's
    tolerance: float
    loss: float  # the original's
    loss_tolerance: float | None
    confidence: float

    def passes(self, point: SweepPoint) -> bool:
        return passes(point, self.metric, self.tolerance, self.loss, self.loss_tolerance, self.confidence)


def quality_gate(model: nn.Module, task: Task, tolerance: float | None, loss_tolerance: float | str | None,
                 confidence: float) -> Gate:
    """The :class:`Gate` of ``refine_dense(epsilon="auto")``: the original's validation metric and loss, the
    tolerances (``None`` / ``"auto"``: :func:`default_tolerance`, :func:`default_loss_tolerance`), checked."""
    original = evaluate_metric(model, task, "val")
    original_loss = evaluate_loss(model, task, "val")
    tolerance = default_tolerance(task, original) if tolerance is None else tolerance
    if not tolerance >= 0:
        raise ValueError(f"refine_dense: tolerance must be >= 0 (in the metric's units), got {tolerance}")
    if loss_tolerance == "auto":
        loss_tolerance = default_loss_tolerance(task, original_loss)
    if loss_tolerance is not None and (isinstance(loss_tolerance, str) or not loss_tolerance >= 0):
        raise ValueError(f"refine_dense: loss_tolerance must be a number >= 0, 'auto' or None, got {loss_tolerance!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence < math.inf:
        raise ValueError(f"refine_dense: confidence must be a finite number >= 0 (standard errors), got {confidence!r}")
    loss_tolerance = None if loss_tolerance is None else float(loss_tolerance)
    return Gate(original, float(tolerance), original_loss, loss_tolerance, float(confidence))
