"""Segmentation metrics: Dice, IoU, HD95 (against MONAI), pairwise Dice, GED."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from crowdmed.metrics import (
    dice,
    dice_per_class,
    generalized_energy_distance,
    hausdorff_distance,
    iou,
    mean_pairwise_dice,
)

# (pred, target, dice, iou) on 1-D masks, checked by hand.
OVERLAP_CASES = [
    ([1, 1, 0, 0], [1, 1, 0, 0], 1.0, 1.0),  # perfect
    ([1, 1, 0, 0], [0, 0, 1, 1], 0.0, 0.0),  # disjoint
    ([1, 1, 0, 0], [1, 0, 1, 0], 0.5, 1 / 3),
    ([1, 1, 1, 0], [1, 0, 0, 0], 0.5, 1 / 3),
    ([0, 0, 0, 0], [1, 0, 0, 0], 0.0, 0.0),  # one empty
]


@pytest.mark.parametrize(("a", "b", "d", "j"), OVERLAP_CASES)
def test_dice_iou_reference(a: list, b: list, d: float, j: float) -> None:
    assert dice(np.array(a), np.array(b)) == pytest.approx(d)
    assert iou(np.array(a), np.array(b)) == pytest.approx(j)


def test_empty_vs_empty() -> None:
    z = np.zeros((3, 3), bool)
    assert dice(z, z) == 1.0
    assert iou(z, z) == 1.0
    assert np.isnan(dice(z, z, empty="nan"))
    assert np.isnan(iou(z, z, empty="nan"))
    with pytest.raises(ValueError, match="`empty` must be"):
        dice(z, z, empty="zero")  # type: ignore[arg-type]


def test_dice_per_class() -> None:
    pred = np.array([[0, 1], [2, 2]])
    target = np.array([[0, 1], [1, 2]])
    np.testing.assert_allclose(dice_per_class(pred, target), [1.0, 2 / 3, 2 / 3])
    res = dice_per_class(pred, target, n_classes=4, empty="nan")
    assert np.isnan(res[3])
    with pytest.raises(ValueError, match="same shape"):
        dice_per_class(pred, target[:1])


def test_metric_bad_input() -> None:
    with pytest.raises(ValueError, match=r"same shape; got \(3,\) and \(4,\)"):
        dice(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="binary mask"):
        iou(np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        dice(np.array([0, np.nan]), np.array([0, 1]))


def test_hausdorff_small_cases_and_spacing() -> None:
    a = np.zeros((9, 9), bool)
    a[2:5, 2:5] = True
    b = np.roll(a, 2, axis=1)
    assert hausdorff_distance(a, a) == 0.0
    assert hausdorff_distance(a, b, percentile=100) == pytest.approx(2.0)
    assert hausdorff_distance(a, b, percentile=100, spacing=(1.0, 0.5)) == pytest.approx(1.0)
    # Isotropic spacing scales the distance.
    assert hausdorff_distance(a, b, spacing=3.0) == pytest.approx(3 * hausdorff_distance(a, b))
    z = np.zeros_like(a)
    assert hausdorff_distance(z, z) == 0.0
    assert np.isnan(hausdorff_distance(a, z))
    with pytest.raises(ValueError, match="spacing"):
        hausdorff_distance(a, b, spacing=(1.0, -1.0))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_hausdorff_matches_monai() -> None:
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(0)
    for spacing in [(1.0, 1.0, 1.0), (0.7, 0.7, 2.5)]:
        for _ in range(4):
            a = ndimage.binary_dilation(rng.random((16, 20, 10)) < 0.01, iterations=2)
            b = ndimage.binary_dilation(rng.random((16, 20, 10)) < 0.01, iterations=2)
            ref = metrics.compute_hausdorff_distance(
                torch.tensor(a[None, None]),
                torch.tensor(b[None, None]),
                include_background=True,
                percentile=95,
                spacing=spacing,
            ).item()
            assert hausdorff_distance(a, b, spacing=spacing) == pytest.approx(ref, abs=1e-4)


def test_mean_pairwise_dice_and_ged() -> None:
    m = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0]], dtype=bool)
    # pairs: (0,1) 0.5, (0,2) 1.0, (1,2) 0.5
    assert mean_pairwise_dice(m) == pytest.approx(2 / 3)
    assert mean_pairwise_dice(np.stack([m[0], m[0]])) == 1.0
    # GED of a set with itself is 0; disjoint identical singletons give 2.
    assert generalized_energy_distance(m, m) == pytest.approx(0.0)
    one, other = m[:1], ~m[:1]
    assert generalized_energy_distance(one, other) == pytest.approx(2.0)
    # Hand value: S = {m0}, Y = {m0, m1}: cross = (0 + 2/3) / 2, within Y = (2/3 * 2) / 4.
    ged = generalized_energy_distance(m[:1], m[:2])
    assert ged == pytest.approx(2 * (1 / 3) - 0 - 1 / 3)
    unbiased = generalized_energy_distance(m[:1], m[:2], include_self_pairs=False)
    assert unbiased == pytest.approx(2 * (1 / 3) - 0 - 2 / 3)
    with pytest.raises(ValueError, match="at least 2 raters"):
        mean_pairwise_dice(m[:1])
    with pytest.raises(ValueError, match="mask 1 has shape"):
        generalized_energy_distance([m[0], m[0][:2]], m)


def test_hausdorff_spacing_of_the_wrong_length_names_the_fix() -> None:
    a = np.zeros((5, 5), bool)
    a[1:3, 1:3] = True
    with pytest.raises(ValueError, match=r"`spacing` must be 2 positive numbers"):
        hausdorff_distance(a, a, spacing=(1.0, 2.0, 3.0))


def test_pairwise_metrics_on_a_large_volume_use_bounded_memory() -> None:
    # A CT-sized volume must not be copied to float64 per rater (4 x 8 bytes per voxel).
    import tracemalloc

    rng = np.random.default_rng(0)
    masks = rng.random((4, 64, 128, 256)) < 0.3  # 2M voxels per rater, 8 MB as bool
    expected = np.mean([dice(masks[i], masks[j]) for i in range(4) for j in range(i + 1, 4)])
    tracemalloc.start()
    got = mean_pairwise_dice(masks)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert got == pytest.approx(expected, rel=1e-12)
    assert peak < 40e6, peak
    ged = generalized_energy_distance(masks[:2], masks[2:])
    assert np.isfinite(ged)
