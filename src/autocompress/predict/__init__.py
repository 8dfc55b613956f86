"""Accuracy predictors (fit/predict on policy encodings) and informative sample selection."""

from autocompress.predict.predictor import (
    DEFAULT_KIND,
    KINDS,
    AccuracyPredictor,
    policy_features,
    ranking_metrics,
)
from autocompress.predict.selection import evolve_informative, select_from_pool

__all__ = ["DEFAULT_KIND", "KINDS", "AccuracyPredictor", "evolve_informative", "policy_features", "ranking_metrics", "select_from_pool"]
