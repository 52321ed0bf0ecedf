"""Multi-rater metrics: GED conventions, Hungarian-matched IoU, QUBIQ Dice, ECE (by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from crowdmed.metrics import generalized_energy_distance
from crowdmed.metrics.multirater import (
    expected_calibration_error,
    hungarian_matched_iou,
    qubiq_dice,
)

E = [0, 0, 0]  # an empty mask of 3 pixels


def _b(x: list) -> np.ndarray:
    return np.array(x, dtype=bool)


# ---------------------------------------------------------------- generalised energy distance
def test_ged_squared_and_sqrt() -> None:
    # S = {110, 100}, Y = {001} (shape (n, 3)): every cross pair is disjoint (d = 1);
    # within S: d(110, 100) = 1 - 1/2; mean over the 4 ordered pairs = (0 + .5 + .5 + 0)/4
    s, y = _b([[1, 1, 0], [1, 0, 0]]), _b([[0, 0, 1]])
    d2 = 2 * 1.0 - 0.25 - 0.0
    assert generalized_energy_distance(s, y) == pytest.approx(d2)
    assert generalized_energy_distance(s, y, convention="sqrt") == pytest.approx(np.sqrt(d2))
    # a negative unbiased estimate is clipped to 0 before the root
    assert generalized_energy_distance(s, s, include_self_pairs=False) == pytest.approx(-0.5)
    assert generalized_energy_distance(s, s, include_self_pairs=False, convention="sqrt") == 0.0


def test_ged_empty_conventions() -> None:
    # S = {empty}, Y = {empty, 010}: cross pairs (e,e), (e,010) = (d_ee + 1)/2;
    # within S = d_ee; within Y = (d_ee + 1 + 1 + 0)/4, d_ee the empty-vs-empty distance
    s, y = _b([E]), _b([E, [0, 1, 0]])
    # "one": d_ee = 0 -> 2·0.5 - 0 - (0+1+1+0)/4 = 0.5
    assert generalized_energy_distance(s, y, empty="one") == pytest.approx(0.5)
    # "zero": d_ee = 1 -> 2·1 - 1 - (1+1+1+0)/4 = 0.25
    assert generalized_energy_distance(s, y, empty="zero") == pytest.approx(0.25)
    # "nan" skips the empty pairs: S = {e, 100}, Y = {e, 010}
    # cross: (e,010), (100,e), (100,010) -> 1; within S: (e,100), (100,e), (100,100) -> 2/3
    s2, y2 = _b([E, [1, 0, 0]]), _b([E, [0, 1, 0]])
    assert generalized_energy_distance(s2, y2, empty="nan") == pytest.approx(2 - 2 / 3 - 2 / 3)
    with pytest.raises(ValueError, match="`empty` must be 'nan', 'one' or 'zero'"):
        generalized_energy_distance(s, y, empty="skip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`convention` must be 'squared' or 'sqrt'"):
        generalized_energy_distance(s, y, convention="root")  # type: ignore[arg-type]


# ---------------------------------------------------------------- Hungarian-matched IoU
def test_hungarian_two_by_two() -> None:
    # IoU (rows samples 0011, 1000; columns raters 1100, 0011) = [[0, 1], [1/2, 0]]
    raters = _b([[1, 1, 0, 0], [0, 0, 1, 1]])
    samples = _b([[0, 0, 1, 1], [1, 0, 0, 0]])
    assert hungarian_matched_iou(samples, raters) == pytest.approx((1 + 0.5) / 2)
    # the greedy choice (sample 0 -> rater 0 first) is not what is measured
    assert hungarian_matched_iou(samples[::-1], raters) == pytest.approx(0.75)


def test_hungarian_replicates_the_raters() -> None:
    r0, r1 = [1, 1, 0, 0], [0, 0, 1, 1]
    raters = _b([r0, r1])
    samples = _b([r0, r0, r1, [0, 0, 0, 0]])  # shape (4, 4): twice as many samples as raters
    # raters tiled to (r0, r1, r0, r1): r0, r0, r1 match exactly, the empty sample gets r1 (0)
    assert hungarian_matched_iou(samples, raters) == pytest.approx(3 / 4)
    # without replication only 2 pairs are matched: r0-r0 and r1-r1
    assert hungarian_matched_iou(samples, raters, replicate=False) == pytest.approx(1.0)
    # 3 samples and 2 raters: not a multiple, 2 pairs matched
    assert hungarian_matched_iou(samples[1:], raters) == pytest.approx(1.0)
    # fewer samples than raters: the samples are repeated
    assert hungarian_matched_iou(samples[:1], raters) == pytest.approx(0.5)


def test_hungarian_empty_masks() -> None:
    z = _b([[0, 0, 0]])
    assert hungarian_matched_iou(z, z) == 1.0
    assert hungarian_matched_iou(z, z, empty="zero") == 0.0
    with pytest.raises(ValueError, match="same spatial shape"):
        hungarian_matched_iou(z, _b([[0, 0]]))
    with pytest.raises(ValueError, match="`empty` must be 'one' or 'zero'"):
        hungarian_matched_iou(z, z, empty="nan")  # type: ignore[arg-type]


# ---------------------------------------------------------------- QUBIQ soft Dice
def test_qubiq_by_hand() -> None:
    # raters' mean m = (1, .5, 0, 0); prediction p = (.9, .5, .2, 0), shape (4,)
    raters = _b([[1, 1, 0, 0], [1, 0, 0, 0]])
    p = np.array([0.9, 0.5, 0.2, 0.0])
    # t = .1: p>t 1110, m>t 1100 -> 2·2/5 = .8
    # t = .2 … .4: 1100 vs 1100 -> 1; t = .5 … .8: 1000 vs 1000 -> 1
    # t = .9: p>t is empty (0.9 is not > 0.9), m>t 1000 -> 0
    assert qubiq_dice(p, raters) == pytest.approx((0.8 + 7 * 1.0 + 0.0) / 9)
    # one level: plain Dice of p > .5 against the strict majority
    assert qubiq_dice(p, raters, thresholds=(0.5,)) == 1.0
    assert qubiq_dice(p, raters, thresholds=(0.1,)) == pytest.approx(0.8)


def test_qubiq_three_raters_and_empty_levels() -> None:
    raters = _b([[1, 1, 1], [1, 1, 0], [1, 0, 0]])  # m = (1, 2/3, 1/3)
    assert qubiq_dice(raters.mean(axis=0), raters) == pytest.approx(1.0)
    # a prediction of zeros: every level has m > t non-empty (the pixel with m = 1) -> 0
    assert qubiq_dice(np.zeros(3), raters) == 0.0
    nobody = _b([E, E])
    assert qubiq_dice(np.zeros(3), nobody) == 1.0
    assert np.isnan(qubiq_dice(np.zeros(3), nobody, empty="nan"))
    # with empty="nan" only the non-empty levels count: p = (.15, 0, 0) vs nobody -> .1 only
    assert qubiq_dice(np.array([0.15, 0, 0]), nobody, empty="nan") == 0.0
    with pytest.raises(ValueError, match="probabilities in"):
        qubiq_dice(np.array([1.5, 0, 0]), raters)
    with pytest.raises(ValueError, match="raters' spatial shape"):
        qubiq_dice(np.zeros(4), raters)


# ---------------------------------------------------------------- calibration
def test_ece_by_hand() -> None:
    # rater fraction t = (0, .5, 1, .5); prediction p = (.05, .15, .95, .85), shape (4,)
    raters = _b([[0, 1, 1, 1], [0, 0, 1, 0]])
    p = np.array([0.05, 0.15, 0.95, 0.85])
    # 10 bins, one pixel each: (.05 + .35 + .05 + .35) / 4
    assert expected_calibration_error(p, raters) == pytest.approx(0.2)
    # 2 bins: [0, .5): mean p .1 vs mean t .25; [.5, 1]: .9 vs .75 -> (2·.15 + 2·.15) / 4
    assert expected_calibration_error(p, raters, n_bins=2) == pytest.approx(0.15)
    # 1 bin: |mean p - mean t| = |.5 - .5|
    assert expected_calibration_error(p, raters, n_bins=1) == pytest.approx(0.0)
    # p = 1 falls in the last bin: |1 - 1| + |0 - 0|
    assert expected_calibration_error(np.array([1.0, 0.0]), _b([[1, 0]])) == 0.0
    with pytest.raises(ValueError, match="`n_bins` must be a positive integer"):
        expected_calibration_error(p, raters, n_bins=0)
