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


# ---------------------------------------------------------------------- library model folders
def _features(tmp_path: Path, x: np.ndarray) -> list[str]:
    """``--features`` and ``--feature-ids`` arguments for the rows of ``x`` (items r000...)."""
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "ids.txt").write_text("".join(f"r{i:03d}\n" for i in range(len(x))))
    return ["--features", str(tmp_path / "x.npy"), "--feature-ids", str(tmp_path / "ids.txt")]


def test_regressor_folder_gives_item_and_value(tmp_path: Path) -> None:
    from crowdmed.nn import build_network
    from crowdmed.training import CrowdRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype("float32")
    y = (x @ np.array([1.0, -1.0, 0.5]))[:, None] + rng.normal(size=(60, 2)) * [0.1, 1.0]
    torch.manual_seed(0)
    net = build_network("linear", in_features=3, out_features=1)
    reg = CrowdRegressor(net, method="dl-em", epochs=3, lr=0.05, progress=False).fit(x, y)
    reg.save(tmp_path / "reg")
    out = tmp_path / "values.csv"
    res = _predict(tmp_path / "reg", *_features(tmp_path, x[:7]), "--out", str(out))
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert table.columns.tolist() == ["item", "value"]
    assert table["item"].tolist() == [f"r{i:03d}" for i in range(7)]
    np.testing.assert_allclose(table["value"], reg.predict(x[:7]), rtol=1e-6, atol=1e-6)
    assert table["value"].std() > 0.1  # real predictions, not a constant
    record = json.loads((tmp_path / "values.csv.json").read_text())
    assert record["task"] == "regression"
    assert record["method"] == "dl-em"
    assert record["n_annotators"] == 2
    assert record["n_items"] == 7
    # a feature matrix of another width is one error line
    res = _predict(tmp_path / "reg", *_features(tmp_path, x[:7, :2]), "--out", str(out))
    assert res.exit_code == 2
    assert "`--features` has 2 columns but the model was trained on 3 features" in res.output
    res = _predict(tmp_path / "reg", *_features(tmp_path, x), "--tta", "--out", str(out))
    assert res.exit_code == 2
    assert "`--tta/--no-tta` does not apply to a regression model" in res.output


def test_multitask_folder_gives_main_probabilities_and_auxiliary_columns(tmp_path: Path) -> None:
    from crowdmed.nn import build_network
    from crowdmed.training import MultiTaskClassifier

    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 4)).astype("float32")
    y = (x[:, 0] > 0).astype(int)
    aux = np.stack([x[:, 1] > 0, x[:, 0] > 0.5, x[:, 2] > 1], 1).astype(float)
    torch.manual_seed(0)
    net = build_network("mlp_head", in_features=4, n_classes=2, hidden=8)
    mtl = MultiTaskClassifier(net, aux_weight=0.5, epochs=3, lr=0.05, progress=False)
    mtl.fit(x, y, aux).save(tmp_path / "mtl")
    out = tmp_path / "pred.csv"
    res = _predict(tmp_path / "mtl", *_features(tmp_path, x[:9]), "--out", str(out))
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert table.columns.tolist() == [
        "item", "label", "confidence", "p_0", "p_1", "aux_0", "aux_1", "aux_2",
    ]  # fmt: skip
    proba, aux_out = mtl.predict_proba(x[:9]), mtl.predict_aux(x[:9])
    np.testing.assert_allclose(table[["p_0", "p_1"]], proba, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(table[["aux_0", "aux_1", "aux_2"]], aux_out, rtol=1e-6, atol=1e-7)
    assert table["label"].tolist() == proba.argmax(1).tolist()
    np.testing.assert_allclose(table["confidence"], proba.max(1), rtol=1e-6)
    assert not np.allclose(aux_out[:, 0], aux_out[:, 1])  # separate heads, not one column
    record = json.loads((tmp_path / "pred.csv.json").read_text())
    assert record["task"] == "multitask"
    assert record["n_aux"] == 3
    assert record["classes"] == [0, 1]
    # an image network's folder asks for images
    res = _predict(tmp_path / "mtl", "--images", str(tmp_path), "--out", str(out))
    assert res.exit_code == 2
    assert "was trained on features; pass `--features`" in res.output


def test_multitask_image_network_predicts_a_folder(tmp_path: Path, write_png: Any) -> None:
    from crowdmed.data.images import load_images
    from crowdmed.nn import build_network
    from crowdmed.training import MultiTaskClassifier

    rng = np.random.default_rng(2)
    names = [f"img{i}" for i in range(6)]
    for i, name in enumerate(names):
        write_png(tmp_path / "imgs" / f"{name}.png", rng.uniform(0, 255, (16, 16)) * (i % 2))
    x = load_images(tmp_path / "imgs", names, channels=1)
    y, aux = np.arange(6) % 2, (np.arange(6)[:, None] % 3 == 0).astype(float)
    torch.manual_seed(0)
    net = build_network("small_cnn", in_channels=1, n_classes=2, width=4, depth=2)
    mtl = MultiTaskClassifier(net, epochs=2, batch_size=3, progress=False).fit(x, y, aux)
    mtl.save(tmp_path / "mtl")
    out = tmp_path / "pred.csv"
    res = _predict(tmp_path / "mtl", "--images", str(tmp_path / "imgs"), "--out", str(out))
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert table["item"].tolist() == names
    np.testing.assert_allclose(table[["p_0", "p_1"]], mtl.predict_proba(x), rtol=1e-5)
    np.testing.assert_allclose(table["aux_0"], mtl.predict_aux(x)[:, 0], rtol=1e-5)
