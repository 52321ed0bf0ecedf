"""``crowdmed masks consensus`` on small files in ``tmp_path`` (in-process and once as a
subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from crowdmed.aggregation.segmentation.staple import STAPLE
from crowdmed.cli import app

runner = CliRunner()


def _write_npy(tmp_path: Path, masks: np.ndarray) -> list[str]:
    paths = []
    for r, m in enumerate(masks):
        p = tmp_path / f"rater{r}.npy"
        np.save(p, m)
        paths.append(str(p))
    return paths


def test_staple_npy_happy_path(tmp_path: Path, rater_masks: Callable[..., np.ndarray]) -> None:
    masks = rater_masks()
    files = _write_npy(tmp_path, masks)
    out, raters = tmp_path / "staple.npy", tmp_path / "raters.csv"
    res = runner.invoke(app, ["masks", "consensus", *files, "-o", str(out), "-r", str(raters)])
    assert res.exit_code == 0, res.output
    est = STAPLE().fit(masks)
    np.testing.assert_array_equal(np.load(out), est.labels_.astype(np.uint8))
    table = pd.read_csv(raters)
    np.testing.assert_allclose(table["sensitivity"], est.sensitivity_)
    assert list(table["rater"]) == [0, 1, 2]
    record = json.loads((tmp_path / "staple.npy.json").read_text())
    assert record["method"] == "staple"
    assert record["fit"]["converged"] is True
    assert record["params"]["max_iter"] == 1000
    assert "crowdmed_version" in record
    # Soft output.
    soft = tmp_path / "soft.npy"
    res = runner.invoke(app, ["masks", "consensus", *files, "-o", str(soft), "--soft"])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(np.load(soft), est.posteriors_)


@pytest.mark.parametrize("method", ["majority", "mean", "multilabel-staple"])
def test_other_methods_png(
    tmp_path: Path, method: str, rater_masks: Callable[..., np.ndarray]
) -> None:
    pytest.importorskip("PIL")
    from PIL import Image

    masks = rater_masks()
    files = []
    for r, m in enumerate(masks):
        p = tmp_path / f"rater{r}.png"
        Image.fromarray(m.astype(np.uint8) * 255).save(p)  # 0/255 masks are read as binary
        files.append(str(p))
    out = tmp_path / "out.png"
    res = runner.invoke(
        app,
        ["masks", "consensus", *files, "-m", method, "-o", str(out), "-r", str(tmp_path / "r.csv")],
    )
    assert res.exit_code == 0, res.output
    written = np.array(Image.open(out))
    assert written.shape == masks.shape[1:]
    if method == "majority":
        np.testing.assert_array_equal(written, (masks.sum(0) >= 2).astype(np.uint8))


@pytest.mark.filterwarnings("ignore::crowdmed.exceptions.ConvergenceWarning")
def test_nifti_keeps_geometry(tmp_path: Path, rater_masks: Callable[..., np.ndarray]) -> None:
    sitk = pytest.importorskip("SimpleITK")
    masks = rater_masks(3, (4, 6, 5))
    files = []
    for r, m in enumerate(masks):
        img = sitk.GetImageFromArray(m.astype(np.uint8))
        img.SetSpacing((0.7, 0.7, 2.5))
        p = tmp_path / f"r{r}.nii.gz"
        sitk.WriteImage(img, str(p))
        files.append(str(p))
    out = tmp_path / "staple.nii.gz"
    res = runner.invoke(app, ["masks", "consensus", *files, "-o", str(out)])
    assert res.exit_code == 0, res.output
    img = sitk.ReadImage(str(out))
    assert img.GetSpacing() == pytest.approx((0.7, 0.7, 2.5))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), STAPLE().fit(masks).labels_)


@pytest.mark.parametrize(
    ("arrays", "extra", "match"),
    [
        ([np.zeros((3, 3)), np.zeros((3, 4))], [], r"Rater 1 .* has shape \(3, 4\) but rater 0"),
        ([np.zeros((3, 3)), np.arange(9).reshape(3, 3)], [], r"Rater 1 .* distinct values"),
        ([np.zeros((3, 3))], [], "at least 2 raters"),
        ([np.zeros((3, 3)), np.zeros((3, 3))], ["-m", "stapel"], "Did you mean 'staple'"),
        ([np.zeros((3, 3)), np.full((3, 3), np.nan)], [], "NaN"),
    ],
)
def test_bad_input_exit_2_and_no_files(
    tmp_path: Path, arrays: list[np.ndarray], extra: list[str], match: str
) -> None:
    files = _write_npy(
        tmp_path, np.array(arrays) if len({a.shape for a in arrays}) == 1 else arrays
    )  # type: ignore[arg-type]
    before = set(tmp_path.iterdir())
    out = tmp_path / "out.npy"
    res = runner.invoke(
        app, ["masks", "consensus", *files, "-o", str(out), "-r", str(tmp_path / "r.csv"), *extra]
    )
    assert res.exit_code == 2
    assert "Error:" in res.output
    import re

    assert re.search(match, res.output.replace("\n", " ")), res.output
    assert set(tmp_path.iterdir()) == before  # nothing written


def test_missing_file_and_subprocess(
    tmp_path: Path, rater_masks: Callable[..., np.ndarray]
) -> None:
    files = _write_npy(tmp_path, rater_masks(2))
    out = tmp_path / "c.npy"
    res = runner.invoke(
        app, ["masks", "consensus", files[0], str(tmp_path / "nope.npy"), "-o", str(out)]
    )
    assert res.exit_code == 2
    assert "does not exist; check the path." in " ".join(res.output.split())
    proc = subprocess.run(
        [sys.executable, "-m", "crowdmed", "masks", "consensus", *files, "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()
    assert (tmp_path / "c.npy.json").is_file()


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("consensus", r"`--out` '[^']*/consensus' has an unsupported suffix ''"),
        ("consensus.txt", r"`--out` '[^']*/consensus.txt' has an unsupported suffix '.txt'"),
        ("consensus.jpg", r"JPEG is lossy.*\.png"),
    ],
)
def test_bad_output_format_fails_before_work(
    tmp_path: Path, name: str, match: str, rater_masks: Callable[..., np.ndarray]
) -> None:
    files = _write_npy(tmp_path, rater_masks(2))
    before = set(tmp_path.iterdir())
    res = runner.invoke(app, ["masks", "consensus", *files, "-o", str(tmp_path / name)])
    assert res.exit_code == 2
    import re

    message = res.output.replace("\n", " ")
    assert re.search(match, message), res.output
    assert ".tmp" not in message  # the message names the user's path, not a staging file
    assert set(tmp_path.iterdir()) == before


def test_write_mask_refuses_lossy_jpeg(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from crowdmed.data.masks import write_mask

    with pytest.raises(ValueError, match="lossy"):
        write_mask(tmp_path / "m.jpeg", np.ones((3, 3), bool))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("change", ["spacing", "origin", "direction"])
def test_nifti_raters_on_different_grids_are_an_error(
    tmp_path: Path, change: str, rater_masks: Callable[..., np.ndarray]
) -> None:
    # Same voxel counts but a different physical grid: fusing voxel by voxel would be wrong.
    sitk = pytest.importorskip("SimpleITK")
    files = []
    for r, m in enumerate(rater_masks(3, (4, 6, 5))):
        img = sitk.GetImageFromArray(m.astype(np.uint8))
        img.SetSpacing((0.7, 0.7, 2.5))
        if r == 2:
            if change == "spacing":
                img.SetSpacing((0.7, 0.7, 1.25))
            elif change == "origin":
                img.SetOrigin((0.0, 0.0, 5.0))
            else:
                img.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
        p = tmp_path / f"r{r}.nii.gz"
        sitk.WriteImage(img, str(p))
        files.append(str(p))
    res = runner.invoke(app, ["masks", "consensus", *files, "-o", str(tmp_path / "c.nii.gz")])
    assert res.exit_code == 2, res.output
    assert f"Rater 2 ('{files[2]}') has a different {change}" in res.output.replace("\n", " ")
    assert not (tmp_path / "c.nii.gz").exists()


@pytest.mark.parametrize("name", ["bad.nii.gz", "bad.npy", "bad.npz", "bad.png"])
def test_unreadable_mask_file_is_a_one_line_error(
    tmp_path: Path, name: str, rater_masks: Callable[..., np.ndarray]
) -> None:
    if name.endswith(".nii.gz"):
        pytest.importorskip("SimpleITK")
    if name.endswith(".png"):
        pytest.importorskip("PIL")
    files = _write_npy(tmp_path, rater_masks(2))
    bad = tmp_path / name
    bad.write_text("not a mask\n")
    res = runner.invoke(
        app, ["masks", "consensus", files[0], str(bad), "-o", str(tmp_path / "c.npy")]
    )
    assert res.exit_code == 2, res.output
    message = res.output.strip()
    assert message.startswith(f"Error: Cannot read mask file '{bad}'"), message
    assert "\n" not in message
    assert not (tmp_path / "c.npy").exists()


@pytest.mark.parametrize("name", ["m.npy", "m.npz"])
def test_write_mask_is_atomic(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from crowdmed.data.masks import write_mask

    target = tmp_path / name
    write_mask(target, np.ones((3, 3), bool))
    before = target.read_bytes()

    def half_written(file: object, *args: object, **kwargs: object) -> None:
        Path(str(file)).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", half_written)
    monkeypatch.setattr(np, "savez_compressed", half_written)
    with pytest.raises(OSError, match="disk full"):
        write_mask(target, np.zeros((3, 3), bool))
    assert target.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left


def test_write_mask_two_file_format_names_its_data_file(
    tmp_path: Path, rater_masks: Callable[..., np.ndarray]
) -> None:
    pytest.importorskip("SimpleITK")
    from crowdmed.data.masks import read_mask, write_mask

    mask = rater_masks(1, (3, 4, 5))[0]
    write_mask(tmp_path / "m.mhd", mask)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0] == "m.mhd"
    assert len(names) == 2
    assert names[1].startswith("m.")  # the data file, named after the header, not a temp name
    np.testing.assert_array_equal(read_mask(tmp_path / "m.mhd").array, mask.astype(np.uint8))


def test_cli_refuses_two_file_output(
    tmp_path: Path, rater_masks: Callable[..., np.ndarray]
) -> None:
    files = _write_npy(tmp_path, rater_masks(2))
    res = runner.invoke(app, ["masks", "consensus", *files, "-o", str(tmp_path / "c.mhd")])
    assert res.exit_code == 2
    assert "single-file .mha" in res.output.replace("\n", " ")


# ---------------------------------------------------------------------- input regressions
@pytest.mark.parametrize("method", ["majority", "mean", "staple"])
def test_a_mask_of_all_minus_one_is_not_annotated(tmp_path: Path, method: str) -> None:
    masks = np.zeros((3, 6, 6), dtype=np.int64)
    masks[:2, 1:4, 1:4] = 1  # two raters agree on a 3x3 square
    masks[2] = -1  # the third rater annotated nothing
    files = []
    for r, m in enumerate(masks):
        files.append(tmp_path / f"rater{r}.npy")
        np.save(files[-1], m)
    out = tmp_path / "c.npy"
    raters = tmp_path / "raters.csv"
    args = ["masks", "consensus", *map(str, files), "-o", str(out), "-m", method]
    result = CliRunner().invoke(app, [*args, "--raters-out", str(raters)])
    assert result.exit_code == 0, result.output
    consensus = np.load(out)
    assert consensus.sum() == 9  # the square only: -1 never counts as foreground
    assert consensus[1:4, 1:4].all()
    assert pd.read_csv(raters)["rater"].tolist() == [0, 1]
    record = json.loads((tmp_path / "c.npy.json").read_text())
    assert any("Rater 2 annotated no voxel" in w for w in record["fit"]["warnings"])


def test_a_partly_annotated_binary_mask_is_refused(tmp_path: Path, user_error) -> None:
    masks = np.zeros((2, 4, 4), dtype=np.int64)
    masks[1, 0, :] = -1
    files = []
    for r, m in enumerate(masks):
        files.append(tmp_path / f"rater{r}.npy")
        np.save(files[-1], m)
    result = CliRunner().invoke(
        app, ["masks", "consensus", *map(str, files), "-o", str(tmp_path / "c.npy")]
    )
    user_error(result, r"Rater 1 .*4 voxels are -1 \(not annotated\).*multilabel-staple")


def test_a_folder_given_as_a_mask_file_is_named(tmp_path: Path, user_error) -> None:
    np.save(tmp_path / "a.npy", np.zeros((3, 3), dtype=np.int64))
    (tmp_path / "b.npy").mkdir()
    args = ["masks", "consensus", str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "c.npy")])
    user_error(result, r"Mask file '.*b\.npy' is a folder, not a file")
