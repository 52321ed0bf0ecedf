"""Box tables: reading (CSV, TSV, COCO JSON), validation errors, and IoU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crowdmed.data.boxes import BOX_COLUMNS, box_iou, check_boxes, read_boxes


def _frame(**overrides: list) -> pd.DataFrame:
    data = {
        "image": ["a", "a", "b"],
        "reader": ["r1", "r2", "r1"],
        "class": ["nodule", "nodule", "mass"],
        "xmin": [10.0, 12.0, 0.0],
        "ymin": [10.0, 11.0, 5.0],
        "xmax": [50.0, 52.0, 30.0],
        "ymax": [40.0, 41.0, 25.0],
    }
    data.update(overrides)
    return pd.DataFrame(data)


# ---------------------------------------------------------------------- IoU
# (a, b, expected IoU matrix); shapes (n, 4 | 6) x (m, 4 | 6) -> (n, m)
IOU_CASES = [
    ([[0, 0, 2, 2]], [[0, 0, 2, 2]], [[1.0]]),  # identical
    ([[0, 0, 2, 2]], [[1, 0, 3, 2]], [[2 / 6]]),  # half overlap: 2 / (4 + 4 - 2)
    ([[0, 0, 1, 1]], [[1, 1, 2, 2]], [[0.0]]),  # touching corners
    ([[0, 0, 4, 4]], [[1, 1, 2, 2], [5, 5, 6, 6]], [[1 / 16, 0.0]]),  # contained; disjoint
    ([[0, 0, 0, 2, 2, 2]], [[1, 0, 0, 3, 2, 2]], [[4 / 12]]),  # 3-D: 4 / (8 + 8 - 4)
]


@pytest.mark.parametrize(("a", "b", "expected"), IOU_CASES)
def test_box_iou_reference_values(a: list, b: list, expected: list) -> None:
    np.testing.assert_allclose(box_iou(a, b), expected)


def test_box_iou_empty_and_mismatched_dimensions() -> None:
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    with pytest.raises(ValueError, match="both be 2-D"):
        box_iou([[0, 0, 1, 1]], [[0, 0, 0, 1, 1, 1]])
    with pytest.raises(ValueError, match=r"shape \(n_boxes, 4\)"):
        box_iou([[0, 0, 1]], [[0, 0, 1, 1]])


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_box_iou_is_symmetric_bounded_and_one_on_itself(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lo = rng.uniform(0, 10, size=(5, 2))
    boxes = np.hstack([lo, lo + rng.uniform(0.1, 5, size=(5, 2))])
    m = box_iou(boxes, boxes)
    np.testing.assert_allclose(m, m.T)
    np.testing.assert_allclose(np.diag(m), 1.0)
    assert ((m >= 0) & (m <= 1 + 1e-12)).all()


# ---------------------------------------------------------------------- check_boxes
def test_check_boxes_returns_tidy_float_frame_without_modifying_input() -> None:
    frame = _frame()
    before = frame.copy()
    out = check_boxes(frame)
    assert list(out.columns) == ["image", "reader", "class", *BOX_COLUMNS]
    assert all(out[c].dtype == np.float64 for c in BOX_COLUMNS)
    pd.testing.assert_frame_equal(frame, before)


def test_check_boxes_renames_vindr_columns() -> None:
    frame = _frame().rename(
        columns={"image": "image_id", "reader": "rad_id", "class": "class_id", "xmin": "x_min"}
    )
    assert list(check_boxes(frame).columns[:4]) == ["image", "reader", "class", "xmin"]


def test_a_row_without_class_and_coordinates_is_a_reading() -> None:
    frame = pd.concat([_frame(), pd.DataFrame({"image": ["b"], "reader": ["r3"]})])
    out = check_boxes(frame)
    assert out["xmin"].isna().sum() == 1


# (overrides, error type, message pattern); every message names the row and the fix
BAD_CASES = [
    ({"xmax": [5.0, 52.0, 30.0]}, ValueError, r"row 0 \(image 'a', reader 'r1'\).*inverted.*swap"),
    ({"ymax": [40.0, 11.0, 25.0]}, ValueError, r"row 1 .*zero size along y"),
    ({"xmin": [10.0, np.nan, 0.0]}, ValueError, r"row 1 .*empty \(NaN\) \['xmin'\]; fill them"),
    ({"class": ["nodule", None, "mass"]}, ValueError, r"row 1 .*empty \(NaN\) \['class'\]"),
    ({"xmin": ["10", "twelve", "0"]}, TypeError, r"'xmin' must be numeric.*'twelve'"),
    ({"xmax": [np.inf, 52.0, 30.0]}, ValueError, r"row 0 .*infinite"),
    ({"reader": ["r1", None, "r1"]}, ValueError, r"reader is empty in row 1 .*every row needs"),
]


@pytest.mark.parametrize(("overrides", "error", "pattern"), BAD_CASES)
def test_check_boxes_rejects_bad_rows(overrides: dict, error: type, pattern: str) -> None:
    with pytest.raises(error, match="(?i)" + pattern):
        check_boxes(_frame(**overrides))


def test_check_boxes_missing_column() -> None:
    with pytest.raises(ValueError, match=r"missing columns \['ymax'\]"):
        check_boxes(_frame().drop(columns="ymax"))
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        check_boxes(np.zeros((3, 7)))  # type: ignore[arg-type]


def test_check_boxes_outside_image_when_sizes_known() -> None:
    sizes = {"a": (100, 100), "b": (20, 100)}
    with pytest.raises(ValueError, match=r"Row 2 \(image 'b'.*outside the image: xmin=0, xmax=30"):
        check_boxes(_frame(), image_sizes=sizes)
    check_boxes(_frame(), image_sizes={"a": (100, 100), "b": (30, 100)})  # on the border: fine
    with pytest.raises(ValueError, match="No image size is given for image 'b'"):
        check_boxes(_frame(), image_sizes={"a": (100, 100)})
    # image_width / image_height columns are used as sizes
    frame = _frame().assign(image_width=[100, 100, 20], image_height=100)
    with pytest.raises(ValueError, match="outside the image"):
        check_boxes(frame)


def test_check_boxes_unknown_class_and_image() -> None:
    with pytest.raises(ValueError, match=r"Unknown class 'mass' in row 2.*extend `classes`"):
        check_boxes(_frame(), classes=["nodule"])
    check_boxes(_frame(), classes=["nodule", "mass"])
    with pytest.raises(ValueError, match=r"Reader 'r1' is listed for image 'b'.*does not exist"):
        check_boxes(_frame(), images=["a"])


def test_check_boxes_image_folder(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.nii.gz").write_bytes(b"")
    check_boxes(_frame(), images=tmp_path)
    (tmp_path / "b.nii.gz").unlink()
    with pytest.raises(ValueError, match="image 'b'"):
        check_boxes(_frame(), images=tmp_path)


def test_check_boxes_3d_needs_both_z_columns() -> None:
    with pytest.raises(ValueError, match=r"missing columns \['zmax'\]"):
        check_boxes(_frame(zmin=[0.0, 0.0, 0.0]))
    out = check_boxes(_frame(zmin=[0.0, 0.0, 0.0], zmax=[3.0, 3.0, 3.0]))
    assert list(out.columns[-2:]) == ["zmin", "zmax"]
    with pytest.raises(ValueError, match="along z"):
        check_boxes(_frame(zmin=[0.0, 0.0, 4.0], zmax=[3.0, 3.0, 3.0]))


# ---------------------------------------------------------------------- read_boxes
def test_read_boxes_csv_reports_file_line(tmp_path: Path) -> None:
    path = tmp_path / "boxes.csv"
    _frame().to_csv(path, index=False)
    pd.testing.assert_frame_equal(read_boxes(path).reset_index(drop=True), check_boxes(_frame()))
    _frame(xmax=[50.0, 52.0, -1.0]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"Line 4 of boxes.csv \(image 'b', reader 'r1'\)"):
        read_boxes(path)


def test_read_boxes_tsv_and_no_finding_class(tmp_path: Path) -> None:
    path = tmp_path / "boxes.tsv"
    frame = _frame(**{"class": [0, 14, 2]})
    frame.to_csv(path, sep="\t", index=False)
    out = read_boxes(path, no_finding=14)
    assert out["xmin"].isna().tolist() == [False, True, False]
    assert out["class"].dropna().tolist() == [0, 2]


def test_read_boxes_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_boxes(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        read_boxes(tmp_path / "empty.csv")


def test_read_boxes_coco_json(tmp_path: Path) -> None:
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
            {"id": 2, "file_name": "b.png", "width": 100, "height": 80},
        ],
        "categories": [{"id": 7, "name": "nodule"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 40, 30], "reader": "r1"},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [12, 11, 40, 30], "reader": "r2"},
        ],
        "readings": [{"image_id": 2, "reader": "r1"}],
    }
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(coco))
    out = read_boxes(path)
    assert out["image"].tolist() == ["a", "a", "b"]
    assert out[["xmin", "xmax"]].iloc[0].tolist() == [10.0, 50.0]
    assert out["class"].iloc[0] == "nodule"
    coco["annotations"][1]["bbox"] = [90, 11, 40, 30]  # beyond the 100-pixel width
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r"Annotation 1 of boxes.json .*outside the image"):
        read_boxes(path)
    del coco["annotations"][1]["reader"]
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="has no 'reader' field"):
        read_boxes(path)
    coco["annotations"][1].update(reader="r2", image_id=3)
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="Reader 'r2' is listed for image 3"):
        read_boxes(path)


@pytest.mark.parametrize("column", ["class", "image", "reader"])
def test_ids_that_differ_only_in_type_are_an_error(column: str) -> None:
    # 0 and "0" print the same but would silently become two classes (or images, readers).
    values = {"class": [0, "0", 1], "image": [1, "1", 2], "reader": [7, "7", 7]}[column]
    with pytest.raises(ValueError, match=rf"{column}.*'0'|{column}.*'1'|{column}.*'7'") as info:
        check_boxes(_frame(**{column: values}))
    message = str(info.value)
    assert "\n" not in message
    assert "one type" in message


def test_float_and_int_ids_of_one_value_are_one_class() -> None:
    out = check_boxes(_frame(**{"class": [1.0, 1.0, 2.0]}))
    assert out["class"].tolist() == [1, 1, 2]
