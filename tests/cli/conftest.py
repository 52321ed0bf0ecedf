"""Tiny inputs shared by the command-line tests: label tables, images, masks, volumes, boxes.

Session-scoped fixtures are written once and must not be changed by a test (copy them to
``tmp_path`` first); function-scoped ones are fresh for every test.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from crowdmed.cli import app

N_LABELLED, N_VAL, N_ANNOTATORS = 60, 20, 3
SEG_SIZE = 32
VOLUME_SIZE = 16
BOX = ["xmin", "ymin", "xmax", "ymax"]


# ---------------------------------------------------------------------- running commands
@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    # Tiny networks run 10-40x faster with one intra-op thread on a busy 2-core machine.
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(*args: Any) -> Any:
    """Run ``crowdmed ARGS`` in-process; paths and numbers are passed as text."""
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def cli() -> Callable[..., Any]:
    """``cli("train", "classify", ...)`` runs a command in-process."""
    return invoke


def check_user_error(result: Any, pattern: str) -> None:
    """Exit code 2 and exactly one line ``Error: ...`` on stderr matching ``pattern``."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert pattern
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture
def user_error() -> Callable[[Any, str], None]:
    """``user_error(result, pattern)`` checks a one-line user error (exit code 2)."""
    return check_user_error


def png(path: Path, arr: np.ndarray) -> Path:
    """Write a uint8 PNG, creating its folder."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def write_png() -> Callable[[Path, np.ndarray], Path]:
    """``write_png(path, array)`` writes a uint8 PNG."""
    return png


# ---------------------------------------------------------------------- label tables
@pytest.fixture
def crowd_features(tmp_path: Path) -> dict[str, Path]:
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
def crowd_images(tmp_path: Path) -> dict[str, Path]:
    """24 grey 16x16 PNGs (a bright square marks class 1), 3 annotators, integer classes."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "imgs"
    truth = np.tile([0, 1], 12)
    rows = []
    for i, t in enumerate(truth):
        pixels = (rng.random((16, 16)) * 80).astype(np.uint8)
        if t:
            pixels[4:12, 4:12] = 230
        png(folder / f"c{i}.png", pixels)
        for a in range(N_ANNOTATORS):
            rows.append((f"c{i}", f"r{a}", int(t if rng.random() < 0.8 else 1 - t)))
    labels = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["item", "annotator", "label"]).to_csv(labels, index=False)
    return {"labels": labels, "images": folder}


# ---------------------------------------------------------------------- masks
@pytest.fixture
def rater_masks() -> Callable[..., np.ndarray]:
    """``rater_masks(n_raters=3, shape=(12, 10))``: noisy copies of a square, bool."""

    def make(n_raters: int = 3, shape: tuple[int, ...] = (12, 10)) -> np.ndarray:
        rng = np.random.default_rng(0)
        truth = np.zeros(shape, bool)
        truth[tuple(slice(2, s - 2) for s in shape)] = True
        return truth[None] ^ (rng.random((n_raters, *shape)) < 0.1)

    return make


def _disc(cy: float, cx: float, r: float, size: int = SEG_SIZE) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


@pytest.fixture(scope="session")
def seg_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """6 training and 2 validation 32x32 cases, 3 raters (one skips a case, one saves 0/255).

    ``new`` holds 2 images to segment, one of a size the U-Net cannot halve (29x27).
    """
    root = tmp_path_factory.mktemp("seg")
    rng = np.random.default_rng(0)
    for split, n in (("images", 6), ("val_images", 2), ("new", 2)):
        for i in range(n):
            cy, cx, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(5, 8)
            truth = _disc(cy, cx, r)
            img = np.clip(truth * 180 + 40 + rng.normal(0, 15, truth.shape), 0, 255)
            if split == "new" and i == 1:
                img = img[:29, :27]  # a size the U-Net cannot halve: padded, then cropped
            png(root / split / f"case{i}.png", img)
            if split == "val_images":
                png(root / "val_masks" / f"case{i}.png", truth)
            elif split == "images":
                png(root / "masks" / "alice" / f"case{i}.png", truth)
                if i != 5:  # bob did not annotate case5
                    png(root / "masks" / "bob" / f"case{i}.png", _disc(cy, cx, r + 2))
                png(root / "masks" / "carol" / f"case{i}.png", _disc(cy, cx, r - 2) * 255)
    return {k: root / k for k in ("images", "masks", "val_images", "val_masks", "new")}


