"""Mean average precision of boxes by the COCO evaluator (faster-coco-eval or pycocotools).

Boxes are frames with columns ``image, class, xmin, ymin, xmax, ymax`` in absolute pixels
(corner mode, ``xmax - xmin = width``); predictions also have a ``score`` column. The frames
are converted to COCO dictionaries and evaluated by the COCO protocol: greedy matching by
score at each IoU threshold (a prediction matches when IoU >= threshold), precision
interpolated at 101 recall points, all object areas, at most ``max_detections`` per image.
AP is averaged over the thresholds, then over the classes that have at least one true box
(classes with predictions only are reported as NaN and left out of the mean, as in COCO).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from crowdmed._box_table import same_text_ids

__all__ = ["COCO_IOU_THRESHOLDS", "mean_average_precision"]

#: The COCO thresholds 0.50, 0.55, ..., 0.95 of ``mAP@[.5:.95]``.
COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.linspace(0.5, 0.95, 10), 2).tolist())

_BOX = ["xmin", "ymin", "xmax", "ymax"]

higher_is_better = True


def _check_frame(frame: Any, name: str, score: str | None) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"`{name}` must be a pandas DataFrame; got {type(frame).__name__}.")
    needed = ["image", "class", *_BOX] + ([score] if score else [])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(
            f"`{name}` is missing the columns {missing}; it needs {needed} (absolute pixels)."
        )
    boxes = frame[_BOX].to_numpy(dtype=np.float64)
    if not np.isfinite(boxes).all():
        raise ValueError(f"`{name}` has non-finite box coordinates; drop or fix those rows.")
    bad = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if bad.size:
        raise ValueError(
            f"`{name}` has boxes with xmax < xmin or ymax < ymin (rows {bad[:5].tolist()}); "
            "use corner mode xmin, ymin, xmax, ymax."
        )
    if score and not np.isfinite(frame[score].to_numpy(dtype=np.float64)).all():
        raise ValueError(f"`{name}` has non-finite values in column '{score}'.")
    return frame


def _coco_backend(backend: str) -> tuple[Any, Any]:
    if backend == "faster_coco_eval":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError as exc:
            raise ImportError(
                "mean_average_precision needs faster-coco-eval: pip install 'crowdmed[detection]' "
                "(or pass backend='pycocotools')."
            ) from exc
        return COCO, COCOeval_faster
    if backend == "pycocotools":
        try:
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        except ImportError as exc:
            raise ImportError(
                "backend='pycocotools' needs pycocotools: pip install pycocotools."
            ) from exc
        return COCO, COCOeval
    raise ValueError(f"`backend` must be 'faster_coco_eval' or 'pycocotools'; got {backend!r}.")


def _key(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _check_same_id_types(pred: pd.DataFrame, gt: pd.DataFrame) -> None:
    """Refuse image or class ids that are text on one side and numbers on the other."""
    for col in ("image", "class"):
        clash = same_text_ids(pd.unique(gt[col]), pd.unique(pred[col]))
        if clash is not None:
            a, b = (_key(v) for v in clash)
            text, other = (a, b) if isinstance(a, str) else (b, a)
            raise ValueError(
                f"Column '{col}' holds {text!r} (text) and {other!r} ({type(other).__name__}), "
                f"which would count as two different {col} ids; give `predictions` and `truth` "
                f"one type, e.g. predictions['{col}'] = predictions['{col}'].astype(str) or "
                f".astype({type(other).__name__})."
            )


def _boxes_xywh(frame: pd.DataFrame) -> np.ndarray:
    b = frame[_BOX].to_numpy(dtype=np.float64)
    return np.column_stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]])


def _coco_evaluate(
    pred: pd.DataFrame,
    gt: pd.DataFrame,
    score_column: str,
    img_id: dict[Any, int],
    cat_id: dict[Any, int],
    thresholds: np.ndarray,
    max_detections: int,
    coco_cls: Any,
    eval_cls: Any,
) -> Any:
    """The COCO evaluator run on the boxes (evaluated and accumulated)."""
    gt_boxes = _boxes_xywh(gt)
    dataset = {
        "images": [{"id": i} for i in img_id.values()],
        "categories": [{"id": i} for i in cat_id.values()],
        "annotations": [
            {
                "id": n + 1,
                "image_id": img_id[_key(im)],
                "category_id": cat_id[_key(c)],
                "bbox": box.tolist(),
                "area": float(box[2] * box[3]),
                "iscrowd": 0,
            }
            for n, (im, c, box) in enumerate(zip(gt["image"], gt["class"], gt_boxes, strict=True))
        ],
    }
    quiet = contextlib.redirect_stdout(io.StringIO())  # pycocotools prints progress
    with quiet:
        coco_gt = coco_cls()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
    dets = [
        {
            "image_id": img_id[_key(im)],
            "category_id": cat_id[_key(c)],
            "bbox": box.tolist(),
            "score": float(s),
        }
        for im, c, box, s in zip(
            pred["image"], pred["class"], _boxes_xywh(pred), pred[score_column], strict=True
        )
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(dets)
        evaluator = eval_cls(coco_gt, coco_dt, "bbox")
        evaluator.params.iouThrs = thresholds
        evaluator.params.maxDets = [int(max_detections)]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def mean_average_precision(
    predictions: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    iou_thresholds: float | Sequence[float] = COCO_IOU_THRESHOLDS,
    max_detections: int = 100,
    score_column: str = "score",
    backend: Literal["faster_coco_eval", "pycocotools"] = "faster_coco_eval",
) -> dict[str, Any]:
    """COCO mean average precision of predicted boxes against true boxes.

    Args:
        predictions: Frame with columns ``image, class, xmin, ymin, xmax, ymax`` and
            ``score_column``; one row per predicted box.
        truth: Frame with columns ``image, class, xmin, ymin, xmax, ymax``; one row per true
            box. Images without true boxes count only when they have predictions.
        iou_thresholds: One IoU threshold (e.g. ``0.4``) or several; the COCO thresholds
            ``0.50:0.05:0.95`` by default.
        max_detections: Highest-scoring predictions kept per image.
        score_column: Column of ``predictions`` holding the score.
        backend: ``"faster_coco_eval"`` or ``"pycocotools"``; both give the same numbers.

    Returns:
        A dict with ``map`` (float; NaN when ``truth`` is empty), ``per_class`` (class ->
        AP, NaN for classes without true boxes), ``iou_thresholds``, ``n_images``,
        ``n_truth``, ``n_predictions`` and ``backend``.

    Raises:
        TypeError: When an input is not a DataFrame.
        ValueError: For missing columns, non-finite values or reversed boxes.
        ImportError: When the backend is not installed.
    """
    pred = _check_frame(predictions, "predictions", score_column)
    gt = _check_frame(truth, "truth", None)
    _check_same_id_types(pred, gt)
    thresholds = np.atleast_1d(np.asarray(iou_thresholds, dtype=np.float64))
    if thresholds.ndim != 1 or not np.all((thresholds > 0) & (thresholds <= 1)):
        raise ValueError(f"`iou_thresholds` must lie in (0, 1]; got {thresholds.tolist()}.")
    if max_detections < 1:
        raise ValueError(f"`max_detections` must be positive; got {max_detections}.")
    coco_cls, eval_cls = _coco_backend(backend)

    images = list(dict.fromkeys([_key(v) for v in gt["image"]] + [_key(v) for v in pred["image"]]))
    classes = list(dict.fromkeys([_key(v) for v in gt["class"]] + [_key(v) for v in pred["class"]]))
    with_truth = {_key(v) for v in gt["class"]}
    img_id = {v: i + 1 for i, v in enumerate(images)}
    cat_id = {v: i + 1 for i, v in enumerate(classes)}
    result: dict[str, Any] = {
        "map": float("nan"),
        "per_class": {c: float("nan") for c in classes},
        "iou_thresholds": thresholds.tolist(),
        "n_images": len(images),
        "n_truth": len(gt),
        "n_predictions": len(pred),
        "backend": backend,
    }
    if len(gt) == 0:
        return result
    if len(pred) == 0:
        result["per_class"] = {c: (0.0 if c in with_truth else float("nan")) for c in classes}
        result["map"] = 0.0
        return result

    evaluator = _coco_evaluate(
        pred, gt, score_column, img_id, cat_id, thresholds, max_detections, coco_cls, eval_cls
    )
    # precision: (n_thresholds, 101 recall points, n_classes, n_areas, n_max_dets); -1 = none
    precision = np.asarray(evaluator.eval["precision"])[:, :, :, 0, -1]
    per_class: dict[Any, float] = {}
    for c in classes:
        k = list(evaluator.params.catIds).index(cat_id[c])
        values = precision[:, :, k]
        per_class[c] = float(values[values > -1].mean()) if c in with_truth else float("nan")
    result["per_class"] = per_class
    result["map"] = float(np.nanmean([per_class[c] for c in classes if c in with_truth]))
    return result
