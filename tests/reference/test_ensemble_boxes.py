"""Cross-check of fuse_boxes against ensemble-boxes' weighted_boxes_fusion.

The two algorithms coincide when every score is 1, the model weights are the readers'
proficiencies, ``conf_type="avg"`` and the boxes are visited in the same order. ensemble-boxes
sorts each label's boxes by score x weight with ``argsort()[::-1]``; with distinct reader
weights the only ties are among one reader's boxes, so each reader's list is laid out such that
ensemble-boxes visits that reader's boxes in our canonical order (by coordinates). Boxes are
given to both in [0, 1] coordinates (ensemble-boxes' convention), so the IoU tests see the same
numbers. ensemble-boxes keeps fused boxes in float32: coordinates agree to 1e-6.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crowdmed.aggregation.detection.box_fusion import fuse_boxes

ensemble_boxes = pytest.importorskip("ensemble_boxes")

COLS = ["xmin", "ymin", "xmax", "ymax"]


def _ensemble_inputs(
    img: pd.DataFrame, readers: list[str], weight: dict[str, float]
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Per-reader lists arranged so ensemble-boxes visits boxes in our canonical order."""
    per_reader: dict[str, list[tuple[int, np.ndarray]]] = {r: [] for r in readers}
    for label, lab in img.groupby("class", sort=True):
        # the value array ensemble-boxes sorts: one entry per box, models in list order
        counts = [int((lab["reader"] == r).sum()) for r in readers]
        values = np.array(
            [1.0 * weight[r] for r, c in zip(readers, counts, strict=True) for _ in range(c)]
        )
        perm = values.argsort()[::-1]
        owner = np.repeat(np.arange(len(readers)), counts)
        for t, r in enumerate(readers):
            mine = lab[lab["reader"] == r]
            if mine.empty:
                continue
            canonical = mine.sort_values(COLS, kind="stable")[COLS].to_numpy()
            block_start = int(np.sum(counts[:t]))
            visited = [
                p - block_start for p in perm if owner[p] == t
            ]  # block positions in visit order
            arranged = np.empty_like(canonical)
            arranged[visited] = canonical
            per_reader[r].extend((int(label), row) for row in arranged)
    boxes, scores, labels = [], [], []
    for r in readers:
        items = per_reader[r]
        boxes.append(np.array([b for _, b in items]).reshape(-1, 4))
        scores.append(np.ones(len(items)))
        labels.append(np.array([lab for lab, _ in items], dtype=float))
    return boxes, scores, labels, np.array([weight[r] for r in readers])


def _compare(frame: pd.DataFrame, weight: dict[str, float], iou_thr: float) -> int:
    """Fuse with both libraries, image by image; return the number of fused boxes compared."""
    ours = fuse_boxes(frame, iou_thr=iou_thr, proficiency=weight)
    boxed = frame.dropna(subset=["class"])
    compared = 0
    for image, img in frame.groupby("image", sort=True):
        readers = sorted(img["reader"].unique())
        b, s, lab, w = _ensemble_inputs(boxed[boxed["image"] == image], readers, weight)
        eb, es, el = ensemble_boxes.weighted_boxes_fusion(
            b, s, lab, weights=w, iou_thr=iou_thr, skip_box_thr=0.0, conf_type="avg"
        )
        theirs = pd.DataFrame(eb, columns=COLS).assign(**{"class": el.astype(int), "score": es})
        mine = ours[ours["image"] == image]
        assert len(mine) == len(theirs), f"image {image}: cluster counts differ"
        theirs = _sorted(theirs)
        mine = _sorted(mine)
        np.testing.assert_array_equal(mine["class"].to_numpy(), theirs["class"].to_numpy())
        np.testing.assert_allclose(mine[COLS].to_numpy(), theirs[COLS].to_numpy(), atol=1e-6)
        # ensemble-boxes' avg confidence is the weighted share of the readers in the cluster
        # (the boxes in it, so compare where each reader gave one box); with equal weights it
        # is our agreement n_readers / readers of the image
        total = sum(weight[r] for r in readers)
        one_each = (mine["n_boxes"] == mine["n_readers"]).to_numpy()
        expected = np.array(
            [sum(weight[r] for r in rs.split(";")) / total for rs in mine["readers"]]
        )
        np.testing.assert_allclose(
            theirs["score"].to_numpy()[one_each], expected[one_each], atol=1e-6
        )
        compared += len(mine)
    return compared


def _sorted(boxes: pd.DataFrame) -> pd.DataFrame:
    """Boxes in a fixed order: class, then coordinates rounded well above float32 noise."""
    key = boxes[COLS].round(4).assign(**{"class": boxes["class"].to_numpy()})
    order = key.sort_values(["class", *COLS], kind="stable").index
    return boxes.loc[order].reset_index(drop=True)


