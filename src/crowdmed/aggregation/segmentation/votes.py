"""Voting consensus of several raters' masks: majority vote, soft (mean) masks, label voting.

The EM models :class:`~crowdmed.aggregation.STAPLE` and
:class:`~crowdmed.aggregation.MultiLabelSTAPLE` are re-exported here, so every mask consensus
is importable from one module.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from crowdmed.aggregation.segmentation._masks import check_label_maps, check_masks
from crowdmed.aggregation.segmentation.staple import STAPLE, MultiLabelSTAPLE

__all__ = [
    "STAPLE",
    "MultiLabelSTAPLE",
    "label_frequencies",
    "majority_vote_labels",
    "majority_vote_masks",
    "mean_masks",
]


def mean_masks(masks: Any) -> np.ndarray:
    """Soft mask: the fraction of raters marking each voxel as foreground.

    Args:
        masks: Boolean array of shape ``(n_raters, *spatial)`` or a list of boolean arrays of
            one shape.

    Returns:
        ``float64`` array of shape ``spatial`` with values in ``[0, 1]``.

    Examples:
        >>> mean_masks([np.array([1, 1, 0]), np.array([1, 0, 0])]).tolist()
        [1.0, 0.5, 0.0]
    """
    return check_masks(masks).mean(axis=0, dtype=np.float64)


def majority_vote_masks(
    masks: Any, *, ties: Literal["background", "foreground"] = "background"
) -> np.ndarray:
    """Pixel-wise majority vote of binary masks.

    A voxel is foreground when more than half of the raters mark it. With an even number of
    raters a voxel marked by exactly half of them is a tie: ``ties`` decides it.

    Args:
        masks: Boolean array of shape ``(n_raters, *spatial)`` or a list of boolean arrays of
            one shape.
        ties: Label of tied voxels.

    Returns:
        ``bool`` array of shape ``spatial``.

    Examples:
        >>> m = np.array([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=bool)
        >>> majority_vote_masks(m).tolist()
        [True, False, False, False]
        >>> majority_vote_masks(m, ties="foreground").tolist()
        [True, True, True, False]
    """
    if ties not in ("background", "foreground"):
        raise ValueError(f"`ties` must be 'background' or 'foreground'; got {ties!r}.")
    stack = check_masks(masks)
    votes = stack.sum(axis=0, dtype=np.int64) * 2
    n = stack.shape[0]
    return votes >= n if ties == "foreground" else votes > n


def label_frequencies(labels: Any, *, n_classes: int | None = None) -> np.ndarray:
    """Soft label map: the share of the raters who annotated a voxel that chose each class.

    Args:
        labels: Integer array of shape ``(n_raters, *spatial)`` with classes ``0..K-1``;
            ``-1`` marks a voxel a rater did not annotate.
        n_classes: Number of classes ``K``; the largest label plus one when omitted.

    Returns:
        ``float64`` array of shape ``(n_classes, *spatial)``; it sums to 1 over the classes
        (0 everywhere at voxels no rater annotated).

    Examples:
        >>> label_frequencies(np.array([[0, 2], [1, 2]])).tolist()
        [[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]]
    """
    stack, k = check_label_maps(labels, n_classes=n_classes)
    counts = np.stack([(stack == c).sum(axis=0) for c in range(k)]).astype(np.float64)
    total = counts.sum(axis=0, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)


def majority_vote_labels(
    labels: Any, *, n_classes: int | None = None, undecided: int | None = -1
) -> np.ndarray:
    """Pixel-wise plurality vote of label maps.

    Args:
        labels: Integer array of shape ``(n_raters, *spatial)`` with classes ``0..K-1``;
            ``-1`` marks a voxel a rater did not annotate (it casts no vote).
        n_classes: Number of classes ``K``; the largest label plus one when omitted.
        undecided: Label of voxels where the top classes tie or nobody voted (ITK's
            ``LabelVotingImageFilter`` uses ``K``); ``None`` takes the lowest tied class.

    Returns:
        ``int64`` array of shape ``spatial``.

    Examples:
        >>> majority_vote_labels(np.array([[0, 1, 2], [0, 2, 1], [1, 2, 1]])).tolist()
        [0, 2, 1]
        >>> majority_vote_labels(np.array([[0, 1], [1, 1]])).tolist()
        [-1, 1]
    """
    freq = label_frequencies(labels, n_classes=n_classes)
    top = freq.max(axis=0)
    tied = freq >= top - 1e-12
    out = np.argmax(tied, axis=0).astype(np.int64)
    if undecided is not None:
        out[(tied.sum(axis=0) > 1) | (top <= 0)] = undecided
    return out
