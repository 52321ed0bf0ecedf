"""Segmentation backbones built by name: the library networks behind each name, seeding, errors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("torchvision")

from crowdmed.nn import segmentation_network, size_multiple  # noqa: E402

NAMES = ["unet", "basic-unet", "deeplabv3-mobilenet", "deeplabv3-resnet50"]
#: Image sides must be multiples of these (see ``size_multiple``'s docstring for the reasons).
SIZE_MULTIPLE = {"unet": 4, "basic-unet": 32, "deeplabv3-mobilenet": 16, "deeplabv3-resnet50": 16}


def _reference(name: str, in_channels: int, n_classes: int, seed: int) -> torch.nn.Module:
    """The MONAI or torchvision network behind ``name``, built from the same seed."""
    from monai.networks.nets import BasicUNet, UNet
    from torchvision.models import segmentation as tv_seg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "unet":
            return UNet(
                spatial_dims=2,
                in_channels=in_channels,
                out_channels=n_classes,
                channels=(16, 32, 64),
                strides=(2, 2),
                num_res_units=2,
            )
        if name == "basic-unet":
            return BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=n_classes)
        build = (
            tv_seg.deeplabv3_mobilenet_v3_large
            if name == "deeplabv3-mobilenet"
            else tv_seg.deeplabv3_resnet50
        )
        return build(weights=None, weights_backbone=None, num_classes=n_classes)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_logits_are_the_library_networks_logits(name: str, in_channels: int) -> None:
    net = segmentation_network(name, in_channels=in_channels, n_classes=3, random_state=0)
    net.eval()
    ref = _reference(name, in_channels, 3, seed=0).eval()
    x = torch.rand(2, in_channels, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, 3, 32, 32)
    assert size_multiple(net) == SIZE_MULTIPLE[name]
    if name in ("unet", "basic-unet"):  # the MONAI network itself, same weights
        with torch.no_grad():
            torch.testing.assert_close(out, ref(x), rtol=0, atol=0)
        return
    # DeepLabV3: the wrapper returns torchvision's "out" logits
    with torch.no_grad():
        torch.testing.assert_close(out, net.model(x)["out"], rtol=0, atol=0)
    # same weights as torchvision's network built from the same seed, except the first
    # convolution (rebuilt for other than 3 channels) and the image-pooling norm (a GroupNorm)
    first = "backbone.0.0.weight" if name == "deeplabv3-mobilenet" else "backbone.conv1.weight"
    ours = {k.removeprefix("model."): v for k, v in net.state_dict().items()}
    theirs = ref.state_dict()
    assert ours[first].shape[1] == in_channels
    shared = [k for k in theirs if k in ours and not (k == first and in_channels != 3)]
    assert len(shared) > 0.95 * len(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in shared)


@pytest.mark.parametrize("name", ["basic-unet", "deeplabv3-mobilenet"])
def test_seed_reproduces_and_differs(name: str) -> None:
    def weights(seed: int) -> list:
        net = segmentation_network(name, in_channels=1, n_classes=2, random_state=seed)
        return [t.clone() for t in net.state_dict().values()]

    a, b, c = weights(3), weights(3), weights(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_seed_leaves_global_generator_alone() -> None:
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    segmentation_network("unet", in_channels=1, n_classes=2, random_state=0)
    assert torch.equal(torch.rand(3), expected)


def test_unet_matches_monai_defaults_of_the_cli() -> None:
    """The same weights as the MONAI UNet the segmentation CLI built before (saved models load)."""
    from monai.networks.nets import UNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        ref = UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=2,
            channels=(8, 16, 32),
            strides=(2, 2),
            num_res_units=2,
        )
    net = segmentation_network(
        "unet", in_channels=1, n_classes=2, channels=(8, 16, 32), random_state=5
    )
    ref_state, state = ref.state_dict(), net.state_dict()
    assert ref_state.keys() == state.keys()
    assert all(torch.equal(ref_state[k], state[k]) for k in state)
    assert size_multiple(net) == 4


def test_basic_unet_features_and_3d() -> None:
    net = segmentation_network(
        "basic-unet",
        in_channels=1,
        n_classes=2,
        spatial_dims=3,
        channels=(4, 4, 8, 8, 16, 4),
        random_state=0,
    )
    from monai.networks.nets import BasicUNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ref = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    net.eval()
    ref.eval()
    x = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = net(x)
        torch.testing.assert_close(out, ref(x), rtol=0, atol=0)
    assert out.shape == (1, 2, 32, 32, 32)
    with pytest.raises(ValueError, match="six positive integers"):
        segmentation_network("basic-unet", in_channels=1, n_classes=2, channels=(8, 16))


def test_deeplab_trains_on_a_batch_of_one() -> None:
    from torchvision.models.segmentation.deeplabv3 import ASPPPooling

    net = segmentation_network("deeplabv3-mobilenet", in_channels=1, n_classes=2, random_state=0)
    pooling = [m for m in net.modules() if isinstance(m, ASPPPooling)]
    assert len(pooling) == 1
    assert isinstance(pooling[0][2], torch.nn.GroupNorm)
    assert pooling[0][2].num_groups == 32
    net.train()
    loss = net(torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))).mean()
    loss.backward()  # BatchNorm would raise on the 1 x 1 map of one image
    grad = net.model.backbone["0"][0].weight.grad
    assert grad is not None
    assert torch.isfinite(grad).all()
    assert float(grad.abs().sum()) > 0


def test_errors() -> None:
    with pytest.raises(ValueError, match="Did you mean 'basic-unet'"):
        segmentation_network("basicunet", in_channels=1, n_classes=2)
    with pytest.raises(ValueError, match="2-D only"):
        segmentation_network("deeplabv3-resnet50", in_channels=1, n_classes=2, spatial_dims=3)
    with pytest.raises(ValueError, match="n_classes"):
        segmentation_network("unet", in_channels=1, n_classes=0)
    with pytest.raises(ValueError, match="spatial_dims"):
        segmentation_network("unet", in_channels=1, n_classes=2, spatial_dims=1)
