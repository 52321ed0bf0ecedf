"""Checks shared by the annotator-quality functions: references, posteriors and confusions."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

from crowdmed._text import short_list
from crowdmed._validation import check_labels
from crowdmed.data.labels import CrowdLabels

__all__: list[str] = []

#: Tolerance on "rows sum to 1" for posteriors and confusion matrices.
ROW_SUM_ATOL = 1e-6


def with_n_classes(cl: CrowdLabels, n_classes: int) -> CrowdLabels:
    """Return checked labels ``cl`` with at least ``n_classes`` classes (never-chosen added)."""
    if n_classes <= cl.n_classes:
        return cl
    with warnings.catch_warnings():  # ``cl`` was checked (and warned about) already
        warnings.simplefilter("ignore", UserWarning)
        return check_labels(cl, n_classes=n_classes, min_classes=1)


def hard_reference(reference: Any, cl: CrowdLabels, name: str) -> np.ndarray:
    """Validate hard reference labels of shape ``(n_items,)`` with ``-1`` for unknown.

    Returns:
        ``int64`` array of shape ``(n_items,)``.
    """
    ref = np.asarray(reference)
    if ref.shape != (cl.n_items,):
        raise ValueError(
            f"`{name}` must have shape (n_items,) = ({cl.n_items},); got {ref.shape}. Use -1 "
            "for items without a reference label."
        )
    if ref.dtype == bool:
        ref = ref.astype(np.int64)
    if np.issubdtype(ref.dtype, np.floating):
        if np.isnan(ref).any():
            raise ValueError(
                f"`{name}` must not contain NaN; got {int(np.isnan(ref).sum())} NaN values. "
                "Mark unknown reference labels with -1."
            )
        if not np.all(ref == np.round(ref)):
            raise ValueError(
                f"`{name}` must hold integer class indices; got non-integer values "
                f"{short_list(np.unique(ref[ref != np.round(ref)]))}. Pass posteriors as a 2-D "
                "array of shape (n_items, n_classes)."
            )
    elif not np.issubdtype(ref.dtype, np.integer):
        raise TypeError(
            f"`{name}` must be an integer array of class indices; got dtype {ref.dtype}. "
            "Encode class names with the labels' `classes`."
        )
    ref = ref.astype(np.int64)
    bad = (ref < -1) | (ref >= cl.n_classes)
    if bad.any():
        raise ValueError(
            f"`{name}` must hold class indices in -1..{cl.n_classes - 1} (K = {cl.n_classes} "
            f"classes, -1 = unknown); got {short_list(np.unique(ref[bad]))}. If some classes were "
            "never chosen, build the labels with `n_classes` (e.g. "
            "CrowdLabels.from_dense(matrix, n_classes=K))."
        )
    return ref


def soft_reference(reference: Any, n_items: int, name: str) -> np.ndarray:
    """Validate posteriors of shape ``(n_items, K)``: finite, non-negative, rows sum to 1.

    Returns:
        ``float64`` array of shape ``(n_items, K)``.
    """
    ref = np.asarray(reference)
    if ref.ndim != 2 or ref.shape[0] != n_items:
        raise ValueError(
            f"`{name}` must have shape (n_items, n_classes) = ({n_items}, K); got {ref.shape}."
        )
    if not (np.issubdtype(ref.dtype, np.number) or ref.dtype == bool):
        raise TypeError(f"`{name}` must be a float array of probabilities; got dtype {ref.dtype}.")
    ref = ref.astype(np.float64)
    if ref.shape[1] < 1:
        raise ValueError(f"`{name}` must have at least one class column; got shape {ref.shape}.")
    if not np.isfinite(ref).all():
        raise ValueError(
            f"`{name}` must be finite; got {int((~np.isfinite(ref)).sum())} NaN or infinite values."
        )
    if (ref < 0).any():
        raise ValueError(f"`{name}` must be non-negative; got minimum {ref.min():.4g}.")
    sums = ref.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_ATOL)
    if bad.size:
        raise ValueError(
            f"`{name}` rows must sum to 1; got sums {short_list(np.round(sums[bad], 6))} at items "
            f"{short_list(bad)}. Normalise each row."
        )
    return ref


def labels_and_reference(
    labels: Any, reference: Any, name: str = "reference"
) -> tuple[CrowdLabels, np.ndarray, bool]:
    """Check labels together with a hard or soft reference (see :func:`reference_weights`)."""
    return reference_weights(check_labels(labels, min_classes=1), reference, name)


def reference_weights(
    cl: CrowdLabels, reference: Any, name: str = "reference"
) -> tuple[CrowdLabels, np.ndarray, bool]:
    """Check a hard or soft reference against checked labels.

    Returns:
        The labels (with as many classes as a soft reference has columns), the reference as
        float weights of shape ``(n_items, K)`` (one-hot for hard labels, all-zero rows for
        unknown items) and whether the reference was hard.
    """
    ref = np.asarray(reference)
    if ref.ndim == 1:
        hard = hard_reference(ref, cl, name)
        weights = np.zeros((cl.n_items, cl.n_classes))
        known = hard >= 0
        weights[np.flatnonzero(known), hard[known]] = 1.0
        return cl, weights, True
    if ref.ndim == 2:
        soft = soft_reference(ref, cl.n_items, name)
        if soft.shape[1] < cl.n_classes:
            raise ValueError(
                f"`{name}` must have one column per class, K = {cl.n_classes}; got "
                f"{soft.shape[1]} columns."
            )
        return with_n_classes(cl, soft.shape[1]), soft, False
    raise ValueError(
        f"`{name}` must be hard labels of shape (n_items,) = ({cl.n_items},) or posteriors of "
        f"shape (n_items, K); got shape {ref.shape}."
    )


def check_confusion(confusion: npt.ArrayLike, name: str = "confusion") -> np.ndarray:
    """Validate confusion matrices of shape ``(n_annotators, K, K)``; ``NaN`` rows allowed."""
    conf = np.asarray(confusion)
    if conf.ndim != 3 or conf.shape[1] != conf.shape[2]:
        raise ValueError(
            f"`{name}` must have shape (n_annotators, K, K); got {conf.shape}. Add a leading "
            "axis for a single annotator: confusion[None]."
        )
    if not np.issubdtype(conf.dtype, np.number):
        raise TypeError(f"`{name}` must be a float array; got dtype {conf.dtype}.")
    conf = conf.astype(np.float64)
    if conf.shape[1] < 2:
        raise ValueError(f"`{name}` must have at least K = 2 classes; got K = {conf.shape[1]}.")
    if np.isinf(conf).any():
        raise ValueError(f"`{name}` must not contain infinite values.")
    finite = ~np.isnan(conf)
    if ((conf < 0) & finite).any() or ((conf > 1) & finite).any():
        raise ValueError(f"`{name}` must hold probabilities in [0, 1]; got values outside.")
    sums = conf.sum(axis=2)
    bad = ~np.isnan(sums) & (np.abs(sums - 1.0) > ROW_SUM_ATOL)
    if bad.any():
        a, k = np.argwhere(bad)[0]
        raise ValueError(
            f"`{name}` rows must sum to 1 (confusion[a, k, :] = P(says l | true k)); got "
            f"{sums[a, k]:.6g} for annotator {a}, true class {k}. Normalise the last axis."
        )
    return conf


def confusion_counts(cl: CrowdLabels, weights: np.ndarray) -> np.ndarray:
    """Soft counts ``counts[a, k, l] = sum of weights[i, k]`` over labels ``(i, a, l)``."""
    k_classes = weights.shape[1]
    key = cl.annotators * k_classes + cl.labels
    w = weights[cl.items]  # (n_labels, K): evidence that each labelled item is of class k
    counts = np.empty((cl.n_annotators, k_classes, k_classes))
    for k in range(k_classes):
        counts[:, k, :] = np.bincount(
            key, weights=w[:, k], minlength=cl.n_annotators * k_classes
        ).reshape(cl.n_annotators, k_classes)
    return counts


def normalise_rows(counts: np.ndarray, smoothing: float) -> np.ndarray:
    counts = counts + smoothing
    totals = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), np.nan)


def accuracy_counts(cl: CrowdLabels, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft number of correct labels and number of labels with a reference, per annotator.

    Args:
        cl: The labels.
        weights: Float array of shape ``(n_items, K)``: one-hot reference (all-zero rows for
            unknown items) or posteriors.

    Returns:
        ``(correct, n)``, float arrays of shape ``(n_annotators,)``.
    """
    w = weights[cl.items]
    has_ref = w.sum(axis=1) > 0
    correct = np.bincount(
        cl.annotators, weights=w[np.arange(cl.n_labels), cl.labels], minlength=cl.n_annotators
    )
    n = np.bincount(cl.annotators[has_ref], minlength=cl.n_annotators).astype(np.float64)
    return correct, n


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def gold_counts(cl: CrowdLabels, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct gold answers and gold answers per annotator; ``g = -1`` marks non-gold items."""
    weights = np.zeros((cl.n_items, cl.n_classes))
    known = g >= 0
    weights[np.flatnonzero(known), g[known]] = 1.0
    return accuracy_counts(cl, weights)
