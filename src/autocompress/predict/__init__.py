"""Accuracy predictors (fit/predict on policy encodings) and informative sample selection."""

from autocompress.predict.predictor import (
    GP_FROM,
    KINDS,
    AccuracyPredictor,
    default_kind,
    policy_features,
    ranking_metrics,
)
from autocompress.predict.selection import evolve_informative, select_from_pool
from autocompress.predict.transfer import ResidualTransfer

__all__ = ["GP_FROM", "KINDS", "AccuracyPredictor", "default_kind", "evolve_informative", "policy_features", "ResidualTransfer", "ranking_metrics", "select_from_pool"]
