"""Segmentation metrics: Dice, IoU, Hausdorff distance, and agreement between sets of masks.

All functions are pure NumPy/SciPy. Binary masks are ``bool`` arrays of one shape (2-D or
3-D); label maps are ``int`` arrays with classes ``0..K-1``. Physical distances take
``spacing`` (mm per axis) explicitly.

Empty masks: every overlap metric takes ``empty``. When prediction and reference are both
empty the ratio is 0/0; ``empty="one"`` scores that as perfect agreement (1.0, the usual choice
when comparing raters, e.g. on LIDC where some radiologists mark nothing), ``empty="nan"``
returns ``NaN`` (MONAI's ``ignore_empty``; average with ``np.nanmean``). One empty mask against
a non-empty one scores 0 either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = [
    "dice",
    "dice_per_class",
    "generalized_energy_distance",
    "hausdorff_distance",
    "iou",
    "mean_pairwise_dice",
]

#: Direction of each metric: ``True`` when a higher value is better.
dice_higher_is_better = True
iou_higher_is_better = True
hausdorff_distance_higher_is_better = False
mean_pairwise_dice_higher_is_better = True
generalized_energy_distance_higher_is_better = False

Empty = Literal["nan", "one"]


def _binary_pair(pred: Any, target: Any, names: tuple[str, str] = ("pred", "target")) -> tuple:
    a, b = np.asarray(pred), np.asarray(target)
    if a.shape != b.shape:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same shape; got {a.shape} and {b.shape}."
        )
    for name, m in zip(names, (a, b), strict=True):
        if m.dtype.kind == "f" and np.isnan(m).any():
            raise ValueError(f"`{name}` contains NaN; masks must be boolean.")
        if m.dtype.kind != "b" and not np.isin(m, (0, 1)).all():
            raise ValueError(
                f"`{name}` must be a binary mask (bool or 0/1); got other values. Threshold it "
                "or use dice_per_class for label maps."
            )
    return a.astype(bool), b.astype(bool)


def _check_empty(empty: str) -> None:
    if empty not in ("nan", "one"):
        raise ValueError(f"`empty` must be 'nan' or 'one'; got {empty!r}.")


def _ratio(num: float, den: float, empty: str) -> float:
    if den == 0:
        return float("nan") if empty == "nan" else 1.0
    return float(num / den)


def dice(pred: npt.ArrayLike, target: npt.ArrayLike, *, empty: Empty = "one") -> float:
    """Dice coefficient ``2|A∩B| / (|A|+|B|)`` of two binary masks.

    Args:
        pred: Boolean array of any shape.
        target: Boolean array of the same shape.
        empty: Value when both masks are empty: ``"one"`` (1.0) or ``"nan"``.

    Returns:
        Dice in ``[0, 1]`` (or ``NaN``).

    Examples:
        >>> dice(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
        0.5
        >>> dice(np.zeros(3, bool), np.zeros(3, bool)), dice(np.zeros(3, bool), np.zeros(3, bool), empty="nan")
        (1.0, nan)
    """  # noqa: E501
    _check_empty(empty)
    a, b = _binary_pair(pred, target)
    return _ratio(
        2.0 * np.count_nonzero(a & b), float(np.count_nonzero(a) + np.count_nonzero(b)), empty
    )


def iou(pred: npt.ArrayLike, target: npt.ArrayLike, *, empty: Empty = "one") -> float:
    """Intersection over union ``|A∩B| / |A∪B|`` (Jaccard index) of two binary masks.

    Args:
        pred: Boolean array of any shape.
        target: Boolean array of the same shape.
        empty: Value when both masks are empty: ``"one"`` (1.0) or ``"nan"``.

    Returns:
        IoU in ``[0, 1]`` (or ``NaN``).

    Examples:
        >>> round(iou(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0])), 4)
        0.3333
    """
    _check_empty(empty)
    a, b = _binary_pair(pred, target)
    return _ratio(float(np.count_nonzero(a & b)), float(np.count_nonzero(a | b)), empty)


def dice_per_class(
    pred: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    n_classes: int | None = None,
    empty: Empty = "one",
) -> np.ndarray:
    """Dice of every class of two label maps.

    Args:
        pred: Integer label map of any shape with classes ``0..K-1``; ``-1`` (not annotated)
            voxels of either map are left out.
        target: Integer label map of the same shape.
        n_classes: Number of classes ``K``; the largest label plus one when omitted.
        empty: Value for a class absent from both maps: ``"one"`` or ``"nan"``.

    Returns:
        ``float64`` array of shape ``(n_classes,)``; entry ``k`` is the Dice of class ``k``
        (class 0, usually background, included).

    Examples:
        >>> dice_per_class(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])).tolist()
        [1.0, 0.6666666666666666, 0.6666666666666666]
    """
    _check_empty(empty)
    a, b = np.asarray(pred), np.asarray(target)
    if a.shape != b.shape:
        raise ValueError(
            f"`pred` and `target` must have the same shape; got {a.shape} and {b.shape}."
        )
    for name, m in (("pred", a), ("target", b)):
        if m.dtype.kind not in "biu" and not (m.dtype.kind == "f" and (m == np.round(m)).all()):
            raise ValueError(f"`{name}` must be an integer label map (NaN and fractions are not).")
    a, b = a.astype(np.int64), b.astype(np.int64)
    k = int(max(a.max(initial=0), b.max(initial=0))) + 1 if n_classes is None else int(n_classes)
    if (a < -1).any() or (b < -1).any() or (a >= k).any() or (b >= k).any():
        raise ValueError(f"Labels must lie in -1..{k - 1}; pass a larger `n_classes`.")
    valid = (a >= 0) & (b >= 0)
    a, b = a[valid], b[valid]
    inter = np.bincount(a[a == b], minlength=k).astype(np.float64)
    size = (np.bincount(a, minlength=k) + np.bincount(b, minlength=k)).astype(np.float64)
    out = np.empty(k)
    for c in range(k):
        out[c] = _ratio(2.0 * inter[c], size[c], empty)
    return out


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    s = np.asarray(spacing, dtype=np.float64)
    if s.ndim == 0:
        s = np.full(ndim, float(s))
    if s.shape != (ndim,) or not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"`spacing` must be {ndim} positive numbers (mm per axis); got {spacing}.")
    return s


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a background neighbour (face connectivity; outside = empty)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hausdorff_distance(
    pred: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    percentile: float = 95.0,
    spacing: float | Sequence[float] | None = None,
) -> float:
    """Percentile Hausdorff distance between the surfaces of two binary masks (HD95).

    The surface of a mask is its voxels with a face-neighbour outside the mask (the image
    border counts as outside). For every surface voxel of one mask the Euclidean distance to
    the nearest surface voxel of the other is taken (``scipy.ndimage.distance_transform_edt``
    with ``sampling=spacing``); the result is the larger of the two directed ``percentile``-th
    percentiles (linear interpolation). This is MONAI's
    ``compute_hausdorff_distance(percentile=95)``; ``percentile=100`` gives the classic
    Hausdorff distance.

    Args:
        pred: Boolean array (2-D or 3-D).
        target: Boolean array of the same shape.
        percentile: Percentile in ``[0, 100]``.
        spacing: Voxel size in mm per axis (one number for isotropic voxels); 1 when omitted.

    Returns:
        Distance in the units of ``spacing``: 0 when both masks are empty, ``NaN`` when only one
        is (no surface to measure to).

    Examples:
        >>> a = np.zeros((5, 5), bool); a[1:3, 1:3] = True
        >>> b = np.zeros((5, 5), bool); b[1:3, 2:4] = True
        >>> hausdorff_distance(a, b, percentile=100), hausdorff_distance(a, b, spacing=(1, 2))
        (1.0, 2.0)
    """
    a, b = _binary_pair(pred, target)
    if not 0 <= float(percentile) <= 100:
        raise ValueError(f"`percentile` must be in [0, 100]; got {percentile}.")
    s = _spacing(spacing, a.ndim)
    has_a, has_b = a.any(), b.any()
    if not has_a and not has_b:
        return 0.0
    if not (has_a and has_b):
        return float("nan")
    # Crop to the union's bounding box plus one voxel: surfaces (the image border counts as
    # outside, like the crop border) and Euclidean distances are unchanged.
    union = np.argwhere(a | b)
    lo = np.maximum(union.min(axis=0) - 1, 0)
    hi = np.minimum(union.max(axis=0) + 2, a.shape)
    box = tuple(slice(int(x), int(y)) for x, y in zip(lo, hi, strict=True))
    a_box, b_box = a[box], b[box]
    sa, sb = _surface(a_box), _surface(b_box)
    d_ab = ndimage.distance_transform_edt(~sb, sampling=s)[sa]
    d_ba = ndimage.distance_transform_edt(~sa, sampling=s)[sb]
    q = float(percentile)
    return float(max(np.percentile(d_ab, q), np.percentile(d_ba, q)))


def _stack(masks: Any, name: str) -> np.ndarray:
    if isinstance(masks, np.ndarray):
        arr = masks
    elif isinstance(masks, (list, tuple)):
        shapes = {np.shape(m) for m in masks}
        if len(shapes) > 1:
            first = np.shape(masks[0])
            bad = next(i for i, m in enumerate(masks) if np.shape(m) != first)
            raise ValueError(
                f"`{name}`: mask {bad} has shape {np.shape(masks[bad])} but mask 0 has shape "
                f"{first}; all masks must share one grid."
            )
        arr = np.asarray(masks)
    else:
        raise TypeError(f"`{name}` must be an array of shape (n, *spatial) or a list of masks.")
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise ValueError(f"`{name}` must have shape (n_masks, *spatial) with n_masks >= 1.")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"`{name}` contains NaN; masks must be boolean.")
    if arr.dtype.kind != "b" and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"`{name}` must hold binary masks (bool or 0/1).")
    return arr.astype(bool).reshape(arr.shape[0], -1)


#: Voxels per block of the pairwise overlap products (bounds the float copies to a few MB).
_BLOCK = 1 << 18


def _pairwise(a: np.ndarray, b: np.ndarray, kind: str, empty: str) -> np.ndarray:
    """Dice or IoU of every pair (row of a, row of b) via blocked matrix products."""
    inter = np.zeros((a.shape[0], b.shape[0]))
    for start in range(0, a.shape[1], _BLOCK):
        block = slice(start, start + _BLOCK)
        inter += a[:, block].astype(np.float64) @ b[:, block].astype(np.float64).T
    sa = np.count_nonzero(a, axis=1).astype(np.float64)[:, None]
    sb = np.count_nonzero(b, axis=1).astype(np.float64)[None, :]
    if kind == "dice":
        num, den = 2.0 * inter, sa + sb
    else:
        num, den = inter, sa + sb - inter
    fill = np.nan if empty == "nan" else 1.0
    return np.divide(num, den, out=np.full(num.shape, fill), where=den > 0)


def mean_pairwise_dice(masks: Any, *, empty: Empty = "one") -> float:
    """Mean Dice over all pairs of raters: an agreement score of one case.

    Args:
        masks: Boolean array of shape ``(n_raters, *spatial)`` (or a list of masks), at least
            two raters.
        empty: Dice of a pair of empty masks: ``"one"`` or ``"nan"`` (``NaN`` pairs are left
            out of the mean).

    Returns:
        The mean over the ``n_raters·(n_raters−1)/2`` pairs.

    Examples:
        >>> m = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0]], dtype=bool)
        >>> round(mean_pairwise_dice(m), 4)
        0.6667
    """
    _check_empty(empty)
    flat = _stack(masks, "masks")
    if flat.shape[0] < 2:
        raise ValueError(f"`masks` must hold at least 2 raters; got {flat.shape[0]}.")
    d = _pairwise(flat, flat, "dice", empty)
    pairs = np.array([d[i, j] for i, j in combinations(range(flat.shape[0]), 2)])
    if np.isnan(pairs).all():
        return float("nan")
    return float(np.nanmean(pairs))


def generalized_energy_distance(
    samples: Any,
    references: Any,
    *,
    empty: Literal["nan", "one", "zero"] = "one",
    include_self_pairs: bool = True,
    convention: Literal["squared", "sqrt"] = "squared",
) -> float:
    """Generalised energy distance between two sets of masks, with d = 1 − IoU.

    ``D² = 2·E[d(S, Y)] − E[d(S, S')] − E[d(Y, Y')]`` where ``S, S'`` are drawn from
    ``samples`` (e.g. a model's sampled segmentations) and ``Y, Y'`` from ``references`` (e.g.
    the raters' masks) — the measure of Kohl et al. (2018) for the probabilistic U-Net. Low
    values mean the two sets have similar distributions, including their spread.

    By default every expectation averages over all pairs, including each mask with itself
    (d = 0) in the within-set terms — the plug-in (V-statistic) estimate used by public
    implementations; it is 0 for two identical sets. ``include_self_pairs=False`` uses only
    pairs of different masks in the within-set terms (unbiased for independent draws, but it
    can be negative, e.g. for identical sets).

    Two conventions are published: Kohl et al. (2018) and most later work report ``D²``
    (``convention="squared"``); others (e.g. the PHiSeg code of Baumgartner et al., 2019)
    report its square root ``D`` (``convention="sqrt"``; a negative ``D²`` from
    ``include_self_pairs=False`` is clipped to 0 first). The distance between two empty masks
    is the other choice that changes published numbers: ``empty="one"`` (IoU 1, d = 0),
    ``empty="zero"`` (IoU 0, d = 1, what a plain ``|A∩B| / |A∪B|`` with a zero-division guard
    gives) or ``empty="nan"`` (such pairs are skipped).

    Args:
        samples: Boolean array of shape ``(n_samples, *spatial)`` or a list of masks.
        references: Boolean array of shape ``(n_references, *spatial)``, same spatial shape.
        empty: IoU of two empty masks: ``"one"`` (d = 0, as Kohl et al. treat raters who mark
            nothing), ``"zero"`` (d = 1) or ``"nan"`` (such pairs are left out).
        include_self_pairs: See above.
        convention: ``"squared"`` (``D²``) or ``"sqrt"`` (``D``).

    Returns:
        ``D²`` (≥ 0 up to estimation noise) or ``D``.

    References:
        Kohl et al. (2018). A probabilistic U-Net for segmentation of ambiguous images.
        NeurIPS. https://arxiv.org/abs/1806.05034

    Examples:
        >>> a = np.array([[1, 1, 0], [1, 0, 0]], dtype=bool)
        >>> generalized_energy_distance(a, a)
        0.0
        >>> generalized_energy_distance(a, a, include_self_pairs=False)
        -0.5
        >>> b = np.array([[0, 0, 1]], dtype=bool)
        >>> generalized_energy_distance(a, b), generalized_energy_distance(a, b, convention="sqrt")
        (1.75, 1.3228756555322954)
    """
    if empty not in ("nan", "one", "zero"):
        raise ValueError(f"`empty` must be 'nan', 'one' or 'zero'; got {empty!r}.")
    if convention not in ("squared", "sqrt"):
        raise ValueError(f"`convention` must be 'squared' or 'sqrt'; got {convention!r}.")
    s = _stack(samples, "samples")
    y = _stack(references, "references")
    if s.shape[1] != y.shape[1]:
        raise ValueError(
            "`samples` and `references` must have the same spatial shape; got "
            f"{np.shape(samples)[1:]} and {np.shape(references)[1:]}."
        )

    def dist(x: np.ndarray, z: np.ndarray) -> np.ndarray:
        if empty == "zero":
            return 1.0 - np.nan_to_num(_pairwise(x, z, "iou", "nan"), nan=0.0)
        return 1.0 - _pairwise(x, z, "iou", empty)

    def within(x: np.ndarray) -> float:
        d = dist(x, x)
        if not include_self_pairs:
            if x.shape[0] < 2:
                return 0.0
            d = d[~np.eye(x.shape[0], dtype=bool)]
        return float(np.nanmean(d))

    cross = float(np.nanmean(dist(s, y)))
    d2 = 2.0 * cross - within(s) - within(y)
    return float(np.sqrt(max(d2, 0.0))) if convention == "sqrt" else d2