def _random_frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for image in range(int(rng.integers(1, 4))):
        n_readers = int(rng.integers(2, 5))
        centres = rng.uniform(0.2, 0.8, size=(int(rng.integers(1, 4)), 2))
        sizes = rng.uniform(0.05, 0.3, size=(len(centres), 2))
        for r in range(n_readers):
            rows.append({"image": f"i{image}", "reader": f"r{r}"})  # a reading, maybe no box
            for c, (ctr, sz) in enumerate(zip(centres, sizes, strict=True)):
                for _ in range(int(rng.integers(0, 3))):
                    jitter = rng.normal(0, 0.03, size=4)
                    lo = np.clip(ctr - sz / 2 + jitter[:2], 0, 0.9)
                    hi = np.clip(ctr + sz / 2 + jitter[2:], lo + 0.01, 1.0)
                    rows.append(
                        {
                            "image": f"i{image}",
                            "reader": f"r{r}",
                            "class": c % 2,
                            "xmin": lo[0],
                            "ymin": lo[1],
                            "xmax": hi[0],
                            "ymax": hi[1],
                        }
                    )
    return pd.DataFrame(rows, columns=["image", "reader", "class", *COLS])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), iou_thr=st.sampled_from([0.3, 0.4, 0.55]))
def test_matches_weighted_boxes_fusion_on_random_readers(seed: int, iou_thr: float) -> None:
    frame = _random_frame(seed)
    rng = np.random.default_rng(seed + 1)
    readers = sorted(frame["reader"].unique())
    # distinct weights, so the only ties in ensemble-boxes' sort are within one reader
    weight = dict(zip(readers, rng.permutation(np.linspace(0.5, 1.0, len(readers))), strict=True))
    _compare(frame, weight, iou_thr)


def test_equal_weights_give_agreement_confidence() -> None:
    frame = _random_frame(7)
    readers = sorted(frame["reader"].unique())
    # (almost) equal weights: ensemble-boxes' confidence becomes n_readers / n_read
    weight = {r: 1.0 - 1e-9 * i for i, r in enumerate(readers)}
    _compare(frame, weight, 0.4)
    ours = fuse_boxes(frame, iou_thr=0.4, estimate_proficiency=False)
    n_read = frame.groupby("image")["reader"].nunique()
    np.testing.assert_allclose(
        ours["agreement"], ours["n_readers"] / ours["image"].map(n_read).to_numpy()
    )


def test_matches_weighted_boxes_fusion_on_vindr(shared_data) -> None:
    folder = shared_data / "vindr_cxr_boxes_hieupham" / "data" / "VinCXR" / "labels_det"
    if not folder.is_dir():
        pytest.skip("VinDr-CXR reader boxes not found")
    raw = pd.read_csv(folder / "full_allboxes_val.csv")
    images = raw.loc[raw["class_id"] != 14, "image_id"].drop_duplicates().sort_values()[:300]
    raw = raw[raw["image_id"].isin(images)]
    size = raw[["image_width", "image_height", "image_width", "image_height"]].to_numpy(float)
    frame = pd.DataFrame(
        {
            "image": raw["image_id"].to_numpy(),
            "reader": raw["rad_id"].to_numpy(),
            "class": raw["class_id"].to_numpy(),
        }
    )
    frame[COLS] = raw[["x_min", "y_min", "x_max", "y_max"]].to_numpy(float) / size
    frame.loc[raw["class_id"].to_numpy() == 14, ["class", *COLS]] = np.nan  # no finding: a reading
    readers = sorted(frame["reader"].unique())
    weight = {r: 1.0 - 0.02 * i for i, r in enumerate(readers)}
    assert _compare(frame, weight, 0.4) > 300


# ---------------------------------------------------------------------- scored boxes
# With a ``score`` column fuse_boxes is weighted boxes fusion of scored predictions. Random
# continuous scores make every score x weight distinct, so both libraries visit the boxes in
# the same order and the lists are given to ensemble-boxes as they are.


