"""Loaders of real data sets that are not shipped: TUPAC16 alternative labels, ENHANCE ISIC."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crowdmed.data import (
    CrowdLabels,
    IsicCrowd,
    load_isic_crowd,
    load_tupac_alt_labels,
    load_tupac_alt_table,
)
from crowdmed.data.datasets import DATA_ENV

TUPAC = "tupac_mitosis_alt_labels"
ISIC = "enhance_isic_crowd"
TUPAC_HEADER = (
    "anno_id,slide_id,slide_filename,x,y,label_expert1_Christof,label_expert2_Robert,"
    "label_consensus,agreed_class,deleted\n"
)


def _tupac_csv(folder: Path, rows: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tupac_alt_labels_per_cell.csv"
    path.write_text(TUPAC_HEADER + rows)
    return path


def _isic_folder(root: Path, scores: dict[str, list[list[object]]], truth: str) -> Path:
    crowd = root / "0_data" / "crowd"
    crowd.mkdir(parents=True)
    for feature, rows in scores.items():
        lines = ["ID,i,ii,iii"] + [",".join(str(v) for v in r) for r in rows]
        (crowd / f"{feature}.csv").write_text("\n".join(lines) + "\n")
    ext = root / "0_data" / "external"
    ext.mkdir(parents=True)
    (ext / "ISIC-2017_Training_Part3_GroundTruth.csv").write_text(
        "image_id,melanoma,seborrheic_keratosis\n" + truth
    )
    return root


# ------------------------------------------------------------------------- TUPAC, small files


def test_tupac_small_file_to_triplets(tmp_path):
    # 3 cells: agree on mitosis, disagree, expert 2 missing; class 1 = mitosis, 2 = look-alike
    _tupac_csv(
        tmp_path / TUPAC,
        "7,1,a.tif,10,20,1,1,,1,0\n8,1,a.tif,30,40,1,2,2,2,0\n9,2,b.tif,5,6,2,,,2,0\n",
    )
    cl = load_tupac_alt_labels(tmp_path / TUPAC)
    assert isinstance(cl, CrowdLabels)
    assert list(cl.classes) == ["hard_negative", "mitotic_figure"]
    assert list(cl.annotator_ids) == ["expert1", "expert2"]
    assert list(cl.item_ids) == [7, 8, 9]
    np.testing.assert_array_equal(cl.to_dense(), [[1, 1], [1, 0], [0, -1]])
    np.testing.assert_array_equal(cl.gold, [1, 0, 0])
    table = load_tupac_alt_table(tmp_path / TUPAC / "tupac_alt_labels_per_cell.csv")
    assert list(table.columns) == [
        "cell", "slide_id", "slide", "x", "y", "expert1", "expert2", "consensus", "agreed"
    ]  # fmt: skip
    assert table["consensus"].tolist() == [None, "hard_negative", None]
    assert table["expert2"].tolist() == ["mitotic_figure", "hard_negative", None]


def test_tupac_uses_crowdmed_data(tmp_path, monkeypatch):
    _tupac_csv(tmp_path / TUPAC, "1,1,a.tif,1,1,2,2,,2,0\n2,1,a.tif,2,2,1,1,,1,0\n")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert load_tupac_alt_labels().n_items == 2


def test_tupac_missing_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))  # exists, but holds no TUPAC folder
    with pytest.raises(FileNotFoundError, match=r"tupac_mitosis_alt_labels.*does not exist"):
        load_tupac_alt_labels()
    monkeypatch.delenv(DATA_ENV)
    with pytest.raises(FileNotFoundError, match=r"set CROWDMED_DATA"):
        load_tupac_alt_labels()
    with pytest.raises(FileNotFoundError, match=r"`path` .*nowhere.* does not exist"):
        load_tupac_alt_labels(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"tupac_alt_labels_per_cell.csv' is missing"):
        load_tupac_alt_table(tmp_path / "empty")


def test_tupac_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tupac_alt_labels_per_cell.csv").write_text("anno_id,x\n1,2\n")
    with pytest.raises(ValueError, match=r"missing \['slide_id'"):
        load_tupac_alt_table(bad)
    _tupac_csv(tmp_path / "cls", "1,1,a.tif,1,1,3,2,,2,0\n")
    with pytest.raises(ValueError, match=r"'label_expert1_Christof' must hold .* lines \[2\]"):
        load_tupac_alt_table(tmp_path / "cls")
    _tupac_csv(tmp_path / "dup", "1,1,a.tif,1,1,1,2,,2,0\n1,1,a.tif,1,1,1,2,,2,0\n")
    with pytest.raises(ValueError, match=r"'anno_id' must be unique"):
        load_tupac_alt_table(tmp_path / "dup")


# ------------------------------------------------------------------------- TUPAC, real data


def test_tupac_real_data(shared_data, monkeypatch):
    if not (shared_data / TUPAC).is_dir():
        pytest.skip(f"{TUPAC} not in {shared_data}")
    monkeypatch.setenv(DATA_ENV, str(shared_data))
    cl = load_tupac_alt_labels()
    # README: 12,482 cells, 73 images, experts agree on 11,299 cells; expert 2 lacks one label.
    # Bertram et al. 2020: 1,999 mitotic figures and 10,483 hard examples in the final labels.
    assert (cl.n_items, cl.n_annotators, cl.n_labels) == (12482, 2, 12482 * 2 - 1)
    dense = cl.to_dense()
    both = (dense >= 0).all(axis=1)
    assert int((dense[both, 0] == dense[both, 1]).sum()) == 11299
    assert np.bincount(cl.gold).tolist() == [10483, 1999]
    # independent read of the raw CSV: class 1 (mitosis) -> index 1, class 2 -> index 0
    raw = pd.read_csv(shared_data / TUPAC / "tupac_alt_labels_per_cell.csv")
    np.testing.assert_array_equal(cl.item_ids, raw["anno_id"])
    np.testing.assert_array_equal(dense[:, 0], 2 - raw["label_expert1_Christof"])
    np.testing.assert_array_equal(dense[:, 1], (2 - raw["label_expert2_Robert"]).fillna(-1))
    table = load_tupac_alt_table()
    assert table["slide"].nunique() == 73
    assert int(table["consensus"].notna().sum()) == 6308


# ------------------------------------------------------------------------- ISIC, small files


def test_isic_small_folder(tmp_path):
    root = _isic_folder(
        tmp_path / ISIC,
        {
            "asymmetry": [["ISIC_1", 0, 1, 2], ["ISIC_2", 1, "", 1]],
            "border": [["ISIC_1", 3, 4, 5], ["ISIC_2", 0, 0, 8]],
            "color": [["ISIC_1", 1, 1, 1], ["ISIC_2", 2, 3, 4]],
        },
        "ISIC_1,1.0,0.0\nISIC_2,0.0,1.0\nISIC_3,0.0,0.0\n",
    )
    data = load_isic_crowd(root)
    assert isinstance(data, IsicCrowd)
    assert data.source == "crowd"
    assert len(data.scores) == 17  # 18 cells, one empty
    assert data.scores["score"].dtype == np.float64
    assert data.diagnosis.index.tolist() == ["ISIC_1", "ISIC_2"]  # only scored images
    assert data.diagnosis["melanoma"].tolist() == [1, 0]
    wide = data.per_annotator()
    assert list(wide.columns) == ["image_id", "group", "annotator", "asymmetry", "border", "color"]
    row = wide[(wide.image_id == "ISIC_2") & (wide.annotator == "mturk_ii")].iloc[0]
    assert np.isnan(row["asymmetry"])
    assert row["border"] == 0.0
    assert row["color"] == 3.0
    assert list(data.per_annotator(("color",)).columns)[-1:] == ["color"]
    with pytest.raises(ValueError, match=r"\['size'\] are not scored here"):
        data.per_annotator(("color", "size"))


def test_isic_errors(tmp_path, monkeypatch):
    rows = {f: [["ISIC_9", 1, 1, 1]] for f in ("asymmetry", "border", "color")}
    root = _isic_folder(tmp_path / ISIC, rows, "ISIC_1,1.0,0.0\n")
    with pytest.raises(ValueError, match=r"\['ISIC_9'\] .* no ISIC 2017 diagnosis"):
        load_isic_crowd(root)
    with pytest.raises(ValueError, match=r"`source` must be 'crowd' or 'student'; got 'mturk'"):
        load_isic_crowd(root, source="mturk")
    with pytest.raises(FileNotFoundError, match=r"student.*data_types.csv' is missing"):
        load_isic_crowd(root, source="student")
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match=r"enhance_isic_crowd"):
        load_isic_crowd()


# ------------------------------------------------------------------------- ISIC, real data


def test_isic_real_crowd(shared_data, monkeypatch):
    if not (shared_data / ISIC).is_dir():
        pytest.skip(f"{ISIC} not in {shared_data}")
    monkeypatch.setenv(DATA_ENV, str(shared_data))
    data = load_isic_crowd()
    # README: 1,250 ISIC images, 3 MTurk workers, asymmetry/border/colour
    assert data.scores["image_id"].nunique() == 1250
    assert sorted(data.scores["annotator"].unique()) == ["mturk_i", "mturk_ii", "mturk_iii"]
    assert sorted(data.scores["feature"].unique()) == ["asymmetry", "border", "color"]
    assert len(data.scores) == 1250 * 3 * 3
    gt = pd.read_csv(
        shared_data / ISIC / "0_data/external/ISIC-2017_Training_Part3_GroundTruth.csv"
    )
    expected = gt.set_index("image_id").loc[data.diagnosis.index, "melanoma"].astype(int)
    np.testing.assert_array_equal(data.diagnosis["melanoma"], expected)
    raw = pd.read_csv(shared_data / ISIC / "0_data/crowd/border.csv").set_index("ID")
    wide = data.per_annotator().set_index(["image_id", "annotator"])["border"]
    assert wide.loc[("ISIC_0000000", "mturk_iii")] == raw.loc["ISIC_0000000", "iii"]


def test_isic_real_student(shared_data):
    if not (shared_data / ISIC).is_dir():
        pytest.skip(f"{ISIC} not in {shared_data}")
    data = load_isic_crowd(shared_data / ISIC, source="student")
    groups = data.scores.groupby("group")
    assert groups.ngroups == 8
    assert groups["image_id"].nunique().between(96, 100).all()
    assert not data.scores.duplicated(["image_id", "annotator", "feature"]).any()
    assert {"asymmetry", "border", "color"} <= set(data.scores["feature"])
    assert data.diagnosis.index.is_unique
