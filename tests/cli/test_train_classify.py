"""``crowdmed train`` and ``crowdmed predict`` on tiny feature and image problems in tmp_path."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from typer.testing import CliRunner  # noqa: E402

from crowdmed import __version__  # noqa: E402
from crowdmed.cli import app  # noqa: E402

N_LABELLED, N_VAL = 60, 20
MODEL_FILES = {
    "config.json",
    "model.safetensors",
    "data.json",
    "history.csv",
    "annotators.csv",
    "run.json",
    "checkpoint",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_features(
    cli: Callable[..., Any], paths: dict[str, Path], out: Path, *extra: Any, epochs: int = 3
) -> Any:
    return cli(
        "train",
        "classify",
        "--labels",
        paths["labels"],
        "--features",
        paths["x"],
        "--feature-ids",
        paths["ids"],
        "--out",
        out,
        "--epochs",
        epochs,
        "--batch-size",
        16,
        "--lr",
        0.01,
        *extra,
    )


def predict_features(
    cli: Callable[..., Any], paths: dict[str, Path], model: Path, out: Path
) -> Any:
    return cli(
        "predict",
        model,
        "--features",
        paths["x"],
        "--feature-ids",
        paths["ids"],
        "--out",
        out,
    )


# ---------------------------------------------------------------------- help
OWN_OPTIONS = {
    "classify": (
        "--labels",
        "--features",
        "--feature-ids",
        "--val-labels",
        "--image-size",
        "--tta",
    ),
    "segment": ("--masks", "--rater", "--val-masks", "--backbone", "--unet-channels", "--k-every"),
    "detect": ("--boxes", "--variant", "--iou-thr", "--checkpoint"),
}


def test_help_lists_train_and_predict(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "train" in result.stdout
    assert "predict" in result.stdout
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    for command in OWN_OPTIONS:
        assert command in result.stdout
    for command, own in OWN_OPTIONS.items():
        result = runner.invoke(app, ["train", command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        assert f"Example: crowdmed train {command}" in result.stdout
        for option in own:
            assert option in result.stdout, (command, option)
        for other, options in OWN_OPTIONS.items():
            if other != command:
                shown = [o for o in options if f" {o} " in result.stdout]
                assert not shown, (command, shown)  # each command has only its own options
    result = runner.invoke(app, ["predict", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("MODEL_DIR", "--features", "--images", "--out", "--no-tta"):
        assert option in result.stdout


def _command_paths() -> list[list[str]]:
    import typer.main

    def walk(command: Any, path: list[str]) -> list[list[str]]:
        paths = [path]
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                paths += walk(sub, [*path, name])
        return paths

    return walk(typer.main.get_command(app), [])


@pytest.mark.parametrize("command", _command_paths(), ids=lambda p: " ".join(p) or "crowdmed")
def test_help_fits_80_columns(runner: CliRunner, command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    widths = [len(line) for line in result.stdout.splitlines()]
    assert max(widths) <= 80, max(widths)


def test_task_option_is_gone(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--task", "segmentation", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "No such option: --task" in result.output


# ---------------------------------------------------------------------- features
def test_train_and_predict_on_features(
    cli: Callable[..., Any], tmp_path: Path, crowd_features: dict[str, Path]
) -> None:
    model = tmp_path / "model"
    result = train_features(cli, crowd_features, model, "--val-labels", crowd_features["val"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # progress and summary go to stderr
    assert "crowd-layer-mw" in result.stderr
    assert {p.name for p in model.iterdir()} == MODEL_FILES
    assert (model / "checkpoint" / "checkpoint.safetensors").is_file()

    history = pd.read_csv(model / "history.csv")
    assert list(history.columns) == ["epoch", "loss", "val_accuracy", "val_auc", "seconds"]
    assert history["epoch"].tolist() == [1, 2, 3]

    annotators = pd.read_csv(model / "annotators.csv")
    assert annotators["annotator"].tolist() == ["r0", "r1", "r2"]
    assert annotators["n_labels"].tolist() == [N_LABELLED] * 3
    for column in ("mean_recall", "sensitivity", "specificity", "recall_neg", "recall_pos"):
        assert annotators[column].between(0, 1).all(), column

    run = json.loads((model / "run.json").read_text())
    assert run["crowdmed_version"] == __version__
    assert run["command"] == "train classify"
    assert run["method"] == "crowd-layer-mw"
    assert run["seed"] == 0
    assert run["params"]["epochs"] == 3
    assert run["params"]["batch_size"] == 16
    assert run["params"]["lr"] == 0.01
    assert run["params"]["patience"] == 10
    for name in ("labels", "features", "feature_ids", "val_labels"):
        key = {"labels": "labels", "features": "x", "feature_ids": "ids", "val_labels": "val"}
        assert run["inputs"][name]["sha256"] == sha256(crowd_features[key[name]]), name
    assert run["network"]["name"] == "mlp_head"
    assert run["network"]["kwargs"] == {"in_features": 4, "n_classes": 2}
    assert run["data"]["n_items"] == N_LABELLED
    assert run["data"]["n_val"] == N_VAL
    assert run["data"]["classes"] == ["neg", "pos"]
    assert run["fit"]["epochs_run"] == 3
    assert 1 <= run["fit"]["best_epoch"] <= 3
    assert run["fit"]["resumed_from_epoch"] is None
    assert run["elapsed_seconds"] > 0

    out = tmp_path / "pred.csv"
    result = predict_features(cli, crowd_features, model, out)
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(out)
    assert list(pred.columns) == ["item", "label", "confidence", "p_neg", "p_pos"]
    assert (
        pred["item"].tolist() == crowd_features["ids"].read_text().split()
    )  # one row per feature row
    p = pred[["p_neg", "p_pos"]].to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(pred["confidence"], p.max(axis=1))
    assert set(pred["label"]) <= {"neg", "pos"}
    sidecar = json.loads((tmp_path / "pred.csv.json").read_text())
    assert sidecar["model"]["sha256"] == sha256(model / "model.safetensors")
    assert sidecar["n_items"] == N_LABELLED + N_VAL


def test_library_call_gives_the_same_model(
    cli: Callable[..., Any], tmp_path: Path, crowd_features: dict[str, Path]
) -> None:
    """What the command does, a library user does with one call, ``save`` and ``predict``."""
    from crowdmed.pipelines.classify import train_classifier
    from crowdmed.pipelines.predict import predict_folder

    assert train_features(cli, crowd_features, tmp_path / "cli").exit_code == 0
    inputs = {"features": crowd_features["x"], "feature_ids": crowd_features["ids"]}
    run = train_classifier(
        crowd_features["labels"], tmp_path / "lib", **inputs, epochs=3, batch_size=16, lr=0.01
    )
    run.save(tmp_path / "lib")
    a, b = (predict_folder(tmp_path / d, **inputs).table for d in ("cli", "lib"))
    pd.testing.assert_frame_equal(a, b)
    assert sorted(a["p_pos"].round(6)) != sorted(a["p_neg"].round(6))  # not a constant model
    history = [pd.read_csv(tmp_path / d / "history.csv") for d in ("cli", "lib")]
    pd.testing.assert_frame_equal(
        history[0].drop(columns="seconds"), history[1].drop(columns="seconds")
    )


def test_rows_are_matched_by_id_and_seeded(
    cli: Callable[..., Any], tmp_path: Path, crowd_features: dict[str, Path]
) -> None:
    """Reordering the feature rows (with their ids) changes nothing; same seed, same model."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert train_features(cli, crowd_features, a).exit_code == 0
    x = np.load(crowd_features["x"])
    ids = crowd_features["ids"].read_text().split()
    flipped = {
        "labels": crowd_features["labels"],
        "x": tmp_path / "x2.npy",
        "ids": tmp_path / "ids.csv",
    }
    np.save(flipped["x"], x[::-1])
    pd.DataFrame({"item": ids[::-1]}).to_csv(flipped["ids"], index=False)  # CSV variant
    assert train_features(cli, flipped, b).exit_code == 0
    assert train_features(cli, crowd_features, c, "--seed", 1).exit_code == 0
    for model in (a, b, c):
        assert predict_features(cli, crowd_features, model, model / "p.csv").exit_code == 0
    pa, pb, pc = (pd.read_csv(m / "p.csv")[["p_neg", "p_pos"]].to_numpy() for m in (a, b, c))
    np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(pa, pc)


