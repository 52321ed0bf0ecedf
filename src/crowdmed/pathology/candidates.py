"""Mitosis candidates: local maxima of a detection map with suppression inside a radius."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = ["find_candidates"]


def _disc(radius: float) -> np.ndarray:
    r = int(np.floor(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy**2 + xx**2) <= radius**2


def find_candidates(prob_map: np.ndarray, *, threshold: float, radius: float) -> pd.DataFrame:
    """Local maxima of a detection map above ``threshold``, at least ``radius`` apart.

    A pixel is a local maximum when no pixel within ``radius`` (a disc) has a higher value.
    Maxima are then taken greedily by decreasing score, and each one suppresses every
    remaining maximum closer than ``radius`` (this also splits plateaus of equal values; ties
    go to the lower row, then the lower column). The result for a threshold ``t`` equals the
    result for any lower threshold filtered to ``score >= t``, so one low-threshold run serves
    every operating point.

    Args:
        prob_map: Float array of shape ``(H, W)`` (e.g. mitosis probabilities).
        threshold: Keep maxima with ``score >= threshold``.
        radius: Suppression radius in pixels (usually the matching radius); ``0`` keeps every
            local maximum.

    Returns:
        ``DataFrame`` with columns ``x`` (column), ``y`` (row) and ``score``, sorted by
        decreasing score.

    Raises:
        ValueError: If the map is not 2-D or holds NaN, or ``radius`` is negative.

    Examples:
        >>> m = np.zeros((20, 20)); m[5, 5] = 0.9; m[5, 8] = 0.8; m[15, 15] = 0.7
        >>> find_candidates(m, threshold=0.5, radius=4)[["x", "y"]].to_numpy().tolist()
        [[5, 5], [15, 15]]
    """
    arr = np.asarray(prob_map, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"`prob_map` must be 2-D (H, W); got shape {arr.shape}.")
    if np.isnan(arr).any():
        raise ValueError("`prob_map` holds NaN; pass a finite detection map.")
    if not (np.isfinite(radius) and radius >= 0):
        raise ValueError(f"`radius` must be a non-negative number of pixels; got {radius!r}.")
    footprint = _disc(radius) if radius >= 1 else np.ones((1, 1), bool)
    local_max = ndimage.maximum_filter(arr, footprint=footprint, mode="nearest")
    rows, cols = np.nonzero((arr >= local_max) & (arr >= threshold))
    scores = arr[rows, cols]
    order = np.lexsort((cols, rows, -scores))  # score desc, then row, then column
    rows, cols, scores = rows[order], cols[order], scores[order]
    keep = np.ones(len(rows), dtype=bool)
    if radius > 0 and len(rows) > 1:
        tree = cKDTree(np.column_stack([rows, cols]).astype(np.float64))
        for i in range(len(rows)):
            if keep[i]:
                near = tree.query_ball_point([rows[i], cols[i]], r=radius * (1 - 1e-9))
                for j in near:
                    if j > i:
                        keep[j] = False
    return pd.DataFrame(
        {"x": cols[keep].astype(np.int64), "y": rows[keep].astype(np.int64), "score": scores[keep]}
    )
