"""Losses and weighting network of the label re-weighting framework (Xiao et al. 2021)."""

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from crowdmed.nn import (  # noqa: E402
    GaussianAttentionFocalLoss,
    LabelReweightingLoss,
    WeightingNetwork,
    gaussian_attention,
    masked_rater_softmax,
    pixel_loss,
    reweight_lambdas,
)


def _data(seed: int = 0, b: int = 2, k: int = 3, a: int = 3, h: int = 6, w: int = 5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, h, w, generator=g, dtype=torch.float64)
    masks = torch.randint(0, k, (b, a, h, w), generator=g)
    vote = torch.randint(0, k, (b, h, w), generator=g)
    image = torch.rand(b, 1, h, w, generator=g, dtype=torch.float64)
    return logits, masks, vote, image


# ------------------------------------------------------------------ schedule
@pytest.mark.parametrize(
    ("k", "lam1", "lam2"),
    [
        (0, 1.0, 0.0),
        (1, 1 / (1 + math.tanh(1)), math.tanh(1) / (1 + math.tanh(1))),  # 0.5677, 0.4323
        (3, 1 / (1 + math.tanh(3)), math.tanh(3) / (1 + math.tanh(3))),
    ],
)
def test_lambda_schedule_values(k, lam1, lam2):
    got = reweight_lambdas(k)
    assert got == pytest.approx((lam1, lam2))
    assert sum(got) == pytest.approx(1.0)


def test_lambda_schedule_limits_and_errors():
    assert reweight_lambdas(1) == pytest.approx((0.5677, 0.4323), abs=1e-4)
    assert reweight_lambdas(50) == pytest.approx((0.5, 0.5))
    with pytest.raises(ValueError, match=r"`k` must be a number >= 0"):
        reweight_lambdas(-1)


# ------------------------------------------------------------------ attention / GAF
def test_gaussian_attention_constant_image_is_lambda_b():
    w = gaussian_attention(torch.full((1, 3, 20, 20), 0.7), lambda_a=50.0, lambda_b=2.0)
    assert torch.allclose(w, torch.full_like(w, 2.0), atol=1e-5)


def test_gaussian_attention_peaks_at_edges_and_uses_grey_mean():
    img = torch.zeros(1, 3, 24, 24)
    img[:, :, :, 12:] = 1.0
    w = gaussian_attention(img).squeeze()
    assert w[:, 11:13].mean() > w[:, :3].mean() + 5  # edge ≫ flat
    assert torch.allclose(w[:, 0], torch.ones(24))  # reflecting border: no fake edge
    grey = img.mean(1, keepdim=True)
    assert torch.allclose(gaussian_attention(img), gaussian_attention(grey))


def test_gaussian_attention_3d_matches_scipy():
    """λa |I − G * I| + λb with a separable Gaussian and mirrored borders, checked with SciPy."""
    ndimage = pytest.importorskip("scipy.ndimage")
    import numpy as np

    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 6, 8, 7, generator=g, dtype=torch.float64)
    got = gaussian_attention(img, radius=2, sigma=1.0, lambda_a=5.0, lambda_b=0.5)
    assert got.shape == (2, 1, 6, 8, 7)
    taps = np.exp(-0.5 * np.arange(-2, 3) ** 2)
    taps /= taps.sum()
    grey = img.mean(1).numpy()  # (B, D, H, W)
    blurred = grey
    for axis in (1, 2, 3):  # torch's "reflect" padding is SciPy's "mirror" mode
        blurred = ndimage.correlate1d(blurred, taps, axis=axis, mode="mirror")
    expected = 5.0 * np.abs(grey - blurred) + 0.5
    np.testing.assert_allclose(got[:, 0].numpy(), expected, rtol=1e-10, atol=1e-12)


def test_gaussian_attention_3d_of_stacked_slices_is_the_2d_map():
    """Blurring along an axis on which the volume is constant changes nothing."""
    g = torch.Generator().manual_seed(1)
    img2d = torch.rand(1, 1, 9, 10, generator=g, dtype=torch.float64)
    vol = img2d[:, :, None].expand(1, 1, 5, 9, 10).contiguous()
    heat2d = gaussian_attention(img2d, radius=2, sigma=1.5)
    heat3d = gaussian_attention(vol, radius=2, sigma=1.5)
    for z in range(5):
        torch.testing.assert_close(heat3d[:, :, z], heat2d)
    assert float(heat2d.max()) > 2.0  # the random image has edges: the map is not constant


