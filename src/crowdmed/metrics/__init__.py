"""Evaluation metrics as pure functions (NumPy/SciPy)."""

from crowdmed.metrics.classification import roc_auc

__all__ = ["roc_auc"]
