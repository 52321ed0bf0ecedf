"""``crowdmed train --task detection``: model folder, predictions, checkpoint, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("sklearn")
PIL_Image = pytest.importorskip("PIL.Image")

from crowdmed.cli import app  # noqa: E402
from crowdmed.cli.train_detect import load_detection_model  # noqa: E402
from crowdmed.simulate import make_med_mnist  # noqa: E402

BOX = ["xmin", "ymin", "xmax", "ymax"]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("medmnist")
    d = make_med_mnist(6, 0, 2, size=32, digit_size=(10, 14), n_classes=3, random_state=0)
    folders = {"train": root / "images", "test": root / "new"}
    for split, folder in folders.items():
        folder.mkdir()
        for i in d.image_ids(split):
            PIL_Image.fromarray((d.images[i] * 255).astype(np.uint8)).save(folder / f"c{i}.png")
    train = set(d.image_ids("train").tolist())
    r = d.readers[d.readers["image"].isin(train)]
    table = r[["image", "reader", "class", *BOX]].assign(
        image=lambda f: "c" + f["image"].astype(str)
    )
    table.to_csv(root / "readers.csv", index=False)
    return {"root": root, "boxes": root / "readers.csv", **folders}


def _train(data: dict[str, Path], out: Path, *extra: str):
    return runner.invoke(
        app,
        [
            "train",
            "--task",
            "detection",
            "--boxes",
            str(data["boxes"]),
            "--images",
            str(data["train"]),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "3",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def earl_model(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "model"
    res = _train(data, out, "--variant", "earl", "--predict", str(data["test"]), "--seed", "3")
    assert res.exit_code == 0, res.output
    return out


def test_train_writes_the_model_folder(data: dict[str, Path], earl_model: Path) -> None:
    out = earl_model
    names = {"model.pt", "config.json", "history.csv", "targets.csv", "run.json", "predictions.csv"}
    assert {p.name for p in out.iterdir()} == names
    config = json.loads((out / "config.json").read_text())
    assert config["variant"] == "earl"
    assert config["seed"] == 3
    assert config["classes"] == sorted(config["classes"], key=str)
    targets = pd.read_csv(out / "targets.csv")
    readers = pd.read_csv(data["boxes"])
    assert len(targets) < len(readers)  # fused
    assert targets["weight"].between(0, 1).all()
    assert (targets["weight"] < 1).any()  # readers disagree somewhere
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1]
    pred = pd.read_csv(out / "predictions.csv")
    assert list(pred.columns) == ["image", "class", *BOX, "score"]
    assert set(pred["image"]) <= {p.stem for p in data["test"].iterdir()}
    run = json.loads((out / "run.json").read_text())
    assert run["task"] == "detection"
    assert run["inputs"]["boxes"]["sha256"]
    network, payload = load_detection_model(out)
    assert payload["variant"] == "earl"
    with torch.no_grad():
        assert len(network([torch.zeros(1, 32, 32)])) == 1


def test_all_readers_from_a_checkpoint(
    data: dict[str, Path], earl_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    res = _train(
        data, out, "--variant", "all-readers", "--checkpoint", str(earl_model / "model.pt")
    )
    assert res.exit_code == 0, res.output
    targets = pd.read_csv(out / "targets.csv")
    assert len(targets) == len(pd.read_csv(data["boxes"]))
    assert (targets["weight"] == 1).all()
    assert not (out / "predictions.csv").exists()
    first = json.loads((out / "run.json").read_text())["inputs"]["checkpoint"]
    assert first["path"] == str((earl_model / "model.pt").resolve())


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--variant", "earll"], "Did you mean 'earl'"),
        (["--labels", "x.csv"], "applies to --task classification only"),
        (["--epochs", "0"], "--epochs"),
        (["--predict", "nowhere"], "--predict"),
        (["--checkpoint", "missing.pt"], "--checkpoint"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    data: dict[str, Path], tmp_path: Path, args: list[str], match: str
) -> None:
    out = tmp_path / "model"
    res = _train(data, out, *args)
    assert res.exit_code == 2, res.output
    assert match in res.output
    assert res.output.strip().count("\n") == 0
    assert not out.exists()


def test_missing_boxes_and_bad_boxes(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "model"
    res = runner.invoke(
        app, ["train", "--task", "detection", "--images", str(data["train"]), "--out", str(out)]
    )
    assert res.exit_code == 2
    assert "--boxes" in res.output
    bad = tmp_path / "bad.csv"
    table = pd.read_csv(data["boxes"])
    table.loc[0, "image"] = "not_an_image"
    table.to_csv(bad, index=False)
    res = runner.invoke(
        app,
        [
            "train",
            "--task",
            "detection",
            "--boxes",
            str(bad),
            "--images",
            str(data["train"]),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 2
    assert res.output.startswith("Error:")
    assert not out.exists()


def test_task_option(tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", "--task", "segmentation", "--out", str(tmp_path / "m")])
    assert res.exit_code == 2
    assert "--task" in res.output
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "m")])
    assert res.exit_code == 2
    assert "--labels" in res.output
    res = runner.invoke(
        app, ["train", "--labels", "x.csv", "--boxes", "b.csv", "--out", str(tmp_path / "m")]
    )
    assert res.exit_code == 2
    assert "--task detection only" in res.output


def test_real_subprocess_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "crowdmed", "train", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0
    assert "--task" in out.stdout
    assert "--variant" in out.stdout


def test_boxes_outside_the_images_are_an_error(data: dict[str, Path], tmp_path: Path) -> None:
    # Boxes drawn on a larger original (e.g. DICOM before resizing to PNG) would train on
    # nonsense; the 32 x 32 images cannot hold a box reaching x = 60.
    bad = tmp_path / "bad.csv"
    table = pd.read_csv(data["boxes"])
    table.loc[1, "xmax"] = 60.0
    table.to_csv(bad, index=False)
    out = tmp_path / "model"
    res = _train({**data, "boxes": bad}, out)
    assert res.exit_code == 2, res.output
    message = res.output.replace("\n", " ")
    assert "Line 3 of bad.csv" in message
    assert "outside the image" in message
    assert "width is 32" in message
    assert not out.exists()


def test_images_of_different_sizes_name_a_fix_that_exists(
    data: dict[str, Path], tmp_path: Path
) -> None:
    # load_images suggests --image-size, which `--task detection` rejects.
    folder = tmp_path / "images"
    folder.mkdir()
    for p in data["train"].iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    first = sorted(folder.iterdir())[0]
    PIL_Image.new("L", (20, 32)).save(first)
    out = tmp_path / "model"
    res = _train({**data, "train": folder}, out)
    assert res.exit_code == 2, res.output
    message = res.output.replace("\n", " ")
    assert "--image-size" not in message
    assert "scale their boxes" in message
    assert not out.exists()