def test_gaf_equals_focal_when_attention_off():
    logits, _, vote, image = _data()
    gaf = GaussianAttentionFocalLoss(lambda_a=0.0, lambda_b=1.0, reduction="none")
    focal, _ = pixel_loss(logits, vote, kind="focal", gamma=2.0)
    assert torch.allclose(gaf(logits, vote, image), focal)
    # and focal with gamma = 0 is cross-entropy
    f0, _ = pixel_loss(logits, vote, kind="focal", gamma=0.0)
    ce, _ = pixel_loss(logits, vote, kind="ce")
    assert torch.allclose(f0, ce, atol=1e-6)


def test_gaf_weights_the_focal_loss_by_the_heat_map():
    logits, _, vote, image = _data(1)
    gaf = GaussianAttentionFocalLoss(reduction="none")
    focal, _ = pixel_loss(logits, vote, kind="focal")
    assert torch.allclose(gaf(logits, vote, image), focal * gaf.heat(image))


def test_ignore_index_pixels_do_not_count():
    logits, _, vote, image = _data(2)
    vote2 = vote.clone()
    vote2[:, :2] = -1
    loss = GaussianAttentionFocalLoss(reduction="none")(logits, vote2, image)
    assert (loss[:, :2] == 0).all()
    mean = GaussianAttentionFocalLoss()(logits, vote2, image)
    assert float(mean) == pytest.approx(float(loss.sum() / (vote2 >= 0).sum()))


def test_gradcheck_gaf():
    logits, _, vote, image = _data(3, b=1, k=2, h=4, w=4)
    logits.requires_grad_(True)
    gaf = GaussianAttentionFocalLoss(radius=1, sigma=1.0)
    assert torch.autograd.gradcheck(lambda z: gaf(z, vote, image), (logits,), atol=1e-5)


# ------------------------------------------------------------------ weighting network
def test_weights_sum_to_one_over_raters():
    net = WeightingNetwork(1, 4).double()
    with torch.no_grad():
        net.backbone[-1].weight.normal_()
    w = net(torch.rand(2, 1, 16, 12, dtype=torch.float64), size=(8, 6))
    assert w.shape == (2, 4, 8, 6)
    assert torch.allclose(w.sum(1), torch.ones(2, 8, 6, dtype=torch.float64))
    assert (w >= 0).all()


def test_weights_sum_to_one_over_present_raters():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 5, generator=g)
    avail = torch.ones(2, 3, 5, 5, dtype=torch.bool)
    avail[0, 1] = False  # rater 1 absent for image 0
    avail[1, :, 0, 0] = False  # nobody at one pixel
    w = masked_rater_softmax(logits, avail)
    assert (w[0, 1] == 0).all()
    s = w.sum(1)
    assert torch.allclose(s[0], torch.ones(5, 5))
    assert s[1, 0, 0] == 0
    assert torch.allclose(s[1].flatten()[1:], torch.ones(24))


def test_weighting_network_rejects_bad_backbone():
    net = WeightingNetwork(1, 3, backbone=torch.nn.Conv2d(1, 2, 1))
    with pytest.raises(ValueError, match=r"must output \(B, 3"):
        net(torch.rand(1, 1, 4, 4))


# ------------------------------------------------------------------ re-weighting loss
@pytest.mark.parametrize(("kind", "attention"), [("ce", False), ("focal", True)])
def test_reweight_equals_vote_loss_at_k0(kind, attention):
    logits, masks, vote, image = _data(4)
    crit = LabelReweightingLoss(kind=kind, attention=attention)
    heat = crit.gaf.heat(image) if attention else None
    ref, valid = pixel_loss(logits, vote, kind=kind, weight_map=heat)
    weights = torch.full(masks.shape, 1 / 3, dtype=torch.float64)
    got = crit(logits, masks, vote, weights, k=0, image=image)
    assert float(got) == pytest.approx(float(ref.sum() / valid.sum()))


