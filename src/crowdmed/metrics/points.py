"""Evaluation of mitosis detections against reference points (the radius rule of the paper).

**Matching rule.** Within each image, detections are taken in order of decreasing score
(ties: input order). A detection is a *true positive* when an unmatched reference point lies
within ``radius · scale`` pixels (Euclidean, inclusive); it is matched to the nearest such
point. Each reference point is matched at most once, so several detections of one mitosis
count as **one** true positive. A further detection that finds only already-matched points
within the radius is a *duplicate*. With ``duplicates="ignore"`` (the default) a duplicate is
neither a true nor a false positive: this is the rule of Albarqouni et al. (2016), section
III-4 ("multiple responses within the same radius around a mitotic figure are counted as a
single TP"; only responses outside every radius are false positives).
``duplicates="fp"`` counts a duplicate as a false positive instead (a stricter, non-paper
rule). Every other detection is a false positive and every unmatched reference point a false
negative.

Because matching is greedy by score, the outcome of every detection does not depend on the
detections with lower scores: evaluating at a threshold ``t`` equals keeping ``score >= t`` of a
low-threshold evaluation. :func:`choose_threshold` uses this to scan all operating points at once.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from crowdmed._validation import check_option
from crowdmed.data.points import check_points
from crowdmed.metrics import roc_auc

__all__ = ["DuplicatePolicy", "MatchResult", "choose_threshold", "match_points"]


class DuplicatePolicy(str, enum.Enum):
    """How a second detection of an already matched reference point counts."""

    FP = "fp"
    IGNORE = "ignore"


@dataclasses.dataclass
class MatchResult:
    """Outcome of :func:`match_points`.

    Attributes:
        detections: The detections (input columns) plus ``tp`` (bool), ``duplicate`` (bool),
            ``reference`` (row index into the reference table of the matched point, ``-1``
            when unmatched) and ``distance`` (pixels to it, ``NaN`` when unmatched).
        per_image: One row per image: ``image, n_reference, n_detections, tp, fp, fn,
            precision, recall, f1``.
        tp: True positives over all images.
        fp: False positives over all images.
        fn: False negatives (missed reference points) over all images.
        precision: ``tp / (tp + fp)``; ``NaN`` without detections.
        recall: ``tp / (tp + fn)``; ``NaN`` without reference points.
        f1: ``2 tp / (2 tp + fp + fn)``; ``NaN`` when all three counts are 0.
        auc: ROC AUC of the detection scores against ``tp`` (over candidates, so missed
            reference points do not enter); ``NaN`` without scores or with one class only.
        radius: The matching radius used, in pixels (``radius · scale``).
    """

    detections: pd.DataFrame
    per_image: pd.DataFrame
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    auc: float
    radius: float

    def summary(self) -> dict[str, Any]:
        """The overall figures as a plain dict (for JSON records and tables)."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "auc": self.auc,
            "radius": self.radius,
        }


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)


