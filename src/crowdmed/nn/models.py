"""Small networks that train on 2 CPU cores: an MLP head for features, a CNN for images."""

from __future__ import annotations

import torch
from torch import nn

from crowdmed.nn.registry import set_spec

__all__ = ["mlp_head", "small_cnn", "split_last_linear"]


def mlp_head(
    in_features: int, n_classes: int, *, hidden: int = 128, dropout: float = 0.5
) -> nn.Module:
    """The classifier of Rodrigues & Pereira's LabelMe experiments on fixed features.

    ``Linear(in, hidden) → ReLU → Dropout → Linear(hidden, n_classes)`` (logits).

    Args:
        in_features: Feature dimension (512 for the averaged VGG16 features of LabelMe).
        n_classes: Number of classes.
        hidden: Width of the hidden layer.
        dropout: Dropout probability.

    Returns:
        The network (its :func:`~crowdmed.nn.network_spec` set); input ``(B, in_features)``,
        output logits ``(B, n_classes)``.

    Examples:
        >>> import torch
        >>> mlp_head(512, 8)(torch.zeros(2, 512)).shape
        torch.Size([2, 8])
    """
    net = nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, n_classes),
    )
    spec = {"in_features": in_features, "n_classes": n_classes, "hidden": hidden}
    return set_spec(net, "mlp_head", {**spec, "dropout": dropout})


def small_cnn(
    in_channels: int, n_classes: int, *, width: int = 16, depth: int = 4, dropout: float = 0.2
) -> nn.Module:
    """A small 2-D CNN for 64–256 px images, built from MONAI blocks.

    ``depth`` blocks of ``Convolution(stride 2) → BatchNorm → PReLU`` (MONAI
    :class:`~monai.networks.blocks.Convolution`) doubling the width, global average pooling,
    dropout and a linear layer to logits.

    Args:
        in_channels: Image channels.
        n_classes: Number of classes.
        width: Channels of the first block.
        depth: Number of stride-2 blocks.
        dropout: Dropout before the linear layer.

    Returns:
        The network (its :func:`~crowdmed.nn.network_spec` set); input ``(B, C, H, W)``,
        output logits ``(B, n_classes)``.

    Examples:
        >>> import torch
        >>> small_cnn(1, 2)(torch.zeros(3, 1, 64, 64)).shape
        torch.Size([3, 2])
    """
    from monai.networks.blocks import Convolution

    layers: list[nn.Module] = []
    c = in_channels
    for i in range(depth):
        out = width * 2**i
        layers.append(
            Convolution(
                spatial_dims=2,
                in_channels=c,
                out_channels=out,
                strides=2,
                kernel_size=3,
                act="PRELU",
                norm="BATCH",
            )
        )
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, n_classes)]
    spec = {"in_channels": in_channels, "n_classes": n_classes, "width": width, "depth": depth}
    return set_spec(nn.Sequential(*layers), "small_cnn", {**spec, "dropout": dropout})


def zero_last_linear(model: nn.Module) -> None:
    """Zero the weights and bias of the last linear layer so the network starts undecided.

    A crowd layer initialised to the identity can otherwise absorb a permutation of the
    classes when the network starts from a confident random mapping.
    """
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is not None:
        with torch.no_grad():
            last.weight.zero_()
            if last.bias is not None:
                last.bias.zero_()


def split_last_linear(network: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """Split a network into its trunk and its last linear layer (for per-annotator heads).

    The trunk shares its modules with ``network`` (training it trains the network's layers).

    Args:
        network: A ``torch.nn.Linear``, or a ``torch.nn.Sequential`` whose last module is one
            (as :func:`mlp_head` and :func:`small_cnn` build them).

    Returns:
        ``(trunk, last)``: ``trunk(x)`` gives the features ``last`` maps to logits
        (``torch.nn.Identity`` for a bare linear layer).

    Raises:
        ValueError: The network does not end in a linear layer.

    Examples:
        >>> trunk, last = split_last_linear(mlp_head(6, 3, hidden=4))
        >>> trunk(torch.zeros(2, 6)).shape, last.in_features
        (torch.Size([2, 4]), 4)
    """
    if isinstance(network, nn.Linear):
        return nn.Identity(), network
    if isinstance(network, nn.Sequential) and len(network) > 0:
        last = network[-1]
        if isinstance(last, nn.Linear):
            return nn.Sequential(*list(network)[:-1]), last
        if isinstance(last, nn.Sequential):
            inner_trunk, inner_last = split_last_linear(last)
            return nn.Sequential(*list(network)[:-1], inner_trunk), inner_last
    raise ValueError(
        "`network` must be a torch.nn.Linear or a torch.nn.Sequential ending in one (as "
        f"mlp_head and small_cnn are) to get one head per annotator; got "
        f"{type(network).__name__}."
    )
