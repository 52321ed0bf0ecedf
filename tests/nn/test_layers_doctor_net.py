"""Doctor Net heads (DL-DN / DL-WDN) and the regression DL-EM layer, against hand-worked numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crowdmed.nn.layers import DoctorNetHeads, GaussianReadersEM
from crowdmed.nn.models import mlp_head, split_last_linear


def _heads(combine: str = "vote") -> DoctorNetHeads:
    # 3 annotators, 2 features, 2 classes; head r's logits are W_r h + b_r
    heads = DoctorNetHeads(2, 2, 3, combine=combine, dtype=torch.float64)
    with torch.no_grad():
        heads.weight.copy_(
            torch.tensor(
                [
                    [[1.0, 0.0], [0.0, 1.0]],  # votes for the larger feature
                    [[0.0, 1.0], [1.0, 0.0]],  # votes for the smaller feature
                    [[1.0, 0.0], [0.0, 1.0]],
                ],
                dtype=torch.float64,
            )
        )
        heads.bias.zero_()
    return heads


def test_heads_are_one_linear_layer_per_annotator() -> None:
    heads = _heads()
    h = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    out = heads(h)  # (B=2, A=3, K=2)
    assert out.shape == (2, 3, 2)
    for r in range(3):
        assert torch.allclose(out[:, r], h @ heads.weight[r].T + heads.bias[r])
    items, annotators = torch.tensor([0, 1, 1]), torch.tensor([2, 0, 1])
    assert torch.allclose(heads.forward_observed(h, items, annotators), out[items, annotators])


def test_vote_is_the_majority_of_the_heads() -> None:
    heads = _heads("vote")
    # item 0: h = (2, 0): heads 0 and 2 say class 0, head 1 says class 1 -> class 0 by 2 votes
    p = heads.combined_proba(torch.tensor([[2.0, 0.0]], dtype=torch.float64))
    # shares (2/3, 1/3), mean head probability (s0 + s0 + s1)/3 mixed in at 1/(2A) = 1/6
    s = torch.softmax(torch.tensor([2.0, 0.0], dtype=torch.float64), 0)
    mean_p = (2 * s + s.flip(0)) / 3
    expected = (torch.tensor([2 / 3, 1 / 3], dtype=torch.float64) + mean_p / 6) / (1 + 1 / 6)
    assert torch.allclose(p[0], expected)
    assert p.sum().item() == pytest.approx(1.0)


def test_vote_tie_goes_to_the_more_probable_class() -> None:
    heads = DoctorNetHeads(2, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        heads.weight.copy_(torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 3.0]]]))
        heads.bias.zero_()
    # head 0 says class 0 with logit gap 1; head 1 says class 1 with gap 3: one vote each,
    # class 1 is more probable on average
    p = heads.combined_proba(torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    assert p.argmax(1).item() == 1


def test_weighted_mean_of_the_heads() -> None:
    heads = _heads("weighted")
    with torch.no_grad():
        heads.averaging_logits.copy_(torch.log(torch.tensor([0.5, 0.25, 0.25])))
    h = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    probs = torch.softmax(heads(h), -1)[0]  # (A, K)
    expected = 0.5 * probs[0] + 0.25 * probs[1] + 0.25 * probs[2]
    assert torch.allclose(heads.combined_proba(h)[0], expected)
    assert torch.allclose(heads.averaging_weights(), torch.tensor([0.5, 0.25, 0.25]).double())


def test_averaging_weights_reach_the_optimum_of_the_mixture_likelihood() -> None:
    # Optimal mixture weights w of fixed components satisfy the fixed point of
    # w_r = mean_i w_r p_ir / Σ_s w_s p_is (the EM update of mixture weights); compute it by
    # iterating that update and compare with the backpropagation fit.
    rng = np.random.default_rng(0)
    n, a, k = 200, 3, 2
    target = rng.integers(0, k, n)
    p = np.empty((n, a, k))
    p[:, 0, :] = 0.1
    p[np.arange(n), 0, target] = 0.9  # a reliable head
    p[:, 1, :] = 0.5  # an uninformative head
    q = rng.uniform(0.2, 0.8, n)
    p[:, 2, 0], p[:, 2, 1] = q, 1 - q  # a noisy head
    p_t = p[np.arange(n), :, target]
    w = np.full(a, 1 / a)
    for _ in range(5000):
        w = (w * p_t / (p_t @ w)[:, None]).mean(0)
    heads = DoctorNetHeads(1, k, a, combine="weighted")
    heads.fit_averaging_weights(torch.as_tensor(p), torch.as_tensor(target), steps=2000)
    got = heads.averaging_weights().double().numpy()
    np.testing.assert_allclose(got, w, atol=2e-3)
    assert got[0] > got[1]
    assert got[0] > got[2]


def test_heads_gradcheck() -> None:
    heads = _heads()
    h = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: heads(x), (h,))


def test_heads_start_as_copies_of_the_last_layer() -> None:
    net = mlp_head(6, 3, hidden=4).eval()
    trunk, last = split_last_linear(net)
    heads = DoctorNetHeads(4, 3, 5, init_weight=last.weight, init_bias=last.bias)
    x = torch.randn(7, 6)
    out = heads(trunk(x))
    for r in range(5):
        assert torch.allclose(out[:, r], net(x), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"combine": "mean"}, ValueError, r"`combine` must be 'vote' or 'weighted'"),
        ({"init_weight": torch.zeros(2, 2)}, ValueError, r"`init_weight` must have shape"),
    ],
)
def test_heads_errors(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        DoctorNetHeads(4, 3, 2, **kwargs)


def test_split_last_linear() -> None:
    # a nested Sequential ending in a linear layer (small_cnn ends like this, flat)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3),
        torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2)
        ),
    )
    trunk, last = split_last_linear(net)
    x = torch.zeros(2, 1, 16, 16)
    assert trunk(x).shape == (2, last.in_features)
    assert torch.allclose(last(trunk(x)), net(x))
    t2, l2 = split_last_linear(torch.nn.Linear(3, 2))
    assert isinstance(t2, torch.nn.Identity)
    assert l2.out_features == 2
    with pytest.raises(ValueError, match=r"ending in one"):
        split_last_linear(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()))


# ------------------------------------------------------------------------ regression DL-EM
def test_adjusted_targets_are_the_precision_weighted_mean() -> None:
    # ŷ_i = Σ_r λ_r (y_ir - b_r) / Σ_r λ_r over the annotators of item i
    em = GaussianReadersEM(3, bias=True, init_precision=[1.0, 2.0, 4.0], init_bias=[0.0, 1.0, -1.0])
    y = torch.tensor(
        [[1.0, 3.0, float("nan")], [float("nan"), float("nan"), 0.0]], dtype=torch.float64
    )
    # item 0: (1·1 + 2·(3-1)) / 3 = 5/3; item 1: 0 - (-1) = 1
    np.testing.assert_allclose(em.adjusted_targets(y).numpy(), [5 / 3, 1.0])


def test_loss_gradient_is_that_of_the_negative_log_likelihood() -> None:
    em = GaussianReadersEM(2, bias=True, init_precision=[1.0, 3.0], init_bias=[0.5, -0.5])
    y = torch.tensor([[1.0, 2.0], [0.0, float("nan")]], dtype=torch.float64)
    mu = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    em.loss(mu, y).backward()
    g_loss = mu.grad.clone()
    mu.grad = None
    lam, b = torch.tensor([1.0, 3.0]).double(), torch.tensor([0.5, -0.5]).double()
    obs = ~torch.isnan(y)
    r = torch.where(obs, y - b - mu[:, None], torch.zeros_like(y))
    nll = 0.5 * (lam * r * r).sum(1).mean()
    nll.backward()
    assert torch.allclose(g_loss, mu.grad)


def test_m_step_hand_numbers() -> None:
    em = GaussianReadersEM(2, bias=True)
    mu = np.array([0.0, 1.0, 2.0])
    y = np.array([[1.0, -1.0], [3.0, 1.0], [3.0, np.nan]])
    em.m_step(mu, y)
    # raw biases: annotator 0: mean(1, 2, 1) = 4/3; annotator 1: mean(-1, 0) = -1/2;
    # shifted to mean 0: 4/3 - 5/12 = 11/12, -1/2 - 5/12 = -11/12
    np.testing.assert_allclose(em.offset.numpy(), [11 / 12, -11 / 12])
    r0 = np.array([1.0, 2.0, 1.0]) - 11 / 12
    r1 = np.array([-1.0, 0.0]) + 11 / 12
    np.testing.assert_allclose(em.precision.numpy(), [1 / np.mean(r0**2), 1 / np.mean(r1**2)])


def test_m_step_without_bias_keeps_zero_bias() -> None:
    em = GaussianReadersEM(1)
    em.m_step(np.array([0.0, 0.0]), np.array([[1.0], [-3.0]]))
    assert em.offset.item() == 0.0
    assert em.precision.item() == pytest.approx(1 / 5)


def test_gaussian_readers_errors() -> None:
    with pytest.raises(ValueError, match=r"`init_precision` must be positive"):
        GaussianReadersEM(2, init_precision=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"`labels` must have shape \(B, 2\)"):
        GaussianReadersEM(2).adjusted_targets(torch.zeros(3, 3))