def _match_image(
    det_xy: np.ndarray, ref_xy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy matching of detections (already in score order) to reference points."""
    n = len(det_xy)
    ref_idx = np.full(n, -1, dtype=np.int64)
    dist = np.full(n, np.nan)
    duplicate = np.zeros(n, dtype=bool)
    if n == 0 or len(ref_xy) == 0:
        return ref_idx, dist, duplicate
    tree = cKDTree(ref_xy)
    used = np.zeros(len(ref_xy), dtype=bool)
    for i in range(n):
        near = tree.query_ball_point(det_xy[i], r=radius)
        if not near:
            continue
        near_arr = np.asarray(near)
        free = near_arr[~used[near_arr]]
        if len(free) == 0:
            duplicate[i] = True
            continue
        d = np.hypot(*(ref_xy[free] - det_xy[i]).T)
        j = int(free[np.argmin(d)])
        used[j] = True
        ref_idx[i] = j
        dist[i] = float(d.min())
    return ref_idx, dist, duplicate


def _checked_inputs(
    detections: pd.DataFrame, reference: pd.DataFrame, radius: float, scale: float
) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Checked copies of both tables (image ids as text) and the radius in pixels."""
    for name, value in (("radius", radius), ("scale", scale)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"`{name}` must be a positive number; got {value!r}.")
    r = float(radius) * float(scale)
    det = check_points(detections, "detections")
    ref = check_points(reference, "reference")
    if "score" in det.columns:
        det["score"] = pd.to_numeric(det["score"], errors="coerce")
        if det["score"].isna().any():
            raise ValueError("`detections` column 'score' must be numeric without gaps.")
    det["image"] = det["image"].astype(str)
    ref["image"] = ref["image"].astype(str)
    return det, ref, r


def _match_all(
    det: pd.DataFrame,
    ref: pd.DataFrame,
    images: list[Any] | None,
    r: float,
    policy: DuplicatePolicy,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """Match image by image: per-detection flags, reference index, distance; per-image rows."""
    has_score = "score" in det.columns
    n = len(det)
    tp = np.zeros(n, dtype=bool)
    dup = np.zeros(n, dtype=bool)
    ref_col = np.full(n, -1, dtype=np.int64)
    dist_col = np.full(n, np.nan)
    names = list(dict.fromkeys([str(i) for i in images])) if images is not None else []
    names += [
        x for x in dict.fromkeys(list(ref["image"]) + list(det["image"])) if x not in set(names)
    ]
    det_groups = det.groupby("image", sort=False).indices
    ref_groups = ref.groupby("image", sort=False).indices
    rows = []
    for name in names:
        di = np.asarray(det_groups.get(name, []), dtype=np.int64)
        ri = np.asarray(ref_groups.get(name, []), dtype=np.int64)
        if has_score and len(di):
            di = di[np.argsort(-det["score"].to_numpy()[di], kind="stable")]
        ref_xy = ref[["x", "y"]].to_numpy(dtype=np.float64)[ri]
        det_xy = det[["x", "y"]].to_numpy(dtype=np.float64)[di]
        idx, dist, is_dup = _match_image(det_xy, ref_xy, r)
        matched = idx >= 0
        tp[di] = matched
        dup[di] = is_dup
        ref_col[di[matched]] = ri[idx[matched]]
        dist_col[di] = dist
        n_tp = int(matched.sum())
        n_fp = int((~matched & (~is_dup | (policy is DuplicatePolicy.FP))).sum())
        n_fn = len(ri) - n_tp
        p, rc, f = _prf(n_tp, n_fp, n_fn)
        rows.append((name, len(ri), len(di), n_tp, n_fp, n_fn, p, rc, f))
    per_image = pd.DataFrame(
        rows,
        columns=[
            "image",
            "n_reference",
            "n_detections",
            "tp",
            "fp",
            "fn",
            "precision",
            "recall",
            "f1",
        ],
    )
    return tp, dup, ref_col, dist_col, per_image


def match_points(
    detections: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    radius: float = 30.0,
    scale: float = 1.0,
    duplicates: str = "ignore",
    images: list[Any] | None = None,
) -> MatchResult:
    """Match detections to reference points within a radius (see the module documentation).

    Args:
        detections: ``DataFrame`` with ``image, x, y`` and optionally ``score`` (higher first;
            without it, the input order is the order of matching).
        reference: ``DataFrame`` with ``image, x, y`` (one row per mitosis).
        radius: Matching radius in pixels at full resolution; 30 px in the paper (40× fields).
        scale: Scale of the images the coordinates refer to; the radius becomes
            ``radius · scale``.
        duplicates: ``"ignore"`` leaves a second detection of a matched point out of the
            counts (the paper's rule: several responses around one mitosis are one TP);
            ``"fp"`` counts it as a false positive.
        images: Every image evaluated, so that an image with neither detections nor reference
            points still gets a ``per_image`` row; by default the images named in either table.

    Returns:
        :class:`MatchResult` with per-detection flags, per-image and overall precision,
        recall and F1, and the candidate ROC AUC.

    Raises:
        ValueError: Missing columns, bad coordinates, or a bad ``radius``/``scale``/``duplicates``.

    Examples:
        >>> ref = pd.DataFrame({"image": ["a"], "x": [100.0], "y": [100.0]})
        >>> det = pd.DataFrame({"image": ["a", "a"], "x": [110.0, 300.0], "y": [100.0, 50.0],
        ...                     "score": [0.9, 0.8]})
        >>> r = match_points(det, ref)
        >>> r.detections["tp"].tolist(), r.tp, r.fp, r.fn
        ([True, False], 1, 1, 0)
    """
    policy = check_option(duplicates, DuplicatePolicy, "duplicates")
    det, ref, r = _checked_inputs(detections, reference, radius, scale)
    has_score = "score" in det.columns
    n = len(det)
    tp, dup, ref_col, dist_col, per_image = _match_all(det, ref, images, r, policy)
    out = det.copy()
    out["tp"] = tp
    out["duplicate"] = dup
    out["reference"] = ref_col
    out["distance"] = dist_col
    total_tp = int(tp.sum())
    counted_fp = ~tp & (~dup | (policy is DuplicatePolicy.FP))
    total_fp = int(counted_fp.sum())
    total_fn = len(ref) - total_tp
    p, rc, f = _prf(total_tp, total_fp, total_fn)
    auc = float("nan")
    if has_score and n:
        keep = ~dup if policy is DuplicatePolicy.IGNORE else np.ones(n, bool)
        auc = roc_auc(out["score"].to_numpy()[keep], tp[keep].astype(int))
    return MatchResult(out, per_image, total_tp, total_fp, total_fn, p, rc, f, auc, r)


def choose_threshold(
    detections: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    radius: float = 30.0,
    scale: float = 1.0,
    duplicates: str = "ignore",
) -> tuple[float, float]:
    """The operating point (score threshold) that maximises the overall F1 on validation data.

    Every distinct detection score is tried as a threshold (``score >= t`` kept) from one
    matching, which is exact because the greedy matching is decided in score order. Ties in F1
    go to the highest threshold (fewest detections).

    Args:
        detections: Low-threshold candidates ``image, x, y, score`` on validation images.
        reference: Reference points ``image, x, y`` of the same images.
        radius: Matching radius in pixels at full resolution.
        scale: Scale of the coordinates; the radius becomes ``radius · scale``.
        duplicates: ``"ignore"`` (the paper's rule) or ``"fp"`` (see :func:`match_points`).

    Returns:
        ``(threshold, f1)``. Without any detection the threshold is ``inf`` and F1 is 0 (or
        ``NaN`` without reference points either).

    Examples:
        >>> ref = pd.DataFrame({"image": ["a", "a"], "x": [10.0, 200.0], "y": [10.0, 200.0]})
        >>> det = pd.DataFrame({"image": ["a"] * 3, "x": [12.0, 100.0, 198.0],
        ...                     "y": [10.0, 100.0, 201.0], "score": [0.9, 0.7, 0.6]})
        >>> choose_threshold(det, ref)
        (0.6, 0.8)
    """
    if "score" not in detections.columns:
        raise ValueError("`detections` must have a 'score' column to choose a threshold.")
    res = match_points(detections, reference, radius=radius, scale=scale, duplicates=duplicates)
    n_ref = res.tp + res.fn
    det = res.detections
    if len(det) == 0:
        return float("inf"), 0.0 if n_ref else float("nan")
    scores = det["score"].to_numpy(dtype=np.float64)
    counts_fp = ~det["tp"].to_numpy() & (
        ~det["duplicate"].to_numpy()
        | (check_option(duplicates, DuplicatePolicy, "duplicates") is DuplicatePolicy.FP)
    )
    order = np.argsort(-scores, kind="stable")
    cum_tp = np.cumsum(det["tp"].to_numpy()[order])
    cum_fp = np.cumsum(counts_fp[order])
    s_sorted = scores[order]
    # Evaluate only at the last position of each distinct score (score >= t keeps all ties).
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp_t, fp_t, thr = cum_tp[last], cum_fp[last], s_sorted[last]
    denom = 2 * tp_t + fp_t + (n_ref - tp_t)
    f1 = np.where(denom > 0, 2 * tp_t / np.maximum(denom, 1), np.nan)
    best = int(np.nanargmax(f1)) if np.isfinite(f1).any() else 0
    # nanargmax returns the first maximum, i.e. the highest threshold among ties.
    return float(thr[best]), float(f1[best])
