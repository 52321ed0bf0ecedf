"""Synthetic fields (seeded, well formed) and reading a folder of fields with its points CSV."""

import numpy as np
import pandas as pd
import pytest

from crowdmed.data.points import read_points, write_points
from crowdmed.pathology.synthetic import make_synthetic_fields


def test_same_seed_same_fields_and_other_seed_differs():
    a = make_synthetic_fields(3, size=(96, 96), random_state=7)
    b = make_synthetic_fields(3, size=(96, 96), random_state=7)
    c = make_synthetic_fields(3, size=(96, 96), random_state=8)
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True))
    pd.testing.assert_frame_equal(a.points, b.points)
    assert not np.array_equal(a.images[0], c.images[0])


def test_fields_shape_counts_and_points_inside():
    f = make_synthetic_fields(4, size=(128, 160), n_mitoses=(2, 3), n_nuclei=10, random_state=0)
    assert [im.shape for im in f.images] == [(128, 160, 3)] * 4
    assert all(im.dtype == np.uint8 for im in f.images)
    counts = f.points.groupby("image").size().reindex(f.names, fill_value=0)
    assert counts.between(2, 3).all()
    assert f.points["x"].between(0, 159).all()
    assert f.points["y"].between(0, 127).all()


def test_mitoses_are_darker_than_the_field():
    f = make_synthetic_fields(2, size=(128, 128), n_mitoses=3, random_state=1)
    for name, image in f.as_dict().items():
        grey = image.mean(axis=2)
        pts = f.points[f.points["image"] == name]
        at_points = [grey[round(y), round(x)] for x, y in pts[["x", "y"]].to_numpy()]
        assert np.mean(at_points) < np.percentile(grey, 10)


def test_stain_variation_changes_colours_only_when_asked():
    same = make_synthetic_fields(6, size=(64, 64), stain_variation=0.0, random_state=3)
    varied = make_synthetic_fields(6, size=(64, 64), stain_variation=0.3, random_state=3)
    spread_same = np.std([im.reshape(-1, 3).mean(0) for im in same.images], axis=0).mean()
    spread_varied = np.std([im.reshape(-1, 3).mean(0) for im in varied.images], axis=0).mean()
    assert spread_varied > 2 * spread_same


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_images": 0}, "n_images"),
        ({"n_images": 1, "size": (20, 20)}, "size"),
        ({"n_images": 1, "n_mitoses": (3, 1)}, "n_mitoses"),
        ({"n_images": 1, "stain_variation": 2.0}, "stain_variation"),
    ],
)
def test_generator_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic_fields(**kwargs)


@pytest.fixture
def folder(tmp_path):
    f = make_synthetic_fields(3, size=(64, 64), n_mitoses=(0, 2), n_nuclei=5, random_state=4)
    f.save(tmp_path)
    return tmp_path, f


def test_save_then_read_round_trips(folder):
    root, f = folder
    images, points = read_points(root / "points.csv", root)
    assert sorted(images) == f.names
    for name, image in f.as_dict().items():
        np.testing.assert_array_equal(images[name], image)
    pd.testing.assert_frame_equal(points, f.points, check_dtype=False)


def _write(root, rows):
    pd.DataFrame(rows, columns=["image", "x", "y"]).to_csv(root / "p.csv", index=False)
    return root / "p.csv"


def test_read_points_accepts_file_names_and_empty_rows(folder):
    root, _ = folder
    csv = _write(
        root, [("synthetic_000.png", 5, 6), ("synthetic_001", None, None), ("synthetic_002", 1, 1)]
    )
    _, points = read_points(csv, root)
    assert points["image"].tolist() == ["synthetic_000", "synthetic_002"]


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (
            [("synthetic_000", 70, 5), ("synthetic_001", 1, 1), ("synthetic_002", 1, 1)],
            r"outside their image.*line 2",
        ),
        (
            [("synthetic_000", 5, -3), ("synthetic_001", 1, 1), ("synthetic_002", 1, 1)],
            "outside their image",
        ),
        ([("synthetic_000", 5, 5), ("synthetic_001", 1, 1)], r"have no row.*synthetic_002"),
        (
            [
                ("nope", 5, 5),
                ("synthetic_000", 5, 5),
                ("synthetic_001", 1, 1),
                ("synthetic_002", 1, 1),
            ],
            r"not in .*'nope'",
        ),
        ([("synthetic_000.tif", 5, 5), ("synthetic_001", 1, 1), ("synthetic_002", 1, 1)], "not in"),
        (
            [("synthetic_000", 5, None), ("synthetic_001", 1, 1), ("synthetic_002", 1, 1)],
            "only one of x and y",
        ),
        (
            [("synthetic_000", "a", 3), ("synthetic_001", 1, 1), ("synthetic_002", 1, 1)],
            "must be numeric",
        ),
    ],
)
def test_read_points_bad_input(folder, rows, match):
    root, _ = folder
    with pytest.raises(ValueError, match=match):
        read_points(_write(root, rows), root)


def test_read_points_missing_column_and_missing_file(folder):
    root, _ = folder
    pd.DataFrame({"image": ["synthetic_000"], "x": [1]}).to_csv(root / "q.csv", index=False)
    with pytest.raises(ValueError, match=r"missing \['y'\]"):
        read_points(root / "q.csv", root)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_points(root / "absent.csv", root)
    with pytest.raises(ValueError, match="does not exist"):
        read_points(root / "points.csv", root / "nofolder")


def test_write_points_lists_images_without_points(tmp_path):
    pts = pd.DataFrame({"image": ["a"], "x": [1.0], "y": [2.0]})
    write_points(pts, tmp_path / "p.csv", image_names=["a", "b"])
    back = pd.read_csv(tmp_path / "p.csv")
    assert back["image"].tolist() == ["a", "b"]
    assert back["x"].isna().tolist() == [False, True]


def test_load_field_reads_every_common_mode_as_uint8_rgb(tmp_path):
    from PIL import Image

    from crowdmed.data.points import load_field

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((20, 30), 128, np.uint8)])).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.tif")
    g16 = np.zeros((20, 30), np.uint16)
    g16[3, 4] = 4000  # 12-bit data in a 16-bit file
    Image.fromarray(g16).save(tmp_path / "g16.tif")
    f32 = np.zeros((20, 30), np.float32)
    f32[5, 6] = 1.0
    Image.fromarray(f32).save(tmp_path / "f32.tif")
    np.testing.assert_array_equal(load_field(tmp_path / "rgb.png"), rgb)
    np.testing.assert_array_equal(load_field(tmp_path / "a.png"), rgb)  # alpha dropped
    grey = load_field(tmp_path / "grey.tif")
    np.testing.assert_array_equal(grey, np.repeat(rgb[..., :1], 3, axis=2))
    assert tuple(load_field(tmp_path / "g16.tif")[3, 4]) == (255, 255, 255)
    f = load_field(tmp_path / "f32.tif")
    assert f.dtype == np.uint8
    assert tuple(f[5, 6]) == (255, 255, 255)
    assert f.sum() == 3 * 255
    Image.fromarray(f32 * 2).save(tmp_path / "bad.tif")
    with pytest.raises(ValueError, match="outside"):
        load_field(tmp_path / "bad.tif")
    pages = [Image.fromarray(rgb), Image.fromarray(rgb)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(ValueError, match="2 frames or pages"):
        load_field(tmp_path / "pages.tif")
