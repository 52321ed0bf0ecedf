"""The annotator-confusion methods of :class:`~crowdmed.training.CrowdSegmenter`.

``confusion-pixel`` and ``confusion-global`` train the segmentation network together with a
confusion head (:mod:`crowdmed.nn.confusion`) on every rater's masks (Zhang et al., 2020).
This module builds the head, computes a batch's loss, and saves and rebuilds the head for the
segmenter's model folder.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from crowdmed.nn.confusion import GlobalConfusion, PixelConfusion, confusion_loss

__all__ = [
    "CONFUSION_METHODS",
    "build_confusion_network",
    "confusion_batch_loss",
    "confusion_config",
    "predict_confusion",
    "rebuild_confusion_network",
]

#: Method values that train a confusion head.
CONFUSION_METHODS = ("confusion-pixel", "confusion-global")


def build_confusion_network(
    method: str,
    given: nn.Module | None,
    *,
    in_channels: int,
    n_raters: int,
    n_classes: int,
    spatial_dims: int,
) -> nn.Module:
    """The head given by the user (checked) or the default one of ``method``.

    Args:
        method: ``"confusion-pixel"`` or ``"confusion-global"``.
        given: A :class:`~crowdmed.nn.confusion.PixelConfusion` or
            :class:`~crowdmed.nn.confusion.GlobalConfusion` (or any module mapping images to
            log-confusion broadcastable to ``(B, A, K, K, *spatial)``), or ``None``.
        in_channels: Image channels.
        n_raters: Number of raters ``A`` in the masks.
        n_classes: Number of classes ``K``.
        spatial_dims: 2 or 3.

    Returns:
        The head.

    Raises:
        ValueError: If a given head's rater or class count does not match the masks.
    """
    if given is not None:
        for name, want in (("n_raters", n_raters), ("n_classes", n_classes)):
            have = getattr(given, name, want)
            if have != want:
                raise ValueError(
                    f"`confusion_network.{name}` must match the masks ({want}); got {have}."
                )
        return given
    if method == "confusion-global":
        return GlobalConfusion(n_raters, n_classes)
    return PixelConfusion(in_channels, n_raters, n_classes, spatial_dims=spatial_dims)


def confusion_batch_loss(
    logits: torch.Tensor,
    head: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    trace_weight: float,
) -> torch.Tensor:
    """The mean cross-entropy of ``CMᵀ p`` against every rater's mask plus ``λ``·mean trace."""
    return confusion_loss(logits, head(images), masks, trace_weight=trace_weight)


def predict_confusion(
    head: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device
) -> np.ndarray:
    """Confusion matrices ``(N, A, K, K, *spatial)`` (float32) of a head on images."""
    was = head.training
    head.eval()
    out = []
    try:
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                xb = images[s : s + batch_size].to(device)
                lc = head(xb).exp()
                shape = (xb.shape[0], *lc.shape[1:4], *xb.shape[2:])
                out.append(lc.expand(shape).cpu())
    finally:
        head.train(was)
    return torch.cat(out).numpy()


def confusion_config(head: nn.Module, custom: bool) -> dict[str, Any]:
    """What a model folder records to rebuild ``head``."""
    if isinstance(head, GlobalConfusion):
        return {
            "kind": "global",
            "n_raters": head.n_raters,
            "n_classes": head.n_classes,
            "trainable": head.trainable,
            "init_diag": head.init_diag,
            "custom": custom,
        }
    if isinstance(head, PixelConfusion):
        return {
            "kind": "pixel",
            "in_channels": head.in_channels,
            "n_raters": head.n_raters,
            "n_classes": head.n_classes,
            "spatial_dims": head.spatial_dims,
            "features": head.features,
            "depth": head.depth,
            "init_diag": head.init_diag,
            "custom": custom,
        }
    return {"kind": type(head).__qualname__, "custom": True}


def rebuild_confusion_network(config: dict[str, Any], given: nn.Module | None) -> nn.Module:
    """The head described by :func:`confusion_config` (``given`` for a custom one)."""
    if given is not None:
        return given
    if config.get("custom") and config["kind"] not in ("global", "pixel"):
        raise ValueError(
            "The model was trained with a custom confusion network; pass "
            "load(path, confusion_network=...) with the same architecture."
        )
    if config["kind"] == "global":
        return GlobalConfusion(
            int(config["n_raters"]),
            int(config["n_classes"]),
            trainable=bool(config["trainable"]),
            init_diag=float(config["init_diag"]),
        )
    return PixelConfusion(
        int(config["in_channels"]),
        int(config["n_raters"]),
        int(config["n_classes"]),
        spatial_dims=int(config["spatial_dims"]),
        features=int(config["features"]),
        depth=int(config["depth"]),
        init_diag=float(config["init_diag"]),
    )
