"""COCO mean average precision of box frames (faster-coco-eval, cross-checked with pycocotools)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from crowdmed.metrics import COCO_IOU_THRESHOLDS, mean_average_precision

pytest.importorskip("faster_coco_eval")

BOX = ["xmin", "ymin", "xmax", "ymax"]


def frame(rows: list[tuple], score: bool = False) -> pd.DataFrame:
    columns = ["image", "class", *BOX] + (["score"] if score else [])
    return pd.DataFrame(rows, columns=columns)


TRUTH = frame(
    [
        ("a", "nodule", 0, 0, 10, 10),
        ("a", "mass", 20, 20, 40, 36),
        ("b", "nodule", 5, 5, 15, 15),
    ]
)

# One class, two true boxes; predictions TP (0.9), FP (0.8), TP (0.7):
# precision 1 up to recall 0.5, then 2/3 -> 101-point AP = (51 * 1 + 50 * 2/3) / 101.
HAND_TRUTH = frame([("a", 0, 0, 0, 10, 10), ("b", 0, 0, 0, 10, 10)])
HAND_PRED = frame(
    [("a", 0, 0, 0, 10, 10, 0.9), ("a", 0, 30, 30, 40, 40, 0.8), ("b", 0, 1, 0, 10, 10, 0.7)],
    score=True,
)
HAND_AP = (51 + 50 * 2 / 3) / 101


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
@pytest.mark.parametrize("thresholds", [0.4, COCO_IOU_THRESHOLDS, (0.5, 0.75)])
def test_perfect_predictions_score_one(backend: str, thresholds: object) -> None:
    if backend == "pycocotools":
        pytest.importorskip("pycocotools")
    pred = TRUTH.assign(score=np.linspace(0.9, 0.5, len(TRUTH)))
    out = mean_average_precision(pred, TRUTH, iou_thresholds=thresholds, backend=backend)
    assert out["map"] == pytest.approx(1.0)
    assert out["per_class"] == pytest.approx({"nodule": 1.0, "mass": 1.0})
    assert out["n_truth"] == 3
    assert out["n_images"] == 2


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_hand_computed_101_point_ap(backend: str) -> None:
    if backend == "pycocotools":
        pytest.importorskip("pycocotools")
    out = mean_average_precision(HAND_PRED, HAND_TRUTH, iou_thresholds=0.5, backend=backend)
    assert out["map"] == pytest.approx(HAND_AP, abs=1e-9)


def test_backends_agree_on_a_random_case() -> None:
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(0)
    rows_t, rows_p = [], []
    for img in range(12):
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(0, 50, 2)
            w, h = rng.uniform(5, 20, 2)
            c = int(rng.integers(3))
            rows_t.append((img, c, x, y, x + w, y + h))
            for _ in range(rng.integers(0, 3)):
                dx, dy, dw, dh = rng.normal(0, 2, 4)
                cp = c if rng.random() < 0.8 else int(rng.integers(3))
                rows_p.append(
                    (img, cp, x + dx, y + dy, x + w + dx + dw, y + h + dy + dh, rng.random())
                )
        rows_p.append((img, int(rng.integers(3)), 60, 60, 70, 70, rng.random()))  # false positive
    truth = frame(rows_t)
    pred = frame(rows_p, score=True)
    for thresholds in (0.4, COCO_IOU_THRESHOLDS):
        a = mean_average_precision(pred, truth, iou_thresholds=thresholds)
        b = mean_average_precision(pred, truth, iou_thresholds=thresholds, backend="pycocotools")
        assert 0.0 < a["map"] < 1.0
        assert a["map"] == pytest.approx(b["map"], abs=1e-9)
        assert a["per_class"] == pytest.approx(b["per_class"], abs=1e-9)


def test_iou_threshold_decides_a_match() -> None:
    truth = frame([("a", 0, 0, 0, 10, 10)])
    # IoU of [0, 0, 10, 10] and [0, 0, 10, 4.5] is 0.45
    pred = frame([("a", 0, 0, 0, 10, 4.5, 0.9)], score=True)
    assert mean_average_precision(pred, truth, iou_thresholds=0.4)["map"] == pytest.approx(1.0)
    assert mean_average_precision(pred, truth, iou_thresholds=0.5)["map"] == 0.0


def test_wrong_class_does_not_match_and_extra_classes_are_nan() -> None:
    truth = frame([("a", 0, 0, 0, 10, 10)])
    pred = frame([("a", 1, 0, 0, 10, 10, 0.9)], score=True)
    out = mean_average_precision(pred, truth, iou_thresholds=0.5)
    assert out["map"] == 0.0
    assert out["per_class"][0] == 0.0
    assert math.isnan(out["per_class"][1])


def test_empty_predictions_and_empty_truth() -> None:
    empty_pred = frame([], score=True)
    assert mean_average_precision(empty_pred, TRUTH)["map"] == 0.0
    out = mean_average_precision(HAND_PRED, frame([]))
    assert math.isnan(out["map"])


def test_max_detections_keeps_the_best_scores() -> None:
    truth = frame([("a", 0, 0, 0, 10, 10)])
    pred = frame([("a", 0, 30, 30, 40, 40, 0.9), ("a", 0, 0, 0, 10, 10, 0.5)], score=True)
    assert mean_average_precision(pred, truth, max_detections=1)["map"] == 0.0
    assert mean_average_precision(pred, truth, max_detections=2)["map"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("pred", "kwargs", "error", "match"),
    [
        (TRUTH, {}, ValueError, r"missing the columns \['score'\]"),
        (HAND_PRED.assign(xmax=-1.0), {}, ValueError, "xmax < xmin"),
        (HAND_PRED, {"iou_thresholds": 1.5}, ValueError, "iou_thresholds"),
        (HAND_PRED, {"backend": "torchmetrics"}, ValueError, "backend"),
        (HAND_PRED.to_dict(), {}, TypeError, "DataFrame"),
    ],
)
def test_bad_input(pred: object, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        mean_average_precision(pred, HAND_TRUTH, **kwargs)  # type: ignore[arg-type]


def test_inputs_are_not_modified() -> None:
    pred = HAND_PRED.copy()
    mean_average_precision(pred, HAND_TRUTH)
    pd.testing.assert_frame_equal(pred, HAND_PRED)


@pytest.mark.parametrize("column", ["image", "class"])
def test_ids_of_different_types_are_an_error(column: str) -> None:
    # Predictions written with text ids scored against truth with integer ids scored 0 silently.
    truth = frame([(1, 0, 0, 0, 10, 10)])
    pred = frame([(1, 0, 0, 0, 10, 10, 0.9)], score=True)
    pred[column] = pred[column].astype(str)
    with pytest.raises(ValueError, match=f"{column}.*astype") as info:
        mean_average_precision(pred, truth, iou_thresholds=0.5)
    assert "\n" not in str(info.value)
    pred[column] = pred[column].astype(int)
    assert mean_average_precision(pred, truth, iou_thresholds=0.5)["map"] == pytest.approx(1.0)
