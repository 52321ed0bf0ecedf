"""Annotator confusion matrices for segmentation (Zhang et al., 2020).

A segmentation network estimates the true class distribution ``p`` of every pixel; a
confusion head estimates, for every rater ``a``, the matrix
``confusion[a, k, l] = P(rater a marks l | true class k)`` (rows sum to 1), either one per
pixel (:class:`PixelConfusion`) or one per rater shared by all pixels
(:class:`GlobalConfusion`). The rater's predicted label distribution is ``q_a = CMᵀ_a p``, and
the loss (:func:`confusion_loss`) is the cross-entropy of ``q_a`` against rater ``a``'s mask
plus ``λ`` times the mean trace of the confusion matrices. Minimising the trace pushes the
raters' errors into the confusion matrices, so that ``p`` is left with the truth; this works
when the raters are right more often than not (diagonally dominant matrices).

Zhang et al. attach the pixel-wise heads to the last decoder features of their U-Net; here a
head is its own small fully convolutional network on the image (like the weighting network of
the re-weighting framework), so that any segmentation network can be used.

All matrices are handled as log-probabilities, so that the fixed identity (``-inf`` off the
diagonal) gives exactly the cross-entropy of the segmentation network.

Identifiability: at a pixel, the data constrain only the rows of the classes the network
gives probability to, and the trace term lowers the others; so pixel-wise matrices can
explain a disagreement between raters either way (misses of a wide truth, or false positives
around a narrow one). The global matrices share each row across all pixels and are more
constrained. Check the estimated matrices (``CrowdSegmenter.rater_confusion``) against what
is known about the raters.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from crowdmed._validation import check_int

__all__ = ["GlobalConfusion", "PixelConfusion", "confusion_loss"]


def _check_sizes(n_raters: int, n_classes: int) -> None:
    check_int(n_raters, "n_raters")
    check_int(n_classes, "n_classes", low=2)


class GlobalConfusion(nn.Module):
    """One confusion matrix per rater, the same at every pixel.

    Args:
        n_raters: Number of raters ``A``.
        n_classes: Number of classes ``K``.
        init_diag: Initial row logits are ``init_diag`` on the diagonal and 0 elsewhere, so
            the initial ``P(correct) = e^d / (e^d + K − 1)`` (0.88 for ``d = 2, K = 2``).
        trainable: ``False`` keeps the matrices fixed at the identity (exactly: the
            log-probabilities are ``-inf`` off the diagonal) and registers no parameter; the
            method then reduces to plain training on each rater's masks.
        device: Torch device of the parameters.
        dtype: Torch dtype of the parameters.

    Examples:
        >>> head = GlobalConfusion(2, 2)
        >>> head.confusion().shape
        torch.Size([2, 2, 2])
        >>> GlobalConfusion(1, 2, trainable=False).confusion()
        tensor([[[1., 0.],
                 [0., 1.]]])
    """

    fixed: torch.Tensor  # the log-identity buffer when not trainable

    def __init__(
        self,
        n_raters: int,
        n_classes: int,
        *,
        init_diag: float = 2.0,
        trainable: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(n_raters, n_classes)
        self.n_raters, self.n_classes, self.trainable = n_raters, n_classes, bool(trainable)
        self.init_diag = float(init_diag)
        eye = torch.eye(n_classes, device=device, dtype=dtype or torch.float32)
        if self.trainable:
            self.logits = nn.Parameter(self.init_diag * eye.expand(n_raters, -1, -1).clone())
        else:
            log_eye = torch.log(eye).expand(n_raters, -1, -1).clone()
            self.register_buffer("fixed", log_eye, persistent=False)

    def log_confusion(self) -> torch.Tensor:
        """Log-probabilities ``(A, K, K)``; rows (the rater's label) sum to 1 after ``exp``."""
        if self.trainable:
            return torch.log_softmax(self.logits, -1)
        return self.fixed

    def confusion(self) -> torch.Tensor:
        """The matrices ``(A, K, K)``: ``[a, k, l] = P(rater a marks l | true class k)``."""
        return self.log_confusion().exp()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Log-confusion broadcastable to ``(B, A, K, K, *spatial)`` for images ``(B, C, *sp)``."""
        lc = self.log_confusion()
        return lc.reshape(1, *lc.shape, *([1] * (images.ndim - 2)))


class PixelConfusion(nn.Module):
    """One confusion matrix per rater and pixel, from a small fully convolutional network.

    Args:
        in_channels: Image channels ``C``.
        n_raters: Number of raters ``A``.
        n_classes: Number of classes ``K``.
        spatial_dims: 2 or 3.
        features: Channels of the hidden convolutions.
        depth: Number of 3×3 convolutions before the 1×1 output (receptive field
            ``2·depth + 1`` pixels).
        init_diag: The output convolution starts at zero weights and this diagonal bias, so
            every pixel starts at the matrices of :class:`GlobalConfusion`.
        device: Torch device of the parameters.
        dtype: Torch dtype of the parameters.

    Examples:
        >>> head = PixelConfusion(1, 3, 2)
        >>> head(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 3, 2, 2, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        n_raters: int,
        n_classes: int,
        *,
        spatial_dims: int = 2,
        features: int = 16,
        depth: int = 3,
        init_diag: float = 2.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(n_raters, n_classes)
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` must be 2 or 3; got {spatial_dims!r}.")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"`depth` must be a positive integer; got {depth!r}.")
        self.in_channels, self.n_raters, self.n_classes = in_channels, n_raters, n_classes
        self.spatial_dims, self.features, self.depth = spatial_dims, features, depth
        self.init_diag = float(init_diag)
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(depth):
            layers += [conv(c, features, 3, padding=1, device=device, dtype=dtype), nn.ReLU()]
            c = features
        self.body = nn.Sequential(*layers)
        k = n_classes
        self.out = conv(c, n_raters * k * k, 1, device=device, dtype=dtype)
        bias = self.out.bias
        if bias is None:  # pragma: no cover - Conv layers are built with a bias above
            raise RuntimeError("the output convolution has no bias")
        with torch.no_grad():
            self.out.weight.zero_()
            eye = torch.eye(k, device=device, dtype=bias.dtype)
            bias.copy_((self.init_diag * eye).repeat(n_raters, 1, 1).reshape(-1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Log-confusion ``(B, A, K, K, *spatial)`` of images ``(B, C, *spatial)``."""
        z = self.out(self.body(images))
        k = self.n_classes
        z = z.reshape(z.shape[0], self.n_raters, k, k, *z.shape[2:])
        return torch.log_softmax(z, 3)


def confusion_loss(
    logits: torch.Tensor,
    log_confusion: torch.Tensor,
    masks: torch.Tensor,
    *,
    trace_weight: float = 0.0,
    reduction: Literal["mean", "sum", "none"] = "mean",
    validate_args: bool = True,
) -> torch.Tensor:
    """Cross-entropy of each rater's predicted labels plus the trace regulariser.

    ``log q[b, a, l] = logsumexp_k (log p[b, k] + log CM[b, a, k, l])`` per pixel, with
    ``p = softmax(logits)``; the data term is ``−log q[b, a, y_a]`` averaged over the
    annotated (rater, pixel) pairs; the regulariser is ``trace_weight`` times the mean over
    images, raters and pixels of ``Σ_k CM[k, k]``.

    Args:
        logits: Float tensor ``(B, K, *spatial)`` of the segmentation network.
        log_confusion: Float tensor broadcastable to ``(B, A, K, K, *spatial)``: the
            log-probabilities of a confusion head.
        masks: Integer tensor ``(B, A, *spatial)`` of the raters' classes ``0..K-1``; ``-1``
            marks a pixel or mask a rater did not annotate.
        trace_weight: ``λ`` of the trace regulariser.
        reduction: ``"mean"`` (data term over the annotated pairs, plus the regulariser),
            ``"sum"`` (data term summed, plus the regulariser) or ``"none"`` (the data-term map
            ``(B, A, *spatial)``, 0 where not annotated, without the regulariser).
        validate_args: Check shapes and class range.

    Returns:
        The loss (a scalar unless ``reduction="none"``).

    Examples:
        >>> logits = torch.tensor([[[0.0], [0.0]]])  # (B=1, K=2, 1 pixel): p = (0.5, 0.5)
        >>> eye = torch.log(torch.eye(2)).reshape(1, 1, 2, 2, 1)
        >>> round(float(confusion_loss(logits, eye, torch.tensor([[[1]]]))), 4)  # -log 0.5
        0.6931
    """
    b, k = logits.shape[0], logits.shape[1]
    spatial = tuple(logits.shape[2:])
    if validate_args:
        if masks.ndim != logits.ndim or masks.shape[0] != b or tuple(masks.shape[2:]) != spatial:
            raise ValueError(
                f"`masks` must have shape (B, A, *spatial) = ({b}, A, {spatial}); got "
                f"{tuple(masks.shape)}."
            )
        if masks.dtype.is_floating_point:
            raise TypeError(f"`masks` must be an integer or bool tensor; got {masks.dtype}.")
        if bool((masks >= k).any()) or bool((masks < -1).any()):
            raise ValueError(f"`masks` must hold classes 0..{k - 1} or -1 (not annotated).")
        want = (b, masks.shape[1], k, k, *spatial)
        try:
            torch.broadcast_shapes(tuple(log_confusion.shape), want)
        except RuntimeError:
            raise ValueError(
                f"`log_confusion` must broadcast to (B, A, K, K, *spatial) = {want}; got "
                f"{tuple(log_confusion.shape)}."
            ) from None
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"`reduction` must be 'mean', 'sum' or 'none'; got {reduction!r}.")
    logp = torch.log_softmax(logits, 1)
    # (B, 1, K, 1, *sp) + (B, A, K, K, *sp) -> logsumexp over the true class k -> (B, A, K, *sp)
    log_q = torch.logsumexp(logp.unsqueeze(1).unsqueeze(3) + log_confusion, dim=2)
    valid = masks >= 0
    y = torch.where(valid, masks.long(), torch.zeros_like(masks, dtype=torch.long))
    nll = -log_q.gather(2, y.unsqueeze(2)).squeeze(2)
    nll = torch.where(valid, nll, torch.zeros_like(nll))
    if reduction == "none":
        return nll
    data = nll.sum() if reduction == "sum" else nll.sum() / valid.sum().clamp_min(1)
    if trace_weight == 0:
        return data
    diag = torch.diagonal(log_confusion, dim1=2, dim2=3).exp().sum(-1)  # (B|1, A, *sp|1)
    return data + trace_weight * diag.mean()
