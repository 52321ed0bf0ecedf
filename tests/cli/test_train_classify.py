"""``crowdmed train`` and ``crowdmed predict`` on tiny feature and image problems in tmp_path."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from crowdmed import __version__  # noqa: E402
from crowdmed.cli import app  # noqa: E402

N_LABELLED, N_VAL, N_ANNOTATORS = 60, 20, 3
MODEL_FILES = {"model.pt", "history.csv", "annotators.csv", "run.json", "checkpoint"}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    # Tiny networks run 10-40x faster with one intra-op thread on a busy 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def invoke(runner: CliRunner, *args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result: Any, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert pattern
    assert re.search(pattern, lines[0]), lines[0]


# ---------------------------------------------------------------------- tiny problems
@pytest.fixture
def features(tmp_path: Path) -> dict[str, Path]:
    """60 labelled items, 20 validation items; feature rows in shuffled order.

    Returns the paths of labels.csv (long, classes 'neg'/'pos'), x.npy (80 x 4), ids.txt (the
    item id of each row) and val.csv (item,label of the 20 validation items).
    """
    rng = np.random.default_rng(0)
    n = N_LABELLED + N_VAL
    x = rng.normal(size=(n, 4)).astype(np.float32)
    truth = (x[:, 0] > 0).astype(int)
    ids = [f"case{i:03d}" for i in range(n)]
    rows = []
    for i in range(N_LABELLED):
        for a, acc in enumerate((0.9, 0.8, 0.7)):
            label = truth[i] if rng.random() < acc else 1 - truth[i]
            rows.append((ids[i], f"r{a}", ("neg", "pos")[label]))
    data = tmp_path / "data"
    data.mkdir()
    paths = {
        "labels": data / "labels.csv",
        "x": data / "x.npy",
        "ids": data / "ids.txt",
        "val": data / "val.csv",
    }
    pd.DataFrame(rows, columns=["item", "annotator", "label"]).to_csv(paths["labels"], index=False)
    order = rng.permutation(n)
    np.save(paths["x"], x[order])
    paths["ids"].write_text("\n".join(ids[i] for i in order) + "\n", encoding="utf-8")
    val = pd.DataFrame(
        {"item": ids[N_LABELLED:], "label": [("neg", "pos")[t] for t in truth[N_LABELLED:]]}
    )
    val.to_csv(paths["val"], index=False)
    return paths


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    """24 grey 16x16 PNGs (a bright square marks class 1), 3 annotators, integer classes."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "imgs"
    folder.mkdir()
    truth = np.tile([0, 1], 12)
    rows = []
    for i, t in enumerate(truth):
        pixels = (rng.random((16, 16)) * 80).astype(np.uint8)
        if t:
            pixels[4:12, 4:12] = 230
        Image.fromarray(pixels).save(folder / f"c{i}.png")
        for a in range(N_ANNOTATORS):
            rows.append((f"c{i}", f"r{a}", int(t if rng.random() < 0.8 else 1 - t)))
    labels = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["item", "annotator", "label"]).to_csv(labels, index=False)
    return {"labels": labels, "images": folder}


