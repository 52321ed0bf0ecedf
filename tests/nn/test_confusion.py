"""Confusion heads and the confusion loss of Zhang et al. (2020)."""

import math

import pytest

torch = pytest.importorskip("torch")

from crowdmed.nn.confusion import GlobalConfusion, PixelConfusion, confusion_loss  # noqa: E402


def test_identity_gives_cross_entropy_exactly():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g)  # (B, K, H, W)
    masks = torch.randint(0, 3, (2, 1, 4, 5), generator=g)
    masks[0, 0, 0, :2] = -1  # not annotated
    head = GlobalConfusion(1, 3, trainable=False)
    assert list(head.parameters()) == []
    got = confusion_loss(logits, head(logits), masks, trace_weight=0.0)
    target = masks[:, 0].clone()
    want = torch.nn.functional.cross_entropy(logits, target, ignore_index=-1)
    assert torch.equal(got, want)
    # the constant trace of the identity (K = 3) is added with its weight
    reg = confusion_loss(logits, head(logits), masks, trace_weight=0.5)
    assert float(reg - got) == pytest.approx(1.5)


def test_hand_value():
    # one pixel, p = (0.75, 0.25); CM = [[0.9, 0.1], [0.2, 0.8]], rater marks 1:
    # q_1 = 0.75·0.1 + 0.25·0.8 = 0.275; trace 1.7
    logits = torch.tensor([[[math.log(3.0)], [0.0]]], dtype=torch.float64)  # (1, 2, 1)
    cm = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64).log().reshape(1, 1, 2, 2, 1)
    y = torch.tensor([[[1]]])
    assert float(confusion_loss(logits, cm, y)) == pytest.approx(-math.log(0.275))
    got = float(confusion_loss(logits, cm, y, trace_weight=0.1))
    assert got == pytest.approx(-math.log(0.275) + 0.17)
    # q_0 = 0.75·0.9 + 0.25·0.2 = 0.725
    assert float(confusion_loss(logits, cm, y * 0)) == pytest.approx(-math.log(0.725))
    none = confusion_loss(logits, cm, torch.tensor([[[-1]]]), reduction="none")
    assert none.shape == (1, 1, 1)
    assert float(none) == 0.0


def test_heads_start_at_the_same_matrices_and_rows_sum_to_one():
    x = torch.rand(2, 1, 6, 7)
    glob = GlobalConfusion(3, 2, init_diag=2.0)
    pix = PixelConfusion(1, 3, 2, init_diag=2.0)
    want = math.exp(2) / (math.exp(2) + 1)  # 0.8808
    cg = glob.confusion()
    assert cg.shape == (3, 2, 2)
    assert torch.allclose(cg[:, 0, 0], torch.full((3,), want))
    lp = pix(x)
    assert lp.shape == (2, 3, 2, 2, 6, 7)
    assert torch.allclose(lp.exp(), cg.reshape(1, 3, 2, 2, 1, 1).expand_as(lp), atol=1e-6)
    assert torch.allclose(lp.exp().sum(3), torch.ones(2, 3, 2, 6, 7), atol=1e-6)
    assert glob(x).shape == (1, 3, 2, 2, 1, 1)


def test_gradcheck_pixel_head_and_loss():
    g = torch.Generator().manual_seed(1)
    head = PixelConfusion(1, 2, 2, features=3, depth=1, dtype=torch.float64)
    torch.nn.init.normal_(head.out.weight, std=0.3, generator=g)
    x = torch.rand(1, 1, 3, 3, dtype=torch.float64, generator=g)
    masks = torch.randint(0, 2, (1, 2, 3, 3), generator=g)
    logits = torch.randn(1, 2, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)

    w = head.out.weight.detach().clone().requires_grad_(True)

    def g_fn(lg, w_):
        lc = torch.nn.functional.conv2d(head.body(x), w_, head.out.bias)
        lc = torch.log_softmax(lc.reshape(1, 2, 2, 2, 3, 3), 3)
        return confusion_loss(lg, lc, masks, trace_weight=0.3)

    assert torch.autograd.gradcheck(g_fn, (logits, w))
    glob = GlobalConfusion(2, 2, dtype=torch.float64)

    def h(lg, gl):
        return confusion_loss(lg, torch.log_softmax(gl, -1).unsqueeze(0)[..., None, None], masks)

    gl = glob.logits.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(h, (logits, gl))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"masks": torch.zeros(1, 1, 3, 3, dtype=torch.long)}, ValueError, r"\(B, A, \*spatial\)"),
        ({"masks": torch.full((1, 1, 4, 4), 2)}, ValueError, "classes 0..1 or -1"),
        ({"masks": torch.zeros(1, 1, 4, 4)}, TypeError, "integer or bool"),
        ({"log_confusion": torch.zeros(1, 1, 3, 3, 1, 1)}, ValueError, "must broadcast"),
        ({"reduction": "avg"}, ValueError, "`reduction` must be"),
    ],
)
def test_loss_errors(kwargs, exc, match):
    args = {
        "logits": torch.zeros(1, 2, 4, 4),
        "log_confusion": torch.zeros(1, 1, 2, 2, 1, 1),
        "masks": torch.zeros(1, 1, 4, 4, dtype=torch.long),
    }
    args.update(kwargs)
    reduction = args.pop("reduction", "mean")
    with pytest.raises(exc, match=match):
        confusion_loss(**args, reduction=reduction)


def test_head_errors():
    with pytest.raises(ValueError, match="`n_classes` must be >= 2"):
        GlobalConfusion(2, 1)
    with pytest.raises(TypeError, match="`n_raters` must be an int"):
        PixelConfusion(1, 2.0, 2)
    with pytest.raises(ValueError, match="`spatial_dims` must be 2 or 3"):
        PixelConfusion(1, 2, 2, spatial_dims=1)