def _compare_scored(
    frame: pd.DataFrame, weight: dict[str, float], iou_thr: float, skip_box_thr: float
) -> int:
    """Fuse scored boxes with both libraries image by image; boxes and scores must agree."""
    readings = frame[["image", "reader"]].drop_duplicates()
    ours = fuse_boxes(
        frame, iou_thr=iou_thr, proficiency=weight, readers=readings, skip_box_thr=skip_box_thr
    )
    assert "score" in ours.columns
    boxed = frame.dropna(subset=["class"])
    compared = 0
    for image, img in readings.groupby("image", sort=True):
        sources = sorted(img["reader"])
        mine = boxed[boxed["image"] == image]
        per = [mine[mine["reader"] == r] for r in sources]
        eb, es, el = ensemble_boxes.weighted_boxes_fusion(
            [p[COLS].to_numpy().reshape(-1, 4) for p in per],
            [p["score"].to_numpy() for p in per],
            [p["class"].to_numpy(float) for p in per],
            weights=[weight[r] for r in sources],
            iou_thr=iou_thr,
            skip_box_thr=skip_box_thr,
            conf_type="avg",
        )
        theirs = pd.DataFrame(eb, columns=COLS).assign(**{"class": el.astype(int), "score": es})
        fused = ours[ours["image"] == image]
        assert len(fused) == len(theirs), f"image {image}: cluster counts differ"
        if not len(fused):
            continue
        a, b = _sorted(fused), _sorted(theirs)
        np.testing.assert_array_equal(a["class"].to_numpy(), b["class"].to_numpy())
        np.testing.assert_allclose(a[COLS].to_numpy(), b[COLS].to_numpy(), atol=1e-6)
        np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), atol=1e-6)
        # agreement keeps its meaning: distinct sources over the sources of the image
        np.testing.assert_allclose(a["agreement"], a["n_readers"] / len(sources))
        compared += len(fused)
    return compared


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    iou_thr=st.sampled_from([0.3, 0.4, 0.55]),
    skip_box_thr=st.sampled_from([0.0, 0.1, 0.3]),
    equal_weights=st.booleans(),
)
def test_scored_boxes_match_weighted_boxes_fusion(
    seed: int, iou_thr: float, skip_box_thr: float, equal_weights: bool
) -> None:
    frame = _random_frame(seed)
    rng = np.random.default_rng(seed + 2)
    frame["score"] = np.where(frame["class"].notna(), rng.uniform(0.01, 1.0, len(frame)), np.nan)
    readers = sorted(frame["reader"].unique())
    w = np.ones(len(readers)) if equal_weights else rng.uniform(0.3, 2.0, len(readers))
    _compare_scored(frame, dict(zip(readers, w, strict=True)), iou_thr, skip_box_thr)


def test_scored_vindr_boxes_match_weighted_boxes_fusion(shared_data) -> None:
    folder = shared_data / "vindr_cxr_boxes_hieupham" / "data" / "VinCXR" / "labels_det"
    if not folder.is_dir():
        pytest.skip("VinDr-CXR reader boxes not found")
    raw = pd.read_csv(folder / "full_allboxes_val.csv")
    images = raw.loc[raw["class_id"] != 14, "image_id"].drop_duplicates().sort_values()[:300]
    raw = raw[raw["image_id"].isin(images)]
    size = raw[["image_width", "image_height", "image_width", "image_height"]].to_numpy(float)
    frame = pd.DataFrame(
        {
            "image": raw["image_id"].to_numpy(),
            "reader": raw["rad_id"].to_numpy(),
            "class": raw["class_id"].to_numpy(),
        }
    )
    frame[COLS] = raw[["x_min", "y_min", "x_max", "y_max"]].to_numpy(float) / size
    frame.loc[raw["class_id"].to_numpy() == 14, ["class", *COLS]] = np.nan
    rng = np.random.default_rng(0)
    frame["score"] = np.where(frame["class"].notna(), rng.uniform(0.01, 1.0, len(frame)), np.nan)
    readers = sorted(frame["reader"].unique())
    weight = dict(zip(readers, rng.uniform(0.5, 1.5, len(readers)), strict=True))
    assert _compare_scored(frame, weight, 0.4, 0.0) > 300
    assert _compare_scored(frame, weight, 0.55, 0.25) > 200


def test_fuse_model_predictions_matches_weighted_boxes_fusion() -> None:
    pytest.importorskip("torch")
    from crowdmed.training.detector import fuse_model_predictions

    rng = np.random.default_rng(3)
    size = 64.0
    frame = _random_frame(11)
    frame = frame.dropna(subset=["class"]).rename(columns={"reader": "model"})
    frame[COLS] *= size  # predictions in pixels
    frame["score"] = rng.uniform(0.01, 1.0, len(frame))
    models = [*sorted(frame["model"].unique()), "silent"]  # a model without predictions
    preds = {m: frame[frame["model"] == m].drop(columns="model") for m in models}
    images = sorted(frame["image"].unique())
    ours = fuse_model_predictions(preds, image_ids=images, iou_thr=0.4, skip_box_thr=0.05)
    for image in images:
        per = [preds[m][preds[m]["image"] == image] for m in models]
        eb, es, el = ensemble_boxes.weighted_boxes_fusion(
            [p[COLS].to_numpy().reshape(-1, 4) / size for p in per],
            [p["score"].to_numpy() for p in per],
            [p["class"].to_numpy(float) for p in per],
            iou_thr=0.4,
            skip_box_thr=0.05,
            conf_type="avg",
        )
        theirs = pd.DataFrame(eb * size, columns=COLS).assign(
            **{"class": el.astype(int), "score": es}
        )
        mine = ours[ours["image"] == image]
        assert len(mine) == len(theirs)
        a, b = _sorted(mine), _sorted(theirs)
        np.testing.assert_allclose(a[COLS].to_numpy(), b[COLS].to_numpy(), atol=1e-4)
        np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), atol=1e-6)
