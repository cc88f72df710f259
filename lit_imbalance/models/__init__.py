"""Ready-made imbalance-aware models."""

from lit_imbalance.models.mlp import MLPClassifier

__all__ = ["MLPClassifier"]