def test_reweight_loss_formula_by_hand():
    logits, masks, vote, _ = _data(5)
    g = torch.Generator().manual_seed(1)
    weights = torch.softmax(torch.randn(masks.shape, generator=g, dtype=torch.float64), 1)
    lam1, lam2 = reweight_lambdas(2)
    vote_l, _ = pixel_loss(logits, vote)
    ln = torch.stack([pixel_loss(logits, masks[:, n])[0] for n in range(3)], 1)
    ref = lam1 * vote_l.mean() + lam2 * (ln * weights).mean(1).mean()
    got = LabelReweightingLoss()(logits, masks, vote, weights, k=2)
    assert float(got) == pytest.approx(float(ref))


def test_reweight_missing_rater_is_masked_out():
    logits, masks, vote, _ = _data(6)
    masks = masks.clone()
    masks[0, 2] = -1  # rater 2 did not annotate image 0
    weights = masked_rater_softmax(torch.zeros(masks.shape, dtype=torch.float64), masks >= 0)
    assert torch.allclose(weights[0, :2], torch.full_like(weights[0, :2], 0.5))
    got = LabelReweightingLoss()(logits, masks, vote, weights, k=5)
    # by hand: the rater term of image 0 averages over its 2 present raters, image 1 over 3
    lam1, lam2 = reweight_lambdas(5)
    vote_l, _ = pixel_loss(logits, vote)
    rater = torch.zeros(2, 6, 5, dtype=torch.float64)
    for b, present in ((0, [0, 1]), (1, [0, 1, 2])):
        for n in present:
            loss_n, _ = pixel_loss(logits[b : b + 1], masks[b : b + 1, n])
            rater[b] += loss_n[0] * weights[b, n] / len(present)
    expected = lam1 * vote_l.mean() + lam2 * rater.mean()
    assert float(got) == pytest.approx(float(expected), rel=1e-12)
    # the weight given to the absent rater changes nothing ...
    weights2 = weights.clone()
    weights2[0, 2] = 7.0
    assert float(LabelReweightingLoss()(logits, masks, vote, weights2, k=5)) == pytest.approx(
        float(got), rel=1e-12
    )
    # ... while the same weight on a present rater does
    weights3 = weights.clone()
    weights3[1, 2] = 7.0
    assert float(LabelReweightingLoss()(logits, masks, vote, weights3, k=5)) > float(got) + 0.1


def test_gradcheck_reweight_loss_both_networks():
    logits, masks, vote, image = _data(7, b=1, k=2, a=2, h=4, w=4)
    wlogits = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    logits.requires_grad_(True)
    wlogits.requires_grad_(True)
    crit = LabelReweightingLoss(kind="focal", attention=True, radius=1, sigma=1.0)

    def f(z, wl):
        return crit(z, masks, vote, torch.softmax(wl, 1), k=1, image=image)

    assert torch.autograd.gradcheck(f, (logits, wlogits), atol=1e-5)


# ------------------------------------------------------------------ errors
def test_errors_shape_range_nan():
    logits, masks, vote, image = _data(8)
    with pytest.raises(ValueError, match=r"must have shape \(2, 6, 5\)"):
        pixel_loss(logits, vote[:, :3])
    with pytest.raises(ValueError, match=r"classes 0..2 or -1"):
        pixel_loss(logits, vote + 5)
    bad = logits.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN"):
        pixel_loss(bad, vote)
    with pytest.raises(TypeError, match=r"integer class indices"):
        pixel_loss(logits, vote.double())
    nan_img = image.clone()
    nan_img[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN"):
        gaussian_attention(nan_img)
    m = masks.clone()
    m[0, 1, 0, 0] = 9
    with pytest.raises(ValueError, match=r"rater_masks\[:, 1\]"):
        LabelReweightingLoss()(logits, m, vote, torch.full(m.shape, 1 / 3).double(), k=1)
    with pytest.raises(ValueError, match=r"`image` .* share"):
        GaussianAttentionFocalLoss()(logits, vote, image[..., :3])
    with pytest.raises(ValueError, match=r"`lambda_a` must be >= 0"):
        GaussianAttentionFocalLoss(lambda_a=-1.0)


def test_focal_matches_monai_focal_loss():
    from monai.losses import FocalLoss

    logits, _, vote, _ = _data(9)
    ref = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0, reduction="none")(
        logits.float(), vote.unsqueeze(1)
    ).sum(1)
    got, _ = pixel_loss(logits.float(), vote, kind="focal", gamma=2.0)
    assert torch.allclose(got, ref, atol=1e-5)
