"""Crowd layers and losses: gradients, identities, recovery of simulated annotators."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crowdmed.nn import (  # noqa: E402
    AggNetEM,
    CrowdLayer,
    CrowdRegressionLayer,
    DawidSkeneEM,
    crowd_cross_entropy,
    crowd_mse,
)

MODES = ["MW", "VW", "VB", "VW+B"]


def simulate(conf, n, prior, rng, p_label=1.0):
    k = conf.shape[1]
    truth = rng.choice(k, size=n, p=prior)
    cum = conf[:, truth, :].cumsum(axis=2)
    labels = (rng.random((conf.shape[0], n, 1)) > cum).sum(axis=2).T
    labels = np.minimum(labels, k - 1)
    labels[rng.random(labels.shape) > p_label] = -1
    return labels, truth


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("mode", MODES)
def test_crowd_layer_gradcheck(mode):
    layer = CrowdLayer(3, 2, mode=mode, dtype=torch.float64)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.softmax(torch.randn(4, 3, dtype=torch.float64), 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: layer(x), (x,))
    params = list(layer.parameters())
    names = [n for n, _ in layer.named_parameters()]
    assert torch.autograd.gradcheck(
        lambda *ps: torch.func.functional_call(
            layer, dict(zip(names, ps, strict=True)), (x.detach(),)
        ),
        tuple(p.detach().clone().requires_grad_() for p in params),
    )


@pytest.mark.parametrize("mode", ["S", "B", "S+B"])
def test_regression_layer_gradcheck(mode):
    layer = CrowdRegressionLayer(3, mode=mode, dtype=torch.float64)
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_losses_gradcheck():
    logits = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[0, -1, 4], [1, 2, -1], [-1, -1, 3], [0, 0, 0]])
    assert torch.autograd.gradcheck(lambda z: crowd_cross_entropy(z, labels), (logits,))
    preds = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor(
        [[1.0, float("nan")], [0.5, 2.0], [float("nan"), -1.0]], dtype=torch.float64
    )
    assert torch.autograd.gradcheck(lambda p: crowd_mse(p, targets), (preds,))


def test_em_layers_gradcheck():
    labels = torch.tensor([[1, 0, -1], [1, 1, 1], [0, -1, 0]])
    logits = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    # The E-step posteriors are held fixed during the network's update (EM), so the loss is
    # checked at fixed posteriors.
    agg = AggNetEM(3, init_sensitivity=[0.9, 0.7, 0.6], init_specificity=0.8)
    mu = agg.posteriors(logits.detach(), labels)
    assert torch.autograd.gradcheck(lambda z: agg.expected_nll(z, mu), (logits,))
    ds = DawidSkeneEM(2, 3)
    q = ds.posteriors(logits.detach(), labels)
    assert torch.autograd.gradcheck(lambda z: ds.expected_nll(z, q), (logits,))


def test_em_loss_gradient_equals_marginal_likelihood_gradient():
    """Fisher's identity: at the E-step point, grad of the expected NLL = grad of -log p(labels)."""
    labels = torch.tensor([[1, 0, -1], [1, 1, 1], [0, -1, 0]])
    logits = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    agg = AggNetEM(3, init_sensitivity=[0.9, 0.7, 0.6], init_specificity=0.8)
    agg(logits, labels).backward()
    z = logits.detach().clone().requires_grad_()
    lp = torch.log_softmax(z, 1)
    y, obs = labels.double(), (labels >= 0).double()
    a, b = agg.sensitivity, agg.specificity
    log_a = (obs * (y * a.log() + (1 - y) * (1 - a).log())).sum(1)
    log_b = (obs * ((1 - y) * b.log() + y * (1 - b).log())).sum(1)
    marginal = torch.logsumexp(torch.stack([lp[:, 1] + log_a, lp[:, 0] + log_b]), 0)
    (-marginal.mean()).backward()
    torch.testing.assert_close(logits.grad, z.grad)


