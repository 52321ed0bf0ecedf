"""``crowdmed boxes fuse`` on small box tables in tmp_path (in-process and as a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from crowdmed import __version__
from crowdmed.aggregation.detection.box_fusion import fuse_boxes
from crowdmed.cli import app
from crowdmed.data.boxes import read_boxes


def test_fuse_writes_consensus_readers_pairwise_and_record(
    runner: CliRunner, boxes_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "fused.csv"
    result = runner.invoke(
        app,
        [
            "boxes", "fuse", str(boxes_csv), "--out", str(out), "--no-finding", "14",
            "--readers-out", str(tmp_path / "readers.tsv"),
            "--pairwise-out", str(tmp_path / "pairwise.csv"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    fused = pd.read_csv(out)
    expected = fuse_boxes(read_boxes(boxes_csv, no_finding=14), estimate_proficiency=True)
    np.testing.assert_allclose(fused[["xmin", "ymax"]], expected[["xmin", "ymax"]])
    assert fused["agreement"].tolist() == pytest.approx([1.0, 2 / 3])  # r2 read b, no box
    assert fused["confidence"].tolist() == [3.0, 2.0]  # boxes in the cluster
    # the summary line reports the share of readers as agreement, not the box count
    assert "mean agreement 0.833 of the readers" in " ".join(result.output.split())
    assert "mean confidence 2.50 boxes" in " ".join(result.output.split())
    readers = pd.read_csv(tmp_path / "readers.tsv", sep="\t")
    assert readers["reader"].tolist() == ["r1", "r2", "r3"]
    assert readers.loc[1, "sensitivity"] == 0.5
    pairwise = pd.read_csv(tmp_path / "pairwise.csv", index_col=0)
    assert pairwise.loc["r1", "r3"] == 1.0
    record = json.loads((tmp_path / "out" / "fused.csv.json").read_text())
    assert record["crowdmed_version"] == __version__
    assert record["params"]["iou_thr"] == 0.4
    assert record["params"]["proficiency"] == "estimated"
    assert record["data"]["n_boxes"] == 5
    assert len(record["input"]["sha256"]) == 64


def test_fuse_with_given_proficiency(runner: CliRunner, boxes_csv: Path, tmp_path: Path) -> None:
    prof = tmp_path / "prof.csv"
    pd.DataFrame({"reader": ["r1", "r2", "r3"], "proficiency": [2.0, 1.0, 1.0]}).to_csv(
        prof, index=False
    )
    out = tmp_path / "fused.csv"
    args = ["boxes", "fuse", str(boxes_csv), "-o", str(out), "--proficiency", str(prof)]
    result = runner.invoke(app, [*args, "--no-finding", "14", "--iou", "0.5"])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out)["xmin"].iloc[0] == pytest.approx((2 * 10 + 12 + 11) / 4)
    assert json.loads(out.with_name("fused.csv.json").read_text())["params"]["proficiency"] == (
        "given"
    )


@pytest.mark.parametrize(
    ("edit", "extra", "message"),
    [
        (lambda f: f.assign(x_max=f["x_max"].where(f.index != 1, 5)), [], "Line 3 of readers"),
        (lambda f: f.assign(x_max=f["x_max"].where(f.index != 0, 500)), [], "outside the image"),
        (lambda f: f.drop(columns="y_max"), [], "missing columns"),
        (lambda f: f, ["--classes", "0,1"], "Unknown class 14"),
        (lambda f: f, ["--iou", "1.2"], "`--iou` must be"),
    ],
)
def test_bad_input_writes_nothing_and_exits_2(
    runner: CliRunner, boxes_csv: Path, tmp_path: Path, edit, extra: list[str], message: str
) -> None:
    edit(pd.read_csv(boxes_csv)).to_csv(boxes_csv, index=False)
    out = tmp_path / "new" / "fused.csv"
    result = runner.invoke(
        app,
        ["boxes", "fuse", str(boxes_csv), "-o", str(out), "--readers-out",
         str(tmp_path / "new" / "r.csv"), *extra],
    )  # fmt: skip
    assert result.exit_code == 2
    assert message in result.output
    assert result.output.count("\n") == 1  # one line
    assert not (tmp_path / "new").exists()


def test_images_folder_check(runner: CliRunner, boxes_csv: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    result = runner.invoke(
        app,
        ["boxes", "fuse", str(boxes_csv), "-o", str(tmp_path / "f.csv"), "--images", str(folder)],
    )
    assert result.exit_code == 2
    assert "image 'b'" in result.output
    assert "does not exist" in result.output
    assert not (tmp_path / "f.csv").exists()


def test_subprocess(boxes_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "fused.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "crowdmed", "boxes", "fuse", str(boxes_csv), "-o", str(out),
         "--equal-weights", "--no-finding", "14"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "consensus boxes" in proc.stderr
    assert len(pd.read_csv(out)) == 2


@pytest.mark.parametrize(
    "option", [["-o", "fused.json"], ["-o", "f.csv", "--readers-out", "readers.parquet"]]
)
def test_table_outputs_must_be_csv_or_tsv(
    runner: CliRunner, boxes_csv: Path, tmp_path: Path, option: list[str]
) -> None:
    # Writing CSV text into a file named .json or .parquet would mislead every later reader.
    args = [a if a.startswith("-") else str(tmp_path / a) for a in option]
    before = set(tmp_path.iterdir())
    res = runner.invoke(app, ["boxes", "fuse", str(boxes_csv), *args])
    assert res.exit_code == 2, res.output
    assert "must be a .csv or .tsv table" in res.output.replace("\n", " ")
    assert set(tmp_path.iterdir()) == before


def test_iou_thr_spelling_matches_train(runner: CliRunner, boxes_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "fused.csv"
    res = runner.invoke(app, ["boxes", "fuse", str(boxes_csv), "-o", str(out), "--iou-thr", "0.5"])
    assert res.exit_code == 0, res.output
    record = json.loads(out.with_name("fused.csv.json").read_text())
    assert record["params"]["iou_thr"] == 0.5


# ---------------------------------------------------------------------- input regressions
_HEADER = "image,reader,class,xmin,ymin,xmax,ymax"


def _fuse(tmp_path: Path, text: str, *extra: str, name: str = "boxes.csv") -> tuple:
    path = tmp_path / name
    path.write_text(text)
    out = tmp_path / "fused.csv"
    result = CliRunner().invoke(app, ["boxes", "fuse", str(path), "-o", str(out), *extra])
    return result, out


def test_fuse_uses_the_score_column(tmp_path: Path) -> None:
    text = (
        f"{_HEADER},score\n"
        "a,m1,0,10,10,50,40,0.9\n"
        "a,m2,0,20,10,60,40,0.1\n"
    )  # fmt: skip
    result, out = _fuse(tmp_path, text, "--equal-weights")
    assert result.exit_code == 0, result.output
    fused = pd.read_csv(out)
    # the fused box is the score-weighted mean: 0.9 * 10 + 0.1 * 20
    assert fused["xmin"].tolist() == pytest.approx([11.0])
    frame = pd.read_csv(tmp_path / "boxes.csv")
    expected = fuse_boxes(frame, estimate_proficiency=False)
    assert fused["score"].tolist() == pytest.approx(expected["score"].tolist())


@pytest.mark.parametrize(
    ("score", "shown"), [("nan", "nan"), ("-0.2", "-0.2"), ("1.5", "1.5"), ("inf", "inf")]
)
def test_fuse_refuses_bad_scores(tmp_path: Path, score: str, shown: str, user_error) -> None:
    text = f"{_HEADER},score\na,m1,0,10,10,50,40,0.9\na,m2,0,20,10,60,40,{score}\n"
    result, out = _fuse(tmp_path, text)
    user_error(result, rf"[Ll]ine 3 of boxes\.csv .*has score {shown}.* in \[0, 1\]")
    assert not out.exists()


def test_fuse_keeps_ids_as_written(tmp_path: Path) -> None:
    text = (
        f"{_HEADER}\n"
        "007,01,0,10,10,50,40\n"
        "007,1,0,11,10,51,40\n"
        "7,01,0,10,10,50,40\n"
        "7.0,01,0,10,10,50,40\n"
    )  # fmt: skip
    result, out = _fuse(tmp_path, text, "--equal-weights")
    assert result.exit_code == 0, result.output
    fused = pd.read_csv(out, dtype=str)
    assert sorted(fused["image"]) == ["007", "7", "7.0"]  # three images, as written
    readers = fused.set_index("image")["readers"]
    assert set(readers["007"].split(";")) == {"01", "1"}


def test_fuse_refuses_negative_coordinates_and_boxes_outside_the_images(
    tmp_path: Path, user_error
) -> None:
    result, _ = _fuse(tmp_path, f"{_HEADER}\na,r1,0,-3,10,50,40\na,r2,0,10,10,50,40\n")
    user_error(result, r"[Ll]ine 2 of boxes\.csv .*negative coordinate: xmin=-3")
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((40, 60), dtype=np.uint8)).save(images / "a.png")  # 60 x 40
    text = f"{_HEADER}\na,r1,0,10,10,50,40\na,r2,0,10,10,70,40\n"
    result, out = _fuse(tmp_path, text, "--images", str(images))
    user_error(
        result, r"[Ll]ine 3 of boxes\.csv .*outside the image: xmin=10, xmax=70 .*width is 60"
    )
    assert not out.exists()
    ok = f"{_HEADER}\na,r1,0,10,10,50,40\na,r2,0,10,10,60,40\n"
    result, out = _fuse(tmp_path, ok, "--images", str(images))
    assert result.exit_code == 0, result.output


def test_fuse_refuses_a_coco_category_not_in_categories(tmp_path: Path, user_error) -> None:
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "nodule"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "reader": "r1"},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5], "reader": "r2"},
        ],
    }
    result, _ = _fuse(tmp_path, json.dumps(coco), name="boxes.json")
    user_error(result, r"Annotation 1 \(id 2\) of '.*boxes\.json' has category_id 7, which is not")


def test_fuse_names_a_folder_given_as_the_box_file(tmp_path: Path, user_error) -> None:
    (tmp_path / "boxes.csv").mkdir()
    result = CliRunner().invoke(
        app, ["boxes", "fuse", str(tmp_path / "boxes.csv"), "-o", str(tmp_path / "f.csv")]
    )
    user_error(result, r"'.*boxes\.csv' is a folder, not a file")
