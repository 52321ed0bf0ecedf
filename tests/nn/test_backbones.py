"""Segmentation backbones built by name: output shapes, seeding, errors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("torchvision")

from crowdmed.nn import segmentation_network, size_multiple  # noqa: E402

NAMES = ["unet", "basic-unet", "deeplabv3-mobilenet", "deeplabv3-resnet50"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_logits_shape(name: str, in_channels: int) -> None:
    net = segmentation_network(name, in_channels=in_channels, n_classes=3, random_state=0)
    net.eval()
    with torch.no_grad():
        out = net(torch.rand(2, in_channels, 32, 32))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 3, 32, 32)
    assert 32 % size_multiple(net) == 0
    if name == "basic-unet":  # 16 would leave a 1 x 1 map that its instance norm rejects
        assert size_multiple(net) == 32


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
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)
    with pytest.raises(ValueError, match="six positive integers"):
        segmentation_network("basic-unet", in_channels=1, n_classes=2, channels=(8, 16))


def test_deeplab_trains_on_a_batch_of_one() -> None:
    net = segmentation_network("deeplabv3-mobilenet", in_channels=1, n_classes=2, random_state=0)
    net.train()
    loss = net(torch.rand(1, 1, 32, 32)).mean()
    loss.backward()
    assert net.model.backbone["0"][0].weight.grad is not None


def test_errors() -> None:
    with pytest.raises(ValueError, match="Did you mean 'basic-unet'"):
        segmentation_network("basicunet", in_channels=1, n_classes=2)
    with pytest.raises(ValueError, match="2-D only"):
        segmentation_network("deeplabv3-resnet50", in_channels=1, n_classes=2, spatial_dims=3)
    with pytest.raises(ValueError, match="n_classes"):
        segmentation_network("unet", in_channels=1, n_classes=0)
    with pytest.raises(ValueError, match="spatial_dims"):
        segmentation_network("unet", in_channels=1, n_classes=2, spatial_dims=1)
