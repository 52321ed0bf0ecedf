"""Xiao et al. (2021): the focal loss with its class-balance factor and the λ schedule."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crowdmed.nn.segmentation import (  # noqa: E402
    GaussianAttentionFocalLoss,
    pixel_loss,
    reweight_lambdas,
)

# p_t = 0.5 everywhere (zero logits, K = 2), gamma = 2:
# -(1 - 0.5)^2 * log(0.5) = 0.25 * ln 2
FOCAL_HALF = 0.25 * math.log(2)

# (alpha, target class, expected L_focal = -alpha_t (1 - p_t)^gamma log p_t), by hand
ALPHA_CASES = [
    (None, 1, FOCAL_HALF),  # alpha_t = 1
    (0.25, 1, 0.25 * FOCAL_HALF),  # Lin et al.: alpha for the foreground
    (0.25, 0, 0.75 * FOCAL_HALF),  # 1 - alpha for the background
    ([0.2, 0.8], 0, 0.2 * FOCAL_HALF),  # one weight per class
    ([0.2, 0.8], 1, 0.8 * FOCAL_HALF),
]


@pytest.mark.parametrize(("alpha", "cls", "expected"), ALPHA_CASES)
def test_focal_loss_has_the_class_balance_factor(alpha, cls, expected):
    logits = torch.zeros(1, 2, 2, 2, dtype=torch.float64)  # (B, K, H, W)
    target = torch.full((1, 2, 2), cls, dtype=torch.long)
    loss, valid = pixel_loss(logits, target, kind="focal", gamma=2.0, alpha=alpha)
    assert valid.all()
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)


def test_gaf_loss_is_heat_times_alpha_weighted_focal():
    """Eq. 6: L_GAF = W_heat * L_focal; a flat image has W_heat = lambda_b."""
    logits = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    target = torch.ones(1, 4, 4, dtype=torch.long)
    image = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    loss = GaussianAttentionFocalLoss(alpha=0.25, lambda_b=2.0, radius=1)
    assert float(loss(logits, target, image)) == pytest.approx(2.0 * 0.25 * FOCAL_HALF)
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\]; got 1.5"):
        GaussianAttentionFocalLoss(alpha=1.5)
    with pytest.raises(ValueError, match="`alpha` must hold 2 non-negative class weights"):
        pixel_loss(logits, target, kind="focal", alpha=[0.2, 0.3, 0.5])


def test_schedule_of_the_paper_in_tenths_of_the_run():
    """Eqs. 7-8 with n growing every 1,000 of 10,000 iterations: k_every = 0.1 of the run."""
    from types import SimpleNamespace

    from crowdmed.training.segmenter import k_every_steps

    engine = SimpleNamespace(world_size=1, join_single=True)
    # the paper's run: 10,000 iterations at batch size 2 (20,000 images, one epoch)
    assert k_every_steps(0.1, 1, 20_000, 2, engine) == 1_000
    # a short run: 4 epochs of 5 batches: one step of n every 2 optimiser steps
    assert k_every_steps(0.1, 4, 10, 2, engine) == 2
    lam1, lam2 = reweight_lambdas(1)
    t = math.tanh(1)
    assert (lam1, lam2) == pytest.approx((1 / (1 + t), t / (1 + t)))


def test_segmenter_k_follows_the_fraction_of_the_run():
    nets = pytest.importorskip("monai.networks.nets")
    from crowdmed.training import CrowdSegmenter

    rng = np.random.default_rng(0)
    images = rng.random((10, 1, 8, 8)).astype(np.float32)
    raters = rng.random((10, 2, 8, 8)) > 0.5
    torch.manual_seed(0)
    net = nets.UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)
    seg = CrowdSegmenter(net, method="reweight", epochs=4, batch_size=2, patience=None)
    assert seg.k_every == 0.1
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seg.fit(images, raters)
    finally:
        torch.set_num_threads(n_threads)
    # 5 steps per epoch, 20 in all; k grows every 2 steps: after 5, 10, 15, 20 steps
    assert [h["k"] for h in seg.history_] == [2.0, 5.0, 7.0, 10.0]
    with pytest.raises(ValueError, match=r"`k_every` must be a fraction of the run in \(0, 1\]"):
        CrowdSegmenter(net, k_every=1.5).fit(images, raters)
