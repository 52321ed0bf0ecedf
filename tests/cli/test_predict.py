"""``crowdmed predict`` on segmentation and detection models: same output as ``train --predict``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("monai")
PIL_Image = pytest.importorskip("PIL.Image")

from crowdmed.cli import app  # noqa: E402
from crowdmed.simulate import make_med_mnist  # noqa: E402

BOX = ["xmin", "ymin", "xmax", "ymax"]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL_Image.fromarray(arr.astype(np.uint8)).save(path)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def seg(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 1-epoch U-Net trained on 4 discs with `--predict new/` (one odd-sized image)."""
    root = tmp_path_factory.mktemp("seg")
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:16, :16]
    for split, n in (("images", 4), ("new", 3)):
        for i in range(n):
            cy, cx, r = rng.uniform(5, 11, size=3)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= (r / 2 + 2) ** 2
            img = np.clip(disc * 180 + 40 + rng.normal(0, 20, disc.shape), 0, 255)
            _png(root / split / f"case{i}.png", img[:13, :15] if split == "new" and i else img)
            if split == "images":
                _png(root / "masks" / "ann" / f"case{i}.png", disc)
                _png(root / "masks" / "bob" / f"case{i}.png", np.roll(disc, 1, axis=0))
    model = root / "model"
    res = runner.invoke(
        app,
        [
            "train",
            "--task",
            "segmentation",
            "--images",
            str(root / "images"),
            "--masks",
            str(root / "masks"),
            "--out",
            str(model),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--unet-channels",
            "4,8",
            "--predict",
            str(root / "new"),
        ],
    )
    assert res.exit_code == 0, res.output
    return {"root": root, "model": model, "new": root / "new", "images": root / "images"}


@pytest.fixture(scope="module")
def det(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 1-epoch FCOS trained on 4 images of 32x32 with `--predict new/`."""
    root = tmp_path_factory.mktemp("det")
    d = make_med_mnist(4, 0, 2, size=32, digit_size=(10, 14), n_classes=2, random_state=0)
    for split, name in (("train", "images"), ("test", "new")):
        (root / name).mkdir()
        for i in d.image_ids(split):
            _png(root / name / f"c{i}.png", d.images[i] * 255)
    train = set(d.image_ids("train").tolist())
    readers = d.readers[d.readers["image"].isin(train)]
    table = readers[["image", "reader", "class", *BOX]].assign(
        image=lambda f: "c" + f["image"].astype(str)
    )
    table.to_csv(root / "readers.csv", index=False)
    model = root / "model"
    res = runner.invoke(
        app,
        [
            "train",
            "--task",
            "detection",
            "--boxes",
            str(root / "readers.csv"),
            "--images",
            str(root / "images"),
            "--out",
            str(model),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--predict",
            str(root / "new"),
        ],
    )
    assert res.exit_code == 0, res.output
    return {"root": root, "model": model, "new": root / "new", "images": root / "images"}


def _predict(model: Path, *args: str):
    return runner.invoke(app, ["predict", str(model), *args])


def test_segmentation_predict_matches_train_predict(seg: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "masks"
    res = _predict(seg["model"], "--images", str(seg["new"]), "--out", str(out))
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (seg["model"] / "predictions").iterdir())
    assert sorted(p.name for p in out.glob("*.png")) == names == [f"case{i}.png" for i in range(3)]
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
    assert record["n_items"] == 3
    assert record["model"]["sha256"]
    # predicting again into the same folder replaces the earlier label maps
    (seg["root"] / "fewer").mkdir(exist_ok=True)
    shutil.copy(seg["new"] / "case0.png", seg["root"] / "fewer" / "case0.png")
    res = _predict(seg["model"], "--images", str(seg["root"] / "fewer"), "--out", str(out))
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
        ("det", ["--images", "{root}/odd"], "trained on 32x32"),
        ("det", ["--images", "{root}/mixed"], "same size"),
        ("det", ["--images", "{new}", "--feature-ids", "{root}/ids.txt"], "`--feature-ids`"),
        ("det", ["--images", "{new}", "--out", "{tmp}"], "is a directory"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    seg: dict[str, Path],
    det: dict[str, Path],
    tmp_path: Path,
    task: str,
    args: list[str],
    match: str,
) -> None:
    d = seg if task == "seg" else det
    (det["root"] / "odd").mkdir(exist_ok=True)
    _png(det["root"] / "odd" / "a.png", np.zeros((24, 32)))
    (det["root"] / "mixed").mkdir(exist_ok=True)
    _png(det["root"] / "mixed" / "a.png", np.zeros((32, 32)))
    _png(det["root"] / "mixed" / "b.png", np.zeros((30, 32)))
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
    assert "no model.pt" in res.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"task": "segmentation"}')
    (bad / "model.pt").write_bytes(b"not a model")
    res = _predict(bad, "--images", str(seg["new"]), "--out", str(out))
    assert res.exit_code == 2
    assert "Cannot read model" in res.output
    (bad / "config.json").write_text('{"task": "registration"}')
    res = _predict(bad, "--images", str(seg["new"]), "--out", str(out))
    assert res.exit_code == 2
    assert "unknown task 'registration'" in res.output
    (bad / "config.json").write_text("{not json")
    res = _predict(bad, "--images", str(seg["new"]), "--out", str(out))
    assert res.exit_code == 2
    assert "Cannot read" in res.output
    assert not out.exists()
    assert not (tmp_path / "pred.json").exists()
