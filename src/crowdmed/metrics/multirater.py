"""Metrics of a prediction against several raters' masks of one case.

The field reports a segmentation model trained on several raters with measures that use all
the raters' masks, not one consensus:

- :func:`hungarian_matched_iou`: a set of predicted masks (samples of a probabilistic model,
  or one prediction per rater) matched one-to-one to the raters' masks (Kohl et al., 2019);
- :func:`qubiq_dice`: the QUBIQ challenge's soft Dice of a probability map against the
  raters' mean mask, both thresholded at 0.1 … 0.9;
- :func:`expected_calibration_error`: how far a soft prediction's probabilities are from the
  fraction of raters who mark each pixel;
- :func:`~crowdmed.metrics.segmentation.generalized_energy_distance` (in
  ``metrics.segmentation``): distance between the distribution of predicted masks and of the
  raters' masks.

Pixels outside a field of view are left out by indexing before the call:
``qubiq_dice(prob[fov], masks[:, fov])``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

__all__ = ["expected_calibration_error", "hungarian_matched_iou", "qubiq_dice"]

hungarian_matched_iou_higher_is_better = True
qubiq_dice_higher_is_better = True
expected_calibration_error_higher_is_better = False

#: The QUBIQ thresholds 0.1, 0.2, …, 0.9 (exact decimals).
QUBIQ_THRESHOLDS = tuple(k / 10 for k in range(1, 10))


def _masks(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise ValueError(
            f"`{name}` must have shape (n_masks, *spatial) with n_masks >= 1; got {arr.shape}."
        )
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"`{name}` contains NaN; masks must be boolean.")
    if arr.dtype.kind != "b" and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"`{name}` must hold binary masks (bool or 0/1); got other values.")
    return arr.astype(bool).reshape(arr.shape[0], -1)


def _probabilities(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if not np.isfinite(arr).all() or (arr < 0).any() or (arr > 1).any():
        raise ValueError(
            f"`{name}` must hold probabilities in [0, 1] (no NaN); got values in "
            f"[{np.nanmin(arr) if arr.size else 0}, {np.nanmax(arr) if arr.size else 0}]. "
            "Apply a sigmoid or softmax first."
        )
    return arr


def _iou_matrix(a: np.ndarray, b: np.ndarray, empty: str) -> np.ndarray:
    inter = a.astype(np.float64) @ b.astype(np.float64).T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    fill = 1.0 if empty == "one" else 0.0
    return np.divide(inter, union, out=np.full(inter.shape, fill), where=union > 0)


def hungarian_matched_iou(
    predictions: Any,
    references: Any,
    *,
    replicate: bool = True,
    empty: Literal["one", "zero"] = "one",
) -> float:
    """Mean IoU of the best one-to-one matching between predicted and raters' masks.

    The IoU of every (prediction, rater) pair is computed and
    ``scipy.optimize.linear_sum_assignment`` picks the matching with the largest total IoU;
    the result is the mean IoU over the matched pairs. With ``replicate=True`` and one count
    a multiple of the other (e.g. 16 samples and 4 raters) the smaller set is repeated to the
    larger count first, as Kohl et al. (2019) do, so every sample is matched; otherwise only
    ``min(n_predictions, n_raters)`` pairs are matched.

    Args:
        predictions: Boolean array of shape ``(n_predictions, *spatial)``: samples of a model
            or one predicted mask per rater.
        references: Boolean array of shape ``(n_raters, *spatial)``: the raters' masks.
        replicate: See above.
        empty: IoU of two empty masks: ``"one"`` or ``"zero"``.

    Returns:
        Mean matched IoU in ``[0, 1]``.

    Raises:
        ValueError: If the masks are not binary or their spatial shapes differ.

    References:
        Kohl et al. (2019). A hierarchical probabilistic U-Net for modeling multi-scale
        ambiguities. https://arxiv.org/abs/1905.13077

    Examples:
        >>> raters = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=bool)
        >>> samples = np.array([[0, 0, 1, 1], [1, 0, 0, 0]], dtype=bool)
        >>> hungarian_matched_iou(samples, raters)
        0.75
    """
    if empty not in ("one", "zero"):
        raise ValueError(f"`empty` must be 'one' or 'zero'; got {empty!r}.")
    p = _masks(predictions, "predictions")
    r = _masks(references, "references")
    if p.shape[1] != r.shape[1]:
        raise ValueError(
            "`predictions` and `references` must have the same spatial shape; got "
            f"{np.shape(predictions)[1:]} and {np.shape(references)[1:]}."
        )
    n_p, n_r = p.shape[0], r.shape[0]
    if replicate and n_p != n_r and max(n_p, n_r) % min(n_p, n_r) == 0:
        if n_p > n_r:
            r = np.tile(r, (n_p // n_r, 1))
        else:
            p = np.tile(p, (n_r // n_p, 1))
    iou = _iou_matrix(p, r, empty)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return float(iou[rows, cols].mean())


def qubiq_dice(
    prediction: npt.ArrayLike,
    references: Any,
    *,
    thresholds: tuple[float, ...] = QUBIQ_THRESHOLDS,
    empty: Literal["one", "nan"] = "one",
) -> float:
    """QUBIQ soft Dice: Dice of the thresholded prediction and raters' mean, averaged.

    At every threshold ``t`` the prediction ``p > t`` and the raters' mean mask ``m > t``
    (the fraction of raters marking the pixel) are compared with Dice; the result is the mean
    over the thresholds. The comparison is strict, so with two raters a pixel marked by one of
    them (``m = 0.5``) is foreground up to ``t = 0.4`` and background from ``t = 0.5``.

    Args:
        prediction: Float array of shape ``(*spatial)`` with foreground probabilities in
            ``[0, 1]``.
        references: Boolean array of shape ``(n_raters, *spatial)``: the raters' masks.
        thresholds: The levels ``t``.
        empty: Dice at a level where both thresholded maps are empty: ``"one"`` (the QUBIQ
            evaluation's choice) or ``"nan"`` (that level is left out of the mean).

    Returns:
        Soft Dice in ``[0, 1]`` (``NaN`` if every level is empty and ``empty="nan"``).

    Raises:
        ValueError: If the prediction is not a probability map of the raters' grid.

    References:
        Menze et al. (2020). QUBIQ: Quantification of Uncertainties in Biomedical Image
        Quantification challenge, MICCAI. https://qubiq.grand-challenge.org/

    Examples:
        >>> raters = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
        >>> qubiq_dice(np.array([0.9, 0.5, 0.2, 0.0]), raters)
        0.8666666666666667
    """
    if empty not in ("one", "nan"):
        raise ValueError(f"`empty` must be 'one' or 'nan'; got {empty!r}.")
    r = _masks(references, "references")
    p = _probabilities(prediction, "prediction").reshape(-1)
    if p.shape[0] != r.shape[1]:
        raise ValueError(
            "`prediction` must have the raters' spatial shape; got "
            f"{np.shape(prediction)} and {np.shape(references)[1:]}."
        )
    ts = np.asarray(thresholds, dtype=np.float64)
    if ts.ndim != 1 or ts.size == 0 or (ts < 0).any() or (ts >= 1).any():
        raise ValueError(f"`thresholds` must be levels in [0, 1); got {thresholds}.")
    mean = r.mean(axis=0)
    scores = []
    for t in ts:
        a, b = p > t, mean > t
        den = np.count_nonzero(a) + np.count_nonzero(b)
        if den == 0:
            scores.append(1.0 if empty == "one" else np.nan)
        else:
            scores.append(2.0 * np.count_nonzero(a & b) / den)
    arr = np.asarray(scores)
    return float("nan") if np.isnan(arr).all() else float(np.nanmean(arr))


def expected_calibration_error(
    prediction: npt.ArrayLike, references: Any, *, n_bins: int = 10
) -> float:
    """Expected calibration error of a soft prediction against the raters' mean mask.

    Pixels are put into ``n_bins`` equal-width bins of predicted probability
    (``[0, 1/n), [1/n, 2/n), …, [(n−1)/n, 1]``). In each bin the mean predicted probability is
    compared with the mean fraction of raters marking those pixels;
    ``ECE = Σ_bins (pixels in bin / all pixels) · |mean prediction − mean rater fraction|``.
    With a single rater this is the usual ECE of the foreground class.

    Args:
        prediction: Float array of shape ``(*spatial)`` with foreground probabilities in
            ``[0, 1]``.
        references: Boolean array of shape ``(n_raters, *spatial)``: the raters' masks.
        n_bins: Number of bins.

    Returns:
        ECE in ``[0, 1]``; 0 for a prediction equal to the raters' mean.

    Raises:
        ValueError: If the prediction is not a probability map of the raters' grid or
            ``n_bins < 1``.

    References:
        Naeini, Cooper & Hauskrecht (2015). Obtaining well calibrated probabilities using
        Bayesian binning. AAAI. https://doi.org/10.1609/aaai.v29i1.9602

    Examples:
        >>> raters = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
        >>> round(expected_calibration_error(np.array([1.0, 0.5, 0.0, 0.0]), raters), 10)
        0.0
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"`n_bins` must be a positive integer; got {n_bins!r}.")
    r = _masks(references, "references")
    p = _probabilities(prediction, "prediction").reshape(-1)
    if p.shape[0] != r.shape[1]:
        raise ValueError(
            "`prediction` must have the raters' spatial shape; got "
            f"{np.shape(prediction)} and {np.shape(references)[1:]}."
        )
    target = r.mean(axis=0)
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_t = np.bincount(idx, weights=target, minlength=n_bins)
    # |Σp − Σt| / N per bin = (n_bin / N)·|mean p − mean t|
    return float(np.abs(sum_p - sum_t).sum() / p.shape[0])
