"""Exceptions and warnings raised by crowdmed."""

from __future__ import annotations

__all__ = ["ConvergenceWarning", "NotFittedError"]


class NotFittedError(ValueError, AttributeError):
    """Raised when a fitted attribute or prediction is requested before ``fit``."""


class ConvergenceWarning(UserWarning):
    """Issued when an iterative estimator stops at ``max_iter`` before reaching ``tol``."""