def train_features(
    runner: CliRunner, paths: dict[str, Path], out: Path, *extra: Any, epochs: int = 3
) -> Any:
    return invoke(
        runner,
        "train",
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


def predict_features(runner: CliRunner, paths: dict[str, Path], model: Path, out: Path) -> Any:
    return invoke(
        runner,
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
def test_help_lists_train_and_predict(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "train" in result.stdout
    assert "predict" in result.stdout
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--labels", "--features", "--feature-ids", "--images", "--val-labels"):
        assert option in result.stdout
    for option in ("--patience", "--seed", "--image-size", "--tta", "--no-resume"):
        assert option in result.stdout
    result = runner.invoke(app, ["predict", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("MODEL_DIR", "--features", "--images", "--out", "--no-tta"):
        assert option in result.stdout


# ---------------------------------------------------------------------- features
def test_train_and_predict_on_features(
    runner: CliRunner, tmp_path: Path, features: dict[str, Path]
) -> None:
    model = tmp_path / "model"
    result = train_features(runner, features, model, "--val-labels", features["val"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # progress and summary go to stderr
    assert "crowd-layer-mw" in result.stderr
    assert {p.name for p in model.iterdir()} == MODEL_FILES
    assert (model / "checkpoint" / "checkpoint.pt").is_file()

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
    assert run["command"] == "train"
    assert run["method"] == "crowd-layer-mw"
    assert run["seed"] == 0
    assert run["params"]["epochs"] == 3
    assert run["params"]["batch_size"] == 16
    assert run["params"]["lr"] == 0.01
    assert run["params"]["patience"] == 10
    for name in ("labels", "features", "feature_ids", "val_labels"):
        key = {"labels": "labels", "features": "x", "feature_ids": "ids", "val_labels": "val"}
        assert run["inputs"][name]["sha256"] == sha256(features[key[name]]), name
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
    result = predict_features(runner, features, model, out)
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(out)
    assert list(pred.columns) == ["item", "label", "confidence", "p_neg", "p_pos"]
    assert pred["item"].tolist() == features["ids"].read_text().split()  # one row per feature row
    p = pred[["p_neg", "p_pos"]].to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(pred["confidence"], p.max(axis=1))
    assert set(pred["label"]) <= {"neg", "pos"}
    sidecar = json.loads((tmp_path / "pred.csv.json").read_text())
    assert sidecar["model"]["sha256"] == sha256(model / "model.pt")
    assert sidecar["n_items"] == N_LABELLED + N_VAL


def test_rows_are_matched_by_id_and_seeded(
    runner: CliRunner, tmp_path: Path, features: dict[str, Path]
) -> None:
    """Reordering the feature rows (with their ids) changes nothing; same seed, same model."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert train_features(runner, features, a).exit_code == 0
    x = np.load(features["x"])
    ids = features["ids"].read_text().split()
    flipped = {"labels": features["labels"], "x": tmp_path / "x2.npy", "ids": tmp_path / "ids.csv"}
    np.save(flipped["x"], x[::-1])
    pd.DataFrame({"item": ids[::-1]}).to_csv(flipped["ids"], index=False)  # CSV variant
    assert train_features(runner, flipped, b).exit_code == 0
    assert train_features(runner, features, c, "--seed", 1).exit_code == 0
    for model in (a, b, c):
        assert predict_features(runner, features, model, model / "p.csv").exit_code == 0
    pa, pb, pc = (pd.read_csv(m / "p.csv")[["p_neg", "p_pos"]].to_numpy() for m in (a, b, c))
    np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(pa, pc)


# ---------------------------------------------------------------------- images
def test_train_and_predict_on_images(
    runner: CliRunner, tmp_path: Path, images: dict[str, Path]
) -> None:
    model = tmp_path / "model"
    args = ["train", "--labels", images["labels"], "--images", images["images"], "--out", model]
    result = invoke(runner, *args, "--epochs", 2, "--batch-size", 8, "--tta")
    assert result.exit_code == 0, result.output
    run = json.loads((model / "run.json").read_text())
    assert run["network"]["name"] == "small_cnn"
    assert run["network"]["kwargs"] == {"in_channels": 1, "n_classes": 2, "depth": 3}
    assert run["data"]["input_shape"] == [1, 16, 16]
    assert run["inputs"]["images"]["n_files"] == 24
    assert len(pd.read_csv(model / "history.csv")) == 2

    # New images: another size (resized to the training size) and 16-bit depth.
    new = tmp_path / "new"
    new.mkdir()
    Image.fromarray(np.full((20, 24), 40000, dtype=np.uint16)).save(new / "x1.png")
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(new / "x2.tif")
    out = tmp_path / "pred.csv"
    result = invoke(runner, "predict", model, "--images", new, "--out", out)
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(out)
    assert pred["item"].tolist() == ["x1", "x2"]
    assert list(pred.columns) == ["item", "label", "confidence", "p_0", "p_1"]
    assert json.loads((tmp_path / "pred.csv.json").read_text())["tta"] is True  # from train
    result = invoke(runner, "predict", model, "--images", new, "--out", out, "--no-tta")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "pred.csv.json").read_text())["tta"] is False


def test_image_size_resizes_mixed_sizes(
    runner: CliRunner, tmp_path: Path, images: dict[str, Path]
) -> None:
    Image.fromarray(np.zeros((20, 12), dtype=np.uint8)).save(images["images"] / "c0.png")
    model = tmp_path / "model"
    args = ["train", "--labels", images["labels"], "--images", images["images"], "--out", model]
    result = invoke(runner, *args, "--epochs", 1, "--batch-size", 8)
    assert_user_error(result, r"same size .*'c0\.png' is 20x12 .*--image-size")
    assert not model.exists()
    result = invoke(runner, *args, "--epochs", 1, "--batch-size", 8, "--image-size", 8)
    assert result.exit_code == 0, result.output
    run = json.loads((model / "run.json").read_text())
    assert run["data"]["input_shape"] == [1, 8, 8]
    assert run["network"]["kwargs"]["depth"] == 2


# ---------------------------------------------------------------------- resume
def test_resume_after_more_epochs(
    runner: CliRunner, tmp_path: Path, features: dict[str, Path]
) -> None:
    model, straight = tmp_path / "model", tmp_path / "straight"
    assert train_features(runner, features, model, epochs=2).exit_code == 0
    result = train_features(runner, features, model, epochs=4)
    assert result.exit_code == 0, result.output
    assert "resumed after epoch 2" in result.stderr
    assert pd.read_csv(model / "history.csv")["epoch"].tolist() == [1, 2, 3, 4]
    run = json.loads((model / "run.json").read_text())
    assert run["fit"]["resumed_from_epoch"] == 2
    assert run["fit"]["epochs_run"] == 4

    assert train_features(runner, features, straight, epochs=4).exit_code == 0
    for m in (model, straight):
        assert predict_features(runner, features, m, m / "p.csv").exit_code == 0
    pd.testing.assert_frame_equal(pd.read_csv(model / "p.csv"), pd.read_csv(straight / "p.csv"))


def test_resume_after_an_interruption(
    runner: CliRunner, tmp_path: Path, features: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from crowdmed.training import CrowdClassifier

    original = CrowdClassifier._save_checkpoint

    def interrupt_after_epoch_2(self: Any, path: Path, config: Any, epoch: int, *a: Any):
        original(self, path, config, epoch, *a)
        if epoch == 2:
            raise KeyboardInterrupt

    model, straight = tmp_path / "model", tmp_path / "straight"
    with monkeypatch.context() as m:
        m.setattr(CrowdClassifier, "_save_checkpoint", interrupt_after_epoch_2)
        result = train_features(runner, features, model, epochs=4)
    assert result.exit_code != 0
    assert (model / "checkpoint" / "checkpoint.pt").is_file()
    assert not (model / "model.pt").exists()  # outputs are written only at the end

    result = train_features(runner, features, model, epochs=4)
    assert result.exit_code == 0, result.output
    assert json.loads((model / "run.json").read_text())["fit"]["resumed_from_epoch"] == 2
    assert len(pd.read_csv(model / "history.csv")) == 4
    assert train_features(runner, features, straight, epochs=4).exit_code == 0
    for m_dir in (model, straight):
        assert predict_features(runner, features, m_dir, m_dir / "p.csv").exit_code == 0
    pd.testing.assert_frame_equal(pd.read_csv(model / "p.csv"), pd.read_csv(straight / "p.csv"))


def test_resume_refuses_other_settings(
    runner: CliRunner, tmp_path: Path, features: dict[str, Path]
) -> None:
    model = tmp_path / "model"
    assert train_features(runner, features, model, epochs=2).exit_code == 0
    before = sha256(model / "model.pt")
    result = train_features(runner, features, model, "--seed", 5, epochs=3)
    assert_user_error(result, r"other settings or inputs \(seed 0 -> 5\).*--no-resume")
    assert sha256(model / "model.pt") == before
    result = train_features(runner, features, model, "--seed", 5, "--no-resume", epochs=3)
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(model / "history.csv")) == 3
    assert json.loads((model / "run.json").read_text())["fit"]["resumed_from_epoch"] is None


def test_rerun_after_early_stopping_trains_nothing(
    runner: CliRunner, tmp_path: Path, features: dict[str, Path]
) -> None:
    # Constant validation features: the validation AUC never improves after epoch 1.
    val_x, val_ids = tmp_path / "vx.npy", tmp_path / "vids.txt"
    np.save(val_x, np.zeros((N_VAL, 4), dtype=np.float32))
    val_ids.write_text(
        "\n".join(pd.read_csv(features["val"])["item"].astype(str)) + "\n", encoding="utf-8"
    )
    model = tmp_path / "model"
    extra = ["--val-labels", features["val"], "--val-features", val_x]
    extra += ["--val-feature-ids", val_ids, "--patience", 2]
    assert train_features(runner, features, model, *extra, epochs=20).exit_code == 0
    run = json.loads((model / "run.json").read_text())
    assert run["fit"]["stopped_early"]
    assert run["fit"]["epochs_run"] == 3
    before = {name: sha256(model / name) for name in ("model.pt", "history.csv", "run.json")}
    result = train_features(runner, features, model, *extra, epochs=20)
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
    pytest.param({}, ["--epochs", 0], r"`--epochs` must be a positive integer", id="epochs"),
    pytest.param(
        {}, ["--val-images", "x"], r"`--val-images` needs `--val-labels`", id="val-without-labels"
    ),
]


@pytest.mark.parametrize(("swap", "extra", "pattern"), FEATURE_ERRORS)
def test_train_user_errors_write_nothing(
    runner: CliRunner,
    tmp_path: Path,
    features: dict[str, Path],
    swap: dict[str, str],
    extra: list[Any],
    pattern: str,
) -> None:
    bad = _write_bad_inputs(tmp_path, features)
    paths = {**features, **{k: bad[v] for k, v in swap.items()}}
    extra = [bad.get(e, e) if isinstance(e, str) else e for e in extra]
    model = tmp_path / "model"
    result = train_features(runner, paths, model, *extra)
    assert_user_error(result, pattern)
    assert not model.exists()


def test_train_input_choice_errors(
    runner: CliRunner, tmp_path: Path, features: dict[str, Path], images: dict[str, Path]
) -> None:
    model = tmp_path / "model"
    base = ["train", "--labels", features["labels"], "--out", model]
    assert_user_error(invoke(runner, *base), r"Pass the inputs .* with `--features`")
    result = invoke(runner, *base, "--features", features["x"])
    assert_user_error(result, r"`--features` needs `--feature-ids`")
    result = invoke(
        runner,
        *base,
        "--features",
        features["x"],
        "--feature-ids",
        features["ids"],
        "--images",
        images["images"],
    )
    assert_user_error(result, r"either `--features` or `--images`, not both")
    result = invoke(runner, *base, "--images", tmp_path / "nowhere")
    assert_user_error(result, r"`--images` must be a folder of images; '.*nowhere' does not")
    (tmp_path / "file").write_text("x")
    result = invoke(
        runner,
        "train",
        "--labels",
        images["labels"],
        "--images",
        images["images"],
        "--out",
        tmp_path / "file",
    )
    assert_user_error(result, r"`--out` must be a folder for the model")
    assert not model.exists()


def test_image_errors_write_nothing(
    runner: CliRunner, tmp_path: Path, images: dict[str, Path]
) -> None:
    model = tmp_path / "model"
    args = ["train", "--labels", images["labels"], "--images", images["images"], "--out", model]
    (images["images"] / "c5.png").write_bytes(b"not a png at all")
    result = invoke(runner, *args, "--epochs", 1)
    assert_user_error(result, r"Labelled items: Cannot read image '.*c5\.png'")
    assert not model.exists()
    for i in (5, 6, 7):
        (images["images"] / f"c{i}.png").unlink()
    result = invoke(runner, *args, "--epochs", 1)
    assert_user_error(result, r"3 of 24 items have no image file .*\['c5', 'c6', 'c7'\]")
    assert not model.exists()


def test_missing_torch_is_a_user_error(
    runner: CliRunner, tmp_path: Path, features: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    model = tmp_path / "model"
    result = train_features(runner, features, model)
    assert_user_error(
        result,
        r"`crowdmed train` needs the torch extra \(import of torch halted.*\): "
        r"pip install 'crowdmed\[torch\]'\.$",
    )
    assert not model.exists()
    result = predict_features(runner, features, model, tmp_path / "p.csv")
    assert_user_error(
        result,
        r"`crowdmed predict` needs the torch extra \(.*\): pip install 'crowdmed\[torch\]'\.$",
    )


def test_predict_user_errors(
    runner: CliRunner, tmp_path: Path, features: dict[str, Path], images: dict[str, Path]
) -> None:
    model = tmp_path / "model"
    assert train_features(runner, features, model, epochs=1).exit_code == 0
    out = tmp_path / "p.csv"
    result = predict_features(runner, features, tmp_path / "nowhere", out)
    assert_user_error(result, r"MODEL_DIR must be a folder written by `crowdmed train`")
    result = invoke(runner, "predict", model, "--images", images["images"], "--out", out)
    assert_user_error(result, r"trained on features; pass `--features` instead of `--images`")
    wide, ids = tmp_path / "wide.npy", tmp_path / "ids.txt"
    np.save(wide, np.zeros((2, 5), dtype=np.float32))
    ids.write_text("a\nb\n")
    result = invoke(
        runner, "predict", model, "--features", wide, "--feature-ids", ids, "--out", out
    )
    assert_user_error(result, r"`--features` has 5 columns but the model was trained on 4")
    (model / "model.pt").write_bytes(b"garbage")
    result = predict_features(runner, features, model, out)
    assert_user_error(result, r"Cannot read model '.*model\.pt'")
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

    proc = run("train", "--help")
    assert proc.stdout.rstrip().endswith("exit 0 False"), proc.stderr
    assert "--features" in proc.stdout
    proc = run("train", "--labels", "l.csv", "--images", str(tmp_path), "--out", str(tmp_path))
    assert proc.stdout.strip() == "exit 2 False", proc.stderr
    assert re.fullmatch(
        r"Error: `crowdmed train` needs the torch extra \(blocked torch\): "
        r"pip install 'crowdmed\[torch\]'\.\n",
        proc.stderr,
    )
