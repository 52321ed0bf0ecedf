"""Consensus of several raters' mask files: what ``crowdmed masks consensus`` runs.

:func:`mask_consensus` reads one mask per rater (NumPy, image or medical formats, all on one
grid), fuses them with STAPLE, multi-label STAPLE, majority vote or the mean, and returns a
:class:`MaskConsensus` with the consensus array, the geometry of the first file (for medical
formats) and one row of figures per rater.

Examples:
    >>> result = mask_consensus([Path("r1.nii.gz"), Path("r2.nii.gz")])  # doctest: +SKIP
    >>> write_mask("staple.nii.gz", result.mask, result.geometry)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdmed._validation import check_option

__all__ = ["ConsensusMethod", "MaskConsensus", "mask_consensus"]


class ConsensusMethod(str, Enum):
    """Consensus methods of :func:`mask_consensus`."""

    STAPLE = "staple"
    MULTILABEL_STAPLE = "multilabel-staple"
    MAJORITY = "majority"
    MEAN = "mean"


@dataclasses.dataclass
class MaskConsensus:
    """The consensus of several raters' masks.

    Attributes:
        mask: The consensus: a label map, a binary mask, or the foreground probability.
        geometry: SimpleITK image of the first rater file (medical formats), else ``None``.
        method: The method.
        params: The estimator's settings.
        fit: Iterations, convergence, prior, log-likelihood and warnings (STAPLE methods).
        raters: One row per rater: rater, file and the rater's figures.
        shape: The grid of the masks.
    """

    mask: np.ndarray
    geometry: Any
    method: str
    params: dict[str, Any]
    fit: dict[str, Any]
    raters: pd.DataFrame
    shape: tuple[int, ...]


def _read(rater_files: Sequence[Path]) -> list[Any]:
    from crowdmed.data.masks import check_same_grid, read_mask

    files = [read_mask(p) for p in rater_files]
    shapes = [f.array.shape for f in files]
    for i, shape in enumerate(shapes):
        if shape != shapes[0]:
            raise ValueError(
                f"Rater {i} ('{rater_files[i]}') has shape {shape} but rater 0 "
                f"('{rater_files[0]}') has shape {shapes[0]}; all masks must share one grid."
            )
    check_same_grid(files, [f"Rater {i} ('{p}')" for i, p in enumerate(rater_files)])
    return files


def _history_end(values: list[float]) -> float | None:
    return values[-1] if values else None


def _multilabel(
    stack: np.ndarray, rows: dict[str, Any], max_iter: int, tol: float | None, undecided: int
) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    from crowdmed.aggregation.segmentation.staple import MultiLabelSTAPLE

    est = MultiLabelSTAPLE(max_iter=max_iter, tol=1e-5 if tol is None else tol, undecided=undecided)
    est.fit(stack)
    fit = {
        "n_iter": est.n_iter_,
        "converged": est.converged_,
        "n_classes": est.n_classes_,
        "prior": est.prior_,
        "log_likelihood": _history_end(est.log_likelihoods_),
    }
    for k in range(est.n_classes_):
        rows[f"sensitivity_{k}"] = est.sensitivity_[:, k]
    return est.labels_, est.get_params(), fit


def _binary(
    m: ConsensusMethod,
    stack: np.ndarray,
    rows: dict[str, Any],
    settings: dict[str, Any],
) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    from crowdmed.aggregation.segmentation.staple import STAPLE
    from crowdmed.aggregation.segmentation.votes import majority_vote_masks, mean_masks
    from crowdmed.metrics.segmentation import dice

    soft, threshold, fit = settings["soft"], settings["threshold"], {}
    if m is ConsensusMethod.STAPLE:
        tol = settings["tol"]
        st = STAPLE(
            max_iter=settings["max_iter"], tol=1e-7 if tol is None else tol, threshold=threshold
        )
        st.fit(stack)
        params, result, consensus = (
            st.get_params(),
            st.posteriors_ if soft else st.labels_,
            st.labels_,
        )
        rows["sensitivity"], rows["specificity"] = st.sensitivity_, st.specificity_
        fit = {
            "n_iter": st.n_iter_,
            "converged": st.converged_,
            "prior": st.prior_,
            "log_likelihood": _history_end(st.log_likelihoods_),
        }
    elif m is ConsensusMethod.MEAN:
        prob = mean_masks(stack)
        params, consensus = {"threshold": threshold}, prob >= threshold
        result = prob if soft else consensus
    else:
        consensus = majority_vote_masks(stack)
        params, result = {"ties": "background"}, consensus
    rows["foreground_voxels"] = stack.reshape(len(stack), -1).sum(axis=1)
    rows["dice_vs_consensus"] = [dice(s, consensus) for s in stack]
    return result, params, fit


def mask_consensus(
    rater_files: Sequence[Path],
    method: str = "staple",
    *,
    soft: bool = False,
    max_iter: int = 1000,
    tol: float | None = None,
    threshold: float = 0.5,
    undecided: int = -1,
) -> MaskConsensus:
    """Fuse several raters' masks of one image or volume into a consensus.

    Args:
        rater_files: One mask file per rater, all on the same grid.
        method: staple, multilabel-staple, majority or mean.
        soft: Return the foreground probability (staple, mean) instead of the hard mask.
        max_iter: Maximum EM iterations (STAPLE methods).
        tol: EM tolerance (1e-7 for staple, 1e-5 for multilabel-staple when ``None``).
        threshold: staple and mean: foreground where p >= threshold.
        undecided: multilabel-staple: label of voxels where the top classes tie.

    Returns:
        The consensus with the rater figures; fit warnings are in ``fit["warnings"]``.

    Raises:
        ValueError: For fewer than 2 raters, bad options, or masks on different grids.
    """
    from crowdmed.data.masks import binarize, not_annotated

    m = check_option(method, ConsensusMethod, "--method")
    if len(rater_files) < 2:
        raise ValueError(
            f"Consensus needs the masks of at least 2 raters; got {len(rater_files)} file."
        )
    if soft and m in (ConsensusMethod.MAJORITY, ConsensusMethod.MULTILABEL_STAPLE):
        raise ValueError(f"`--soft` applies to staple and mean only; got --method {m.value}.")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"`--threshold` must be in [0, 1]; got {threshold}.")
    files = _read(rater_files)
    skipped = [i for i, f in enumerate(files) if not_annotated(f.array)]
    if len(files) - len(skipped) < 2:
        raise ValueError(
            f"Consensus needs the masks of at least 2 raters; {len(skipped)} of the "
            f"{len(files)} masks are all -1 (not annotated): "
            f"{', '.join(repr(str(rater_files[i])) for i in skipped)}."
        )
    kept = [i for i in range(len(files)) if i not in skipped]
    geometry, shape = files[0].geometry, tuple(files[0].array.shape)
    files = [files[i] for i in kept]
    rater_files = [rater_files[i] for i in kept]
    rows: dict[str, Any] = {"rater": kept, "file": list(rater_files)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in skipped:
            warnings.warn(
                f"Rater {i} annotated no voxel (its mask is all -1); left out of the consensus.",
                UserWarning,
                stacklevel=2,
            )
        if m is ConsensusMethod.MULTILABEL_STAPLE:
            stack = np.stack([f.array for f in files])
            result, params, fit = _multilabel(stack, rows, max_iter, tol, undecided)
        else:
            names = [f"Rater {i} ('{p}')" for i, p in zip(kept, rater_files, strict=True)]
            stack = np.stack([binarize(f.array, n) for f, n in zip(files, names, strict=True)])
            settings = {"soft": soft, "threshold": threshold, "max_iter": max_iter, "tol": tol}
            result, params, fit = _binary(m, stack, rows, settings)
    fit["warnings"] = [" ".join(str(w.message).split()) for w in caught]
    return MaskConsensus(
        np.asarray(result),
        geometry,
        m.value,
        params,
        fit,
        pd.DataFrame(rows),
        shape,
    )
