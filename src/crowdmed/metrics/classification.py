"""Classification metrics."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

__all__ = ["roc_auc"]

#: ``roc_auc`` is better when higher.
roc_auc_higher_is_better = True


def roc_auc(scores: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann–Whitney U statistic; tied scores count one half).

    Args:
        scores: Float array of shape ``(n,)``: higher means more likely positive.
        truth: Integer array of shape ``(n,)`` with ``1`` for positive and ``0`` for negative.

    Returns:
        The AUC in ``[0, 1]``; ``NaN`` when only one class is present.

    Examples:
        >>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.75
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(truth)
    if s.shape != t.shape or s.ndim != 1:
        raise ValueError(
            f"`scores` and `truth` must be 1-D of equal length; got {s.shape} and {t.shape}."
        )
    if not np.isin(t, (0, 1)).all():
        raise ValueError("`truth` must hold 0 (negative) or 1 (positive) only.")
    pos = t == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
