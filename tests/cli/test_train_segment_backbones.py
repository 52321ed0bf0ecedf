"""``crowdmed train --task segmentation --backbone``: other networks train, save and predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("torchvision")
PIL_Image = pytest.importorskip("PIL.Image")

from crowdmed.cli import app  # noqa: E402
from crowdmed.cli.train_segment import load_segmentation_model  # noqa: E402
from crowdmed.nn.backbones import DeepLabV3Logits  # noqa: E402

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
    """5 training cases of 32 x 32 with 2 raters; 2 new images, one of an odd size."""
    root = tmp_path_factory.mktemp("seg_backbones")
    rng = np.random.default_rng(1)
    for split, n in (("images", 5), ("new", 2)):
        for i in range(n):
            cy, cx, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(5, 8)
            truth = _disc(cy, cx, r)
            img = np.clip(truth * 180 + 40 + rng.normal(0, 15, truth.shape), 0, 255)
            if split == "new" and i == 1:
                img = img[:29, :27]  # padded to the network's multiple, then cropped back
            _png(root / split / f"case{i}.png", img)
            if split == "images":
                _png(root / "masks" / "alice" / f"case{i}.png", truth)
                _png(root / "masks" / "bob" / f"case{i}.png", _disc(cy, cx, r + 2))
    return {k: root / k for k in ("images", "masks", "new")}


def _train(data: dict[str, Path], out: Path, *extra: str):
    return runner.invoke(
        app,
        [
            "train",
            "--task",
            "segmentation",
            "--images",
            str(data["images"]),
            "--masks",
            str(data["masks"]),
            "--out",
            str(out),
            "--method",
            "consensus",
            "--epochs",
            "1",
            "--batch-size",
            "3",
            "--seed",
            "2",
            *extra,
        ],
    )


@pytest.mark.parametrize(
    ("backbone", "extra", "network"),
    [
        ("basic-unet", ("--unet-channels", "4,4,8,8,16,4"), "BasicUNet"),
        ("deeplabv3-mobilenet", (), "deeplabv3_mobilenet_v3_large"),
    ],
)
def test_backbone_trains_saves_and_predicts(
    data: dict[str, Path], tmp_path: Path, backbone: str, extra: tuple[str, ...], network: str
) -> None:
    model = tmp_path / "model"
    res = _train(data, model, "--backbone", backbone, *extra, "--predict", str(data["new"]))
    assert res.exit_code == 0, res.output
    config = json.loads((model / "config.json").read_text())
    assert config["backbone"] == backbone
    assert config["network"].endswith(network)
    net, payload = load_segmentation_model(model)
    assert payload["backbone"] == backbone
    assert type(net).__name__ == ("DeepLabV3Logits" if "deeplab" in backbone else network)
    if backbone == "basic-unet":
        assert payload["network_kwargs"]["channels"] == [4, 4, 8, 8, 16, 4]

    out = tmp_path / "pred"
    res = runner.invoke(
        app, ["predict", str(model), "--images", str(data["new"]), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    for name in ("case0.png", "case1.png"):
        got = np.asarray(PIL_Image.open(out / name))
        want = np.asarray(PIL_Image.open(model / "predictions" / name))
        assert got.shape == PIL_Image.open(data["new"] / name).size[::-1]
        np.testing.assert_array_equal(got, want)
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "predictions.csv"), pd.read_csv(model / "predictions.csv")
    )


def test_unet_default_and_model_without_backbone_key(data: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "model"
    res = _train(data, model, "--unet-channels", "4,8")
    assert res.exit_code == 0, res.output
    assert json.loads((model / "config.json").read_text())["backbone"] == "unet"
    net, _ = load_segmentation_model(model)
    # a model folder written before --backbone existed holds a U-Net
    payload = torch.load(model / "model.pt", map_location="cpu", weights_only=True)
    del payload["backbone"]
    torch.save(payload, model / "model.pt")
    old, _ = load_segmentation_model(model)
    assert type(old).__name__ == "UNet"
    assert not isinstance(old, DeepLabV3Logits)
    x = torch.rand(1, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(old(x), net(x))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--backbone", "deeplab"), "Did you mean"),
        (("--backbone", "deeplabv3-resnet50", "--unet-channels", "4,8"), "does not apply"),
        (("--backbone", "basic-unet", "--unet-channels", "4,8"), "six integers"),
    ],
)
def test_bad_backbone_options(
    data: dict[str, Path], tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    res = _train(data, tmp_path / "model", *extra)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "model" / "model.pt").exists()


def test_backbone_applies_to_segmentation_only(tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        [
            "train",
            "--task",
            "detection",
            "--images",
            str(tmp_path),
            "--out",
            str(tmp_path / "m"),
            "--backbone",
            "unet",
        ],
    )
    assert res.exit_code == 2, res.output
    assert "--backbone" in res.output
