"""x is the column and y the row in every step: reading, patches, candidates, crops, matching."""

import numpy as np
import pandas as pd
import pytest

from crowdmed.crowdsourcing.tasks import export_tasks, load_package, read_image
from crowdmed.data.points import read_points
from crowdmed.metrics.points import match_points
from crowdmed.pathology.candidates import find_candidates
from crowdmed.pathology.patches import extract_patches

H, W = 64, 96  # non-square: rows != columns
X, Y = 10, 50


def _field() -> np.ndarray:
    image = np.full((H, W, 3), 200, dtype=np.uint8)
    image[Y, X] = (10, 20, 30)
    return image


def test_read_points_keeps_x_as_column_on_a_non_square_field(tmp_path):
    from PIL import Image

    Image.fromarray(_field()).save(tmp_path / "f.png")
    (tmp_path / "p.csv").write_text(f"image,x,y\nf,{X},{Y}\nf.png,{W - 1},{H - 1}\n")
    images, points = read_points(tmp_path / "p.csv", tmp_path)
    assert images["f"].shape == (H, W, 3)
    assert tuple(images["f"][Y, X]) == (10, 20, 30)
    assert points[["x", "y"]].to_numpy().tolist() == [[X, Y], [W - 1, H - 1]]
    # (x=W-1, y=H-1) is inside; swapping the axes puts it outside a 96x64 field
    (tmp_path / "p.csv").write_text(f"image,x,y\nf,{H - 1},{W - 1}\n")
    with pytest.raises(ValueError, match=r"line 2: f \(63, 95\) not in 96x64"):
        read_points(tmp_path / "p.csv", tmp_path)


def test_patches_maps_candidates_crops_and_matching_agree_on_x_and_y(tmp_path):
    image = _field()
    point = pd.DataFrame({"image": ["f"], "x": [X], "y": [Y]})
    # patches: the centre pixel of the patch is the marked pixel
    patch = extract_patches({"f": image}, point, size=5)[0]
    np.testing.assert_allclose(patch[:, 2, 2] * 255, (10, 20, 30), atol=1e-3)
    # at half scale the point maps to (x/2, y/2) of the rescaled field (corners aligned)
    half = extract_patches({"f": image}, point, size=3, scale=0.5)[0]
    assert half[0, 1, 1] == half[0].min()  # the darkest pixel is the centre
    # a detection map indexed [row, column] gives a candidate at x = column, y = row
    prob = np.zeros((H, W))
    prob[Y, X] = 0.9
    cands = find_candidates(prob, threshold=0.5, radius=5)
    assert cands[["x", "y"]].to_numpy().tolist() == [[X, Y]]
    cands.insert(0, "image", "f")
    # export: the context crop is centred on the marked pixel, the manifest keeps x and y
    pkg = export_tasks({"f": image}, cands, tmp_path / "pkg", gold_rate=0.0, patch_size=9)
    pkg = load_package(tmp_path / "pkg")
    row = pkg.manifest.iloc[0]
    assert (row["x"], row["y"]) == (X, Y)
    crop = read_image(tmp_path / "pkg" / "patches" / f"{row['task']}.png")
    assert crop.shape[:2] == (9, 9)
    assert tuple(crop[4, 4, :3]) == (10, 20, 30)
    # matching: the candidate hits (x=10, y=50), not the swapped (x=50, y=10)
    hit = match_points(cands, point, radius=3)
    assert (hit.tp, hit.fp, hit.fn) == (1, 0, 0)
    swapped = pd.DataFrame({"image": ["f"], "x": [Y], "y": [X]})
    miss = match_points(cands, swapped, radius=3)
    assert (miss.tp, miss.fp, miss.fn) == (0, 1, 1)


def test_repeated_points_are_reported_with_their_lines(tmp_path):
    from PIL import Image

    Image.fromarray(_field()).save(tmp_path / "f 1.v2.png")  # spaces and dots in the name
    (tmp_path / "p.csv").write_text("image,x,y\nf 1.v2,3,4\nf 1.v2.png,5,6\nf 1.v2.png,3,4\n")
    with pytest.raises(ValueError, match=r"repeats 1 point\(s\).*line 4 repeats line 2"):
        read_points(tmp_path / "p.csv", tmp_path)
    (tmp_path / "p.csv").write_text("image,x,y\nf 1.v2,3,4\nf 1.v2.png,5,6\n")
    images, points = read_points(tmp_path / "p.csv", tmp_path)
    assert list(images) == ["f 1.v2"]
    assert points["image"].tolist() == ["f 1.v2"] * 2


def test_evaluate_refuses_repeated_reference_points(tmp_path):
    from typer.testing import CliRunner

    from crowdmed.cli import app

    pd.DataFrame({"image": ["a", "a"], "x": [X, X], "y": [Y, Y]}).to_csv(
        tmp_path / "p.csv", index=False
    )
    pd.DataFrame({"image": ["a"], "x": [X], "y": [Y], "score": [0.9]}).to_csv(
        tmp_path / "c.csv", index=False
    )
    r = CliRunner().invoke(
        app,
        ["mitosis", "evaluate", "--candidates", str(tmp_path / "c.csv"), "--points",
         str(tmp_path / "p.csv")],
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "line 3 repeats line 2" in r.stderr


def test_export_of_an_empty_candidate_table_says_so(tmp_path):
    empty = pd.DataFrame({"image": [], "x": [], "y": [], "score": []})
    with pytest.raises(ValueError, match="candidates table is empty") as info:
        export_tasks({"f": _field()}, empty, tmp_path / "pkg", gold_rate=0.0)
    assert "None" not in str(info.value)
    assert not (tmp_path / "pkg").exists()
    assert list(tmp_path.iterdir()) == []  # no staged folder left behind
