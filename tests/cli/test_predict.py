"""``crowdmed predict`` on segmentation and detection models: the output of ``--predict``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("monai")
PIL_Image = pytest.importorskip("PIL.Image")

from crowdmed.cli import app  # noqa: E402

BOX = ["xmin", "ymin", "xmax", "ymax"]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def seg(seg_model: Path, seg_cases: dict[str, Path]) -> dict[str, Path]:
    return {"root": seg_cases["images"].parent, "model": seg_model, "new": seg_cases["new"]}


@pytest.fixture
def det(det_model: Path, box_readers: dict[str, Path]) -> dict[str, Path]:
    return {"root": box_readers["images"].parent, "model": det_model, "new": box_readers["new"]}


def _predict(model: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["predict", str(model), *args])


def test_segmentation_predict_matches_train_predict(seg: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "masks"
    res = _predict(seg["model"], "--images", str(seg["new"]), "--out", str(out))
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (seg["model"] / "predictions").iterdir())
    assert sorted(p.name for p in out.glob("*.png")) == names == ["case0.png", "case1.png"]
    values: set[int] = set()
    for name in names:
        got = np.asarray(PIL_Image.open(out / name))
        want = np.asarray(PIL_Image.open(seg["model"] / "predictions" / name))
        assert got.shape == PIL_Image.open(seg["new"] / name).size[::-1]
        np.testing.assert_array_equal(got, want)
        values |= set(np.unique(want).tolist())
    assert values == {0, 1}  # real label maps, not all background: the comparison can fail
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "predictions.csv"), pd.read_csv(seg["model"] / "predictions.csv")
    )
    record = json.loads((tmp_path / "masks.json").read_text())
    assert record["task"] == "segmentation"
    assert record["n_items"] == 2
    assert record["command"] == "predict"
    assert record["model"]["sha256"]
    # predicting again into the same folder replaces the earlier label maps
    (tmp_path / "fewer").mkdir()
    shutil.copy(seg["new"] / "case0.png", tmp_path / "fewer" / "case0.png")
    res = _predict(seg["model"], "--images", str(tmp_path / "fewer"), "--out", str(out))
    assert res.exit_code == 0, res.output
    assert _files(out) == {"case0.png", "predictions.csv"}
    assert len(pd.read_csv(out / "predictions.csv")) == 1


def test_detection_predict_matches_train_predict(det: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "boxes.csv"
    res = _predict(det["model"], "--images", str(det["new"]), "--out", str(out))
    assert res.exit_code == 0, res.output
    got, want = pd.read_csv(out), pd.read_csv(det["model"] / "predictions.csv")
    assert list(got.columns) == ["image", "class", *BOX, "score"]
    assert len(got) > 0
    pd.testing.assert_frame_equal(got, want)
    record = json.loads((tmp_path / "boxes.csv.json").read_text())
    assert record["task"] == "detection"
    assert record["n_items"] == len(list(det["new"].iterdir()))


@pytest.mark.parametrize(
    ("task", "args", "match"),
    [
        ("seg", ["--images", "{root}/missing"], "`--images` must be a folder"),
        ("seg", ["--images", "{root}/masks"], "no PNG, TIFF or JPEG"),
        ("seg", ["--features", "{root}/x.npy"], "`--features` does not apply"),
        ("seg", ["--tta"], "`--tta/--no-tta` does not apply"),
        ("seg", [], "pass `--images DIR`"),
        ("seg", ["--images", "{new}", "--out", "{tmp}/masks.csv"], "is a folder"),
        ("seg", ["--images", "{new}", "--out", "{root}/images"], "not empty"),
        ("det", ["--images", "{root}/missing"], "`--images` must be a folder"),
        ("det", ["--images", "{tmp}/odd"], "trained on 32x32"),
        ("det", ["--images", "{tmp}/mixed"], "same size"),
        ("det", ["--images", "{new}", "--feature-ids", "{root}/ids.txt"], "`--feature-ids`"),
        ("det", ["--images", "{new}", "--out", "{tmp}"], "is a directory"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    seg: dict[str, Path],
    det: dict[str, Path],
    tmp_path: Path,
    write_png: Any,
    task: str,
    args: list[str],
    match: str,
) -> None:
    d = seg if task == "seg" else det
    write_png(tmp_path / "odd" / "a.png", np.zeros((24, 32)))
    write_png(tmp_path / "mixed" / "a.png", np.zeros((32, 32)))
    write_png(tmp_path / "mixed" / "b.png", np.zeros((30, 32)))
    fmt = {"root": str(d["root"]), "new": str(d["new"]), "tmp": str(tmp_path)}
    extra = [a.format(**fmt) for a in args]
    before = {folder: _files(folder) for folder in (d["root"], tmp_path)}
    if "--out" not in extra:
        extra += ["--out", str(tmp_path / ("pred" if task == "seg" else "pred.csv"))]
    res = _predict(d["model"], *extra)
    assert res.exit_code == 2, res.output
    assert match in res.output
    assert res.output.count("\n") <= 2
    assert {folder: _files(folder) for folder in (d["root"], tmp_path)} == before


def test_not_a_model_exits_2(tmp_path: Path, seg: dict[str, Path]) -> None:
    out = tmp_path / "pred"
    (tmp_path / "empty").mkdir()
    res = _predict(tmp_path / "empty", "--images", str(seg["new"]), "--out", str(out))
    assert res.exit_code == 2
    assert "has no data.json" in res.output
    bad = tmp_path / "bad"
    shutil.copytree(seg["model"], bad)
    (bad / "model.safetensors").write_bytes(b"not a model")
    res = _predict(bad, "--images", str(seg["new"]), "--out", str(out))
    assert res.exit_code == 2
    assert "model.safetensors" in res.output
    (bad / "config.json").unlink()
    res = _predict(bad, "--images", str(seg["new"]), "--out", str(out))
    assert res.exit_code == 2
    assert "config.json' is missing" in res.output
    (bad / "data.json").write_text('{"task": "registration"}')
    res = _predict(bad, "--images", str(seg["new"]), "--out", str(out))
    assert res.exit_code == 2
    assert "unknown task 'registration'" in res.output
    (bad / "data.json").write_text("{not json")
    res = _predict(bad, "--images", str(seg["new"]), "--out", str(out))
    assert res.exit_code == 2
    assert "Cannot read" in res.output
    assert not out.exists()
    assert not (tmp_path / "pred.json").exists()
