"""Simulated segmentation raters (crowdmed.simulate.masks)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crowdmed.simulate import MaskRater, distort_mask, simulate_mask_raters, varied_mask_raters


def _disc(shape=(40, 40), centre=(20, 20), r=8):
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) <= r * r


def test_identity_rater_returns_truth():
    truth = _disc()[None]
    out = simulate_mask_raters(truth, [MaskRater()], random_state=0)
    assert out.dtype == bool
    assert out.shape == (1, 1, 40, 40)
    assert np.array_equal(out[0, 0], truth[0])


@pytest.mark.parametrize("shape", [(40, 40), (12, 24, 24)])
def test_positive_bias_grows_negative_bias_shrinks(shape):
    truth = _disc(shape, tuple(s // 2 for s in shape), 5)
    grow = distort_mask(truth, MaskRater(bias=2.0), random_state=0)
    shrink = distort_mask(truth, MaskRater(bias=-2.0), random_state=0)
    assert grow.sum() > truth.sum() > shrink.sum() > 0
    assert (grow >= truth).all()  # dilation contains the original
    assert (shrink <= truth).all()


def test_missed_component_is_removed():
    truth = _disc(centre=(10, 10), r=4) | _disc(centre=(30, 30), r=4)
    gone = distort_mask(truth, MaskRater(miss_prob=1.0), random_state=0)
    assert not gone.any()
    # with p = 0.5 over many seeds each component is sometimes kept, sometimes dropped whole
    kept = [distort_mask(truth, MaskRater(miss_prob=0.5), random_state=s) for s in range(20)]
    left = [k[10, 10] for k in kept]
    assert any(left)
    assert not all(left)
    for k in kept:  # each component is kept whole or dropped whole
        for comp in (_disc(centre=(10, 10), r=4), _disc(centre=(30, 30), r=4)):
            assert k[comp].all() or not k[comp].any()


def test_spurious_components_are_added_outside():
    truth = np.zeros((50, 50), bool)
    out = distort_mask(truth, MaskRater(spurious_rate=5.0, spurious_radius=3.0), random_state=1)
    assert out.sum() > 0


def test_shift_moves_mask():
    truth = _disc()
    outs = [distort_mask(truth, MaskRater(shift=3.0), random_state=s) for s in range(5)]
    assert any(not np.array_equal(o, truth) for o in outs)
    assert all(o.sum() == truth.sum() for o in outs)  # a pure translation inside the image


def test_seeds_reproduce_and_differ():
    truth = np.stack([_disc(), _disc(r=5)])
    raters = varied_mask_raters(5)
    a = simulate_mask_raters(truth, raters, random_state=3)
    b = simulate_mask_raters(truth, raters, random_state=3)
    c = simulate_mask_raters(truth, raters, random_state=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (2, 5, 40, 40)


def test_absent_rater_is_minus_one_and_multiclass():
    truth = np.zeros((3, 20, 20), np.int64)
    truth[:, 2:8, 2:8] = 1
    truth[:, 10:16, 10:16] = 2
    out = simulate_mask_raters(
        truth, [MaskRater(bias=1.0), MaskRater(absent_prob=1.0)], random_state=0
    )
    assert out.dtype == np.int64
    assert (out[:, 1] == -1).all()
    assert set(np.unique(out[:, 0])) == {0, 1, 2}
    assert (out[:, 0] == 2).sum() > (truth == 2).sum()


@settings(max_examples=20, deadline=None)
@given(st.floats(0.0, 3.0), st.integers(0, 1000))
def test_over_segmenter_never_smaller(bias, seed):
    truth = _disc(r=6)
    out = distort_mask(truth, MaskRater(bias=bias), random_state=seed)
    assert (out >= truth).all()


def test_errors():
    with pytest.raises(ValueError, match=r"`masks` must have shape"):
        simulate_mask_raters(np.zeros((4, 4), bool), [MaskRater()])
    with pytest.raises(ValueError, match=r"NaN"):
        simulate_mask_raters(np.full((1, 4, 4), np.nan), [MaskRater()])
    with pytest.raises(ValueError, match=r"classes >= 0"):
        simulate_mask_raters(-np.ones((1, 4, 4), int), [MaskRater()])
    with pytest.raises(ValueError, match=r"miss_prob` must be a probability"):
        simulate_mask_raters(np.zeros((1, 4, 4), bool), [MaskRater(miss_prob=2.0)])
    with pytest.raises(TypeError, match=r"raters\[0\]` must be a MaskRater"):
        simulate_mask_raters(np.zeros((1, 4, 4), bool), [{"bias": 1}])
    with pytest.raises(ValueError, match=r"at least one"):
        simulate_mask_raters(np.zeros((1, 4, 4), bool), [])