@pytest.fixture
def seg_copy(seg_cases: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """A copy of :func:`seg_cases` that a test may change."""
    out = {}
    for name, folder in seg_cases.items():
        out[name] = Path(shutil.copytree(folder, tmp_path / "seg" / name))
    return out


@pytest.fixture(scope="session")
def volume_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """3 NIfTI volumes of 16^3 (a ball), 2 raters (NIfTI and NRRD masks), 1 MHA to segment."""
    sitk = pytest.importorskip("SimpleITK")
    root = tmp_path_factory.mktemp("vol")
    rng = np.random.default_rng(2)
    zz, yy, xx = np.mgrid[:VOLUME_SIZE, :VOLUME_SIZE, :VOLUME_SIZE]
    for split, n in (("images", 3), ("new", 1)):
        (root / split).mkdir()
        for i in range(n):
            c, r = rng.uniform(6, 10, size=3), rng.uniform(3, 5)
            ball = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r**2
            vol = (ball * 300.0 + rng.normal(0, 20, ball.shape)).astype(np.float32)
            image = sitk.GetImageFromArray(vol)
            image.SetSpacing((0.8, 0.8, 2.0))
            suffix = ".mha" if split == "new" else ".nii.gz"
            sitk.WriteImage(image, str(root / split / f"case{i}{suffix}"))
            if split == "images":
                for rater, shift, ext in (("ann", 0, ".nii.gz"), ("bob", 1, ".nrrd")):
                    (root / "masks" / rater).mkdir(parents=True, exist_ok=True)
                    mask = sitk.GetImageFromArray(np.roll(ball, shift, axis=1).astype(np.uint8))
                    sitk.WriteImage(mask, str(root / "masks" / rater / f"case{i}{ext}"))
    return {k: root / k for k in ("images", "masks", "new")}


# ---------------------------------------------------------------------- boxes
@pytest.fixture
def boxes_csv(tmp_path: Path) -> Path:
    """A VinDr-style box table: 2 images of 100x100, 3 readers, one "no finding" row."""
    rows = [
        ("a", "r1", 0, 10, 10, 50, 40),
        ("a", "r2", 0, 12, 11, 52, 41),
        ("a", "r3", 0, 11, 10, 51, 40),
        ("b", "r1", 1, 5, 5, 25, 25),
        ("b", "r2", 14, 0, 0, 1, 1),  # VinDr-style "no finding"
        ("b", "r3", 1, 6, 5, 26, 25),
    ]
    columns = ["image_id", "rad_id", "class_id", "x_min", "y_min", "x_max", "y_max"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["image_width"] = 100
    frame["image_height"] = 100
    path = tmp_path / "readers.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def box_readers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """4 training and 2 new 32x32 images of digits, with the boxes of several readers."""
    from crowdmed.simulate import make_med_mnist

    root = tmp_path_factory.mktemp("det")
    d = make_med_mnist(4, 0, 2, size=32, digit_size=(10, 14), n_classes=2, random_state=0)
    for split, name in (("train", "images"), ("test", "new")):
        (root / name).mkdir()
        for i in d.image_ids(split):
            png(root / name / f"c{i}.png", d.images[i] * 255)
    train = set(d.image_ids("train").tolist())
    readers = d.readers[d.readers["image"].isin(train)]
    table = readers[["image", "reader", "class", *BOX]].assign(
        image=lambda f: "c" + f["image"].astype(str)
    )
    table.to_csv(root / "readers.csv", index=False)
    return {"boxes": root / "readers.csv", "images": root / "images", "new": root / "new"}


# ---------------------------------------------------------------------- trained models
@pytest.fixture(scope="session")
def seg_model(seg_cases: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch reweight-gaf U-Net on :func:`seg_cases`, validated, with `--predict new`."""
    pytest.importorskip("monai")
    out = tmp_path_factory.mktemp("seg_model") / "model"
    result = invoke(
        "train", "segment", "--images", seg_cases["images"], "--masks", seg_cases["masks"],
        "--out", out, "--epochs", 2, "--batch-size", 3, "--unet-channels", "4,8",
        "--method", "reweight-gaf", "--k-every", 1, "--seed", 3,
        "--val-images", seg_cases["val_images"], "--val-masks", seg_cases["val_masks"],
        "--predict", seg_cases["new"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def det_model(box_readers: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch EARL FCOS on :func:`box_readers`, with `--predict new`."""
    pytest.importorskip("torchvision")
    out = tmp_path_factory.mktemp("det_model") / "model"
    result = invoke(
        "train", "detect", "--boxes", box_readers["boxes"], "--images", box_readers["images"],
        "--out", out, "--epochs", 1, "--batch-size", 4, "--predict", box_readers["new"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out
