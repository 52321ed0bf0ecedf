"""The AggNet mitosis network on 33 × 33 patches and its dense (fully convolutional) form.

The network follows Albarqouni et al. (2016): three convolution–ReLU–max-pooling blocks and two
fully connected layers with a softmax over {background, mitosis}. On a 33 × 33 patch the sizes
are 33 → conv 4×4 → 30 → pool 2 → 15 → conv 4×4 → 12 → pool 2 → 6 → conv 3×3 → 4 → pool 2 → 2,
so every pooling window tiles its input exactly. The filter counts are ours (the paper does not
fix them for this input size): 16, 32 and 32 filters and 64 hidden units keep it CPU-cheap.

:func:`dense_logits` evaluates the same weights at every pixel of a whole image in one pass:
the fully connected layers become convolutions (a 2 × 2 kernel and a 1 × 1 kernel), and the
stride-2 poolings become stride-1 poolings whose following layers are dilated by 2, 4 and 8
(filter rarefaction / "à trous"). The output at pixel ``(r, c)`` equals the patch network on the
33 × 33 patch centred at ``(r, c)`` of the reflection-padded image (tested).

References:
    Albarqouni et al. (2016). AggNet: Deep learning from crowds for mitosis detection in
    breast cancer histology images. IEEE TMI 35(5). https://doi.org/10.1109/TMI.2016.2528120
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crowdmed._validation import check_int

__all__ = ["PATCH_SIZE", "AggNetCNN", "dense_logits"]

#: Side of the network's input patch in pixels.
PATCH_SIZE = 33


class AggNetCNN(nn.Module):
    """AggNet's patch classifier: ``(B, 3, 33, 33)`` patches → ``(B, n_classes)`` logits.

    Args:
        n_classes: Number of classes (2: background and mitosis).
        in_channels: Input channels (3 for RGB).
        channels: Filters of the three convolution blocks.
        hidden: Units of the first fully connected layer.
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Examples:
        >>> net = AggNetCNN()
        >>> net(torch.zeros(2, 3, 33, 33)).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        n_classes: int = 2,
        in_channels: int = 3,
        *,
        channels: tuple[int, int, int] = (16, 32, 32),
        hidden: int = 64,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("n_classes", n_classes),
            ("in_channels", in_channels),
            ("hidden", hidden),
        ):
            check_int(value, name)
        if len(channels) != 3 or not all(isinstance(c, int) and c >= 1 for c in channels):
            raise ValueError(f"`channels` must be three positive ints; got {channels!r}.")
        if n_classes < 2:
            raise ValueError(f"`n_classes` must be at least 2; got {n_classes}.")
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        c1, c2, c3 = channels
        self.n_classes = n_classes
        self.in_channels = in_channels
        self.channels = tuple(channels)
        self.hidden = hidden
        self.conv1 = nn.Conv2d(in_channels, c1, 4, **kw)
        self.conv2 = nn.Conv2d(c1, c2, 4, **kw)
        self.conv3 = nn.Conv2d(c2, c3, 3, **kw)
        self.fc1 = nn.Linear(c3 * 2 * 2, hidden, **kw)
        self.fc2 = nn.Linear(hidden, n_classes, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(B, n_classes)`` for patches of shape ``(B, C, 33, 33)``."""
        if x.ndim != 4 or x.shape[-2:] != (PATCH_SIZE, PATCH_SIZE):
            raise ValueError(f"AggNetCNN takes (B, C, 33, 33) patches; got {tuple(x.shape)}.")
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)
        h = F.relu(self.fc1(h.flatten(1)))
        return self.fc2(h)


def _pool(h: torch.Tensor, d: int) -> torch.Tensor:
    """2 × 2 max-pooling with stride 1 and dilation ``d`` (a max of four shifted views).

    Equal to ``F.max_pool2d(h, 2, stride=1, dilation=d)`` but several times faster on CPU.
    """
    top = torch.maximum(h[..., :-d, :-d], h[..., :-d, d:])
    return torch.maximum(top, torch.maximum(h[..., d:, :-d], h[..., d:, d:]))


def dense_logits(model: AggNetCNN, x: torch.Tensor) -> torch.Tensor:
    """The patch network at every 33 × 33 window of ``x``, in one convolutional pass.

    Args:
        model: A (trained) :class:`AggNetCNN`.
        x: Images of shape ``(B, C, H + 32, W + 32)`` (already padded by 16 pixels per side).

    Returns:
        Logits of shape ``(B, n_classes, H, W)``; entry ``[:, :, r, c]`` equals
        ``model(x[:, :, r:r + 33, c:c + 33])``.
    """
    if x.ndim != 4 or min(x.shape[-2:]) < PATCH_SIZE:
        raise ValueError(f"`x` must be (B, C, H, W) with H, W >= 33; got {tuple(x.shape)}.")
    h = _pool(F.relu(F.conv2d(x, model.conv1.weight, model.conv1.bias)), 1)
    h = _pool(F.relu(F.conv2d(h, model.conv2.weight, model.conv2.bias, dilation=2)), 2)
    h = _pool(F.relu(F.conv2d(h, model.conv3.weight, model.conv3.bias, dilation=4)), 4)
    w1 = model.fc1.weight.view(model.hidden, model.channels[2], 2, 2)
    h = F.relu(F.conv2d(h, w1, model.fc1.bias, dilation=8))
    w2 = model.fc2.weight.view(model.n_classes, model.hidden, 1, 1)
    return F.conv2d(h, w2, model.fc2.bias)
