"""Accuracy predictors (fit/predict on policy encodings) and informative sample selection."""

from autocompress.predict.choose import AUTO_KINDS, FEW_LABELS, choose_kind
from autocompress.predict.predictor import (
    KINDS,
    AccuracyPredictor,
    policy_features,
    ranking_metrics,
)
from autocompress.predict.selection import evolve_informative, select_from_pool
from autocompress.predict.transfer import ResidualTransfer

__all__ = ["AUTO_KINDS", "FEW_LABELS", "KINDS", "AccuracyPredictor", "choose_kind", "evolve_informative", "policy_features", "ResidualTransfer", "ranking_metrics", "select_from_pool"]
