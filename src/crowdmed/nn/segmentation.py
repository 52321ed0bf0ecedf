"""Losses and networks for learning a segmentation from the masks of several raters.

Implements the two parts of Xiao et al. (2021), "Pathological image segmentation with noisy
labels":

* the **Gaussian attention focal loss** (GAFL): a multi-class focal loss whose per-pixel
  values are multiplied by the heat map ``W_heat = λa · |I − Gauss(I)| + λb``, which is large
  where the image is rough (edges, texture) — :func:`gaussian_attention`,
  :class:`GaussianAttentionFocalLoss`;
* the **label re-weighting framework**: a weighting network maps the image to one weight map
  per rater (softmax over raters), and the segmentation network is trained on
  ``λ1 · L_vote + λ2 · mean_n(l_n ⊙ w_n)`` with ``λ1 = 1 / (1 + tanh k)``,
  ``λ2 = tanh k / (1 + tanh k)`` and ``k`` growing during training —
  :class:`WeightingNetwork`, :class:`LabelReweightingLoss`, :func:`reweight_lambdas`.

Shapes follow docs/conventions.md: logits ``(B, K, *spatial)``, rater masks
``(B, A, *spatial)`` of class indices with ``-1`` for "not annotated", images
``(B, C, *spatial)``.

**How the weighting network learns.** As in the paper, both networks are trained jointly by
minimising the total loss. The weights are a softmax over raters, so for the segmentation
network fixed the re-weighted term is smallest when each pixel's weight sits on the rater
whose label the current prediction already agrees with best: the weighting network learns to
predict, from the image around each pixel, which rater is locally most consistent with the
segmentation (a learned, per-pixel "small-loss" selection). The vote term keeps
``λ1 ≥ 1/2`` of the loss on the majority vote at all times, which anchors the segmentation
network and stops it from following any single rater. Nothing else (no meta-gradient, no
clean validation set) drives the weights: the paper describes the weights as learned jointly
with the segmentation, and this follows it deliberately. A consequence to keep in mind: with
sparse, thin foreground the lowest-loss rater at uncertain borders is the one who marks the
least foreground, and the weights can collapse onto that rater (observed on DRIVE, see the
``segmentation_learning`` section of BENCHMARKS.md).

References:
    Xiao, L. et al. (2021). Pathological image segmentation with noisy labels. arXiv:2104.02602. https://doi.org/10.48550/arXiv.2104.02602
    Lin, T.-Y. et al. (2017). Focal loss for dense object detection. ICCV.
    https://doi.org/10.1109/ICCV.2017.324
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "GaussianAttentionFocalLoss",
    "LabelReweightingLoss",
    "WeightingNetwork",
    "gaussian_attention",
    "masked_rater_softmax",
    "pixel_loss",
    "reweight_lambdas",
]

PixelLoss = Literal["ce", "focal"]
Reduction = Literal["mean", "sum", "none"]
#: Class-balance factor ``α_t`` of the focal loss: ``None`` (``α_t = 1``), a number ``α``
#: (``α`` for the foreground classes ``1..K-1``, ``1 - α`` for class 0, as in Lin et al.) or
#: one weight per class.
Alpha = float | Sequence[float] | None


def _alpha_table(alpha: Alpha, k: int) -> list[float] | None:
    """The checked ``α_t`` of each of ``k`` classes; ``None`` when ``α_t = 1``."""
    if alpha is None:
        return None
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, Sequence)):
        raise TypeError(
            f"`alpha` must be None, a number or a sequence; got {type(alpha).__name__}."
        )
    if not isinstance(alpha, Sequence):
        if not 0 <= alpha <= 1:
            raise ValueError(f"`alpha` must be in [0, 1]; got {alpha!r}.")
        return [1.0 - float(alpha)] + [float(alpha)] * (k - 1)
    table = [float(a) for a in alpha]
    if (k and len(table) != k) or any(not a >= 0 for a in table):
        raise ValueError(
            f"`alpha` must hold {k or 'K'} non-negative class weights (one per class); got {table}."
        )
    return table


def _alpha_t(alpha: Alpha, t: torch.Tensor, k: int, like: torch.Tensor) -> torch.Tensor | None:
    """``α_t`` of every pixel of the target ``t`` ``(B, *spatial)``; ``None`` when ``α_t = 1``."""
    table = _alpha_table(alpha, k)
    if table is None:
        return None
    return torch.as_tensor(table, dtype=like.dtype, device=like.device)[t]


# ---------------------------------------------------------------------------- helpers
def _check_logits_target(logits: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("`logits` and `target` must be torch tensors.")
    if logits.ndim < 3:
        raise ValueError(f"`logits` must have shape (B, K, *spatial); got {tuple(logits.shape)}.")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"`{name}` must have shape {tuple(logits.shape[:1] + logits.shape[2:])} (B, *spatial) "
            f"to match the logits {tuple(logits.shape)}; got {tuple(target.shape)}. Resize the "
            "masks to the network output."
        )
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("`logits` contain NaN or infinite values; check the input images.")
    if target.dtype.is_floating_point:
        raise TypeError(f"`{name}` must hold integer class indices; got dtype {target.dtype}.")
    if target.dtype == torch.bool:
        return
    k = logits.shape[1]
    bad = (target < -1) | (target >= k)
    if bool(bad.any()):
        vals = torch.unique(target[bad])[:5].tolist()
        raise ValueError(
            f"`{name}` must hold classes 0..{k - 1} or -1 (not annotated); got {vals}. Check the "
            "number of classes of the network."
        )


def pixel_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    kind: PixelLoss = "ce",
    gamma: float = 2.0,
    alpha: Alpha = None,
    weight_map: torch.Tensor | None = None,
    validate_args: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel loss map of a multi-class segmentation, ignoring unannotated pixels.

    Args:
        logits: Float tensor ``(B, K, *spatial)``.
        target: Integer tensor ``(B, *spatial)`` of classes ``0..K-1``; ``-1`` marks a pixel
            that is not annotated (its loss is 0 and it is not counted). Bool is read as 0/1.
        kind: ``"ce"`` (cross-entropy) or ``"focal"`` (the softmax focal loss
            ``-α_t (1 - p_t)^γ log p_t`` of Lin et al., the ``L_focal`` of Xiao et al. (2021)
            eq. 6; with ``α_t = 1`` equal to MONAI's ``FocalLoss(use_softmax=True,
            reduction="none")`` summed over classes, but keeping the input dtype).
        gamma: Focusing parameter of the focal loss (``gamma=0`` gives cross-entropy).
        alpha: Class-balance factor ``α_t`` of the focal loss: ``None`` (``α_t = 1``), a
            number ``α`` (``α`` for classes ``1..K-1``, ``1 - α`` for class 0) or ``K``
            per-class weights. Ignored by ``"ce"``.
        weight_map: Optional float tensor broadcastable to ``(B, *spatial)`` multiplying the
            loss (e.g. :func:`gaussian_attention` squeezed on the channel axis).
        validate_args: Check shapes and class range.

    Returns:
        ``(loss, valid)``: float loss map ``(B, *spatial)`` (0 where not annotated) and the
        bool map of annotated pixels.
    """
    if validate_args:
        _check_logits_target(logits, target, "target")
    valid = target >= 0
    t = torch.where(valid, target.long(), torch.zeros_like(target, dtype=torch.long))
    if kind == "ce":
        loss = F.cross_entropy(logits, t, reduction="none")
    elif kind == "focal":
        # The softmax focal loss -(1 - p_t)^γ log p_t of MONAI's
        # FocalLoss(use_softmax=True, reduction="none") summed over classes (tested equal to
        # it); written out because MONAI casts to float32, which breaks float64 gradcheck.
        logp = torch.log_softmax(logits, 1).gather(1, t.unsqueeze(1)).squeeze(1)
        loss = -((1 - logp.exp()).clamp_min(0) ** gamma) * logp
        a_t = _alpha_t(alpha, t, logits.shape[1], loss)
        if a_t is not None:
            loss = a_t * loss
    else:
        raise ValueError(f"`kind` must be one of ['ce', 'focal']; got {kind!r}.")
    if weight_map is not None:
        loss = loss * weight_map
    return loss * valid.to(loss.dtype), valid


