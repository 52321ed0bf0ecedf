"""Macenko stain normalisation (torchstain) and patches at image scales."""

import numpy as np
import pandas as pd
import pytest

from crowdmed.exceptions import NotFittedError
from crowdmed.pathology.patches import (
    DIHEDRAL,
    apply_dihedral,
    extract_patches,
    invert_dihedral,
    rescale_image,
    scale_points,
)
from crowdmed.pathology.stain import StainNormalizer
from crowdmed.pathology.synthetic import make_synthetic_fields


@pytest.fixture(scope="module")
def fields():
    pytest.importorskip("torchstain")
    return make_synthetic_fields(6, size=(96, 96), stain_variation=0.3, random_state=0)


def test_estimated_hematoxylin_vector_matches_the_synthetic_stain():
    from crowdmed.pathology.synthetic import _OD_HEMATOXYLIN

    plain = make_synthetic_fields(1, size=(128, 128), stain_variation=0.0, random_state=0)
    norm = StainNormalizer().fit(plain.images[0])
    assert norm.stain_matrix_.shape == (3, 2)
    h = norm.stain_matrix_[:, 0]
    cosine = abs(h @ _OD_HEMATOXYLIN) / (np.linalg.norm(h) * np.linalg.norm(_OD_HEMATOXYLIN))
    assert cosine > 0.99


def test_normalising_the_reference_nearly_reproduces_it(fields):
    ref = fields.images[1]
    out = StainNormalizer().fit(ref).transform(ref)
    assert out.dtype == np.uint8
    assert out.shape == ref.shape
    assert np.abs(out.astype(float) - ref).mean() < 6.0


def test_normaliser_errors(fields):
    with pytest.raises(NotFittedError, match="not fitted"):
        StainNormalizer().transform(fields.images[0])
    with pytest.raises(ValueError, match="uint8 RGB"):
        StainNormalizer().fit(fields.images[0].astype(float))


def test_extract_patches_centres_and_reflects_at_the_border():
    img = np.arange(20 * 30 * 3, dtype=np.float32).reshape(20, 30, 3) / (20 * 30 * 3)
    pts = pd.DataFrame({"image": ["a", "a"], "x": [7.2, 0.0], "y": [11.0, 0.0]})
    p = extract_patches({"a": img}, pts, size=5)
    assert p.shape == (2, 3, 5, 5)
    np.testing.assert_array_equal(p[0].transpose(1, 2, 0), img[9:14, 5:10])
    padded = np.pad(img, ((2, 2), (2, 2), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(p[1].transpose(1, 2, 0), padded[0:5, 0:5])
    with pytest.raises(ValueError, match="odd"):
        extract_patches({"a": img}, pts, size=4)
    with pytest.raises(ValueError, match="not among the images"):
        extract_patches({"b": img}, pts)


def test_scaled_points_follow_the_rescaled_image():
    yy, xx = np.mgrid[0:101, 0:61]
    blob = np.exp(-((yy - 40.0) ** 2 + (xx - 30.0) ** 2) / 8.0).astype(np.float32)
    img = np.repeat(blob[..., None], 3, axis=2)
    small = rescale_image(img, 0.5)
    assert small.shape == (50, 30, 3)
    ((x, y),) = scale_points(np.array([[30.0, 40.0]]), img.shape, small.shape)
    r, c = np.unravel_index(small[..., 0].argmax(), small.shape[:2])
    assert abs(x - c) <= 0.5
    assert abs(y - r) <= 0.5
    # the patch at the scaled point is centred on the bright spot
    p = extract_patches(
        [img], pd.DataFrame({"image": [0], "x": [30.0], "y": [40.0]}), size=5, scale=0.5
    )
    assert p[0, 0].argmax() == 12


@pytest.mark.parametrize(("k", "flip"), DIHEDRAL)
def test_dihedral_inverse(k, flip):
    a = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(invert_dihedral(apply_dihedral(a, k, flip), k, flip), a)