# ---------------------------------------------------------------------- images
def test_train_and_predict_on_images(
    cli: Callable[..., Any], tmp_path: Path, crowd_images: dict[str, Path]
) -> None:
    model = tmp_path / "model"
    args = [
        "train",
        "classify",
        "--labels",
        crowd_images["labels"],
        "--images",
        crowd_images["images"],
        "--out",
        model,
    ]
    result = cli(*args, "--epochs", 2, "--batch-size", 8, "--tta")
    assert result.exit_code == 0, result.output
    run = json.loads((model / "run.json").read_text())
    assert run["network"]["name"] == "small_cnn"
    assert run["network"]["kwargs"] == {"in_channels": 1, "n_classes": 2, "depth": 3}
    assert run["data"]["input_shape"] == [1, 16, 16]
    assert run["inputs"]["images"]["n_files"] == 24
    assert len(pd.read_csv(model / "history.csv")) == 2

    # New crowd_images: another size (resized to the training size) and 16-bit depth.
    new = tmp_path / "new"
    new.mkdir()
    Image.fromarray(np.full((20, 24), 40000, dtype=np.uint16)).save(new / "x1.png")
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(new / "x2.tif")
    out = tmp_path / "pred.csv"
    result = cli("predict", model, "--images", new, "--out", out)
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(out)
    assert pred["item"].tolist() == ["x1", "x2"]
    assert list(pred.columns) == ["item", "label", "confidence", "p_0", "p_1"]
    assert json.loads((tmp_path / "pred.csv.json").read_text())["tta"] is True  # from train
    result = cli("predict", model, "--images", new, "--out", out, "--no-tta")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "pred.csv.json").read_text())["tta"] is False


