"""ODF2NNA's reports: what :func:`~autocompress.search.refine.refine_dense` kept of each layer, each point
of an epsilon sweep, and the refined model with its report."""

from __future__ import annotations

from typing import NamedTuple

from pydantic import BaseModel
from torch import nn

__all__ = ["LayerUnits", "RefineReport", "Refined", "SweepPoint"]


class LayerUnits(BaseModel):
    """One hidden layer's units: how many were kept, which, and their scores."""

    layer: str
    units: int
    kept: int
    removed: int
    kept_units: list[int]
    score_min: float
    score_median: float
    score_max: float
    removed_score_max: float | None  # the most useful removed unit's score (None: none removed)


class SweepPoint(BaseModel):
    """One epsilon of a sweep: the refined model's size and validation metric."""

    epsilon: float
    params: int
    hidden: list[int]
    metric_before_retrain: float
    metric: float  # after retraining
    loss: float | None = None  # validation task loss after retraining
    loss_gap: float | None = None  # mean over validation samples of (refined - original) per-sample loss
    loss_gap_se: float | None = None  # its standard error (sample std of the paired differences / sqrt(n))
    on_front: bool = False


class RefineReport(BaseModel):
    """What :func:`~autocompress.search.refine.refine_dense` measured and did."""

    statistic: str
    epsilon: float
    samples: int
    layers: list[LayerUnits]
    hidden: list[int]
    params_before: int
    params_after: int
    output_bound: float  # max over outputs of :func:`~autocompress.transforms.units.deviation_bound` (before retraining)
    metric_name: str | None = None
    metric_original: float | None = None  # validation split
    metric_before_retrain: float | None = None
    metric_retrained: float | None = None
    retrain_epochs: float = 0.0
    tolerance: float | None = None
    loss_original: float | None = None  # validation task loss of the original
    loss_tolerance: float | None = None
    confidence: float | None = None  # standard errors of the loss gap the gate adds
    met_tolerance: bool | None = None
    sweep: list[SweepPoint] = []

    @property
    def params_removed(self) -> float:
        """Fraction of the parameters removed (0-1)."""
        return 1.0 - self.params_after / self.params_before


class Refined(NamedTuple):
    """The refined model and its report (unpack: ``model, report = refine_dense(...)``)."""

    model: nn.Module
    report: RefineReport
