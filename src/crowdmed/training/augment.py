"""Geometric augmentation of segmentation batches that keeps images and masks aligned."""

from __future__ import annotations

import torch


def flip_rotate(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips and 90° rotations, the same for the images and masks of a batch.

    The ``augment`` of :class:`~crowdmed.training.CrowdSegmenter`: one of the eight
    symmetries of the square (one of the four flips of a rectangle when the image is not
    square), drawn from torch's global RNG, applied to the last two (spatial) axes of both
    tensors. Suited to images without a preferred orientation (fundus, histology, dermoscopy).

    Args:
        images: ``(B, C, H, W)`` (or ``(B, C, D, H, W)``; the last two axes are turned).
        masks: ``(B, M, H, W)`` (the same spatial shape as ``images``).

    Returns:
        The turned ``images`` and ``masks``.

    Examples:
        >>> import torch
        >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> y = torch.arange(4).reshape(1, 1, 2, 2)
        >>> xa, ya = flip_rotate(x, y)
        >>> bool((xa.long() == ya).all())
        True
    """
    if images.shape[-2:] != masks.shape[-2:]:
        raise ValueError(
            f"images and masks must have the same last two axes; got {tuple(images.shape)} and "
            f"{tuple(masks.shape)}."
        )
    draw = torch.randint(0, 8, (1,)).item()
    square = images.shape[-1] == images.shape[-2]
    k, flip = (draw % 4, draw >= 4) if square else (2 * (draw % 2), draw >= 4)
    if flip:
        images, masks = images.flip(-1), masks.flip(-1)
    if k:
        images, masks = images.rot90(k, (-2, -1)), masks.rot90(k, (-2, -1))
    return images.contiguous(), masks.contiguous()
