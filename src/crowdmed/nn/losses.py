"""Losses over the labels of many annotators (PyTorch)."""

from __future__ import annotations

from enum import Enum

import torch

from crowdmed._validation import check_option

__all__ = ["Reduction", "crowd_cross_entropy", "crowd_mse"]


class Reduction(str, Enum):
    """How per-item losses are combined."""

    MEAN = "mean"
    SUM = "sum"
    NONE = "none"


def _reduce(per_item: torch.Tensor, reduction: str | Reduction) -> torch.Tensor:
    r = check_option(reduction, Reduction, "reduction")
    if r is Reduction.MEAN:
        return per_item.mean()
    if r is Reduction.SUM:
        return per_item.sum()
    return per_item


def crowd_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -1,
    reduction: str | Reduction = "mean",
    validate_args: bool = True,
) -> torch.Tensor:
    """Cross-entropy summed over the annotators who labelled each item.

    Args:
        logits: Float tensor of shape ``(B, A, K)``: per-annotator logits (e.g. from
            :class:`~crowdmed.nn.CrowdLayer`).
        labels: Integer tensor of shape ``(B, A)``; ``ignore_index`` (``-1``) marks a missing
            annotation, which contributes nothing.
        ignore_index: Marker of a missing annotation.
        reduction: ``"mean"`` over items, ``"sum"``, or ``"none"`` for the ``(B,)`` per-item
            sums.
        validate_args: Check shapes and label range (turn off in hot loops).

    Returns:
        The loss.

    Examples:
        >>> import torch
        >>> logits = torch.zeros(2, 3, 4)
        >>> labels = torch.tensor([[0, 1, -1], [-1, -1, 3]])
        >>> crowd_cross_entropy(logits, labels, reduction="none")
        tensor([2.7726, 1.3863])
    """
    if validate_args:
        if logits.ndim != 3:
            raise ValueError(f"`logits` must have shape (B, A, K); got {tuple(logits.shape)}.")
        if labels.shape != logits.shape[:2]:
            raise ValueError(
                f"`labels` must have shape (B, A) = {tuple(logits.shape[:2])}; got "
                f"{tuple(labels.shape)}."
            )
        if labels.dtype.is_floating_point:
            raise TypeError(f"`labels` must be an integer tensor; got {labels.dtype}.")
        k = logits.shape[2]
        bad = (labels != ignore_index) & ((labels < 0) | (labels >= k))
        if bool(bad.any()):
            vals = torch.unique(labels[bad]).tolist()[:5]
            raise ValueError(
                f"`labels` must hold classes 0..{k - 1} or {ignore_index} for missing; got {vals}."
            )
    b, a, k = logits.shape
    per_label = torch.nn.functional.cross_entropy(
        logits.reshape(b * a, k),
        labels.reshape(b * a).long(),
        ignore_index=ignore_index,
        reduction="none",
    ).reshape(b, a)
    return _reduce(per_label.sum(dim=1), reduction)


def crowd_mse(
    preds: torch.Tensor,
    targets: torch.Tensor,
    *,
    reduction: str | Reduction = "mean",
) -> torch.Tensor:
    """Squared error summed over the annotators who gave a value (``NaN`` marks missing).

    Args:
        preds: Float tensor of shape ``(B, A)`` (e.g. from
            :class:`~crowdmed.nn.CrowdRegressionLayer`).
        targets: Float tensor of shape ``(B, A)``; ``NaN`` marks a missing annotation.
        reduction: ``"mean"`` over items, ``"sum"`` or ``"none"``.

    Returns:
        The loss.

    Examples:
        >>> import torch
        >>> crowd_mse(torch.zeros(1, 2), torch.tensor([[1.0, float("nan")]]))
        tensor(1.)
    """
    if preds.shape != targets.shape or preds.ndim != 2:
        raise ValueError(
            f"`preds` and `targets` must both have shape (B, A); got {tuple(preds.shape)} and "
            f"{tuple(targets.shape)}."
        )
    observed = ~torch.isnan(targets)
    diff = torch.where(observed, preds - torch.nan_to_num(targets), torch.zeros_like(preds))
    return _reduce((diff**2).sum(dim=1), reduction)
