"""``crowdmed train detect``: model folder, predictions, start weights, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
PIL_Image = pytest.importorskip("PIL.Image")

from crowdmed.pipelines.detect import load_detection_model  # noqa: E402

BOX = ["xmin", "ymin", "xmax", "ymax"]
MODEL_FILES = {"config.json", "model.safetensors", "data.json", "history.csv", "targets.csv"}


def _train(cli: Callable[..., Any], data: dict[str, Path], out: Path, *extra: Any) -> Any:
    return cli(
        "train", "detect", "--boxes", data["boxes"], "--images", data["images"], "--out", out,
        "--epochs", 1, "--batch-size", 4, *extra,
    )  # fmt: skip


def test_train_writes_the_model_folder(box_readers: dict[str, Path], det_model: Path) -> None:
    out = det_model
    assert {p.name for p in out.iterdir()} == {*MODEL_FILES, "run.json", "predictions.csv"}
    data = json.loads((out / "data.json").read_text())
    assert data["task"] == "detection"
    assert data["variant"] == "earl"
    assert data["detector"] == "centernet"  # the default
    assert data["optimizer"] == "adamw"
    assert data["lr"] == 0.002
    assert data["seed"] == 0
    assert data["image_size"] == [32, 32]
    assert data["classes"] == sorted(data["classes"], key=str)
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "detect"
    assert config["architecture"]["network"] == "centernet"
    targets = pd.read_csv(out / "targets.csv")
    readers = pd.read_csv(box_readers["boxes"])
    assert len(targets) < len(readers)  # fused
    # EARL weight: boxes in the fused cluster (Le et al. 2023, Algorithm 1 step 6)
    assert targets["weight"].between(1, readers["reader"].nunique()).all()
    assert (targets["weight"] < targets["weight"].max()).any()  # readers disagree somewhere
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1]
    pred = pd.read_csv(out / "predictions.csv")
    assert list(pred.columns) == ["image", "class", *BOX, "score"]
    assert set(pred["image"]) <= {p.stem for p in box_readers["new"].iterdir()}
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "train detect"
    assert run["task"] == "detection"
    assert run["params"]["variant"] == "earl"
    assert run["inputs"]["boxes"]["sha256"]
    model = load_detection_model(out)
    assert model.data["variant"] == "earl"
    with torch.no_grad():
        assert len(model.network([torch.zeros(1, 32, 32)])) == 1


def test_all_readers_from_a_checkpoint(
    box_readers: dict[str, Path], det_model: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    out = tmp_path / "model"
    res = _train(cli, box_readers, out, "--variant", "all-readers", "--checkpoint", det_model)
    assert res.exit_code == 0, res.output
    targets = pd.read_csv(out / "targets.csv")
    assert len(targets) == len(pd.read_csv(box_readers["boxes"]))
    assert (targets["weight"] == 1).all()
    assert not (out / "predictions.csv").exists()
    first = json.loads((out / "run.json").read_text())["inputs"]["checkpoint"]
    assert first["path"] == str(det_model.resolve())


def test_fcos_stays_selectable(
    box_readers: dict[str, Path], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    out = tmp_path / "model"
    res = _train(cli, box_readers, out, "--detector", "fcos", "--predict", box_readers["new"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "data.json").read_text())
    assert (data["detector"], data["optimizer"], data["lr"]) == ("fcos", "sgd", 0.03)
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"]["network"] == "fcos"
    model = load_detection_model(out)
    assert type(model.network).__name__ == "FCOS"
    pred = pd.read_csv(out / "predictions.csv")
    assert list(pred.columns) == ["image", "class", *BOX, "score"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--variant", "earll"], "Did you mean 'earl'"),
        (["--detector", "yolo"], "`--detector` must be one of ['centernet', 'fcos']"),
        (["--labels", "x.csv"], "No such option: --labels"),
        (["--epochs", "0"], "--epochs"),
        (["--iou-thr", "1.5"], "`--iou-thr` must be a number > 0 and < 1; got 1.5"),
        (["--predict", "nowhere"], "--predict"),
        (["--checkpoint", "missing.pt"], "--checkpoint"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    box_readers: dict[str, Path],
    tmp_path: Path,
    cli: Callable[..., Any],
    args: list[str],
    match: str,
) -> None:
    out = tmp_path / "model"
    res = _train(cli, box_readers, out, *args)
    assert res.exit_code == 2, res.output
    assert match in res.output
    if not match.startswith("No such option"):
        assert res.output.strip().count("\n") == 0
    assert not out.exists()


def test_missing_boxes_and_bad_boxes(
    box_readers: dict[str, Path], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    out = tmp_path / "model"
    res = cli("train", "detect", "--images", box_readers["images"], "--out", out)
    assert res.exit_code == 2
    assert "--boxes" in res.output
    bad = tmp_path / "bad.csv"
    table = pd.read_csv(box_readers["boxes"])
    table.loc[0, "image"] = "not_an_image"
    table.to_csv(bad, index=False)
    res = _train(cli, {**box_readers, "boxes": bad}, out)
    assert res.exit_code == 2
    assert res.output.startswith("Error:")
    assert not out.exists()


def test_real_subprocess_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "crowdmed", "train", "detect", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0
    assert "--variant" in out.stdout
    assert "--labels" not in out.stdout


def test_boxes_outside_the_images_are_an_error(
    box_readers: dict[str, Path], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # Boxes drawn on a larger original (e.g. DICOM before resizing to PNG) would train on
    # nonsense; the 32 x 32 images cannot hold a box reaching x = 60.
    bad = tmp_path / "bad.csv"
    table = pd.read_csv(box_readers["boxes"])
    table.loc[1, "xmax"] = 60.0
    table.to_csv(bad, index=False)
    out = tmp_path / "model"
    res = _train(cli, {**box_readers, "boxes": bad}, out)
    assert res.exit_code == 2, res.output
    message = res.output.replace("\n", " ")
    assert "Line 3 of bad.csv" in message
    assert "outside the image" in message
    assert "width is 32" in message
    assert not out.exists()


def test_images_of_different_sizes_name_a_fix_that_exists(
    box_readers: dict[str, Path], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # load_images suggests --image-size, which `train detect` does not have.
    folder = tmp_path / "images"
    folder.mkdir()
    for p in box_readers["images"].iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    first = sorted(folder.iterdir())[0]
    PIL_Image.new("L", (20, 32)).save(first)
    out = tmp_path / "model"
    res = _train(cli, {**box_readers, "images": folder}, out)
    assert res.exit_code == 2, res.output
    message = res.output.replace("\n", " ")
    assert "--image-size" not in message
    assert "scale their boxes" in message
    assert not out.exists()


def test_data_json_with_another_class_count_is_refused(det_model: Path, tmp_path: Path) -> None:
    import shutil

    edited = tmp_path / "edited"
    shutil.copytree(det_model, edited)
    data = json.loads((edited / "data.json").read_text())
    n = len(data["classes"])
    data["classes"] = [*data["classes"], "extra"]
    (edited / "data.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"lists {n + 1} classes but .* predicts {n}"):
        load_detection_model(edited)
    assert load_detection_model(det_model).data["classes"] == data["classes"][:-1]