def test_aggnet_loss_gradient_is_p_minus_mu():
    """d loss / d logit_1 (binary softmax) = (p - μ) / B: the network chases the posterior."""
    labels = torch.tensor([[1, 1, 0], [0, 0, -1]])
    logits = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    agg = AggNetEM(3)
    agg(logits, labels).backward()
    p = torch.softmax(logits.detach(), 1)[:, 1]
    mu = agg.posteriors(logits.detach(), labels)
    torch.testing.assert_close(logits.grad[:, 1], (p - mu) / 2)


# ----------------------------------------------------------------------------- identities
@pytest.mark.parametrize("mode", MODES)
def test_identity_crowd_layer_returns_input(mode):
    layer = CrowdLayer(4, 3, mode=mode)
    p = torch.softmax(torch.randn(6, 4), 1)
    out = layer(p)
    for a in range(3):
        torch.testing.assert_close(out[:, a], p)


# Hand-computed outputs of a crowd layer with K = 2 classes and A = 2 annotators for one item
# with p = (0.25, 0.75):
#   MW   W_a p:       W_0 = [[1, 2], [3, 4]] -> (1.75, 3.75); W_1 swaps the classes -> (0.75, 0.25)
#   VW   w_a * p:     w_0 = (2, -1) -> (0.5, -0.75);      w_1 = (0.5, 4) -> (0.125, 3.0)
#   VB   p + b_a:     b_0 = (1, 0) -> (1.25, 0.75);       b_1 = (-1, 2) -> (-0.75, 2.75)
#   VW+B w_a * p + b_a:             -> (1.5, -0.75);      -> (-0.875, 5.0)
P = [[0.25, 0.75]]
W_MW = [[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [1.0, 0.0]]]
W_V = [[2.0, -1.0], [0.5, 4.0]]
B_V = [[1.0, 0.0], [-1.0, 2.0]]
BY_HAND = {
    "MW": [[[1.75, 3.75], [0.75, 0.25]]],
    "VW": [[[0.5, -0.75], [0.125, 3.0]]],
    "VB": [[[1.25, 0.75], [-0.75, 2.75]]],
    "VW+B": [[[1.5, -0.75], [-0.875, 5.0]]],
}


def _hand_layer(mode):
    layer = CrowdLayer(2, 2, mode=mode, dtype=torch.float64)
    with torch.no_grad():
        if mode == "MW":
            layer.weight.copy_(torch.tensor(W_MW))
        if mode in ("VW", "VW+B"):
            layer.weight.copy_(torch.tensor(W_V))
        if mode in ("VB", "VW+B"):
            layer.bias.copy_(torch.tensor(B_V))
    return layer


@pytest.mark.parametrize("mode", MODES)
def test_crowd_layer_output_by_hand(mode):
    layer = _hand_layer(mode)
    p = torch.tensor(P, dtype=torch.float64)
    expected = torch.tensor(BY_HAND[mode], dtype=torch.float64)  # (B=1, A=2, K=2)
    torch.testing.assert_close(layer(p), expected)
    items, anns = torch.tensor([0, 0]), torch.tensor([1, 0])
    torch.testing.assert_close(layer.forward_observed(p, items, anns), expected[0, [1, 0]])
    # confusion matrices: row k is softmax of annotator a's logits for the one-hot input e_k
    eye = torch.eye(2, dtype=torch.float64)
    by_hand = torch.softmax(torch.stack([layer(eye[k : k + 1])[0] for k in range(2)], 1), -1)
    np.testing.assert_allclose(layer.confusion_matrices(), by_hand.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_crowd_layer_gradient_by_hand(mode):
    """For loss = sum(G * out): dL/db = sum_b G, dL/dw = sum_b G * p, dL/dW[a,l,k] = sum_b G p_k."""
    layer = _hand_layer(mode)
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(5, 2, generator=g, dtype=torch.float64), 1)
    grad_out = torch.randn(5, 2, 2, generator=g, dtype=torch.float64)  # (B, A, K)
    (layer(p) * grad_out).sum().backward()
    if mode == "MW":
        torch.testing.assert_close(layer.weight.grad, torch.einsum("bal,bk->alk", grad_out, p))
    if mode in ("VW", "VW+B"):
        torch.testing.assert_close(layer.weight.grad, (grad_out * p[:, None, :]).sum(0))
    if mode in ("VB", "VW+B"):
        torch.testing.assert_close(layer.bias.grad, grad_out.sum(0))