def _reduce(loss: torch.Tensor, valid: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp_min(1).to(loss.dtype)


def _gaussian_kernel(radius: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_attention(
    image: torch.Tensor,
    *,
    radius: int = 5,
    sigma: float = 3.0,
    lambda_a: float = 50.0,
    lambda_b: float = 1.0,
) -> torch.Tensor:
    """Attention heat map ``W_heat = λa · |I − Gauss(I)| + λb`` of Xiao et al. (2021).

    ``I`` is the grey intensity: the mean over the image channels, taken as given (scale
    images to [0, 1] for the default ``λa``). ``Gauss`` is a fixed separable Gaussian
    convolution with ``2 · radius + 1`` taps per axis and reflecting borders (so the image
    border is not mistaken for an edge). No gradient flows into the image.

    Args:
        image: Float tensor ``(B, C, *spatial)`` with 2 or 3 spatial axes.
        radius: Kernel radius in pixels.
        sigma: Standard deviation of the Gaussian in pixels.
        lambda_a: Scale of the roughness term.
        lambda_b: Constant added everywhere (``λb = 1``, ``λa = 0`` gives weight 1).

    Returns:
        Float tensor ``(B, 1, *spatial)``.

    Raises:
        ValueError: On a bad shape, NaN pixels or bad parameters.

    Examples:
        >>> import torch
        >>> w = gaussian_attention(torch.zeros(1, 3, 16, 16))
        >>> tuple(w.shape), float(w.min()), float(w.max())
        ((1, 1, 16, 16), 1.0, 1.0)
    """
    if not isinstance(image, torch.Tensor) or not image.dtype.is_floating_point:
        raise TypeError("`image` must be a float torch tensor (B, C, *spatial).")
    if image.ndim not in (4, 5):
        raise ValueError(
            f"`image` must have shape (B, C, H, W) or (B, C, D, H, W); got {tuple(image.shape)}."
        )
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
        raise ValueError(f"`radius` must be a positive integer; got {radius!r}.")
    if not sigma > 0:
        raise ValueError(f"`sigma` must be positive; got {sigma!r}.")
    if not bool(torch.isfinite(image).all()):
        raise ValueError("`image` contains NaN or infinite values; clean or impute it first.")
    with torch.no_grad():
        grey = image.mean(1, keepdim=True)
        nd = image.ndim - 2
        kernel = _gaussian_kernel(radius, float(sigma), image.dtype).to(image.device)
        blurred = grey
        conv = F.conv2d if nd == 2 else F.conv3d
        for axis in range(nd):
            size = blurred.shape[2 + axis]
            r = min(radius, size - 1)  # reflect padding needs r < size
            k = kernel if r == radius else _gaussian_kernel(r, float(sigma), image.dtype)
            k = k.to(image.device)
            shape = [1, 1] + [1] * nd
            shape[2 + axis] = 2 * r + 1
            pad = [0, 0] * nd
            # F.pad lists the last axis first
            pad[2 * (nd - 1 - axis)] = r
            pad[2 * (nd - 1 - axis) + 1] = r
            if r > 0:
                blurred = conv(F.pad(blurred, pad, mode="reflect"), k.reshape(shape))
        return lambda_a * (grey - blurred).abs() + lambda_b


class GaussianAttentionFocalLoss(nn.Module):
    """Gaussian attention focal loss (GAFL) of Xiao et al. (2021).

    The multi-class (softmax) focal loss of every pixel (:func:`pixel_loss`) times the
    heat map of :func:`gaussian_attention` computed from the input image.

    ``L_GAF = W_heat ⊙ L_focal`` (Xiao et al. 2021, eq. 6) with
    ``L_focal = -α_t (1 - p_t)^γ log p_t``; the paper gives no value of ``α_t``, so
    ``alpha=None`` (``α_t = 1``) is the default; a constant ``α_t`` only rescales the loss.

    Args:
        gamma: Focusing parameter of the focal loss.
        alpha: Class-balance factor ``α_t`` (see :func:`pixel_loss`).
        radius: Gaussian kernel radius in pixels.
        sigma: Gaussian standard deviation in pixels.
        lambda_a: Scale of the roughness term of the heat map.
        lambda_b: Constant of the heat map.
        reduction: ``"mean"`` over annotated pixels, ``"sum"``, or ``"none"`` for the map
            ``(B, *spatial)``.

    Examples:
        >>> import torch
        >>> loss = GaussianAttentionFocalLoss()
        >>> logits, image = torch.zeros(1, 2, 8, 8), torch.rand(1, 1, 8, 8)
        >>> float(loss(logits, torch.zeros(1, 8, 8, dtype=torch.long), image)) > 0
        True
    """

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: Alpha = None,
        radius: int = 5,
        sigma: float = 3.0,
        lambda_a: float = 50.0,
        lambda_b: float = 1.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        for name, v in (("gamma", gamma), ("lambda_a", lambda_a), ("lambda_b", lambda_b)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"`{name}` must be a number; got {type(v).__name__}.")
            if not v >= 0:
                raise ValueError(f"`{name}` must be >= 0; got {v!r}.")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(
                f"`reduction` must be one of ['mean', 'sum', 'none']; got {reduction!r}."
            )
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
            raise ValueError(f"`radius` must be a positive integer; got {radius!r}.")
        if not sigma > 0:
            raise ValueError(f"`sigma` must be positive; got {sigma!r}.")
        self.gamma = float(gamma)
        _alpha_table(alpha, 0)  # checks the values; the length is checked in forward
        self.alpha = alpha
        self.radius = radius
        self.sigma = float(sigma)
        self.lambda_a = float(lambda_a)
        self.lambda_b = float(lambda_b)
        self.reduction = reduction

    def heat(self, image: torch.Tensor) -> torch.Tensor:
        """The heat map ``(B, *spatial)`` of ``image`` ``(B, C, *spatial)``."""
        return gaussian_attention(
            image,
            radius=self.radius,
            sigma=self.sigma,
            lambda_a=self.lambda_a,
            lambda_b=self.lambda_b,
        ).squeeze(1)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, image: torch.Tensor
    ) -> torch.Tensor:
        """Loss of ``logits`` ``(B, K, *spatial)`` against ``target`` ``(B, *spatial)``.

        ``image`` ``(B, C, *spatial)`` must have the spatial size of the logits; ``-1`` in
        ``target`` marks unannotated pixels, which are ignored.
        """
        if image.shape[:1] + image.shape[2:] != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(
                f"`image` {tuple(image.shape)} and `logits` {tuple(logits.shape)} must share the "
                "batch and spatial sizes."
            )
        loss, valid = pixel_loss(
            logits,
            target,
            kind="focal",
            gamma=self.gamma,
            alpha=self.alpha,
            weight_map=self.heat(image),
        )
        return _reduce(loss, valid, self.reduction)


# ---------------------------------------------------------------------------- re-weighting
def reweight_lambdas(k: float) -> tuple[float, float]:
    """The loss weights ``(λ1, λ2) = (1, tanh k) / (1 + tanh k)`` of the re-weighting framework.

    Args:
        k: Schedule step, ``>= 0`` (it grows by one every fixed number of training steps).

    Returns:
        ``(λ1, λ2)``; ``(1, 0)`` at ``k = 0`` and towards ``(1/2, 1/2)`` as ``k`` grows.

    Examples:
        >>> reweight_lambdas(0)
        (1.0, 0.0)
    """
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not k >= 0:
        raise ValueError(f"`k` must be a number >= 0; got {k!r}.")
    t = math.tanh(float(k))
    return 1.0 / (1.0 + t), t / (1.0 + t)


def masked_rater_softmax(
    logits: torch.Tensor, available: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax over the rater axis restricted to the available raters.

    Args:
        logits: Float tensor ``(B, A, *spatial)``.
        available: Bool tensor broadcastable to ``logits`` (e.g. ``(B, A, *spatial)`` or
            ``(B, A, 1, 1)``); ``False`` gives the rater weight 0. Where no rater is available
            all weights are 0.

    Returns:
        Weights of the shape of ``logits``; over available raters they sum to 1.
    """
    if available is None:
        return torch.softmax(logits, 1)
    avail = torch.broadcast_to(available, logits.shape)
    masked = logits.masked_fill(~avail, float("-inf"))
    any_avail = avail.any(1, keepdim=True)
    masked = torch.where(any_avail, masked, torch.zeros_like(masked))
    w = torch.softmax(masked, 1)
    return w * any_avail.to(w.dtype)


class WeightingNetwork(nn.Module):
    """Weighting network of the re-weighting framework: image → one weight map per rater.

    A backbone maps the image ``(B, C, *spatial)`` to rater logits ``(B, A, *spatial')``;
    the logits are resized (bilinear / trilinear) to the segmentation output size and turned
    into weights by a softmax over the raters that annotated each pixel, so at every pixel
    the weights of the available raters sum to 1. (Resizing the logits before the softmax,
    rather than the weights after it, lets the softmax respect per-pixel missing raters; both
    orders give weights that sum to 1.)

    Args:
        in_channels: Channels of the image.
        n_raters: Number of raters ``A``.
        spatial_dims: 2 or 3.
        features: Channels of the default backbone (a small fully convolutional stack of
            3×3 convolutions with dilations 1, 2, 4, seeing a 15-pixel neighbourhood).
        backbone: Any module mapping ``(B, C, *spatial)`` to ``(B, A, *spatial')``; replaces
            the default backbone.
        device: Torch device of the parameters.
        dtype: Torch dtype of the parameters.
    """

    def __init__(
        self,
        in_channels: int,
        n_raters: int,
        *,
        spatial_dims: int = 2,
        features: int = 16,
        backbone: nn.Module | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, v in (
            ("in_channels", in_channels),
            ("n_raters", n_raters),
            ("features", features),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {v!r}.")
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` must be 2 or 3; got {spatial_dims!r}.")
        self.n_raters = n_raters
        self.spatial_dims = spatial_dims
        if backbone is None:
            conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
            layers: list[nn.Module] = []
            c = in_channels
            for d in (1, 2, 4):
                layer = conv(c, features, 3, padding=d, dilation=d, device=device, dtype=dtype)
                layers += [layer, nn.ReLU()]
                c = features
            last = conv(c, n_raters, 1, device=device, dtype=dtype)
            # Start from equal weights: the framework begins as the plain mean over raters.
            with torch.no_grad():
                last.weight.zero_()
                if last.bias is not None:
                    last.bias.zero_()
            layers.append(last)
            backbone = nn.Sequential(*layers)
        self.backbone = backbone

    def forward(
        self,
        image: torch.Tensor,
        *,
        size: tuple[int, ...] | None = None,
        available: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rater weights ``(B, A, *size)`` (``size`` defaults to the image's spatial size).

        ``available`` is a bool tensor broadcastable to ``(B, A, *size)``; unavailable raters
        get weight 0 and the others sum to 1 at every pixel.
        """
        logits = self.backbone(image)
        if logits.ndim != image.ndim or logits.shape[1] != self.n_raters:
            raise ValueError(
                f"The weighting backbone must output (B, {self.n_raters}, *spatial); got "
                f"{tuple(logits.shape)}."
            )
        size = tuple(image.shape[2:]) if size is None else tuple(size)
        if tuple(logits.shape[2:]) != size:
            mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
            logits = F.interpolate(logits, size=size, mode=mode, align_corners=False)
        return masked_rater_softmax(logits, available)


class LabelReweightingLoss(nn.Module):
    """Loss of the label re-weighting framework of Xiao et al. (2021).

    ``loss = λ1 · L_vote + λ2 · mean_n(l_n ⊙ w_n)`` with ``(λ1, λ2)`` from
    :func:`reweight_lambdas`. ``L_vote`` is the per-pixel loss against the consensus
    (majority-vote) mask, ``l_n`` the per-pixel loss against rater ``n`` and ``w_n`` the
    weight map of rater ``n`` (:class:`WeightingNetwork`). The mean over raters counts, at
    each pixel, only the raters who annotated it (a rater whose mask is absent for an image is
    ``-1`` everywhere); the result is averaged over pixels with at least one rater.

    Args:
        kind: Per-pixel loss of both terms: ``"ce"`` or ``"focal"``.
        attention: Multiply both per-pixel losses by the Gaussian attention heat map (with
            ``kind="focal"`` this is the GAFL inside the framework).
        gamma: Focal-loss focusing parameter.
        alpha: Focal-loss class-balance factor ``α_t`` (see :func:`pixel_loss`).
        radius: Gaussian radius of the heat map.
        sigma: Gaussian standard deviation of the heat map.
        lambda_a: Roughness scale of the heat map.
        lambda_b: Constant of the heat map.
    """

    def __init__(
        self,
        *,
        kind: PixelLoss = "ce",
        attention: bool = False,
        gamma: float = 2.0,
        alpha: Alpha = None,
        radius: int = 5,
        sigma: float = 3.0,
        lambda_a: float = 50.0,
        lambda_b: float = 1.0,
    ) -> None:
        super().__init__()
        if kind not in ("ce", "focal"):
            raise ValueError(f"`kind` must be one of ['ce', 'focal']; got {kind!r}.")
        self.kind: PixelLoss = kind
        self.attention = bool(attention)
        self.gaf = GaussianAttentionFocalLoss(
            gamma=gamma,
            alpha=alpha,
            radius=radius,
            sigma=sigma,
            lambda_a=lambda_a,
            lambda_b=lambda_b,
        )

    def forward(
        self,
        logits: torch.Tensor,
        rater_masks: torch.Tensor,
        vote: torch.Tensor,
        weights: torch.Tensor | None,
        *,
        k: float,
        image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scalar loss.

        Args:
            logits: Float tensor ``(B, K, *spatial)`` of the segmentation network.
            rater_masks: Integer tensor ``(B, A, *spatial)``; ``-1`` marks a pixel (or a whole
                mask) a rater did not annotate.
            vote: Integer tensor ``(B, *spatial)``, the consensus mask (``-1`` = ignore).
            weights: Float tensor ``(B, A, *spatial)`` from the weighting network (summing to
                1 over available raters); may be ``None`` at ``k = 0``.
            k: Schedule step (see :func:`reweight_lambdas`).
            image: Float tensor ``(B, C, *spatial)``; needed when ``attention=True``.
        """
        lam1, lam2 = reweight_lambdas(k)
        _check_logits_target(logits, vote, "vote")
        if (
            rater_masks.ndim != logits.ndim
            or rater_masks.shape[0] != logits.shape[0]
            or (rater_masks.shape[2:] != logits.shape[2:])
        ):
            raise ValueError(
                f"`rater_masks` must have shape (B, A, *spatial) = ({logits.shape[0]}, A, "
                f"{', '.join(map(str, logits.shape[2:]))}); got {tuple(rater_masks.shape)}."
            )
        heat = None
        if self.attention:
            if image is None:
                raise ValueError("`image` must be given when attention=True.")
            heat = self.gaf.heat(image)
        g = self.gaf.gamma
        al = self.gaf.alpha
        vote_map, vote_valid = pixel_loss(
            logits, vote, kind=self.kind, gamma=g, alpha=al, weight_map=heat, validate_args=False
        )
        total = lam1 * _reduce(vote_map, vote_valid, "mean")
        if lam2 == 0.0:
            return total
        if weights is None or weights.shape != rater_masks.shape:
            raise ValueError(
                f"`weights` must have the shape of `rater_masks` {tuple(rater_masks.shape)}; got "
                f"{None if weights is None else tuple(weights.shape)}."
            )
        a = rater_masks.shape[1]
        avail = rater_masks >= 0
        n_avail = avail.sum(1)
        acc = torch.zeros_like(vote_map)
        for n in range(a):
            _check_logits_target(logits, rater_masks[:, n], f"rater_masks[:, {n}]")
            ln, _ = pixel_loss(
                logits,
                rater_masks[:, n],
                kind=self.kind,
                gamma=g,
                alpha=al,
                weight_map=heat,
                validate_args=False,
            )
            acc = acc + ln * weights[:, n]
        mean_n = acc / n_avail.clamp_min(1).to(acc.dtype)
        return total + lam2 * _reduce(mean_n, n_avail > 0, "mean")
