"""Mean and median of each item's readings: the baselines of continuous truth inference."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from crowdmed.aggregation.continuous.base import BaseContinuousAggregator, ContinuousLabels

__all__ = ["ContinuousMean", "ContinuousMedian", "item_means", "item_medians_continuous"]


def item_means(cl: ContinuousLabels) -> np.ndarray:
    """Mean reading of every item, shape ``(n_items,)``."""
    return cl.per_item(cl.values) / cl.per_item()


def item_medians_continuous(cl: ContinuousLabels) -> np.ndarray:
    """Median reading of every item (mean of the two middle readings when their number is even).

    One sort of the readings by ``(item, value)``; no per-item loop.

    Args:
        cl: The readings.

    Returns:
        Float array of shape ``(n_items,)``.

    Examples:
        >>> from crowdmed.aggregation.continuous.base import check_continuous
        >>> item_medians_continuous(check_continuous([[1.0, 5.0, 2.0], [4.0, np.nan, 1.0]]))
        array([2. , 2.5])
    """
    order = np.lexsort((cl.values, cl.items))
    ranked = cl.values[order]
    n = cl.per_item().astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(n)[:-1]])
    return 0.5 * (ranked[starts + (n - 1) // 2] + ranked[starts + n // 2])


class _Baseline(BaseContinuousAggregator):
    _parameter_constraints: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        pass

    def _consensus(self, cl: ContinuousLabels) -> np.ndarray:
        raise NotImplementedError

    def _fit(self, cl: ContinuousLabels) -> None:
        self.labels_ = self._consensus(cl)
        self.n_iter_ = 0
        self.converged_ = True
        self.log_likelihoods_: list[float] = []

    def _predict(self, cl: ContinuousLabels) -> np.ndarray:
        return self._consensus(cl)


class ContinuousMean(_Baseline):
    """Mean of each item's readings.

    Attributes:
        labels_ (ndarray of shape (n_items,)): Mean reading.
        n_iter_ (int): Always 0.
        converged_ (bool): Always ``True``.
        log_likelihoods_ (list[float]): Always empty.

    Examples:
        >>> import numpy as np
        >>> ContinuousMean().fit(np.array([[1.0, 2.0, np.nan], [0.0, 4.0, 8.0]])).labels_
        array([1.5, 4. ])
    """

    def _consensus(self, cl: ContinuousLabels) -> np.ndarray:
        return item_means(cl)


class ContinuousMedian(_Baseline):
    """Median of each item's readings; with an even number, the mean of the two middle ones.

    Attributes:
        labels_ (ndarray of shape (n_items,)): Median reading.
        n_iter_ (int): Always 0.
        converged_ (bool): Always ``True``.
        log_likelihoods_ (list[float]): Always empty.

    Examples:
        >>> import numpy as np
        >>> ContinuousMedian().fit(np.array([[1.0, 2.0, np.nan], [0.0, 4.0, 9.0]])).labels_
        array([1.5, 4. ])
    """

    def _consensus(self, cl: ContinuousLabels) -> np.ndarray:
        return item_medians_continuous(cl)
