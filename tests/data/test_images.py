"""Tests of reading image folders (crowdmed.data.images) with small files written by Pillow."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

Image = pytest.importorskip("PIL.Image")

from crowdmed.data.images import image_paths, list_images, load_images  # noqa: E402


def save(folder: Path, name: str, array: np.ndarray) -> Path:
    path = folder / name
    Image.fromarray(array).save(path)
    return path


# Each case: file name, pixel array as saved, expected grey channel (1, H, W) in [0, 1].
SCALING_CASES = [
    ("u8.png", np.array([[0, 255], [51, 102]], np.uint8), [[0.0, 1.0], [0.2, 0.4]]),
    (
        "u16.png",
        np.array([[0, 65535], [13107, 0]], np.uint16),
        [[0.0, 1.0], [0.2, 0.0]],
    ),
    ("u16.tif", np.array([[65535, 0], [0, 0]], np.uint16), [[1.0, 0.0], [0.0, 0.0]]),
    ("f32.tif", np.array([[0.0, 0.5], [0.25, 1.0]], np.float32), [[0.0, 0.5], [0.25, 1.0]]),
    ("u8.jpg", np.full((2, 2), 255, np.uint8), [[1.0, 1.0], [1.0, 1.0]]),
]


@pytest.mark.parametrize(("name", "pixels", "expected"), SCALING_CASES)
def test_scaling_to_unit_range(tmp_path: Path, name: str, pixels: np.ndarray, expected) -> None:
    save(tmp_path, name, pixels)
    out = load_images(tmp_path, [Path(name).stem])
    assert out.dtype == np.float32
    assert out.shape == (1, 1, 2, 2)  # (N, C, H, W)
    np.testing.assert_allclose(out[0, 0], expected, atol=1e-6 if "jpg" not in name else 0.02)


def test_colour_and_channels(tmp_path: Path) -> None:
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    save(tmp_path, "red.png", rgb)
    save(tmp_path, "grey.png", np.full((3, 4), 255, np.uint8))
    grey = load_images(tmp_path, ["red"])  # luminance: 0.299 * 255 -> 76
    np.testing.assert_allclose(grey, 76 / 255, atol=1e-6)
    both = load_images(tmp_path, ["red", "grey"], channels=3)
    assert both.shape == (2, 3, 3, 4)
    np.testing.assert_allclose(both[0, :, 0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(both[1], 1.0)  # grey repeated on the three channels


def test_matching_by_stem_or_full_name_and_order(tmp_path: Path) -> None:
    save(tmp_path, "b.png", np.zeros((2, 2), np.uint8))
    save(tmp_path, "a.png", np.full((2, 2), 255, np.uint8))
    save(tmp_path, "7.png", np.full((2, 2), 51, np.uint8))
    (tmp_path / ".hidden.png").write_bytes(b"ignored")
    (tmp_path / "notes.txt").write_text("ignored")
    out = load_images(tmp_path, ["a", "b.png", 7])  # ids compared as strings
    np.testing.assert_allclose(out[:, 0, 0, 0], [1.0, 0.0, 0.2])
    assert [p.name for p in image_paths(tmp_path, np.array(["b", "a"]))] == ["b.png", "a.png"]
    assert list_images(tmp_path) == ["7", "a", "b"]


def test_resize(tmp_path: Path) -> None:
    save(tmp_path, "wide.png", np.full((4, 8), 255, np.uint8))
    save(tmp_path, "small.png", np.zeros((2, 2), np.uint8))
    out = load_images(tmp_path, ["wide", "small"], size=(3, 5))
    assert out.shape == (2, 1, 3, 5)
    np.testing.assert_allclose(out[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[1], 0.0)
    assert load_images(tmp_path, ["wide"], size=6).shape == (1, 1, 6, 6)


def test_progress_is_reported(tmp_path: Path) -> None:
    for i in range(3):
        save(tmp_path, f"{i}.png", np.zeros((2, 2), np.uint8))
    calls: list[tuple[int, int]] = []
    load_images(tmp_path, ["0", "1", "2"], progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


# ---------------------------------------------------------------------- errors
def test_missing_items_are_named(tmp_path: Path) -> None:
    save(tmp_path, "a.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"7 of 8 items have no image file in .*\['m0', 'm1', "):
        load_images(tmp_path, ["a", *[f"m{i}" for i in range(7)]])
    with pytest.raises(ValueError, match=r"and 2 more\]?\. Name each file after its item id"):
        load_images(tmp_path, ["a", *[f"m{i}" for i in range(7)]])


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    save(tmp_path, "good.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match=r"Cannot read image '.*bad\.png'"):
        load_images(tmp_path, ["good", "bad"])
    good = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"Cannot read image '.*cut\.png'"):
        load_images(tmp_path, ["cut"])


def test_inconsistent_sizes_need_size(tmp_path: Path) -> None:
    save(tmp_path, "a.png", np.zeros((4, 4), np.uint8))
    save(tmp_path, "b.png", np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"'a\.png' is 4x4 \(HxW\) but 'b\.png' is 4x5"):
        load_images(tmp_path, ["a", "b"])


@pytest.mark.parametrize(
    ("setup", "kwargs", "match"),
    [
        ("none", {}, r"Image folder '.*nowhere' does not exist"),
        ("empty", {}, r"has no PNG, TIFF or JPEG files"),
        ("twins", {}, r"Item 'a' matches 2 files .*\['a\.png', 'a\.tif'\]"),
        ("one", {"channels": 2}, r"`channels` must be 1 \(grey\) or 3 \(RGB\); got 2"),
        ("one", {"size": 0}, r"`size` must be a positive int or a pair"),
        ("float", {}, r"float image with values outside \[0, 1\]"),
        ("pages", {}, r"has 2 frames or pages; store one 2-D image per file"),
    ],
)
def test_bad_input(tmp_path: Path, setup: str, kwargs: dict, match: str) -> None:
    folder = tmp_path / "imgs"
    if setup != "none":
        folder.mkdir()
    else:
        folder = tmp_path / "nowhere"
    if setup in ("twins", "one"):
        save(folder, "a.png", np.zeros((2, 2), np.uint8))
    if setup == "twins":
        save(folder, "a.tif", np.zeros((2, 2), np.uint8))
    if setup == "float":
        save(folder, "a.tif", np.array([[0.0, 3.0]], np.float32))
    if setup == "pages":
        pages = [Image.fromarray(np.zeros((2, 2), np.uint8)) for _ in range(2)]
        pages[0].save(folder / "a.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(ValueError, match=match):
        load_images(folder, ["a"], **kwargs)


def test_missing_pillow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"pip install 'crowdmed\[torch\]'"):
        load_images(tmp_path, ["a"])