def test_image_size_resizes_mixed_sizes(
    cli: Callable[..., Any],
    tmp_path: Path,
    crowd_images: dict[str, Path],
    user_error: Callable[..., None],
) -> None:
    Image.fromarray(np.zeros((20, 12), dtype=np.uint8)).save(crowd_images["images"] / "c0.png")
    model = tmp_path / "model"
    args = [
        "train",
        "classify",
        "--labels",
        crowd_images["labels"],
        "--images",
        crowd_images["images"],
        "--out",
        model,
    ]
    result = cli(*args, "--epochs", 1, "--batch-size", 8)
    user_error(result, r"same size .*'c0\.png' is 20x12 .*--image-size")
    assert not model.exists()
    result = cli(*args, "--epochs", 1, "--batch-size", 8, "--image-size", 8)
    assert result.exit_code == 0, result.output
    run = json.loads((model / "run.json").read_text())
    assert run["data"]["input_shape"] == [1, 8, 8]
    assert run["network"]["kwargs"]["depth"] == 2


# ---------------------------------------------------------------------- resume
def test_resume_after_more_epochs(
    cli: Callable[..., Any], tmp_path: Path, crowd_features: dict[str, Path]
) -> None:
    model, straight = tmp_path / "model", tmp_path / "straight"
    assert train_features(cli, crowd_features, model, epochs=2).exit_code == 0
    result = train_features(cli, crowd_features, model, epochs=4)
    assert result.exit_code == 0, result.output
    assert "resumed after epoch 2" in result.stderr
    assert pd.read_csv(model / "history.csv")["epoch"].tolist() == [1, 2, 3, 4]
    run = json.loads((model / "run.json").read_text())
    assert run["fit"]["resumed_from_epoch"] == 2
    assert run["fit"]["epochs_run"] == 4

    assert train_features(cli, crowd_features, straight, epochs=4).exit_code == 0
    for m in (model, straight):
        assert predict_features(cli, crowd_features, m, m / "p.csv").exit_code == 0
    pd.testing.assert_frame_equal(pd.read_csv(model / "p.csv"), pd.read_csv(straight / "p.csv"))


