"""Consensus boxes from several readers: weighted box fusion with reader agreement.

For each image and class the readers' boxes are clustered as in weighted boxes fusion (WBF):
boxes are taken one by one in a fixed order and each joins the existing cluster whose current
fused box overlaps it most, when that IoU exceeds ``iou_thr``; otherwise it starts a new
cluster. A cluster's fused box is the average of its boxes weighted by each reader's
proficiency ``p_r`` (Algorithm 1 of Le et al. 2023, step 5; given as an input, equal when not
given), and its confidence is that of Algorithm 1, step 6: the number of boxes in the cluster,
``c = min(T, N)`` with ``T`` the cluster's boxes and ``N`` the readers of the image, so a box
that 2 of 3 readers drew has ``c = 2`` (not normalised). The normalised share of readers,
``n_readers / N`` in ``(0, 1]``, is reported as ``agreement``. The iterative estimate of the
proficiencies from agreement (:func:`estimate_proficiency`) is an option of crowdmed, not part
of the paper's method.

The processing order is canonical, so the result does not depend on the row order of the
input: within an image and class, boxes of more proficient readers come first (as in WBF, which
sorts by score times model weight), then by reader id, then by coordinates.

All images are processed in lockstep: step ``k`` takes the ``k``-th box of every image-class
group at once and compares it with that group's clusters in one vectorised IoU, so the number
of Python-level steps is the size of the largest group, not the number of boxes.

References:
    Le, Tran, Pham, Nguyen, Le, Nguyen, Nguyen (2023). Learning from multiple expert
    annotators for enhancing anomaly detection in medical image analysis. IEEE Access 11.
    https://doi.org/10.1109/ACCESS.2023.3270451

    Solovyev, Wang, Gabruseva (2021). Weighted boxes fusion: ensembling boxes from different
    object detection models. Image and Vision Computing 107.
    https://doi.org/10.1016/j.imavis.2021.104117
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from crowdmed._box_prepare import PreparedBoxes, prepare_boxes, reader_weights
from crowdmed._box_table import (
    array_columns,
    box_columns,
    paired_iou,
)

__all__ = ["estimate_proficiency", "fuse_boxes"]

#: Pseudo-count of agreement added to each reader's precision and recall when estimating
#: proficiency, so a reader with little evidence starts near full proficiency.
_PSEUDO_COUNT = 1.0
#: Smallest proficiency: every reader keeps a positive weight.
_MIN_PROFICIENCY = 0.01


@dataclasses.dataclass
class _Clusters:
    """Result of one clustering pass, in processing order."""

    order: np.ndarray  # (n,) box index (into PreparedBoxes arrays) at each processing position
    slot: np.ndarray  # (n,) cluster slot of each box, indexed like PreparedBoxes arrays
    cluster_slots: np.ndarray  # (n_clusters,) used slots in output order
    fused: np.ndarray  # (n_slots, 2d) fused coordinates per slot
    n_boxes: np.ndarray  # (n_slots,) boxes per slot
    sum_w: np.ndarray  # (n_slots,) sum of score x weight of the slot's boxes
    n_readers: np.ndarray  # (n_slots,) distinct readers per slot
    member: np.ndarray  # (n_slots, n_readers) bool: reader has a box in the slot
    image: np.ndarray  # (n_slots,) image code per slot
    klass: np.ndarray  # (n_slots,) class code per slot


def _cluster(prep: PreparedBoxes, weight: np.ndarray, iou_thr: float) -> _Clusters:
    """Cluster all boxes (WBF assignment rule) in lockstep over image-class groups."""
    n = len(prep.coords)
    n_cls = max(len(prep.class_ids), 1)
    group_key = prep.image * n_cls + prep.klass
    w = weight[prep.reader] * prep.score if prep.has_score else weight[prep.reader]
    # boxes are in canonical order (image, class, reader, coordinates); within a group the
    # processing order puts larger score x weight first, then heavier readers, then reader id,
    # then coordinates (stable sorts keep the canonical order for the rest)
    n_rd = max(len(prep.reader_ids), 1)
    reader_rank = np.empty(n_rd, dtype=np.int64)
    reader_rank[np.lexsort((np.arange(len(weight)), -weight))] = np.arange(len(weight))
    if prep.has_score:
        order = np.lexsort((reader_rank[prep.reader], -w, group_key))
    else:  # score x weight is the reader's weight: one integer key
        order = np.argsort(group_key * n_rd + reader_rank[prep.reader], kind="stable")
    coords = prep.coords[order]
    ws = w[order]
    gk = group_key[order]
    new_group = np.empty(n, dtype=bool)
    if n:
        new_group[0] = True
        new_group[1:] = gk[1:] != gk[:-1]
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    rank = np.arange(n) - starts[group]
    small = np.int16 if n and rank.max() < np.iinfo(np.int16).max else np.int64
    by_rank = np.argsort(rank.astype(small), kind="stable")  # radix sort for 16-bit ranks
    step_sizes = np.bincount(rank) if n else np.zeros(0, dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(step_sizes)])

    d2 = coords.shape[1]
    sum_w = np.zeros(n)
    sum_wb = np.zeros((n, d2))
    fused = np.zeros((n, d2))
    n_clusters = np.zeros(len(starts), dtype=np.int64)
    slot_sorted = np.empty(n, dtype=np.int64)
    for k in range(len(step_sizes)):
        idx = by_rank[bounds[k] : bounds[k + 1]]  # the k-th box of every group that has one
        g = group[idx]
        b = coords[idx]
        wk = ws[idx]
        nc = n_clusters[g]
        target = starts[g] + nc  # a new cluster by default
        is_new = np.ones(len(idx), dtype=bool)
        if k:
            cand = starts[g][:, None] + np.arange(k)[None, :]
            ious = paired_iou(b[:, None, :], fused[cand])
            ious[np.arange(k)[None, :] >= nc[:, None]] = -1.0
            best = np.argmax(ious, axis=1)  # first (oldest) cluster on ties, as in WBF
            best_iou = ious[np.arange(len(idx)), best]
            join = best_iou > iou_thr
            target = np.where(join, starts[g] + best, target)
            is_new = ~join
            n_clusters[g] += is_new
        else:
            n_clusters[g] += 1
        # one box per group per step: the target slots are distinct, so plain indexing is safe
        sum_w[target] += wk
        sum_wb[target] += wk[:, None] * b
        # a new cluster's box is the box itself (exactly, as in WBF); a joined one the mean
        fused[target] = np.where(is_new[:, None], b, sum_wb[target] / sum_w[target][:, None])
        slot_sorted[idx] = target

    slot = np.empty(n, dtype=np.int64)
    slot[order] = slot_sorted
    n_boxes = np.bincount(slot, minlength=n)
    member = np.zeros((n, n_rd), dtype=bool)
    member[slot, prep.reader] = True
    n_readers = member.sum(axis=1)
    used = np.flatnonzero(n_boxes)
    image = np.zeros(n, dtype=np.int64)
    klass = np.zeros(n, dtype=np.int64)
    image[slot] = prep.image
    klass[slot] = prep.klass
    return _Clusters(
        order=order,
        slot=slot,
        cluster_slots=used,
        fused=fused,
        n_boxes=n_boxes,
        sum_w=sum_w,
        n_readers=n_readers,
        member=member,
        image=image,
        klass=klass,
    )


def _proficiency_from_clusters(prep: PreparedBoxes, cl: _Clusters) -> np.ndarray:
    """Per-reader agreement with the fused boxes (soft F1, see :func:`estimate_proficiency`)."""
    n_rd = len(prep.reader_ids)
    if len(prep.coords) == 0:
        return np.ones(n_rd)
    iou = paired_iou(prep.coords, cl.fused[cl.slot])
    shared = cl.n_readers[cl.slot] >= 2
    # precision side: each box scores its IoU with the fused box when another reader agrees
    soft_tp = np.bincount(prep.reader, weights=np.where(shared, iou, 0.0), minlength=n_rd)
    n_boxes = np.bincount(prep.reader, minlength=n_rd)
    precision = (soft_tp + _PSEUDO_COUNT) / (n_boxes + _PSEUDO_COUNT)
    # recall side: consensus clusters (two or more readers) on the images each reader read
    consensus = cl.cluster_slots[cl.n_readers[cl.cluster_slots] >= 2]
    per_image = np.bincount(cl.image[consensus], minlength=len(prep.image_ids))
    n_consensus = np.bincount(prep.read_reader, weights=per_image[prep.read_image], minlength=n_rd)
    best = np.zeros(cl.member.shape)
    np.maximum.at(best, (cl.slot[shared], prep.reader[shared]), iou[shared])
    hits = best.sum(axis=0)
    recall = (hits + _PSEUDO_COUNT) / (n_consensus + _PSEUDO_COUNT)
    f1 = 2 * precision * recall / (precision + recall)
    return np.asarray(np.clip(f1, _MIN_PROFICIENCY, 1.0))


def _estimate(
    prep: PreparedBoxes, iou_thr: float, max_iter: int, tol: float
) -> tuple[np.ndarray, _Clusters, int, bool]:
    weights = np.ones(len(prep.reader_ids))
    cl = _cluster(prep, weights, iou_thr)
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007  (n_iter is reported)
        new = _proficiency_from_clusters(prep, cl)
        change = float(np.max(np.abs(new - weights))) if len(new) else 0.0
        weights = new
        cl = _cluster(prep, weights, iou_thr)
        if change < tol:
            converged = True
            break
    return weights, cl, n_iter, converged


def _check_params(iou_thr: float, max_iter: int, tol: float, skip_box_thr: float = 0.0) -> None:
    if not (isinstance(iou_thr, (int, float)) and 0 <= float(iou_thr) < 1):
        raise ValueError(f"`iou_thr` must be a number in [0, 1); got {iou_thr!r}.")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"`max_iter` must be a non-negative integer; got {max_iter!r}.")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"`tol` must be a non-negative number; got {tol!r}.")
    if not (
        isinstance(skip_box_thr, (int, float))
        and not isinstance(skip_box_thr, bool)
        and math.isfinite(skip_box_thr)
        and skip_box_thr >= 0
    ):
        raise ValueError(
            f"`skip_box_thr` must be a non-negative number (a score); got {skip_box_thr!r}."
        )


def estimate_proficiency(
    frame: pd.DataFrame,
    *,
    iou_thr: float = 0.4,
    readers: Mapping[Any, Any] | pd.DataFrame | None = None,
    max_iter: int = 10,
    tol: float = 1e-4,
) -> pd.Series:
    """Estimate each reader's proficiency from agreement with the fused boxes.

    Starting from equal weights, the boxes are fused, each reader is scored against the fused
    boxes, and the scores become the weights of the next fusion, until no score moves by more
    than ``tol`` or after ``max_iter`` rounds. A reader's score is a soft F1:

    - precision = (sum over the reader's boxes of the IoU with their cluster's fused box, counted
      only when another reader is in the cluster, + 1) / (number of the reader's boxes + 1);
    - recall = (sum over clusters with two or more readers on images the reader read of the
      reader's best IoU with that fused box, 0 when absent, + 1) / (number of such clusters + 1);
    - proficiency = 2 · precision · recall / (precision + recall), at least 0.01.

    The pseudo-count 1 keeps readers with little evidence near 1. Coordinate noise lowers both
    sides, false positives lower precision and missed findings lower recall.

    Args:
        frame: Box table (see :func:`crowdmed.data.check_boxes`); an optional ``score``
            column orders and weights the boxes in the clustering as in :func:`fuse_boxes`.
        iou_thr: Clusters form above this IoU.
        readers: Who read each image (``image -> readers`` or a frame ``image, reader``);
            defaults to the readers appearing for the image in ``frame``.
        max_iter: Maximum rounds of re-weighting (0 returns equal weights).
        tol: Stop when no proficiency changes by more than this.

    Returns:
        Series of proficiencies in ``(0, 1]`` indexed by reader id (sorted), named
        ``"proficiency"``; ``attrs`` holds ``n_iter`` and ``converged``.
    """
    _check_params(iou_thr, max_iter, tol)
    prep = prepare_boxes(frame, readers)
    weights, _, n_iter, converged = _estimate(prep, float(iou_thr), max_iter, tol)
    out = pd.Series(weights, index=pd.Index(prep.reader_ids, name="reader"), name="proficiency")
    out.attrs.update(n_iter=n_iter, converged=converged)
    return out


def _join_readers(pair_slot: np.ndarray, names: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """``;``-joined names per slot; ``pair_slot`` is sorted and ``slots`` are its unique values."""
    text = names
    first = np.ones(len(pair_slot), dtype=bool)
    first[1:] = pair_slot[1:] != pair_slot[:-1]
    start = np.flatnonzero(first)
    which = np.cumsum(first) - 1  # position of each pair's slot in ``slots``
    rank = np.arange(len(pair_slot)) - start[which]
    out = np.empty(len(slots), dtype=object)
    out[which[rank == 0]] = text[rank == 0]
    for j in range(1, int(rank.max()) + 1 if len(rank) else 0):
        at = rank == j
        out[which[at]] = out[which[at]] + ";" + text[at]
    return out


def _typed(ids: np.ndarray) -> np.ndarray:
    """Ids as an integer, float or bool array when they all are, else as objects."""
    kind = pd.api.types.infer_dtype(ids, skipna=False)
    if kind in ("integer", "floating", "boolean"):
        return np.asarray(list(ids))
    return ids


def _fused_scores(prep: PreparedBoxes, cl: _Clusters, weights: np.ndarray) -> np.ndarray:
    """WBF ``avg`` score of each output cluster (see :func:`fuse_boxes`)."""
    slots = cl.cluster_slots
    image = cl.image[slots]
    n_boxes = cl.n_boxes[slots]
    # total weight of the sources (readers) of each image
    total = np.bincount(
        prep.read_image, weights=weights[prep.read_reader], minlength=len(prep.image_ids)
    )
    mean = cl.sum_w[slots] / n_boxes
    return np.asarray(mean * np.minimum(n_boxes, prep.n_read[image]) / total[image])


def _clusters_frame(prep: PreparedBoxes, cl: _Clusters, weights: np.ndarray) -> pd.DataFrame:
    slots = cl.cluster_slots
    cols = array_columns(prep.ndim)
    data: dict[str, Any] = {
        "image": _typed(prep.image_ids)[cl.image[slots]],
        "class": _typed(prep.class_ids)[cl.klass[slots]] if len(prep.class_ids) else [],
    }
    coords = cl.fused[slots]
    for j, c in enumerate(cols):
        data[c] = coords[:, j]
    if prep.has_score:
        data["score"] = _fused_scores(prep, cl, weights)
    n_readers = cl.n_readers[slots]
    n_sources = prep.n_read[cl.image[slots]]
    # Algorithm 1, step 6: c = min(T, N), the cluster's boxes capped at the image's readers
    data["confidence"] = np.minimum(cl.n_boxes[slots], n_sources).astype(np.float64)
    data["agreement"] = n_readers / n_sources
    data["n_readers"] = n_readers
    data["n_boxes"] = cl.n_boxes[slots]
    # readers of each cluster, distinct and sorted by reader id
    reader_text = np.asarray([str(r) for r in prep.reader_ids], dtype=object)
    member = cl.member[slots]
    if member.shape[1] <= 62:
        # few distinct reader sets: join the names once per set
        bits = member.astype(np.int64) @ (np.int64(1) << np.arange(member.shape[1], dtype=np.int64))
        patterns, inverse = np.unique(bits, return_inverse=True)
        names = np.asarray(
            [
                ";".join(reader_text[(int(p) >> np.arange(member.shape[1])) & 1 == 1])
                for p in patterns
            ],
            dtype=object,
        )
        data["readers"] = names[inverse.reshape(-1)]
    else:
        pair_slot, pair_reader = np.nonzero(member)
        data["readers"] = _join_readers(pair_slot, reader_text[pair_reader], np.arange(len(slots)))
    out = pd.DataFrame(data)
    ordered = [
        "image",
        "class",
        *box_columns(prep.ndim),
        *(["score"] if prep.has_score else []),
        "confidence",
        "agreement",
        "n_readers",
        "n_boxes",
    ]
    out = out[[*ordered, "readers"]]
    return out


def fuse_boxes(
    frame: pd.DataFrame,
    *,
    iou_thr: float = 0.4,
    proficiency: Mapping[Any, float] | pd.Series | pd.DataFrame | None = None,
    readers: Mapping[Any, Any] | pd.DataFrame | None = None,
    estimate_proficiency: bool = False,
    max_iter: int = 10,
    tol: float = 1e-4,
    skip_box_thr: float = 0.0,
) -> pd.DataFrame:
    """Fuse the boxes of several readers (or models) into consensus boxes.

    Per image and class, boxes are clustered with the WBF rule: each box, in the processing
    order, joins the cluster whose current fused box has the highest IoU ``> iou_thr`` (the
    oldest cluster on ties), else starts a new cluster. Each box weighs ``score × w``, where
    ``w`` is its source's weight (``proficiency``) and ``score`` comes from the optional
    ``score`` column (1 for every box when the table has none). The processing order is by
    decreasing ``score × w``, ties broken by the heavier source, then the source id, then the
    coordinates, so the result depends neither on the row order nor on the order of the
    sources. The fused box is the ``score × w``-weighted mean of the cluster's boxes.

    Two uses:

    - **Readers** (no ``score`` column; Le et al. 2023, Algorithm 1): every box weighs its
      reader's proficiency ``p_r`` (step 5: ``x := Σ p_i x_i / Σ p_i``), given as an input
      (equal weights when not given; ``estimate_proficiency=True`` estimates them instead).
      ``confidence`` is the paper's fused confidence (step 6): the number of boxes in the
      cluster, ``min(n_boxes, n_sources)``, where ``n_sources`` is the number of readers of
      the image. ``agreement`` is the normalised share ``n_readers / n_sources``; a reader who
      read an image and marked nothing lowers it but never moves a coordinate.
    - **Scored predictions of several models** (a ``score`` column, the model id in the
      ``reader`` column, ``proficiency`` = model weights or ``estimate_proficiency=False`` for
      equal weights): the result is weighted boxes fusion (Solovyev et al. 2021) with
      ``conf_type="avg"``, and the output's ``score`` is WBF's fused score,
      ``mean(score × w over the cluster's boxes) × min(n_boxes, n_sources) / W``, where
      ``n_sources`` is the number of sources of the image and ``W`` their total weight. List
      every model for every image in ``readers``: a model that predicted nothing on an image
      is still one of its sources. Boxes scored below ``skip_box_thr`` are ignored (their
      source still counts as a source of the image).

    Args:
        frame: Box table with columns ``image, reader, class, xmin, ymin, xmax, ymax`` (plus
            ``zmin, zmax`` for 3-D), absolute pixels, and optionally ``score`` (positive
            numbers; empty on readings without boxes); rows with empty class and coordinates
            record readings without boxes. ``reader`` holds the source: reader or model.
        iou_thr: A box joins a cluster when its IoU with the fused box exceeds this.
        proficiency: Weight of each source (mapping, Series indexed by source, or a table
            ``reader, proficiency``); positive numbers, scale-free.
        readers: Who read each image (``image -> list of readers`` or a frame ``image,
            reader``), so that sources that marked nothing count in ``confidence`` and
            ``score``; defaults to the sources appearing for the image in ``frame``.
        estimate_proficiency: When ``proficiency`` is not given, estimate it with
            :func:`estimate_proficiency` (crowdmed's option, not the paper's); otherwise, the
            default, all sources weigh the same.
        max_iter: Maximum re-weighting rounds of the estimation.
        tol: Convergence tolerance of the estimation.
        skip_box_thr: Boxes whose ``score`` is below this are ignored (WBF's ``skip_box_thr``;
            without a ``score`` column every score is 1).

    Returns:
        One row per fused box, ordered by image, class and cluster, with columns

        - ``image, class`` and the coordinate columns (the fused box);
        - ``score`` (only when ``frame`` has a ``score`` column): WBF's ``avg`` fused score
          defined above, in ``(0, 1]`` for scores in ``(0, 1]``;
        - ``confidence``: the fused confidence of Le et al. (2023), Algorithm 1, step 6: the
          number of boxes in the cluster, capped at the number of sources of the image
          (``min(n_boxes, n_sources)``, a count ``>= 1``, not normalised), whatever the scores
          and weights; the EARL weight of the box (eq. 2);
        - ``agreement``: distinct sources in the cluster over the sources of the image, in
          ``(0, 1]``;
        - ``n_readers`` (distinct sources in the cluster), ``n_boxes`` and ``readers`` (the
          sources' ids joined by ``;``).

        ``attrs["proficiency"]`` maps each source to the weight used; ``attrs["n_iter"]`` and
        ``attrs["converged"]`` describe the estimation.

    Raises:
        ValueError: Invalid boxes (see :func:`check_boxes`), scores, readings or parameters.

    Examples:
        >>> boxes = pd.DataFrame({
        ...     "image": ["a", "a", "a"], "reader": ["r1", "r2", "r3"], "class": [0, 0, 0],
        ...     "xmin": [10.0, 12.0, 11.0], "ymin": [10.0, 10.0, 10.0],
        ...     "xmax": [50.0, 52.0, 51.0], "ymax": [40.0, 40.0, 40.0]})
        >>> fused = fuse_boxes(boxes)
        >>> fused[["xmin", "xmax", "confidence", "agreement", "n_readers"]].to_numpy().tolist()
        [[11.0, 51.0, 3.0, 1.0, 3.0]]

        Scored predictions of two models, one box each (model weights 1):

        >>> preds = boxes.iloc[:2].assign(reader=["m1", "m2"], score=[0.9, 0.3])
        >>> fused = fuse_boxes(preds)
        >>> fused[["xmin", "score"]].round(3).to_numpy().tolist()
        [[10.5, 0.6]]
    """
    _check_params(iou_thr, max_iter, tol, skip_box_thr)
    prep = prepare_boxes(frame, readers, float(skip_box_thr))
    n_iter, converged = 0, True
    if proficiency is not None:
        weights = reader_weights(prep, proficiency)
        cl = _cluster(prep, weights, float(iou_thr))
    elif estimate_proficiency:
        weights, cl, n_iter, converged = _estimate(prep, float(iou_thr), max_iter, tol)
    else:
        weights = np.ones(len(prep.reader_ids))
        cl = _cluster(prep, weights, float(iou_thr))
    out = _clusters_frame(prep, cl, weights)
    out.attrs["proficiency"] = {
        (r.item() if isinstance(r, np.generic) else r): float(w)
        for r, w in zip(prep.reader_ids, weights, strict=True)
    }
    out.attrs["n_iter"] = n_iter
    out.attrs["converged"] = converged
    return out
