"""CrowdSegmenter: training a segmentation network from several raters' masks."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
monai_nets = pytest.importorskip("monai.networks.nets")

from crowdmed.exceptions import NotFittedError  # noqa: E402
from crowdmed.simulate import MaskRater, simulate_mask_raters  # noqa: E402
from crowdmed.training import CrowdSegmenter  # noqa: E402


def _toy(n=12, size=16, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, size, size), bool)
    images = np.zeros((n, 1, size, size), np.float32)
    yy, xx = np.ogrid[:size, :size]
    for i in range(n):
        cy, cx = rng.integers(4, size - 4, 2)
        r = rng.integers(2, 5)
        truth[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        images[i, 0] = truth[i] * 0.7 + rng.normal(0, 0.15, (size, size))
    raters = simulate_mask_raters(
        truth, [MaskRater(), MaskRater(bias=1.0), MaskRater(bias=-1.0)], random_state=seed
    )
    return np.clip(images, 0, 1), truth, raters


def _net(seed=0):
    torch.manual_seed(seed)
    return monai_nets.UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("method", ["single", "consensus", "gaf", "reweight", "reweight-gaf"])
def test_tiny_training_reduces_loss(method):
    images, truth, raters = _toy()
    seg = CrowdSegmenter(
        _net(), method=method, epochs=6, batch_size=4, lr=1e-2, k_every=3, patience=None
    )
    seg.fit(images, raters)
    losses = [h["loss"] for h in seg.history_]
    assert losses[-1] < losses[0]
    pred = seg.predict(images)
    assert pred.shape == truth.shape
    assert pred.dtype == np.int64
    proba = seg.predict_proba(images[:2])
    assert proba.shape == (2, 2, 16, 16)
    assert np.allclose(proba.sum(1), 1, atol=1e-5)


def test_reproducible_with_seed_and_weights_sum_to_one():
    images, truth, raters = _toy()
    raters = raters.astype(np.int64)
    raters[0, 2] = -1  # rater 2 did not annotate image 0
    runs = []
    for _ in range(2):
        seg = CrowdSegmenter(
            _net(), method="reweight", epochs=3, batch_size=4, lr=1e-2, k_every=2, random_state=7
        )
        seg.fit(images, raters, X_val=images[:4], y_val=truth[:4])
        runs.append(seg)
    a, b = runs
    assert [h["loss"] for h in a.history_] == [h["loss"] for h in b.history_]
    assert np.array_equal(a.predict_proba(images), b.predict_proba(images))
    assert a.history_[-1]["k"] >= 1
    assert "val_dice" in a.history_[-1]
    w = a.rater_weights(images[:2], raters[:2])
    assert w.shape == (2, 3, 16, 16)
    assert np.allclose(w.sum(1), 1, atol=1e-5)
    assert (w[0, 2] == 0).all()


def test_early_stopping_keeps_best_epoch():
    images, truth, raters = _toy()
    seg = CrowdSegmenter(_net(), method="consensus", epochs=8, lr=1e-2, patience=2)
    seen = []
    seg.progress = lambda e, n, rec: seen.append(e)
    seg.fit(images, raters, X_val=images, y_val=truth)
    assert seen == [h["epoch"] for h in seg.history_]
    best = max(seg.history_, key=lambda h: h["val_dice"])
    assert seg.best_epoch_ == best["epoch"]


def test_consensus_argument_is_used():
    """The network learns the consensus it is given: an inverted one gives inverted masks."""
    images, truth, raters = _toy()
    kw = {"method": "consensus", "epochs": 15, "batch_size": 4, "lr": 3e-2, "patience": None}
    inverted = CrowdSegmenter(_net(), **kw).fit(images, raters, consensus=~truth)
    voted = CrowdSegmenter(_net(), **kw).fit(images, raters)
    # (N, H, W) predictions against the (N, H, W) truth
    assert (inverted.predict(images) == ~truth).mean() > 0.9
    assert (voted.predict(images) == truth).mean() > 0.9


def test_bad_inputs_give_clear_errors():
    images, _, raters = _toy(n=4)
    seg = CrowdSegmenter(_net(), method="reweight", epochs=1)
    with pytest.raises(ValueError, match=r"`rater_masks` must have shape \(4, 3, 16, 16\)"):
        seg.fit(images, raters[..., :8])
    nan = images.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN"):
        seg.fit(nan, raters)
    bad = raters.astype(np.int64)
    bad[0, 0, 0, 0] = 5
    with pytest.raises(ValueError, match=r"class 5 but n_classes=2"):
        seg.fit(images, bad, n_classes=2)
    bad[0, 0, 0, 0] = -3
    with pytest.raises(ValueError, match=r"classes >= 0 or -1"):
        seg.fit(images, bad)
    with pytest.raises(ValueError, match=r"`method` must be one of"):
        CrowdSegmenter(_net(), method="reweigh").fit(images, raters)
    with pytest.raises(ValueError, match=r"logits of shape \(B, 3"):
        CrowdSegmenter(_net(), method="consensus").fit(images, raters, n_classes=3)
    with pytest.raises(ValueError, match=r"`rater` must be an index in 0..2"):
        CrowdSegmenter(_net(), method="single", rater=3).fit(images, raters)
    absent = raters.astype(np.int64)
    absent[1] = -1
    with pytest.raises(ValueError, match=r"Images \[1\] have no rater mask"):
        seg.fit(images, absent)
    with pytest.raises(NotFittedError, match=r"not fitted yet"):
        CrowdSegmenter(_net()).predict(images)


def test_default_vote_is_the_majority_vote():
    from crowdmed.aggregation.segmentation.votes import majority_vote_masks
    from crowdmed.training.segmenter import _vote

    _, _, raters = _toy()
    got = _vote(raters.astype(np.int64), 2)
    want = np.stack([majority_vote_masks(r) for r in raters])
    assert np.array_equal(got, want.astype(np.int64))


def test_augment_hook_moves_masks_with_images():
    images, _, raters = _toy()
    calls = []

    def flip(x, m):
        calls.append((tuple(x.shape), tuple(m.shape)))
        return torch.flip(x, (-1,)), torch.flip(m, (-1,))

    seg = CrowdSegmenter(_net(), method="reweight-gaf", epochs=2, batch_size=6, k_every=1)
    seg.augment = flip
    seg.fit(images, raters)
    assert calls[0] == ((6, 1, 16, 16), (6, 4, 16, 16))  # 3 raters + the consensus


def test_three_dimensional_volumes():
    rng = np.random.default_rng(0)
    truth = np.zeros((4, 8, 8, 8), bool)
    truth[:, 2:6, 2:6, 2:6] = True
    images = (truth[:, None] * 0.8 + rng.normal(0, 0.1, (4, 1, 8, 8, 8))).astype(np.float32)
    raters = simulate_mask_raters(truth, [MaskRater(), MaskRater(bias=1.0)], random_state=0)
    torch.manual_seed(0)
    net = monai_nets.UNet(3, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)
    seg = CrowdSegmenter(
        net, method="reweight-gaf", epochs=2, batch_size=2, k_every=1, radius=2, sigma=1.0
    )
    seg.fit(images, raters)
    assert seg.predict(images).shape == (4, 8, 8, 8)
    w = seg.rater_weights(images)
    assert np.allclose(w.sum(1), 1, atol=1e-5)


def test_masks_saved_as_0_255_are_named_as_such():
    # PNG masks are often 0/255: read as classes they would ask for a 256-class network.
    images, _truth, raters = _toy(n=4)
    seg = CrowdSegmenter(_net(), epochs=1)
    with pytest.raises(
        ValueError, match=r"`rater_masks` hold the values 0 and 255.*// 255"
    ) as info:
        seg.fit(images, (raters * 255).astype(np.uint8))
    assert "\n" not in str(info.value)


def test_validation_masks_with_unknown_classes_are_an_error():
    # A y_val of 0/255 scored against predictions 0/1 gives a Dice of 0 at every epoch, so
    # early stopping would silently keep the first epoch.
    images, truth, raters = _toy(n=4)
    seg = CrowdSegmenter(_net(), epochs=1)
    with pytest.raises(ValueError, match=r"`y_val` holds class 255 but the network has 2"):
        seg.fit(images, raters, X_val=images[:2], y_val=truth[:2].astype(np.uint8) * 255)
