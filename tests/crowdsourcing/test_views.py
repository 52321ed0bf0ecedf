import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from crowdmed.crowdsourcing.views import (
    blue_ratio,
    blue_ratio_display,
    context_crop,
    context_crops,
)


@pytest.mark.parametrize(
    ("rgb", "expected"),
    [
        ((0, 0, 0), 0.0),  # black: no blue
        ((0, 0, 255), 100 * 255 / 1 * 256 / 256),  # pure blue: the maximum 25500
        ((255, 255, 255), 100 * 255 / 511 * 256 / 766),
        ((10, 20, 30), 100 * 30 / 31 * 256 / 61),
        ((200, 0, 0), 0.0),
    ],
)
def test_blue_ratio_hand_values(rgb, expected):
    img = np.array([[rgb]], dtype=np.uint8)
    assert blue_ratio(img)[0, 0] == pytest.approx(expected)


@settings(max_examples=50, deadline=None)
@given(arrays(np.uint8, (4, 5, 3)))
def test_blue_ratio_matches_formula_and_display_range(img):
    f = img.astype(float)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    np.testing.assert_allclose(blue_ratio(img), (100 * b / (1 + r + g)) * (256 / (1 + r + g + b)))
    disp = blue_ratio_display(img)
    assert disp.dtype == np.uint8
    assert disp.shape == (4, 5)
    if blue_ratio(img).max() > 0:
        assert disp.max() == 255


def test_blue_ratio_display_vmax_and_errors():
    img = np.array([[[0, 0, 255], [0, 0, 0]]], dtype=np.uint8)
    assert blue_ratio_display(img, vmax=51000).tolist() == [[128, 0]]
    with pytest.raises(ValueError, match="vmax"):
        blue_ratio_display(img, vmax=0)
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\)"):
        blue_ratio(np.zeros((4, 4)))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 9), st.integers(0, 7), st.sampled_from([1, 3, 5, 7]))
def test_context_crop_is_centred(x, y, size):
    img = np.arange(8 * 10 * 3).reshape(8, 10, 3)
    crop = context_crop(img, x, y, size)
    assert crop.shape == (size, size, 3)
    np.testing.assert_array_equal(crop[size // 2, size // 2], img[y, x])


def test_context_crops_outside_image_is_an_error():
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="inside the 8x8 image"):
        context_crops(img, [9], [0], 3)
