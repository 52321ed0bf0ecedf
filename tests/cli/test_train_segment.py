"""``crowdmed train --task segmentation``: model folder, predictions, reproducibility, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
PIL_Image = pytest.importorskip("PIL.Image")

from crowdmed.cli import app  # noqa: E402
from crowdmed.cli.train_segment import (  # noqa: E402
    _image_channels,
    load_segmentation_model,
    predict_segmentation,
)
from crowdmed.data.images import load_images  # noqa: E402

runner = CliRunner()
SIZE = 32


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _disc(cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL_Image.fromarray(arr.astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """6 training and 2 validation cases; 3 raters (one skips a case, one saves 0/255)."""
    root = tmp_path_factory.mktemp("seg")
    rng = np.random.default_rng(0)
    for split, n in (("images", 6), ("val_images", 2), ("new", 2)):
        for i in range(n):
            cy, cx, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(5, 8)
            truth = _disc(cy, cx, r)
            img = np.clip(truth * 180 + 40 + rng.normal(0, 15, truth.shape), 0, 255)
            if split == "new" and i == 1:
                img = img[:29, :27]  # a size the U-Net cannot halve: padded, then cropped
            _png(root / split / f"case{i}.png", img)
            if split == "val_images":
                _png(root / "val_masks" / f"case{i}.png", truth)
            elif split == "images":
                _png(root / "masks" / "alice" / f"case{i}.png", truth)
                if i != 5:  # bob did not annotate case5
                    _png(root / "masks" / "bob" / f"case{i}.png", _disc(cy, cx, r + 2))
                _png(root / "masks" / "carol" / f"case{i}.png", _disc(cy, cx, r - 2) * 255)
    return {k: root / k for k in ("images", "masks", "val_images", "val_masks", "new")}


def _train(images: Path, masks: Path, out: Path, *extra: str):
    return runner.invoke(
        app,
        [
            "train",
            "--task",
            "segmentation",
            "--images",
            str(images),
            "--masks",
            str(masks),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--batch-size",
            "3",
            "--unet-channels",
            "4,8",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def reweight_model(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "model"
    res = _train(
        data["images"],
        data["masks"],
        out,
        "--method",
        "reweight-gaf",
        "--k-every",
        "1",
        "--val-images",
        str(data["val_images"]),
        "--val-masks",
        str(data["val_masks"]),
        "--predict",
        str(data["new"]),
        "--seed",
        "3",
    )
    assert res.exit_code == 0, res.output
    return out


def test_reweight_gaf_outputs(reweight_model: Path, data: dict[str, Path]) -> None:
    out = reweight_model
    for name in ("model.pt", "config.json", "history.csv", "raters.csv", "run.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "segmentation"
    assert config["method"] == "reweight-gaf"
    assert config["raters"] == ["alice", "bob", "carol"]
    assert config["n_classes"] == 2  # carol's 0/255 masks read as binary
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert "val_dice" in history.columns
    assert np.isfinite(history["loss"]).all()
    raters = pd.read_csv(out / "raters.csv")
    assert raters["rater"].tolist() == ["alice", "bob", "carol"]
    assert raters["n_masks"].tolist() == [6, 5, 6]
    w = raters["mean_weight"].to_numpy()
    assert np.isfinite(w).all()
    assert (w > 0).all()
    assert (w < 1).all()
    run = json.loads((out / "run.json").read_text())
    assert run["task"] == "segmentation"
    assert run["arguments"]["method"] == "reweight-gaf"
    assert len(run["inputs"]["images"]["sha256"]) == 64
    assert set(run["inputs"]["masks"]["raters"]) == {"alice", "bob", "carol"}
    assert "torch" in run["environment"]


def test_model_reloads_and_predictions(reweight_model: Path, data: dict[str, Path]) -> None:
    out = reweight_model
    network, payload = load_segmentation_model(out)
    assert payload["n_classes"] == 2
    assert payload["weighting_network"] is not None
    preds = sorted(p.name for p in (out / "predictions").iterdir())
    assert preds == ["case0.png", "case1.png"]
    fractions = []
    for name, shape in zip(preds, [(SIZE, SIZE), (29, 27)], strict=True):
        labels = predict_segmentation(network, load_images(data["new"], [name]))[0]
        written = np.asarray(PIL_Image.open(out / "predictions" / name))
        assert written.shape == shape
        np.testing.assert_array_equal(written, labels)
        fractions.append((labels == 1).mean())
    table = pd.read_csv(out / "predictions.csv")
    assert table["case"].tolist() == ["case0", "case1"]
    np.testing.assert_allclose(table["fraction_1"], fractions)


def test_consensus_seeded_runs_reproduce(data: dict[str, Path], tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        res = _train(data["images"], data["masks"], tmp_path / name, "--method", "consensus")
        assert res.exit_code == 0, res.output
        runs.append(pd.read_csv(tmp_path / name / "history.csv"))
    cols = ["epoch", "loss", "k", "lambda1"]
    pd.testing.assert_frame_equal(runs[0][cols], runs[1][cols])
    raters = pd.read_csv(tmp_path / "a" / "raters.csv")
    assert raters["mean_weight"].isna().all()
    assert not (tmp_path / "a" / "predictions").exists()
    # a previous model folder may be overwritten; stale predictions are removed
    (tmp_path / "a" / "predictions").mkdir()
    (tmp_path / "a" / "predictions" / "old.png").write_bytes(b"")
    res = _train(
        data["images"], data["masks"], tmp_path / "a", "--method", "single", "--rater", "bob"
    )
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["method"] == "consensus"
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["method"] == "single"
    assert config["rater"] == "bob"
    assert not (tmp_path / "a" / "predictions").exists()


def test_image_channels_detected(tmp_path: Path) -> None:
    grey = np.zeros((SIZE, SIZE), np.uint8)
    _png(tmp_path / "g" / "a.png", grey)
    assert _image_channels(tmp_path / "g", ["a"]) == 1
    rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
    rgb[..., 0] = 200
    _png(tmp_path / "g" / "b.png", rgb)
    assert _image_channels(tmp_path / "g", ["a", "b"]) == 3


def _copy(data: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    shutil.copytree(data["images"], tmp_path / "images")
    shutil.copytree(data["masks"], tmp_path / "masks")
    return {"images": tmp_path / "images", "masks": tmp_path / "masks"}


def _bad(
    tmp_path: Path, images: Path, masks: Path, *extra: str, match: str, out: Path | None = None
) -> None:
    out = tmp_path / "model" if out is None else out
    before = sorted(out.rglob("*")) if out.exists() else None
    res = _train(images, masks, out, *extra)
    assert res.exit_code == 2, res.output
    assert res.output.startswith("Error:"), res.output
    assert match in res.output, res.output
    assert len([ln for ln in res.output.strip().splitlines() if ln.strip()]) == 1
    if before is None:
        assert not out.exists()
    else:
        assert sorted(out.rglob("*")) == before


def test_image_without_mask(data: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(data, tmp_path)
    _png(d["images"] / "lonely.png", np.zeros((SIZE, SIZE)))
    _bad(tmp_path, d["images"], d["masks"], match="'lonely'")


def test_mask_shape_mismatch(data: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(data, tmp_path)
    _png(d["masks"] / "bob" / "case2.png", np.zeros((SIZE, SIZE + 4)))
    _bad(tmp_path, d["images"], d["masks"], match="Rater 'bob' mask of case 'case2'")


def test_unknown_case(data: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(data, tmp_path)
    _png(d["masks"] / "carol" / "ghost.png", np.zeros((SIZE, SIZE)))
    _bad(tmp_path, d["images"], d["masks"], match="'ghost'")


def test_values_outside_classes(data: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(data, tmp_path)
    m = np.asarray(PIL_Image.open(d["masks"] / "alice" / "case1.png")).astype(np.uint8) * 3
    _png(d["masks"] / "alice" / "case1.png", m)  # classes 0, 1, 3: class 2 missing
    _bad(tmp_path, d["images"], d["masks"], match="0..K-1")


def test_val_mask_outside_classes(data: dict[str, Path], tmp_path: Path) -> None:
    shutil.copytree(data["val_masks"], tmp_path / "vm")
    _png(tmp_path / "vm" / "case0.png", np.full((SIZE, SIZE), 2))
    _bad(
        tmp_path,
        data["images"],
        data["masks"],
        "--val-images",
        str(data["val_images"]),
        "--val-masks",
        str(tmp_path / "vm"),
        match="--val-masks",
    )


def test_no_rater(data: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _bad(tmp_path, data["images"], tmp_path / "empty", match="no rater sub-folders")


def test_unknown_rater(data: dict[str, Path], tmp_path: Path) -> None:
    _bad(
        tmp_path,
        data["images"],
        data["masks"],
        "--method",
        "single",
        "--rater",
        "dave",
        match="'dave'",
    )


def test_reweight_needs_two_raters(data: dict[str, Path], tmp_path: Path) -> None:
    shutil.copytree(data["masks"] / "alice", tmp_path / "one" / "alice")
    for method in ("reweight", "reweight-gaf"):
        _bad(tmp_path, data["images"], tmp_path / "one", "--method", method, match="only one")


def test_out_not_a_model_dir(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    _bad(tmp_path, data["images"], data["masks"], match="not empty", out=out)


def test_options_of_other_tasks_rejected(data: dict[str, Path], tmp_path: Path) -> None:
    _bad(tmp_path, data["images"], data["masks"], "--image-size", "16", match="--image-size")
    res = runner.invoke(
        app, ["train", "--labels", "x.csv", "--masks", str(data["masks"]), "--out", "m"]
    )
    assert res.exit_code == 2
    assert "--masks" in res.output
