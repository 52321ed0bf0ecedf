"""The one table reader: ids kept as text, missing labels, odd labels, roles, file errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crowdmed._tables import parse_class_list, parse_labels, read_table, resolve_columns
from crowdmed.data.boxes import read_boxes
from crowdmed.data.io import from_long_frame, read_labels, read_quiz, read_wide


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------- ids as written
@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_ids_survive_byte_for_byte(tmp_path: Path, suffix: str) -> None:
    sep = "," if suffix == ".csv" else "\t"
    rows = [("007", "01", "0"), ("7", "1", "1"), ("1", "01", "1"), ("01", "1", "0"),
            ("1.0", "01", "1"), ("NA", "null", "0")]  # fmt: skip
    text = sep.join(["item", "annotator", "label"]) + "\n"
    text += "".join(sep.join(r) + "\n" for r in rows)
    cl = read_labels(_write(tmp_path / f"labels{suffix}", text))
    assert cl.item_ids.tolist() == ["007", "7", "1", "01", "1.0", "NA"]
    assert cl.annotator_ids.tolist() == ["01", "1", "null"]
    assert cl.n_labels == 6


def test_parquet_ids_become_text(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    df = pd.DataFrame({"item": ["007", "7", "1.0"], "annotator": [1, 2, 1], "label": [0, 1, 1]})
    df.to_parquet(tmp_path / "labels.parquet", index=False)
    cl = read_labels(tmp_path / "labels.parquet")
    assert cl.item_ids.tolist() == ["007", "7", "1.0"]
    assert cl.annotator_ids.tolist() == ["1", "2"]
    assert cl.classes.tolist() == [0, 1]


def test_wide_and_quiz_ids_survive(tmp_path: Path) -> None:
    wide = _write(tmp_path / "wide.csv", "item,01,1\n007,1,0\n7,1,\n")
    cl = read_wide(wide)
    assert cl.item_ids.tolist() == ["007", "7"]
    assert cl.annotator_ids.tolist() == ["01", "1"]
    quiz = _write(tmp_path / "quiz.csv", "annotator,quiz_accuracy\n1,0.5\n01,0.9\n")
    assert read_quiz(quiz, cl.annotator_ids).tolist() == [0.9, 0.5]


def test_box_and_coco_ids_survive(tmp_path: Path) -> None:
    table = _write(
        tmp_path / "boxes.csv",
        "image,reader,class,xmin,ymin,xmax,ymax\n007,01,0,1,1,5,5\n7,1,0,1,1,5,5\n",
    )
    boxes = read_boxes(table)
    assert boxes["image"].tolist() == ["007", "7"]
    assert boxes["reader"].tolist() == ["01", "1"]
    coco = {
        "images": [{"id": 1, "file_name": "007.png", "width": 10, "height": 10}],
        "categories": [{"id": 3, "name": "nodule"}],
        "annotations": [{"image_id": 1, "category_id": 3, "bbox": [1, 1, 2, 2], "reader": 1}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    boxes = read_boxes(tmp_path / "coco.json")
    assert boxes[["image", "reader", "class"]].iloc[0].tolist() == ["007", "1", "nodule"]


def test_byte_order_mark_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(b"\xef\xbb\xbfitem,annotator,label\na,r1,0\na,r2,1\n")
    assert read_labels(path).item_ids.tolist() == ["a"]


# ---------------------------------------------------------------------- missing labels
def test_minus_one_and_empty_are_missing_in_long_and_wide_files(tmp_path: Path) -> None:
    long = _write(tmp_path / "long.csv", "item,annotator,label\na,r1,0\na,r2,-1\nb,r1,\nb,r2,1\n")
    cl = read_labels(long)
    assert cl.classes.tolist() == [0, 1]
    assert cl.to_dense().tolist() == [[0, -1], [-1, 1]]
    wide = _write(tmp_path / "wide.csv", "item,r1,r2\na,0,-1\nb,,1\n")
    cl = read_wide(wide)
    assert cl.classes.tolist() == [0, 1]
    assert cl.to_dense().tolist() == [[0, -1], [-1, 1]]


def test_gold_minus_one_is_unknown(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.csv", "item,annotator,label,gold\na,r1,0,0\nb,r1,1,-1\nc,r1,1,\n")
    assert read_labels(path).gold.tolist() == [0, -1, -1]


# ---------------------------------------------------------------------- odd labels
@pytest.mark.parametrize(
    ("odd", "pattern"),
    [
        ("cat", r"labels \['cat'\] that are text among numbers \(line 5\)"),
        ("0.5", r"labels \['0.5'\] that are not whole numbers .*\(line 5\)"),
        ("inf", r"non-finite labels \['inf'\] \(line 5\)"),
        ("NaN", r"non-finite labels \['NaN'\] \(line 5\)"),
    ],
)
def test_a_stray_label_is_an_error_naming_it(tmp_path: Path, odd: str, pattern: str) -> None:
    text = f"item,annotator,label\na,r1,0\na,r2,1\nb,r1,1\nb,r2,{odd}\n"
    with pytest.raises(ValueError, match=r"Column 'label' of '.*labels\.csv' has " + pattern):
        read_labels(_write(tmp_path / "labels.csv", text))


def test_declared_classes(tmp_path: Path) -> None:
    path = _write(tmp_path / "labels.csv", "item,annotator,label\na,r1,0\na,r2,1.0\nb,r1,1\n")
    cl = read_labels(path, classes=[0, 1, 2])
    assert cl.classes.tolist() == [0, 1, 2]
    assert cl.to_dense().tolist() == [[0, 1], [1, -1]]
    with pytest.raises(ValueError, match=r"labels \['1', '1.0'\] outside the classes \[0, 2\]"):
        read_labels(path, classes=[0, 2])


def test_parse_labels_table() -> None:
    cases = [
        # (cells, classes, codes, class values)
        (["b", "a", "", "-1"], None, [1, 0, -1, -1], ["a", "b"]),
        (["2", "10", "2.0"], None, [0, 1, 0], [2, 10]),  # numbers sort as numbers
        (["0.5", "1.5"], None, [0, 1], [0.5, 1.5]),
        (["x", "y"], ["y", "x"], [1, 0], ["y", "x"]),
        ([" 1 ", "0"], None, [1, 0], [0, 1]),
    ]
    for cells, classes, codes, values in cases:
        got_codes, got_classes = parse_labels(pd.Series(cells, dtype=object), classes)
        assert got_codes.tolist() == codes
        assert got_classes.tolist() == values


def test_parse_class_list() -> None:
    assert parse_class_list(["0,1", "2"]) == [0, 1, 2]
    assert parse_class_list(["low, high"]) == ["low", "high"]
    assert parse_class_list(None) is None


# ---------------------------------------------------------------------- column roles
def test_a_column_with_two_roles_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "labels.csv", "item,annotator,label\na,r1,0\nb,r1,1\n")
    with pytest.raises(ValueError, match=r"Column 'item' is used as both the item and the label"):
        read_labels(path, label="item")
    with pytest.raises(ValueError, match=r"both the annotator and the item column"):
        resolve_columns(["item", "annotator", "label"], {"annotator": None, "item": "annotator"})


# ---------------------------------------------------------------------- file errors
def test_file_errors_name_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "labels.csv"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"'.*labels\.csv' is a folder with no Parquet files"):
        read_labels(folder)
    with pytest.raises(ValueError, match=r"'.*labels\.csv' is a folder, not a file"):
        read_table(folder, folder=False)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("item,annotator,label\nJos\xe9,r1,0\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"'.*latin\.csv' is not UTF-8 text \(byte 0xe9"):
        read_labels(latin)
    bad = _write(tmp_path / "bad.csv", "item,annotator,label\na,r1,0\nb,r1,1,extra,more\n")
    with pytest.raises(ValueError, match=r"'.*bad\.csv' is not a valid table: .*line 3"):
        read_labels(bad)
    empty = _write(tmp_path / "empty.csv", "")
    with pytest.raises(ValueError, match=r"'.*empty\.csv' is empty"):
        read_labels(empty)


def test_messages_show_plain_numbers() -> None:
    df = pd.DataFrame({"item": np.array([1, 1]), "annotator": ["a", "a"], "label": [0, 1]})
    with pytest.raises(ValueError, match=r"pair must occur once") as info:
        from_long_frame(df)
    assert "np." not in str(info.value)


def test_parameter_messages_show_plain_numbers() -> None:
    from crowdmed.aggregation import DawidSkene

    labels = np.array([[0, 1], [1, 1]])
    with pytest.raises(ValueError, match=r"`max_iter` of DawidSkene must be .*; got -1\.$"):
        DawidSkene(max_iter=np.int64(-1)).fit(labels)


def test_write_errors_name_the_output_not_the_temporary_file(tmp_path: Path) -> None:
    from crowdmed._io import atomic_path

    out = tmp_path / "consensus.csv"
    with (
        pytest.raises(ValueError, match=r"^cannot write .*/consensus\.csv$"),
        atomic_path(out) as tmp,
    ):
        raise ValueError(f"cannot write {tmp}")
    with pytest.raises(OSError, match=r"consensus\.csv/inside'$") as info, atomic_path(out) as tmp:
        open(tmp / "inside", "w")  # noqa: SIM115  # the temporary file is not a folder
    assert ".tmp" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
