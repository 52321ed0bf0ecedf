"""``crowdmed masks consensus`` on small files in ``tmp_path`` (in-process and once as a
subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from crowdmed.cli import app
from crowdmed.segmentation import STAPLE

runner = CliRunner()


def _rater_masks(n_raters: int = 3, shape: tuple[int, ...] = (12, 10)) -> np.ndarray:
    rng = np.random.default_rng(0)
    truth = np.zeros(shape, bool)
    truth[tuple(slice(2, s - 2) for s in shape)] = True
    return truth[None] ^ (rng.random((n_raters, *shape)) < 0.1)


def _write_npy(tmp_path: Path, masks: np.ndarray) -> list[str]:
    paths = []
    for r, m in enumerate(masks):
        p = tmp_path / f"rater{r}.npy"
        np.save(p, m)
        paths.append(str(p))
    return paths


def test_staple_npy_happy_path(tmp_path: Path) -> None:
    masks = _rater_masks()
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
def test_other_methods_png(tmp_path: Path, method: str) -> None:
    pytest.importorskip("PIL")
    from PIL import Image

    masks = _rater_masks()
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
def test_nifti_keeps_geometry(tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    masks = _rater_masks(3, (4, 6, 5))
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


def test_missing_file_and_subprocess(tmp_path: Path) -> None:
    files = _write_npy(tmp_path, _rater_masks(2))
    out = tmp_path / "c.npy"
    res = runner.invoke(
        app, ["masks", "consensus", files[0], str(tmp_path / "nope.npy"), "-o", str(out)]
    )
    assert res.exit_code == 2
    assert "does not exist" in res.output
    proc = subprocess.run(
        [sys.executable, "-m", "crowdmed", "masks", "consensus", *files, "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()
    assert (tmp_path / "c.npy.json").is_file()