def test_missing_labels_contribute_nothing():
    logits = torch.randn(3, 4, 2)
    labels = torch.tensor([[0, -1, 1, -1], [1, 1, -1, -1], [-1, 0, 0, 1]])
    full = crowd_cross_entropy(logits, labels, reduction="none")
    # change the logits of missing entries only: loss must not move
    noisy = logits.clone()
    noisy[labels < 0] += 10 * torch.randn_like(noisy[labels < 0])
    torch.testing.assert_close(crowd_cross_entropy(noisy, labels, reduction="none"), full)
    # AggNet / DL-EM posteriors ignore a column of -1
    lg = torch.randn(3, 2)
    binary = torch.tensor([[0, 1], [1, 1], [0, 0]])
    with_missing = torch.cat([binary, torch.full((3, 1), -1)], dim=1)
    torch.testing.assert_close(
        AggNetEM(2).posteriors(lg, binary), AggNetEM(3).posteriors(lg, with_missing)
    )
    torch.testing.assert_close(
        DawidSkeneEM(2, 2).posteriors(lg, binary), DawidSkeneEM(2, 3).posteriors(lg, with_missing)
    )


def test_aggnet_posterior_formula():
    agg = AggNetEM(2, init_sensitivity=[0.9, 0.6], init_specificity=[0.7, 0.8])
    logits = torch.tensor([[0.0, np.log(3.0)]], dtype=torch.float64)  # p = 0.75
    mu = agg.posteriors(logits, torch.tensor([[1, 0]]))
    a = 0.9 * 0.4
    b = 0.3 * 0.8
    torch.testing.assert_close(
        mu, torch.tensor([a * 0.75 / (a * 0.75 + b * 0.25)], dtype=torch.float64)
    )


