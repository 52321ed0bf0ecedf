"""flip_rotate: the eight symmetries of the square, images and masks moved together."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crowdmed.training import CrowdSegmenter, flip_rotate  # noqa: E402


def _views(a: np.ndarray) -> list[np.ndarray]:
    out = []
    for flip in (False, True):
        b = a[..., ::-1] if flip else a
        out += [np.rot90(b, k, axes=(-2, -1)) for k in range(4)]
    return out


def test_images_and_masks_move_together_through_all_eight_symmetries():
    torch.manual_seed(0)
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    y = torch.arange(2 * 4 * 4).reshape(2, 1, 4, 4).repeat(1, 2, 1, 1)
    views = _views(x.numpy())
    seen = set()
    for _ in range(200):
        xa, ya = flip_rotate(x, y)
        hit = [i for i, v in enumerate(views) if np.array_equal(xa.numpy(), v)]
        assert len(hit) == 1
        seen.add(hit[0])
        # the mask went through the same symmetry as the image
        assert np.array_equal(ya.numpy(), _views(y.numpy())[hit[0]])
        assert xa.is_contiguous()
        assert ya.dtype == y.dtype
    assert seen == set(range(8))


def test_rectangles_keep_their_shape():
    torch.manual_seed(1)
    x = torch.randn(1, 1, 3, 5)
    y = (x > 0).long()
    for _ in range(50):
        xa, ya = flip_rotate(x, y)
        assert xa.shape == x.shape
        assert ya.shape == y.shape
        assert torch.equal((xa > 0).long(), ya)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="same last two axes"):
        flip_rotate(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


def test_segmenter_trains_with_it_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 16, 16)).astype(np.float32)
    masks = np.stack([(x[:, 0] > 0.5), (x[:, 0] > 0.6)], axis=1).astype(np.int64)

    def fit() -> np.ndarray:
        torch.manual_seed(0)
        net = torch.nn.Conv2d(1, 2, 3, padding=1)
        seg = CrowdSegmenter(
            net,
            method="consensus",
            epochs=40,
            batch_size=4,
            lr=0.05,
            patience=None,
            augment=flip_rotate,
        )
        seg.fit(x, masks, n_classes=2)
        return seg.predict_proba(x)

    a, b = fit(), fit()
    np.testing.assert_array_equal(a, b)
    # intensity thresholding is orientation free: the network still learns the consensus
    # (the vote of two raters is their intersection, x > 0.6)
    assert ((a[:, 1] > 0.5) == (x[:, 0] > 0.6)).mean() > 0.9
