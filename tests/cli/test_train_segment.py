"""``crowdmed train segment``: model folder, predictions, backbones, volumes, bad input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
PIL_Image = pytest.importorskip("PIL.Image")

from crowdmed.data.cases import image_channels  # noqa: E402
from crowdmed.data.images import load_images  # noqa: E402
from crowdmed.pipelines.segment import (  # noqa: E402
    load_segmentation_model,
    predict_segmentation,
    train_segmentation,
)

SIZE = 32
MODEL_FILES = ("config.json", "model.safetensors", "data.json", "history.csv", "raters.csv")


def _train(cli: Callable[..., Any], images: Path, masks: Path, out: Path, *extra: Any) -> Any:
    return cli(
        "train", "segment", "--images", images, "--masks", masks, "--out", out,
        "--epochs", 2, "--batch-size", 3, "--unet-channels", "4,8", *extra,
    )  # fmt: skip


def test_reweight_gaf_outputs(seg_model: Path) -> None:
    out = seg_model
    for name in (*MODEL_FILES, "run.json", "predictions.csv"):
        assert (out / name).is_file(), name
    data = json.loads((out / "data.json").read_text())
    assert data["task"] == "segmentation"
    assert data["method"] == "reweight-gaf"
    assert data["raters"] == ["alice", "bob", "carol"]
    assert data["n_classes"] == 2  # carol's 0/255 masks read as binary
    assert data["spatial_dims"] == 2
    assert json.loads((out / "config.json").read_text())["task"] == "segmenter"
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
    assert run["command"] == "train segment"
    assert run["task"] == "segmentation"
    assert run["seed"] == 3
    assert run["arguments"]["method"] == "reweight-gaf"
    assert run["params"]["k_every"] == 1
    assert len(run["inputs"]["images"]["sha256"]) == 64
    assert set(run["inputs"]["masks"]["raters"]) == {"alice", "bob", "carol"}
    assert "torch" in run["environment"]
    assert run["outputs"]["model.safetensors"] == str((out / "model.safetensors").resolve())


def test_k_every_fraction_and_focal_alpha_reach_the_model(
    seg_cases: dict[str, Path], tmp_path: Path, cli: Any
) -> None:
    # 6 images in batches of 3, 2 epochs: 4 optimiser steps; half of the run is 2 steps
    out = tmp_path / "m"
    res = _train(
        cli, seg_cases["images"], seg_cases["masks"], out,
        "--k-every", "0.5", "--focal-alpha", "0.25", "--patience", 0, "--seed", 1,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    assert run["params"]["k_every"] == 0.5
    assert run["params"]["focal_alpha"] == 0.25
    seg = load_segmentation_model(out).segmenter
    assert seg.k_every == 0.5
    assert seg.focal_alpha == 0.25
    assert json.loads((out / "data.json").read_text())["k_every"] == 0.5
    history = pd.read_csv(out / "history.csv")
    assert history["k"].tolist() == [1.0, 2.0]  # k + 1 every 2 steps, not every step


def test_k_every_default_is_the_papers_tenth_of_the_run(tmp_path: Path) -> None:
    import inspect

    from crowdmed.cli.train_segment import segment
    from crowdmed.pipelines.segment import parse_k_every

    assert inspect.signature(train_segmentation).parameters["k_every"].default == 0.1
    assert parse_k_every(inspect.signature(segment).parameters["k_every"].default) == 0.1
    assert parse_k_every("1") == 1  # a whole number counts steps
    assert parse_k_every("1.0") == 1.0  # a fraction: the whole run
    assert isinstance(parse_k_every("1.0"), float)


def test_model_reloads_and_predictions(seg_model: Path, seg_cases: dict[str, Path]) -> None:
    out = seg_model
    model = load_segmentation_model(out)
    assert model.n_classes == 2
    assert model.segmenter.weighting_network_ is not None
    preds = sorted(p.name for p in (out / "predictions").iterdir())
    assert preds == ["case0.png", "case1.png"]
    fractions = []
    for name, shape in zip(preds, [(SIZE, SIZE), (29, 27)], strict=True):
        labels = predict_segmentation(model.network, load_images(seg_cases["new"], [name]))[0]
        written = np.asarray(PIL_Image.open(out / "predictions" / name))
        assert written.shape == shape
        np.testing.assert_array_equal(written, labels)
        fractions.append((labels == 1).mean())
    table = pd.read_csv(out / "predictions.csv")
    assert table["case"].tolist() == ["case0", "case1"]
    np.testing.assert_allclose(table["fraction_1"], fractions)


def test_library_call_gives_the_same_model(
    seg_cases: dict[str, Path], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """What the command does, a library user does with one call and ``save``."""
    res = _train(cli, seg_cases["images"], seg_cases["masks"], tmp_path / "cli", "-m", "consensus")
    assert res.exit_code == 0, res.output
    run = train_segmentation(
        seg_cases["images"], seg_cases["masks"], tmp_path / "lib", method="consensus",
        epochs=2, batch_size=3, unet_channels=(4, 8),
    )  # fmt: skip
    run.save(tmp_path / "lib")
    for name in ("history.csv", "raters.csv"):
        a, b = (pd.read_csv(tmp_path / d / name) for d in ("cli", "lib"))
        pd.testing.assert_frame_equal(a.drop(columns="seconds", errors="ignore"),
                                      b.drop(columns="seconds", errors="ignore"))  # fmt: skip
    x = load_images(seg_cases["new"], ["case0"])
    a, b = (load_segmentation_model(tmp_path / d) for d in ("cli", "lib"))
    np.testing.assert_array_equal(
        predict_segmentation(a.network, x), predict_segmentation(b.network, x)
    )


def test_consensus_seeded_runs_reproduce(
    seg_cases: dict[str, Path], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    runs = []
    for name in ("a", "b"):
        res = _train(
            cli, seg_cases["images"], seg_cases["masks"], tmp_path / name, "-m", "consensus"
        )
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
        cli, seg_cases["images"], seg_cases["masks"], tmp_path / "a", "-m", "single",
        "--rater", "bob",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b" / "data.json").read_text())["method"] == "consensus"
    data = json.loads((tmp_path / "a" / "data.json").read_text())
    assert data["method"] == "single"
    assert data["rater"] == "bob"
    assert not (tmp_path / "a" / "predictions").exists()


def test_augment_is_seeded_recorded_and_changes_the_training(
    seg_cases: dict[str, Path], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    losses = {}
    for name, extra in (("a", ["--augment"]), ("b", ["--augment"]), ("plain", [])):
        res = _train(
            cli, seg_cases["images"], seg_cases["masks"], tmp_path / name, "-m", "consensus",
            *extra,
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        losses[name] = pd.read_csv(tmp_path / name / "history.csv")["loss"].to_numpy()
    np.testing.assert_array_equal(losses["a"], losses["b"])  # seeded
    assert not np.array_equal(losses["a"], losses["plain"])  # the batches were turned
    assert json.loads((tmp_path / "a" / "data.json").read_text())["augment"] is True
    assert json.loads((tmp_path / "plain" / "data.json").read_text())["augment"] is False
    # a finished augmented run is not resumed as a plain one: the plain run trains anew
    res = _train(cli, seg_cases["images"], seg_cases["masks"], tmp_path / "a", "-m", "consensus")
    assert res.exit_code == 0, res.output
    again = pd.read_csv(tmp_path / "a" / "history.csv")["loss"].to_numpy()
    np.testing.assert_array_equal(again, losses["plain"])
    assert json.loads((tmp_path / "a" / "data.json").read_text())["augment"] is False


def test_image_channels_detected(tmp_path: Path, write_png: Callable[..., Path]) -> None:
    write_png(tmp_path / "g" / "a.png", np.zeros((SIZE, SIZE)))
    assert image_channels(tmp_path / "g", ["a"]) == 1
    rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
    rgb[..., 0] = 200
    write_png(tmp_path / "g" / "b.png", rgb)
    assert image_channels(tmp_path / "g", ["a", "b"]) == 3


# ---------------------------------------------------------------------- volumes
def test_volumes_train_one_epoch_and_predict(
    volume_cases: dict[str, Path], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """NIfTI images, NIfTI and NRRD rater masks, an MHA volume to segment."""
    sitk = pytest.importorskip("SimpleITK")
    model = tmp_path / "model"
    res = cli(
        "train", "segment", "--images", volume_cases["images"], "--masks", volume_cases["masks"],
        "--out", model, "--epochs", 1, "--batch-size", 2, "--unet-channels", "4,8",
        "--method", "reweight", "--predict", volume_cases["new"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "3 volumes" in res.stderr
    data = json.loads((model / "data.json").read_text())
    assert data["spatial_dims"] == 3
    assert data["image_size"] == [16, 16, 16]
    assert data["raters"] == ["ann", "bob"]
    assert pd.read_csv(model / "raters.csv")["n_masks"].tolist() == [3, 3]
    written = sitk.ReadImage(str(model / "predictions" / "case0.nii.gz"))
    assert written.GetSize() == (16, 16, 16)
    assert written.GetSpacing() == pytest.approx((0.8, 0.8, 2.0))  # the input's geometry
    labels = sitk.GetArrayFromImage(written)
    assert set(np.unique(labels)) <= {0, 1}
    table = pd.read_csv(model / "predictions.csv")
    assert table["fraction_1"].iloc[0] == pytest.approx((labels == 1).mean())

    out = tmp_path / "pred"
    res = cli("predict", model, "--images", volume_cases["new"], "--out", out)
    assert res.exit_code == 0, res.output
    again = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case0.nii.gz")))
    np.testing.assert_array_equal(again, labels)


def test_volume_mask_of_another_size(
    volume_cases: dict[str, Path], tmp_path: Path, cli: Callable[..., Any], user_error: Any
) -> None:
    masks = Path(shutil.copytree(volume_cases["masks"], tmp_path / "masks"))
    np.save(masks / "bob" / "case9.npy", np.zeros((4, 4, 4), np.uint8))
    (masks / "bob" / "case1.nrrd").unlink()
    np.save(masks / "bob" / "case1.npy", np.zeros((16, 16, 8), np.uint8))
    res = _train(cli, volume_cases["images"], masks, tmp_path / "m")
    user_error(res, r"Rater 'bob' has a mask for case 'case9'")
    (masks / "bob" / "case9.npy").unlink()
    res = _train(cli, volume_cases["images"], masks, tmp_path / "m")
    user_error(res, r"mask of case 'case1' .* is 16x16x8 but its image is 16x16x16 \(DxHxW\)")
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------------- backbones
@pytest.mark.parametrize(
    ("backbone", "extra", "network"),
    [
        ("basic-unet", ("--unet-channels", "4,4,8,8,16,4"), "BasicUNet"),
        ("deeplabv3-mobilenet", (), "deeplabv3_mobilenet_v3_large"),
    ],
)
def test_backbone_trains_saves_and_predicts(
    seg_cases: dict[str, Path],
    tmp_path: Path,
    cli: Callable[..., Any],
    backbone: str,
    extra: tuple[str, ...],
    network: str,
) -> None:
    pytest.importorskip("torchvision")
    model = tmp_path / "model"
    res = cli(
        "train", "segment", "--images", seg_cases["images"], "--masks", seg_cases["masks"],
        "--out", model, "--epochs", 1, "--batch-size", 3, "--method", "consensus",
        "--backbone", backbone, *extra, "--predict", seg_cases["new"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads((model / "data.json").read_text())
    assert data["backbone"] == backbone
    assert data["network"].endswith(network)
    net = load_segmentation_model(model).network
    assert type(net).__name__ == ("DeepLabV3Logits" if "deeplab" in backbone else network)
    if backbone == "basic-unet":
        assert data["network_kwargs"]["channels"] == [4, 4, 8, 8, 16, 4]

    out = tmp_path / "pred"
    res = cli("predict", model, "--images", seg_cases["new"], "--out", out)
    assert res.exit_code == 0, res.output
    for name in ("case0.png", "case1.png"):
        got = np.asarray(PIL_Image.open(out / name))
        want = np.asarray(PIL_Image.open(model / "predictions" / name))
        assert got.shape == PIL_Image.open(seg_cases["new"] / name).size[::-1]
        np.testing.assert_array_equal(got, want)
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "predictions.csv"), pd.read_csv(model / "predictions.csv")
    )


# ---------------------------------------------------------------------- user errors
def _bad(
    cli: Callable[..., Any],
    tmp_path: Path,
    images: Path,
    masks: Path,
    *extra: str,
    match: str,
    out: Path | None = None,
) -> None:
    out = tmp_path / "model" if out is None else out
    before = sorted(out.rglob("*")) if out.exists() else None
    res = _train(cli, images, masks, out, *extra)
    assert res.exit_code == 2, res.output
    assert res.output.startswith("Error:"), res.output
    assert match in res.output, res.output
    assert len([ln for ln in res.output.strip().splitlines() if ln.strip()]) == 1
    if before is None:
        assert not out.exists()
    else:
        assert sorted(out.rglob("*")) == before


def test_image_without_mask(
    seg_copy: dict[str, Path], tmp_path: Path, cli: Any, write_png: Any
) -> None:
    write_png(seg_copy["images"] / "lonely.png", np.zeros((SIZE, SIZE)))
    _bad(cli, tmp_path, seg_copy["images"], seg_copy["masks"], match="'lonely'")


def test_mask_shape_mismatch(
    seg_copy: dict[str, Path], tmp_path: Path, cli: Any, write_png: Any
) -> None:
    write_png(seg_copy["masks"] / "bob" / "case2.png", np.zeros((SIZE, SIZE + 4)))
    _bad(
        cli,
        tmp_path,
        seg_copy["images"],
        seg_copy["masks"],
        match="Rater 'bob' mask of case 'case2'",
    )


def test_unknown_case(seg_copy: dict[str, Path], tmp_path: Path, cli: Any, write_png: Any) -> None:
    write_png(seg_copy["masks"] / "carol" / "ghost.png", np.zeros((SIZE, SIZE)))
    _bad(cli, tmp_path, seg_copy["images"], seg_copy["masks"], match="'ghost'")


def test_values_outside_classes(
    seg_copy: dict[str, Path], tmp_path: Path, cli: Any, write_png: Any
) -> None:
    m = np.asarray(PIL_Image.open(seg_copy["masks"] / "alice" / "case1.png")).astype(np.uint8) * 3
    write_png(seg_copy["masks"] / "alice" / "case1.png", m)  # classes 0, 1, 3: class 2 missing
    _bad(cli, tmp_path, seg_copy["images"], seg_copy["masks"], match="0..K-1")


def test_val_mask_outside_classes(
    seg_copy: dict[str, Path], tmp_path: Path, cli: Any, write_png: Any
) -> None:
    write_png(seg_copy["val_masks"] / "case0.png", np.full((SIZE, SIZE), 2))
    _bad(
        cli, tmp_path, seg_copy["images"], seg_copy["masks"], "--val-images",
        str(seg_copy["val_images"]), "--val-masks", str(seg_copy["val_masks"]),
        match="--val-masks",
    )  # fmt: skip


def test_no_rater(seg_cases: dict[str, Path], tmp_path: Path, cli: Any) -> None:
    (tmp_path / "empty").mkdir()
    _bad(cli, tmp_path, seg_cases["images"], tmp_path / "empty", match="no rater sub-folders")


def test_unknown_rater(seg_cases: dict[str, Path], tmp_path: Path, cli: Any) -> None:
    _bad(
        cli, tmp_path, seg_cases["images"], seg_cases["masks"], "--method", "single",
        "--rater", "dave", match="'dave'",
    )  # fmt: skip


def test_reweight_needs_two_raters(seg_cases: dict[str, Path], tmp_path: Path, cli: Any) -> None:
    shutil.copytree(seg_cases["masks"] / "alice", tmp_path / "one" / "alice")
    for method in ("reweight", "reweight-gaf"):
        _bad(cli, tmp_path, seg_cases["images"], tmp_path / "one", "-m", method, match="only one")


def test_out_not_a_model_dir(seg_cases: dict[str, Path], tmp_path: Path, cli: Any) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    _bad(cli, tmp_path, seg_cases["images"], seg_cases["masks"], match="not empty", out=out)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--backbone", "deeplab"), "Did you mean"),
        (("--backbone", "deeplabv3-resnet50", "--unet-channels", "4,8"), "does not apply"),
        (("--backbone", "basic-unet", "--unet-channels", "4,8"), "six integers"),
        (("--epochs", "0"), "`--epochs` must be an integer from 1"),
        (("--rater", "bob"), "`--rater` applies to `--method single` only"),
        (("--k-every", "1.5"), "`--k-every` must be a fraction of the run in (0, 1]"),
        (("--k-every", "0"), "or a whole number of optimiser steps from 1 to 10000000; got '0'"),
        (("--k-every", "nan"), "`--k-every` must be a fraction"),
        (("--k-every", "ten"), "`--k-every` must be a fraction"),
        (("--focal-alpha", "1.5"), "`--focal-alpha` must be a number from 0 to 1"),
    ],
)
def test_bad_options(
    seg_cases: dict[str, Path], tmp_path: Path, cli: Any, extra: tuple[str, ...], message: str
) -> None:
    _bad(cli, tmp_path, seg_cases["images"], seg_cases["masks"], *extra, match=message)


def test_options_of_other_commands_are_unknown(
    seg_cases: dict[str, Path], tmp_path: Path, cli: Any
) -> None:
    for option, value in (("--image-size", "16"), ("--labels", "x.csv"), ("--boxes", "b.csv")):
        res = _train(cli, seg_cases["images"], seg_cases["masks"], tmp_path / "m", option, value)
        assert res.exit_code == 2
        assert f"No such option: {option}" in res.output


def test_resume_into_a_longer_run_is_refused(
    seg_copy: dict[str, Path],
    tmp_path: Path,
    cli: Callable[..., Any],
    user_error: Callable[[Any, str], None],
) -> None:
    out = tmp_path / "m"
    res = _train(cli, seg_copy["images"], seg_copy["masks"], out, "-m", "consensus")
    assert res.exit_code == 0, res.output
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    res = _train(cli, seg_copy["images"], seg_copy["masks"], out, "-m", "consensus", "--epochs", 1)
    user_error(res, r"holds 2 finished epochs, more than --epochs 1; pass --epochs 2 or more")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert json.loads((out / "run.json").read_text())["arguments"]["epochs"] == 2
