"""Segmentation backbones from maintained packages, built by name.

:func:`segmentation_network` builds a network mapping images ``(B, C, H, W)`` (or
``(B, C, D, H, W)``) to logits ``(B, K, H, W)`` for
:class:`crowdmed.training.CrowdSegmenter`: MONAI's ``UNet`` and ``BasicUNet``, and torchvision's
DeepLabV3 (MobileNetV3-Large or ResNet-50 encoder, no pretrained weights: nothing is
downloaded). Neither MONAI nor torchvision provides an HRNet, so none is offered.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from numbers import Integral

import torch
from torch import nn

from crowdmed._validation import check_option
from crowdmed.nn.registry import set_spec

__all__ = ["DeepLabV3Logits", "SegmentationBackbone", "segmentation_network", "size_multiple"]

#: Level channels of the default U-Net (those of ``crowdmed train segment``).
DEFAULT_UNET_CHANNELS: tuple[int, ...] = (16, 32, 64)


class SegmentationBackbone(str, Enum):
    """Names accepted by :func:`segmentation_network`."""

    UNET = "unet"
    BASIC_UNET = "basic-unet"
    DEEPLABV3_MOBILENET = "deeplabv3-mobilenet"
    DEEPLABV3_RESNET50 = "deeplabv3-resnet50"


class DeepLabV3Logits(nn.Module):
    """A torchvision DeepLabV3 whose forward returns the logits tensor.

    torchvision's segmentation models return ``{"out": logits}``; this wrapper returns
    ``logits`` ``(B, K, H, W)`` (upsampled to the input size), as
    :class:`crowdmed.training.CrowdSegmenter` expects.

    Args:
        model: A ``torchvision.models.segmentation.DeepLabV3``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` of images ``(B, C, H, W)``."""
        out: torch.Tensor = self.model(x)["out"]
        return out


def _unet(
    in_channels: int, n_classes: int, spatial_dims: int, channels: Sequence[int] | None
) -> nn.Module:
    from monai.networks.nets import UNet

    levels = tuple(int(c) for c in (DEFAULT_UNET_CHANNELS if channels is None else channels))
    if len(levels) < 2 or min(levels) < 1:
        raise ValueError(
            f"`channels` of a U-Net must be at least two positive integers; got {list(levels)}."
        )
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=n_classes,
        channels=levels,
        strides=(2,) * (len(levels) - 1),
        num_res_units=2,
    )


def _basic_unet(
    in_channels: int, n_classes: int, spatial_dims: int, channels: Sequence[int] | None
) -> nn.Module:
    from monai.networks.nets import BasicUNet

    if channels is None:
        return BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=n_classes)
    features = tuple(int(c) for c in channels)
    if len(features) != 6 or min(features) < 1:
        raise ValueError(
            "`channels` of a BasicUNet must be six positive integers (five levels and the "
            f"up-sampling output, e.g. 32,32,64,128,256,32); got {list(features)}."
        )
    return BasicUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=n_classes,
        features=features,
    )


def _deeplab(name: SegmentationBackbone, in_channels: int, n_classes: int) -> nn.Module:
    from torchvision.models import segmentation as tv_seg
    from torchvision.models.segmentation.deeplabv3 import ASPPPooling

    if name is SegmentationBackbone.DEEPLABV3_MOBILENET:
        model = tv_seg.deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=n_classes
        )
        first_parent: nn.Module = model.backbone["0"]
        first_key = "0"
    else:
        model = tv_seg.deeplabv3_resnet50(
            weights=None, weights_backbone=None, num_classes=n_classes
        )
        first_parent = model.backbone
        first_key = "conv1"
    if in_channels != 3:
        old = first_parent.get_submodule(first_key)
        assert isinstance(old, nn.Conv2d)
        new = nn.Conv2d(
            in_channels,
            old.out_channels,
            kernel_size=old.kernel_size,  # type: ignore[arg-type]
            stride=old.stride,  # type: ignore[arg-type]
            padding=old.padding,  # type: ignore[arg-type]
            bias=old.bias is not None,
        )
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        if isinstance(first_parent, nn.Sequential):
            first_parent[int(first_key)] = new
        else:
            setattr(first_parent, first_key, new)
    # The image-pooling branch of ASPP normalises a 1 x 1 map: BatchNorm fails on a batch of one
    # image in training, so it becomes a GroupNorm (statistics over the channels of each image).
    for module in model.modules():
        if isinstance(module, ASPPPooling):
            bn = module[2]
            assert isinstance(bn, nn.BatchNorm2d)
            module[2] = nn.GroupNorm(32, bn.num_features)
    return DeepLabV3Logits(model)


def segmentation_network(
    name: str,
    *,
    in_channels: int,
    n_classes: int,
    spatial_dims: int = 2,
    channels: Sequence[int] | None = None,
    random_state: int | None = None,
) -> nn.Module:
    """Build a segmentation network mapping images to per-class logits.

    ``"unet"`` is MONAI's ``UNet`` with level ``channels`` (default 16, 32, 64), strides 2 and
    two residual units per level; ``"basic-unet"`` is MONAI's ``BasicUNet`` (``channels``: its
    six ``features``, default 32, 32, 64, 128, 256, 32); ``"deeplabv3-mobilenet"`` and
    ``"deeplabv3-resnet50"`` are torchvision's DeepLabV3 with a MobileNetV3-Large or ResNet-50
    encoder, randomly initialised (no pretrained weights are downloaded), their first
    convolution rebuilt for ``in_channels`` other than 3, and the BatchNorm of their
    image-pooling branch replaced by a GroupNorm so that a batch of one image trains. DeepLabV3
    is 2-D only and ignores ``channels``. Neither MONAI nor torchvision provides an HRNet, so
    none is offered.

    Args:
        name: ``"unet"``, ``"basic-unet"``, ``"deeplabv3-mobilenet"`` or
            ``"deeplabv3-resnet50"``.
        in_channels: Image channels ``C``.
        n_classes: Output classes ``K`` (logit channels).
        spatial_dims: 2 for images ``(B, C, H, W)``; 3 for volumes (U-Nets only).
        channels: Feature channels (see above); ``None`` for the defaults.
        random_state: Seed of the initial weights; the global torch generator is left
            untouched. ``None`` draws from the global generator.

    Returns:
        The network (training mode, its :func:`~crowdmed.nn.network_spec` set); its forward
        returns logits ``(B, K, *spatial)``. Input sizes must be multiples of
        :func:`size_multiple`.

    Raises:
        ValueError: For an unknown name, bad sizes or a 3-D DeepLabV3.

    Examples:
        >>> net = segmentation_network("unet", in_channels=1, n_classes=2, random_state=0)
        >>> net(torch.zeros(1, 1, 16, 16)).shape
        torch.Size([1, 2, 16, 16])
    """
    backbone = check_option(name, SegmentationBackbone, "name")
    for arg, value in (("in_channels", in_channels), ("n_classes", n_classes)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"`{arg}` must be a positive integer; got {value!r}.")
    in_channels, n_classes = int(in_channels), int(n_classes)
    if spatial_dims not in (2, 3):
        raise ValueError(f"`spatial_dims` must be 2 or 3; got {spatial_dims!r}.")
    is_deeplab = backbone in (
        SegmentationBackbone.DEEPLABV3_MOBILENET,
        SegmentationBackbone.DEEPLABV3_RESNET50,
    )
    if is_deeplab and spatial_dims != 2:
        raise ValueError(
            f"`{backbone.value}` is 2-D only; use 'unet' or 'basic-unet' for spatial_dims=3."
        )

    def build() -> nn.Module:
        if backbone is SegmentationBackbone.UNET:
            return _unet(in_channels, n_classes, spatial_dims, channels)
        if backbone is SegmentationBackbone.BASIC_UNET:
            return _basic_unet(in_channels, n_classes, spatial_dims, channels)
        return _deeplab(backbone, in_channels, n_classes)

    if random_state is None:
        net = build()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(random_state)
            net = build()
    spec = {"in_channels": in_channels, "n_classes": n_classes, "spatial_dims": spatial_dims}
    return set_spec(
        net, backbone.value, {**spec, "channels": None if channels is None else list(channels)}
    )


def size_multiple(network: nn.Module) -> int:
    """Image sizes a network of :func:`segmentation_network` is given are multiples of this.

    A MONAI ``UNet`` halves its input once per level after the first (2 ** (levels - 1));
    ``BasicUNet`` four times, so it needs multiples of 16, but its instance normalisation
    rejects the 1 x 1 bottom map of a 16-pixel side: 32 is returned. DeepLabV3 upsamples its
    logits to any input size, but its encoder has an output stride of 8 (ResNet-50) or 16
    (MobileNetV3), so inputs padded to a multiple of 16 keep the feature grid aligned with the
    image.

    Args:
        network: A network built by :func:`segmentation_network`.

    Returns:
        The factor (1 for an unknown network).
    """
    from monai.networks.nets import BasicUNet, UNet

    if isinstance(network, UNet):
        return int(2 ** (len(network.channels) - 1))
    if isinstance(network, BasicUNet):
        return 32
    if isinstance(network, DeepLabV3Logits):
        return 16
    return 1
