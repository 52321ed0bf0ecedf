"""Checks of rater masks and the grouping of voxels by their pattern of rater decisions.

Every consensus model of :mod:`crowdmed.aggregation.segmentation` treats the voxels of one case as
exchangeable given the raters' decisions: two voxels that every rater labelled the same way get
the same posterior, and the EM sufficient statistics are the *counts* of each distinct pattern of
decisions. :func:`patterns` computes those counts once, so an EM iteration costs
``O(n_patterns × n_raters)`` instead of ``O(n_voxels × n_raters)``. All voxels where the raters
agree collapse into a handful of patterns (one per label), so the work is spent on the voxels
where they disagree, while the agreeing voxels still weigh in every parameter update through
their counts: the result is exactly the voxel-wise EM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Patterns", "check_label_maps", "check_masks", "patterns"]

#: Largest number of bins of a dense pattern histogram (else ``np.unique`` on pattern codes).
_DENSE_BINS = 1 << 16


def _as_stack(masks: Any, what: str) -> list[np.ndarray]:
    """Split ``masks`` into one array per rater, checking types and shapes."""
    if isinstance(masks, np.ndarray):
        if masks.ndim < 2:
            raise ValueError(
                f"`{what}` must have shape (n_raters, *spatial) with at least one spatial axis; "
                f"got shape {masks.shape}. Stack the raters' masks along a new first axis."
            )
        raters = list(masks)
    elif isinstance(masks, (list, tuple)):
        raters = [np.asarray(m) for m in masks]
    else:
        raise TypeError(
            f"`{what}` must be an array of shape (n_raters, *spatial) or a list of arrays, one "
            f"per rater; got {type(masks).__name__}."
        )
    if len(raters) < 2:
        raise ValueError(
            f"`{what}` must hold the masks of at least 2 raters; got {len(raters)}. Consensus "
            "needs several raters (a single mask is its own consensus)."
        )
    ref = raters[0].shape
    if len(ref) == 0 or 0 in ref:
        raise ValueError(f"`{what}`: rater 0's mask is empty (shape {ref}); give a non-empty grid.")
    for r, m in enumerate(raters):
        if m.shape != ref:
            raise ValueError(
                f"`{what}`: rater {r}'s mask has shape {m.shape} but rater 0's has shape {ref}; "
                "all raters must annotate the same grid (resample or crop first)."
            )
        if m.dtype.kind not in "biuf":
            raise TypeError(
                f"`{what}`: rater {r}'s mask has dtype {m.dtype}; masks must be boolean or "
                "numeric arrays."
            )
        if m.dtype.kind == "f" and np.isnan(m).any():
            raise ValueError(
                f"`{what}`: rater {r}'s mask contains NaN; fill or drop the missing voxels first."
            )
    return raters


def check_masks(masks: Any, *, what: str = "masks") -> np.ndarray:
    """Validate binary masks of several raters and stack them.

    Args:
        masks: Boolean (or 0/1 numeric) array of shape ``(n_raters, *spatial)``, or a list of
            ``n_raters`` arrays of equal shape.
        what: Argument name used in error messages.

    Returns:
        A ``bool`` array of shape ``(n_raters, *spatial)`` (a new array; the input is not
        modified).

    Raises:
        ValueError: Fewer than 2 raters, different shapes, NaN, or values other than 0/1 (the
            message names the rater).
        TypeError: A non-numeric input.
    """
    raters = _as_stack(masks, what)
    out = np.empty((len(raters), *raters[0].shape), dtype=bool)
    for r, m in enumerate(raters):
        if m.dtype.kind != "b":
            bad = (m != 0) & (m != 1)
            if (m == -1).any():
                raise ValueError(
                    f"`{what}`: rater {r}'s mask has -1 (not annotated) voxels; binary consensus "
                    "needs every voxel annotated (never read -1 as foreground): drop a rater "
                    "who annotated nothing, or use MultiLabelSTAPLE, which skips -1 voxels."
                )
            if bad.any():
                example = m[bad].flat[0]
                raise ValueError(
                    f"`{what}`: rater {r}'s mask has values other than 0 and 1 (e.g. "
                    f"{example!r}); binary consensus needs binary masks: threshold them, or use "
                    "MultiLabelSTAPLE / majority_vote_labels for label maps."
                )
        out[r] = m != 0
    return out


def check_label_maps(
    labels: Any, *, n_classes: int | None = None, what: str = "labels"
) -> tuple[np.ndarray, int]:
    """Validate label maps of several raters and stack them.

    Args:
        labels: Integer array of shape ``(n_raters, *spatial)`` (or a list of arrays) with
            classes ``0..K-1``; ``-1`` marks a voxel the rater did not annotate. Boolean masks
            are read as classes 0/1.
        n_classes: Number of classes ``K``; the largest label plus one when omitted.
        what: Argument name used in error messages.

    Returns:
        The ``int64`` stack of shape ``(n_raters, *spatial)`` and ``K``.

    Raises:
        ValueError: Fewer than 2 raters, different shapes, NaN, fractional values, labels outside
            ``-1..K-1`` (naming the rater), or no annotated voxel at all.
        TypeError: A non-numeric input.
    """
    raters = _as_stack(labels, what)
    out = np.empty((len(raters), *raters[0].shape), dtype=np.int64)
    for r, m in enumerate(raters):
        if m.dtype.kind == "f" and (m != np.round(m)).any():
            example = m[m != np.round(m)].flat[0]
            raise ValueError(
                f"`{what}`: rater {r}'s label map has a fractional value ({example!r}); label "
                "maps must hold integer classes (-1 = not annotated)."
            )
        out[r] = m
    top = int(out.max())
    if top < 0:
        raise ValueError(
            f"`{what}`: no rater annotated any voxel (all labels are -1); give at least one label."
        )
    if n_classes is None:
        n_classes = max(top + 1, 2)
    elif isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)):
        raise TypeError(f"`n_classes` must be an int; got {type(n_classes).__name__}.")
    elif n_classes < 2:
        raise ValueError(f"`n_classes` must be at least 2; got {n_classes}.")
    for r in range(out.shape[0]):
        bad = (out[r] < -1) | (out[r] >= n_classes)
        if bad.any():
            raise ValueError(
                f"`{what}`: rater {r}'s label map has labels outside 0..{n_classes - 1} (e.g. "
                f"{int(out[r][bad].flat[0])}); use -1 for 'not annotated' or pass a larger "
                "`n_classes`."
            )
    return out, int(n_classes)


@dataclass(frozen=True)
class Patterns:
    """Distinct patterns of rater decisions in one case and how often each occurs.

    Attributes:
        decisions: Integer array of shape ``(n_patterns, n_raters)``: the label each rater gave
            (``-1`` = not annotated; binary masks use 0/1).
        counts: ``float64`` array of shape ``(n_patterns,)``: number of voxels with the pattern.
        inverse: ``int64`` array of shape ``(n_voxels,)``: pattern index of every voxel (C order).
    """

    decisions: np.ndarray
    counts: np.ndarray
    inverse: np.ndarray


def patterns(stack: np.ndarray, n_values: int) -> Patterns:
    """Group the voxels of one case by the raters' decisions.

    Args:
        stack: Integer or boolean array of shape ``(n_raters, *spatial)`` with values in
            ``-1..n_values-2`` (``-1`` is stored as the extra value ``n_values - 1``).
        n_values: Number of distinct values a decision can take (including "not annotated").

    Returns:
        The distinct patterns, their counts and the voxel-to-pattern index.
    """
    n_raters = stack.shape[0]
    flat = stack.reshape(n_raters, -1)
    n_vox = flat.shape[1]
    missing_code = n_values - 1
    if float(n_values) ** n_raters < 2.0**62:
        small = float(n_values) ** n_raters < 2.0**31
        dtype = np.int32 if small else np.int64
        codes = np.zeros(n_vox, dtype=dtype)
        base = 1
        for r in range(n_raters):
            row = flat[r].astype(dtype)
            if flat.dtype.kind != "b":
                negative = row < 0
                if negative.any():
                    row[negative] = missing_code
            if base > 1:
                row *= base
            codes += row
            base *= n_values
        if base <= _DENSE_BINS:
            hist = np.bincount(codes, minlength=base)
            present = np.flatnonzero(hist)
            lut = np.zeros(base, dtype=np.int64)
            lut[present] = np.arange(present.size)
            inverse = lut[codes]
            uniq_codes = present.astype(np.int64)
            counts = hist[present].astype(np.float64)
        else:
            uniq_codes, inverse, counts_i = np.unique(
                codes, return_inverse=True, return_counts=True
            )
            counts = counts_i.astype(np.float64)
        decisions = np.empty((uniq_codes.size, n_raters), dtype=np.int64)
        rest = uniq_codes.copy()
        for r in range(n_raters):
            decisions[:, r] = rest % n_values
            rest //= n_values
        decisions[decisions == missing_code] = -1
        return Patterns(decisions, counts, inverse.reshape(-1).astype(np.int64))
    # Very many raters: unique rows of the (n_voxels, n_raters) decision table.
    rows = np.ascontiguousarray(flat.T.astype(np.int64))
    uniq, inverse, counts_i = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
    return Patterns(uniq, counts_i.astype(np.float64), inverse.reshape(-1).astype(np.int64))


def check_cases(cases: Any, what: str = "cases") -> Sequence[Any]:
    """Check that ``cases`` is a non-empty sequence of cases (for batch fitting)."""
    if isinstance(cases, np.ndarray):
        if cases.ndim < 3:
            raise ValueError(
                f"`{what}` must have shape (n_cases, n_raters, *spatial) or be a list of cases; "
                f"got shape {cases.shape}."
            )
        return list(cases)
    if not isinstance(cases, (list, tuple)):
        raise TypeError(
            f"`{what}` must be a list of cases, each of shape (n_raters, *spatial); got "
            f"{type(cases).__name__}."
        )
    if len(cases) == 0:
        raise ValueError(f"`{what}` must hold at least one case; got an empty list.")
    return cases
