"""How well readers agree: sensitivity and false positives against the consensus, pairwise F1.

Boxes are matched one to one within an image and class, greedily by decreasing IoU (the best
overlapping pair first, ties broken by position), and a pair counts when its IoU is at least
``iou_thr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from crowdmed._box_prepare import PreparedBoxes, prepare_boxes, reader_weights
from crowdmed._box_table import array_columns, as_box_array, paired_iou, to_python
from crowdmed.aggregation.detection.box_fusion import estimate_proficiency, fuse_boxes

__all__ = ["match_boxes", "pairwise_reader_f1", "reader_agreement"]


def _candidate_pairs(ga: np.ndarray, gb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs ``(i, j)`` with ``ga[i] == gb[j]``, without a Python loop."""
    order_b = np.argsort(gb, kind="stable")
    sorted_b = gb[order_b]
    lo = np.searchsorted(sorted_b, ga, side="left")
    hi = np.searchsorted(sorted_b, ga, side="right")
    counts = hi - lo
    total = int(counts.sum())
    ia = np.repeat(np.arange(len(ga)), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    ib = order_b[np.repeat(lo, counts) + offsets]
    return ia, ib


def _greedy(node_a: np.ndarray, node_b: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Greedy one-to-one matching by decreasing score; returns the indices of kept pairs.

    Equivalent to walking the pairs from the best score down and keeping each pair whose two
    ends are still free, but done in rounds: every pair that is the best remaining pair of both
    its ends is kept at once.
    """
    if len(score) == 0:
        return np.zeros(0, dtype=np.int64)
    _, a = np.unique(node_a, return_inverse=True)
    _, b = np.unique(node_b, return_inverse=True)
    order = np.lexsort((b, a, -score))
    pos = order
    kept: list[np.ndarray] = []
    used_a = np.zeros(int(a.max()) + 1, dtype=bool)
    used_b = np.zeros(int(b.max()) + 1, dtype=bool)
    while len(pos):
        pa, pb = a[pos], b[pos]
        first_a = np.zeros(len(pos), dtype=bool)
        first_b = np.zeros(len(pos), dtype=bool)
        first_a[np.unique(pa, return_index=True)[1]] = True
        first_b[np.unique(pb, return_index=True)[1]] = True
        take = first_a & first_b
        kept.append(pos[take])
        used_a[pa[take]] = True
        used_b[pb[take]] = True
        pos = pos[~(used_a[pa] | used_b[pb])]
    return np.sort(np.concatenate(kept))


def match_boxes(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    iou_thr: float = 0.4,
    groups_a: npt.ArrayLike | None = None,
    groups_b: npt.ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match boxes of ``a`` to boxes of ``b`` one to one, greedily by decreasing IoU.

    Args:
        a: Float array of shape ``(n, 4 | 6)``, corner mode ``xmin, ymin[, zmin], xmax, ymax[,
            zmax]``.
        b: Float array of shape ``(m, 4 | 6)``.
        iou_thr: A pair can match when its IoU is at least this.
        groups_a: Integer array of shape ``(n,)``; boxes match only within the same group
            (e.g. image and class). All in one group when omitted.
        groups_b: Integer array of shape ``(m,)``, the groups of ``b``.

    Returns:
        ``(index_a, index_b, iou)``: the matched pairs, sorted by ``index_a``.

    Examples:
        >>> match_boxes([[0, 0, 2, 2], [5, 5, 6, 6]], [[0, 0, 2, 1.9], [0, 0, 2, 2]])
        (array([0]), array([1]), array([1.]))
    """
    aa = as_box_array(a, "a")
    bb = as_box_array(b, "b")
    if aa.shape[1] != bb.shape[1]:
        raise ValueError(
            f"`a` and `b` must have the same box dimension; got {aa.shape[1]} and "
            f"{bb.shape[1]} columns."
        )
    ga = np.zeros(len(aa), dtype=np.int64) if groups_a is None else np.asarray(groups_a)
    gb = np.zeros(len(bb), dtype=np.int64) if groups_b is None else np.asarray(groups_b)
    if ga.shape != (len(aa),) or gb.shape != (len(bb),):
        raise ValueError("`groups_a` and `groups_b` must have one entry per box of `a` and `b`.")
    ia, ib = _candidate_pairs(ga, gb)
    iou = paired_iou(aa[ia], bb[ib])
    ok = iou >= iou_thr
    ia, ib, iou = ia[ok], ib[ok], iou[ok]
    keep = _greedy(ia, ib, iou)
    order = np.argsort(ia[keep], kind="stable")
    k = keep[order]
    return ia[k], ib[k], iou[k]


def _codes_in(prep_ids: np.ndarray, values: pd.Series, what: str) -> np.ndarray:
    index = pd.Index(prep_ids)
    codes = index.get_indexer(values)
    if (codes < 0).any():
        text = pd.Index(prep_ids.astype(str))
        codes = text.get_indexer(values.astype(str))
    if (codes < 0).any():
        bad = values[codes < 0].iloc[0]
        raise ValueError(
            f"The fused boxes have {what} {to_python(bad)!r}, which is not in the readers' box "
            "table; pass the fused boxes of this table."
        )
    return np.asarray(codes, dtype=np.int64)


def _proficiency_column(
    prep: PreparedBoxes, fused: pd.DataFrame, frame: pd.DataFrame, iou_thr: float, readers: Any
) -> np.ndarray:
    given = fused.attrs.get("proficiency")
    if isinstance(given, Mapping) and given:
        text = {str(k): v for k, v in given.items()}
        return np.array([float(text.get(str(r), np.nan)) for r in prep.reader_ids])
    est = estimate_proficiency(frame, iou_thr=iou_thr, readers=readers)
    return est.reindex(prep.reader_ids).to_numpy(dtype=np.float64)


def reader_agreement(
    frame: pd.DataFrame,
    fused: pd.DataFrame | None = None,
    *,
    iou_thr: float = 0.4,
    readers: Mapping[Any, Any] | pd.DataFrame | None = None,
    proficiency: Mapping[Any, float] | pd.Series | pd.DataFrame | None = None,
    min_confidence: float = 0.5,
) -> pd.DataFrame:
    """Score every reader against the consensus boxes.

    The consensus is the fused boxes whose ``agreement`` (share of the image's readers)
    exceeds ``min_confidence`` (a strict majority of the image's readers by default). Each
    reader's boxes are matched one to one to the consensus boxes of the same image and class at
    IoU ``>= iou_thr``.

    Args:
        frame: The readers' box table (see :func:`crowdmed.data.check_boxes`).
        fused: Output of :func:`crowdmed.aggregation.fuse_boxes` for ``frame``; computed with
            ``iou_thr``, ``readers`` and ``proficiency`` when omitted.
        iou_thr: IoU for fusion (when ``fused`` is omitted) and for matching.
        readers: Who read each image (see :func:`crowdmed.aggregation.fuse_boxes`).
        proficiency: Reader weights for the fusion when ``fused`` is omitted.
        min_confidence: Consensus boxes have an agreement (share of readers) above this.

    Returns:
        One row per reader (sorted by id): ``reader, n_images`` (images read), ``n_boxes``,
        ``n_consensus`` (consensus boxes on those images), ``matched``, ``sensitivity``
        (matched / n_consensus, NaN without consensus boxes), ``precision`` (matched /
        n_boxes), ``fp_per_image`` ((n_boxes - matched) / n_images) and ``proficiency`` (the
        fusion weight, estimated when not given).
    """
    prep = prepare_boxes(frame, readers)
    if fused is None:
        fused = fuse_boxes(
            frame,
            iou_thr=iou_thr,
            proficiency=proficiency,
            readers=readers,
            estimate_proficiency=True,
        )
    if not isinstance(fused, pd.DataFrame) or "agreement" not in fused.columns:
        raise TypeError("`fused` must be the DataFrame returned by fuse_boxes.")
    n_rd = len(prep.reader_ids)
    cons = fused[fused["agreement"].to_numpy(dtype=float) > min_confidence]
    n_cls = max(len(prep.class_ids), 1)
    c_img = _codes_in(prep.image_ids, cons["image"], "image")
    c_cls = (
        _codes_in(prep.class_ids, cons["class"], "class")
        if len(cons)
        else np.zeros(0, dtype=np.int64)
    )
    c_coords = cons[list(array_columns(prep.ndim))].to_numpy(dtype=np.float64)
    ia, ib = _candidate_pairs(prep.image * n_cls + prep.klass, c_img * n_cls + c_cls)
    iou = paired_iou(prep.coords[ia], c_coords[ib])
    ok = iou >= iou_thr
    ia, ib, iou = ia[ok], ib[ok], iou[ok]
    keep = _greedy(ia, ib * n_rd + prep.reader[ia], iou)
    matched = np.bincount(prep.reader[ia[keep]], minlength=n_rd)
    n_boxes = np.bincount(prep.reader, minlength=n_rd)
    n_images = np.bincount(prep.read_reader, minlength=n_rd)
    per_image = np.bincount(c_img, minlength=len(prep.image_ids))
    n_consensus = np.bincount(
        prep.read_reader, weights=per_image[prep.read_image], minlength=n_rd
    ).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.where(n_consensus > 0, matched / np.maximum(n_consensus, 1), np.nan)
        precision = np.where(n_boxes > 0, matched / np.maximum(n_boxes, 1), np.nan)
        fp_per_image = (n_boxes - matched) / np.maximum(n_images, 1)
    if proficiency is not None:
        prof = reader_weights(prep, proficiency)
    else:
        prof = _proficiency_column(prep, fused, frame, iou_thr, readers)
    return pd.DataFrame(
        {
            "reader": prep.reader_ids,
            "n_images": n_images,
            "n_boxes": n_boxes,
            "n_consensus": n_consensus,
            "matched": matched,
            "sensitivity": sensitivity,
            "precision": precision,
            "fp_per_image": fp_per_image,
            "proficiency": prof,
        }
    )


def pairwise_reader_f1(
    frame: pd.DataFrame,
    *,
    iou_thr: float = 0.4,
    readers: Mapping[Any, Any] | pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Matched-box F1 between every pair of readers, on the images both read.

    For readers ``a`` and ``b``, boxes of the same image and class are matched one to one at
    IoU ``>= iou_thr``, and ``F1 = 2 · matches / (boxes of a + boxes of b)`` counting only the
    images both read.

    Args:
        frame: The readers' box table (see :func:`crowdmed.data.check_boxes`).
        iou_thr: Matching IoU.
        readers: Who read each image (see :func:`crowdmed.aggregation.fuse_boxes`).

    Returns:
        Symmetric square frame indexed by reader id on both axes. NaN where two readers share
        no image or neither marked a box on the shared images; 1 on the diagonal.
    """
    prep = prepare_boxes(frame, readers)
    n_rd = len(prep.reader_ids)
    n_cls = max(len(prep.class_ids), 1)
    group = prep.image * n_cls + prep.klass
    ia, ib = _candidate_pairs(group, group)
    cross = prep.reader[ia] != prep.reader[ib]
    ia, ib = ia[cross], ib[cross]
    half = prep.reader[ia] < prep.reader[ib]
    ia, ib = ia[half], ib[half]
    iou = paired_iou(prep.coords[ia], prep.coords[ib])
    ok = iou >= iou_thr
    ia, ib, iou = ia[ok], ib[ok], iou[ok]
    # box i of reader a can match one box of each other reader: nodes are (box, other reader)
    keep = _greedy(ia * n_rd + prep.reader[ib], ib * n_rd + prep.reader[ia], iou)
    ra, rb = prep.reader[ia[keep]], prep.reader[ib[keep]]
    matches = np.zeros((n_rd, n_rd))
    np.add.at(matches, (ra, rb), 1)
    matches = matches + matches.T
    # boxes of reader a on images that reader b also read
    read = np.zeros((len(prep.image_ids), n_rd), dtype=bool)
    read[prep.read_image, prep.read_reader] = True
    shared = read.T.astype(np.int64) @ read.astype(np.int64)
    per_reader_image = np.zeros((n_rd, len(prep.image_ids)))
    np.add.at(per_reader_image, (prep.reader, prep.image), 1)
    boxes_on = per_reader_image @ read.astype(np.float64)  # [a, b]: a's boxes on b's images
    denom = boxes_on + boxes_on.T
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(
            (shared > 0) & (denom > 0), 2 * matches / np.where(denom > 0, denom, 1), np.nan
        )
    np.fill_diagonal(f1, 1.0)
    index = pd.Index(prep.reader_ids, name="reader")
    return pd.DataFrame(f1, index=index, columns=index.rename(None))