# ----------------------------------------------------------------------------- recovery
def test_crowd_layer_recovers_confusion_matrices():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    k, n = 3, 3000
    conf = np.array(
        [
            [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]],
            [[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]],
            [[0.05, 0.9, 0.05], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05]],  # adversarial
        ]
    )
    labels, truth = simulate(conf, n, np.full(k, 1 / k), rng)
    # features that reveal the class: a linear model can be perfect
    x = torch.tensor(np.eye(k)[truth] * 3 + rng.normal(0, 0.5, (n, k)), dtype=torch.float32)
    y = torch.as_tensor(labels)
    # The network starts undecided (zero head); from a random confident start the crowd layer
    # can absorb a permutation of the classes, which no crowd-only loss can tell apart.
    net = torch.nn.Linear(k, k)
    torch.nn.init.zeros_(net.weight)
    torch.nn.init.zeros_(net.bias)
    layer = CrowdLayer(k, 3, mode="MW")
    opt = torch.optim.Adam([*net.parameters(), *layer.parameters()], lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        loss = crowd_cross_entropy(layer(torch.softmax(net(x), 1)), y)
        loss.backward()
        opt.step()
    acc = (net(x).argmax(1).numpy() == truth).mean()
    assert acc > 0.95
    est = layer.confusion_matrices()
    assert est.shape == (3, k, k)
    np.testing.assert_allclose(est.sum(axis=2), 1.0, atol=1e-6)
    # ordering of the large entries is recovered, incl. the adversary's permutation
    np.testing.assert_array_equal(est.argmax(axis=2), conf.argmax(axis=2))
    assert np.abs(est - conf).max() < 0.05


def test_aggnet_layer_recovers_sensitivity_specificity():
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    n = 4000
    sens = np.array([0.9, 0.75, 0.6, 0.55])
    spec = np.array([0.8, 0.9, 0.65, 0.5])
    conf = np.stack([[[b, 1 - b], [1 - a, a]] for a, b in zip(sens, spec, strict=False)])
    labels, truth = simulate(conf, n, np.array([0.6, 0.4]), rng, p_label=0.9)
    x = torch.tensor(truth[:, None] * 2.0 - 1 + rng.normal(0, 0.6, (n, 1)), dtype=torch.float32)
    y = torch.as_tensor(labels)
    net = torch.nn.Linear(1, 2)
    agg = AggNetEM(4, tau=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _epoch in range(30):
        for _ in range(10):
            opt.zero_grad()
            agg(net(x), y).backward()
            opt.step()
        with torch.no_grad():
            agg.m_step(agg.posteriors(net(x), y), y)
    np.testing.assert_allclose(agg.sensitivity.numpy(), sens, atol=0.05)
    np.testing.assert_allclose(agg.specificity.numpy(), spec, atol=0.05)


def test_dl_em_m_step_matches_dawid_skene_counts():
    from crowdmed.aggregation import DawidSkene

    rng = np.random.default_rng(2)
    labels = rng.integers(-1, 3, size=(50, 4))
    labels[:, 0] = rng.integers(0, 3, size=50)
    post = rng.dirichlet(np.ones(3), size=50)
    em = DawidSkeneEM(3, 4, smoothing=0.5)
    em.m_step(post, labels)
    ds = DawidSkene(smoothing=0.5)
    from crowdmed.data import CrowdLabels

    cl = CrowdLabels.from_dense(labels, n_classes=3)
    counts = ds._counts(cl, post) + 0.5
    np.testing.assert_allclose(
        em.confusion_matrices(), counts / counts.sum(2, keepdims=True), atol=1e-9
    )


# ----------------------------------------------------------------------------- bad input
def test_bad_construction():
    with pytest.raises(
        ValueError, match=r"`mode` must be one of \['MW', 'VW', 'VB', 'VW\+B'\]; got 'MX'"
    ):
        CrowdLayer(3, 2, mode="MX")
    with pytest.raises(TypeError, match=r"`n_annotators` must be an int; got float"):
        CrowdLayer(3, 2.0)
    with pytest.raises(ValueError, match=r"`n_classes` must be at least 2; got 1"):
        CrowdLayer(1, 2)
    with pytest.raises(ValueError, match=r"`quiz_accuracy` must have shape \(3,\); got \(2,\)"):
        AggNetEM(3, quiz_accuracy=np.array([0.5, 0.6]))


def test_bad_batches():
    with pytest.raises(
        ValueError, match=r"`labels` must have shape \(B, A\) = \(2, 3\); got \(2, 2\)"
    ):
        crowd_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(
        ValueError, match=r"`labels` must hold classes 0..3 or -1 for missing; got \[7\]"
    ):
        crowd_cross_entropy(torch.zeros(1, 2, 4), torch.tensor([[0, 7]]))
    with pytest.raises(
        ValueError, match=r"`labels` must hold classes 0..1 or -1 for missing; got \[2\]"
    ):
        AggNetEM(2).posteriors(torch.zeros(1, 2), torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match=r"`probs` must have shape \(B, 3\); got \(2, 4\)"):
        CrowdLayer(3, 2)(torch.zeros(2, 4))


@pytest.mark.parametrize("mode", MODES)
def test_forward_observed_equals_dense_forward(mode):
    layer = CrowdLayer(4, 5, mode=mode)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    p = torch.softmax(torch.randn(6, 4), 1)
    labels = torch.randint(-1, 4, (6, 5))
    items, anns = torch.nonzero(labels >= 0, as_tuple=True)
    torch.testing.assert_close(layer.forward_observed(p, items, anns), layer(p)[items, anns])
    dense_loss = crowd_cross_entropy(layer(p), labels)
    sparse = (
        torch.nn.functional.cross_entropy(
            layer.forward_observed(p, items, anns), labels[items, anns], reduction="sum"
        )
        / 6
    )
    torch.testing.assert_close(sparse, dense_loss)


def test_observed_pairs_by_hand():
    # (N=3, A=4): item 1 has the most labels (3), item 2 none
    labels = torch.tensor([[-1, 2, -1, 0], [1, 0, -1, 3], [-1, -1, -1, -1]])
    ann, cls = CrowdLayer.observed_pairs(labels)
    assert ann.tolist() == [[1, 3, 0], [0, 1, 3], [0, 0, 0]]
    assert cls.tolist() == [[2, 0, -1], [1, 0, 3], [-1, -1, -1]]
    assert ann.dtype == cls.dtype == torch.int64
    ann_np, cls_np = CrowdLayer.observed_pairs(labels.numpy())
    assert torch.equal(ann_np, ann)
    assert torch.equal(cls_np, cls)
    with pytest.raises(ValueError, match=r"`labels` must be an integer array \(N, A\)"):
        CrowdLayer.observed_pairs(torch.zeros(3, 2))


def _previous_loss(layer, logits, labels):
    """The classifier's crowd-layer loss before ``observed_nll``: gather the dense labels."""
    items, anns = torch.nonzero(labels >= 0, as_tuple=True)
    out = layer.forward_observed(torch.softmax(logits, 1), items, anns)
    ce = torch.nn.functional.cross_entropy(out, labels[items, anns], reduction="sum")
    return ce / logits.shape[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
def test_observed_nll_equals_previous_formulation(mode, dtype):
    """Loss and gradients (logits and every parameter) agree to 1e-6 on a sparse crowd."""
    g = torch.Generator().manual_seed(3)
    n, a, k = 40, 11, 5
    labels = torch.full((n, a), -1)
    for i in range(n):  # 1-3 labels per item, as in LabelMe
        who = torch.randperm(a, generator=g)[: int(torch.randint(1, 4, (1,), generator=g))]
        labels[i, who] = torch.randint(0, k, (len(who),), generator=g)
    layer = CrowdLayer(k, a, mode=mode, dtype=dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=dtype))
    logits = torch.randn(n, k, generator=g, dtype=dtype, requires_grad=True)
    params = [logits, *layer.parameters()]
    before = _previous_loss(layer, logits, labels)
    grads_before = torch.autograd.grad(before, params)
    ann, cls = CrowdLayer.observed_pairs(labels)
    after = layer.observed_nll(logits, ann, cls)
    grads_after = torch.autograd.grad(after, params)
    assert abs((after - before).item()) <= 1e-6
    for old, new in zip(grads_before, grads_after, strict=True):
        assert float((old - new).abs().max()) <= 1e-6
    # and both equal the dense definition: crowd_cross_entropy on every annotator's output
    dense = crowd_cross_entropy(layer(torch.softmax(logits, 1)), labels)
    assert abs((after - dense).item()) <= 1e-6
    # padding is inert: a padded slot's annotator index does not matter
    ann2 = torch.where(cls < 0, torch.full_like(ann, a - 1), ann)
    assert layer.observed_nll(logits, ann2, cls).item() == after.item()


@pytest.mark.parametrize("mode", MODES)
def test_observed_nll_gradcheck(mode):
    layer = CrowdLayer(3, 4, mode=mode, dtype=torch.float64)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ann, cls = CrowdLayer.observed_pairs(torch.tensor([[0, -1, 2, -1], [-1, 1, 1, 0]]))
    logits = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)

    # gradcheck perturbs its inputs in place, so the layer's own parameters can be inputs
    def f(z, *params):
        return layer.observed_nll(z, ann, cls)

    assert torch.autograd.gradcheck(f, (logits, *layer.parameters()))
