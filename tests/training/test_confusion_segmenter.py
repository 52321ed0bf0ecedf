"""CrowdSegmenter confusion methods (Zhang et al., 2020): equivalence and bias recovery."""

import numpy as np
import pytest
from scipy import ndimage

torch = pytest.importorskip("torch")
monai_nets = pytest.importorskip("monai.networks.nets")

from crowdmed.nn.confusion import GlobalConfusion, PixelConfusion  # noqa: E402
from crowdmed.simulate import MaskRater, simulate_mask_raters  # noqa: E402
from crowdmed.training import CrowdSegmenter  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _blobs(n, size, seed, radii=(3, 6)):
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, size, size), bool)
    images = np.zeros((n, 1, size, size), np.float32)
    yy, xx = np.ogrid[:size, :size]
    for i in range(n):
        for _ in range(2):
            cy, cx = rng.integers(radii[1], size - radii[1], 2)
            r = rng.integers(*radii)
            truth[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        images[i, 0] = truth[i] * 0.6 + 0.2 + rng.normal(0, 0.08, (size, size))
    return np.clip(images, 0, 1), truth


def _net(seed=0):
    torch.manual_seed(seed)
    return monai_nets.UNet(2, 1, 2, channels=(8, 16), strides=(2,), num_res_units=0)


def test_identity_confusion_with_one_rater_equals_plain_training():
    images, truth = _blobs(8, 16, 0)
    masks = truth[:, None]
    kw = {"epochs": 3, "batch_size": 4, "lr": 1e-2, "patience": None, "random_state": 3}
    plain = CrowdSegmenter(_net(), method="single", **kw).fit(images, masks)
    ident = CrowdSegmenter(
        _net(),
        method="confusion-global",
        confusion_network=GlobalConfusion(1, 2, trainable=False),
        trace_weight=0.0,
        **kw,
    ).fit(images, masks)
    np.testing.assert_allclose(
        [h["loss"] for h in ident.history_], [h["loss"] for h in plain.history_], rtol=1e-5
    )
    for (name, a), (_, b) in zip(
        plain.network.state_dict().items(), ident.network.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    conf = ident.rater_confusion(images[:2])
    assert conf.shape == (2, 1, 2, 2, 16, 16)
    np.testing.assert_array_equal(conf[0, 0, :, :, 3, 3], np.eye(2))


@pytest.mark.parametrize("method", ["confusion-global", "confusion-pixel"])
def test_recovers_the_direction_of_each_raters_bias(method):
    images, truth = _blobs(24, 32, 1, radii=(4, 8))
    over, under = 0, 1
    raters = simulate_mask_raters(
        truth,
        [MaskRater(bias=1.5), MaskRater(bias=-1.5), MaskRater(boundary_noise=0.3)],
        random_state=1,
    )
    seg = CrowdSegmenter(
        _net(1), method=method, epochs=12, batch_size=8, lr=1e-2, patience=None, random_state=0
    ).fit(images, raters)
    cm = seg.rater_confusion(images)  # (24, A=3, K=2, K=2, 32, 32)
    # the pixels where the raters differ: within 3 pixels of the true boundary
    near = np.stack(
        [
            ndimage.binary_dilation(t, iterations=3) & ~ndimage.binary_erosion(t, iterations=3)
            for t in truth
        ]
    )
    fp = np.array([cm[:, a, 0, 1][near & ~truth].mean() for a in range(3)])  # P(1 | true 0)
    fn = np.array([cm[:, a, 1, 0][near & truth].mean() for a in range(3)])  # P(0 | true 1)
    # the under-segmenter misses true foreground more often than the over-segmenter
    assert fn[under] > fn[over] + 0.05
    # and, net of misses, the over-segmenter marks more foreground than the under-segmenter
    assert fp[over] - fn[over] > fp[under] - fn[under] + 0.05
    if method == "confusion-global":
        # one matrix per rater: the over-segmenter's false-positive rate is the larger one
        assert fp[over] > fp[under]
        # and the network's estimate is closer to the truth than the over-segmenter's masks
        pred = seg.predict(images).astype(bool)
        dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
        over_dice = 2 * (raters[:, over] & truth).sum() / (raters[:, over].sum() + truth.sum())
        assert dice > over_dice


def test_save_load_round_trip(tmp_path):
    images, truth = _blobs(6, 16, 2)
    raters = simulate_mask_raters(truth, [MaskRater(bias=1.0), MaskRater()], random_state=2)
    for method, cls in (("confusion-pixel", PixelConfusion), ("confusion-global", GlobalConfusion)):
        seg = CrowdSegmenter(_net(), method=method, epochs=1, batch_size=3, patience=None)
        seg.fit(images, raters)
        assert isinstance(seg.confusion_network_, cls)
        seg.save(tmp_path / method)
        back = CrowdSegmenter.load(tmp_path / method, network=_net(), device="cpu")
        np.testing.assert_allclose(back.rater_confusion(images), seg.rater_confusion(images))
        assert back.trace_weight == seg.trace_weight


def test_errors():
    images, truth = _blobs(4, 16, 0)
    masks = truth[:, None]
    with pytest.raises(ValueError, match="`trace_weight` must be a number >= 0"):
        CrowdSegmenter(_net(), method="confusion-global", trace_weight=-1).fit(images, masks)
    with pytest.raises(ValueError, match=r"`confusion_network.n_raters` must match the masks"):
        CrowdSegmenter(
            _net(), method="confusion-global", confusion_network=GlobalConfusion(2, 2), epochs=1
        ).fit(images, masks)
    plain = CrowdSegmenter(_net(), method="single", epochs=1, patience=None).fit(images, masks)
    with pytest.raises(ValueError, match="has no confusion network"):
        plain.rater_confusion(images)