def test_resume_after_an_interruption(
    cli: Callable[..., Any],
    tmp_path: Path,
    crowd_features: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from crowdmed.training.engine import Engine

    original = Engine._save
    saved: list[int] = []

    def interrupt_after_epoch_2(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        saved.append(1)
        if len(saved) == 2:
            raise KeyboardInterrupt
        return out

    model, straight = tmp_path / "model", tmp_path / "straight"
    with monkeypatch.context() as m:
        m.setattr(Engine, "_save", interrupt_after_epoch_2)
        result = train_features(cli, crowd_features, model, epochs=4)
    assert result.exit_code != 0
    assert (model / "checkpoint" / "checkpoint.safetensors").is_file()
    assert not (model / "model.safetensors").exists()  # outputs are written only at the end

    result = train_features(cli, crowd_features, model, epochs=4)
    assert result.exit_code == 0, result.output
    assert json.loads((model / "run.json").read_text())["fit"]["resumed_from_epoch"] == 2
    assert len(pd.read_csv(model / "history.csv")) == 4
    assert train_features(cli, crowd_features, straight, epochs=4).exit_code == 0
    for m_dir in (model, straight):
        assert predict_features(cli, crowd_features, m_dir, m_dir / "p.csv").exit_code == 0
    pd.testing.assert_frame_equal(pd.read_csv(model / "p.csv"), pd.read_csv(straight / "p.csv"))


def test_resume_refuses_other_settings(
    cli: Callable[..., Any],
    tmp_path: Path,
    crowd_features: dict[str, Path],
    user_error: Callable[..., None],
) -> None:
    model = tmp_path / "model"
    assert train_features(cli, crowd_features, model, epochs=2).exit_code == 0
    before = sha256(model / "model.safetensors")
    result = train_features(cli, crowd_features, model, "--seed", 5, epochs=3)
    user_error(result, r"other settings or inputs \(seed 0 -> 5\).*--no-resume")
    assert sha256(model / "model.safetensors") == before
    result = train_features(cli, crowd_features, model, "--seed", 5, "--no-resume", epochs=3)
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(model / "history.csv")) == 3
    assert json.loads((model / "run.json").read_text())["fit"]["resumed_from_epoch"] is None


def test_classes_and_duplicates_are_read_as_in_aggregate(
    cli: Callable[..., Any],
    tmp_path: Path,
    crowd_features: dict[str, Path],
    user_error: Callable[..., None],
) -> None:
    # a repeated (item, annotator) pair, and a class that no label uses yet
    paths = dict(crowd_features)
    text = crowd_features["labels"].read_text()
    first = text.splitlines()[1]
    paths["labels"] = tmp_path / "labels.csv"
    paths["labels"].write_text(text + first + "\n", encoding="utf-8")
    model = tmp_path / "model"
    user_error(train_features(cli, paths, model, epochs=1), r"--on-duplicate")
    assert not model.exists()
    result = train_features(
        cli, paths, model, "--on-duplicate", "first", "--classes", "neg,pos,unsure", epochs=1
    )
    assert result.exit_code == 0, result.output
    data = json.loads((model / "data.json").read_text())
    assert data["classes"] == ["neg", "pos", "unsure"]
    run = json.loads((model / "run.json").read_text())
    assert run["network"]["kwargs"]["n_classes"] == 3
    config = json.loads((model / "checkpoint" / "config.json").read_text())
    assert config["read"] == {"classes": ["neg", "pos", "unsure"], "on_duplicate": "first"}
    # resuming with the labels read another way is refused
    result = train_features(cli, paths, model, "--on-duplicate", "last", epochs=2)
    user_error(result, r"other settings or inputs .*--no-resume")


def test_rerun_after_early_stopping_trains_nothing(
    cli: Callable[..., Any], tmp_path: Path, crowd_features: dict[str, Path]
) -> None:
    # Constant validation crowd_features: the validation AUC never improves after epoch 1.
    val_x, val_ids = tmp_path / "vx.npy", tmp_path / "vids.txt"
    np.save(val_x, np.zeros((N_VAL, 4), dtype=np.float32))
    val_ids.write_text(
        "\n".join(pd.read_csv(crowd_features["val"])["item"].astype(str)) + "\n", encoding="utf-8"
    )
    model = tmp_path / "model"
    extra = ["--val-labels", crowd_features["val"], "--val-features", val_x]
    extra += ["--val-feature-ids", val_ids, "--patience", 2]
    assert train_features(cli, crowd_features, model, *extra, epochs=20).exit_code == 0
    run = json.loads((model / "run.json").read_text())
    assert run["fit"]["stopped_early"]
    assert run["fit"]["epochs_run"] == 3
    before = {
        name: sha256(model / name) for name in ("model.safetensors", "history.csv", "run.json")
    }
    result = train_features(cli, crowd_features, model, *extra, epochs=20)
    assert result.exit_code == 0, result.output
    assert "already stopped early at epoch 3" in result.stderr
    assert {name: sha256(model / name) for name in before} == before


# ---------------------------------------------------------------------- user errors
def _write_bad_inputs(tmp_path: Path, paths: dict[str, Path]) -> dict[str, Path]:
    short_ids = tmp_path / "short_ids.txt"
    short_ids.write_text("\n".join(paths["ids"].read_text().split()[:-1]) + "\n")
    no_labelled = tmp_path / "x_val_only.npy"
    np.save(no_labelled, np.load(paths["x"])[:5])
    some_ids = tmp_path / "five_ids.txt"
    some_ids.write_text("\n".join(paths["ids"].read_text().split()[:5]) + "\n")
    nan_x = tmp_path / "nan.npy"
    x = np.load(paths["x"])
    x[7, 1] = np.nan
    np.save(nan_x, x)
    bad_val = tmp_path / "bad_val.csv"
    bad_val.write_text("item,label\ncase070,neg\ncase071,maybe\n")
    return {
        "short_ids": short_ids,
        "five_x": no_labelled,
        "five_ids": some_ids,
        "nan_x": nan_x,
        "bad_val": bad_val,
    }


FEATURE_ERRORS = [
    pytest.param(
        {"ids": "short_ids"},
        [],
        r"`--feature-ids` lists 79 ids but `--features` has 80 rows",
        id="ids-and-rows-differ",
    ),
    pytest.param(
        {"x": "five_x", "ids": "five_ids"},
        [],
        r"\d+ of 60 labelled items have no row in `--features`: \['case",
        id="items-without-features",
    ),
    pytest.param({"x": "nan_x"}, [], r"NaN or infinite values in 1 rows", id="nan-features"),
    pytest.param(
        {},
        ["--val-labels", "bad_val"],
        r"classes \['maybe'\] that are not among the 2 classes of LABELS",
        id="class-outside-head",
    ),
    pytest.param({}, ["--method", "dl-true"], r"dl-true needs the true class", id="dl-true"),
    pytest.param(
        {}, ["--method", "crowd-layer-wm"], r"`--method` must be one of", id="unknown-method"
    ),
    pytest.param({}, ["--tta"], r"`--tta` applies to --images only", id="tta-on-features"),
    pytest.param({}, ["--epochs", 0], r"`--epochs` must be an integer from 1", id="epochs"),
    pytest.param(
        {}, ["--val-images", "x"], r"`--val-images` needs `--val-labels`", id="val-without-labels"
    ),
]


@pytest.mark.parametrize(("swap", "extra", "pattern"), FEATURE_ERRORS)
def test_train_user_errors_write_nothing(
    cli: Callable[..., Any],
    tmp_path: Path,
    crowd_features: dict[str, Path],
    swap: dict[str, str],
    extra: list[Any],
    pattern: str,
    user_error: Callable[..., None],
) -> None:
    bad = _write_bad_inputs(tmp_path, crowd_features)
    paths = {**crowd_features, **{k: bad[v] for k, v in swap.items()}}
    extra = [bad.get(e, e) if isinstance(e, str) else e for e in extra]
    model = tmp_path / "model"
    result = train_features(cli, paths, model, *extra)
    user_error(result, pattern)
    assert not model.exists()


def test_train_input_choice_errors(
    cli: Callable[..., Any],
    tmp_path: Path,
    crowd_features: dict[str, Path],
    crowd_images: dict[str, Path],
    user_error: Callable[..., None],
) -> None:
    model = tmp_path / "model"
    base = ["train", "classify", "--labels", crowd_features["labels"], "--out", model]
    user_error(cli(*base), r"Pass the inputs .* with `--features`")
    result = cli(*base, "--features", crowd_features["x"])
    user_error(result, r"`--features` needs `--feature-ids`")
    result = cli(
        *base,
        "--features",
        crowd_features["x"],
        "--feature-ids",
        crowd_features["ids"],
        "--images",
        crowd_images["images"],
    )
    user_error(result, r"either `--features` or `--images`, not both")
    result = cli(*base, "--images", tmp_path / "nowhere")
    user_error(result, r"`--images` must be a folder of images; '.*nowhere' does not")
    (tmp_path / "file").write_text("x")
    result = cli(
        "train",
        "classify",
        "--labels",
        crowd_images["labels"],
        "--images",
        crowd_images["images"],
        "--out",
        tmp_path / "file",
    )
    user_error(result, r"`--out` must be a folder for the model")
    assert not model.exists()


def test_image_errors_write_nothing(
    cli: Callable[..., Any],
    tmp_path: Path,
    crowd_images: dict[str, Path],
    user_error: Callable[..., None],
) -> None:
    model = tmp_path / "model"
    args = [
        "train",
        "classify",
        "--labels",
        crowd_images["labels"],
        "--images",
        crowd_images["images"],
        "--out",
        model,
    ]
    (crowd_images["images"] / "c5.png").write_bytes(b"not a png at all")
    result = cli(*args, "--epochs", 1)
    user_error(result, r"Labelled items: Cannot read image '.*c5\.png'")
    assert not model.exists()
    for i in (5, 6, 7):
        (crowd_images["images"] / f"c{i}.png").unlink()
    result = cli(*args, "--epochs", 1)
    user_error(result, r"3 of 24 items have no image file .*\['c5', 'c6', 'c7'\]")
    assert not model.exists()


def test_missing_torch_is_a_user_error(
    cli: Callable[..., Any],
    tmp_path: Path,
    crowd_features: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    user_error: Callable[..., None],
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    model = tmp_path / "model"
    result = train_features(cli, crowd_features, model)
    user_error(
        result,
        r"needs the torch extra \(import of torch halted.*\): "
        r"pip install 'crowdmed\[torch\]'\.$",
    )
    assert not model.exists()
    result = predict_features(cli, crowd_features, model, tmp_path / "p.csv")
    user_error(
        result,
        r"needs the torch extra \(.*\): pip install 'crowdmed\[torch\]'\.$",
    )


def test_predict_user_errors(
    cli: Callable[..., Any],
    tmp_path: Path,
    crowd_features: dict[str, Path],
    crowd_images: dict[str, Path],
    user_error: Callable[..., None],
) -> None:
    model = tmp_path / "model"
    assert train_features(cli, crowd_features, model, epochs=1).exit_code == 0
    out = tmp_path / "p.csv"
    result = predict_features(cli, crowd_features, tmp_path / "nowhere", out)
    user_error(result, r"MODEL_DIR must be a folder written by `crowdmed train`")
    result = cli("predict", model, "--images", crowd_images["images"], "--out", out)
    user_error(result, r"trained on features; pass `--features` instead of `--images`")
    wide, ids = tmp_path / "wide.npy", tmp_path / "ids.txt"
    np.save(wide, np.zeros((2, 5), dtype=np.float32))
    ids.write_text("a\nb\n")
    result = cli("predict", model, "--features", wide, "--feature-ids", ids, "--out", out)
    user_error(result, r"`--features` has 5 columns but the model was trained on 4")
    (model / "model.safetensors").write_bytes(b"garbage")
    result = predict_features(cli, crowd_features, model, out)
    user_error(result, r"model\.safetensors")
    assert not out.exists()
    assert not (tmp_path / "p.csv.json").exists()


# ---------------------------------------------------------------------- without torch
NO_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'monai', 'torchvision'):
            raise ImportError('blocked ' + name)
        return None
sys.meta_path.insert(0, Block())
from crowdmed.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    print('exit', exc.code, 'torch' in sys.modules)
"""


def test_help_and_errors_without_torch(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", NO_TORCH, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    proc = run("train", "classify", "--help")
    assert proc.stdout.rstrip().endswith("exit 0 False"), proc.stderr
    assert "--features" in proc.stdout
    proc = run(
        "train", "classify", "--labels", "l.csv", "--images", str(tmp_path), "--out", str(tmp_path)
    )
    assert proc.stdout.strip() == "exit 2 False", proc.stderr
    assert re.fullmatch(
        r"Error: Training a classifier needs the torch extra \(blocked torch\): "
        r"pip install 'crowdmed\[torch\]'\.\n",
        proc.stderr,
    )
