"""Order-aware voting baselines for ordinal labels: median and majority vote with ordinal ties."""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import numpy as np

from crowdmed.aggregation.base import BaseAggregator, argmax_ties
from crowdmed.data.labels import CrowdLabels

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

__all__ = ["MedianVote", "OrdinalMajorityVote", "item_medians"]


def item_medians(cl: CrowdLabels) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper middle label of every item (equal for an odd number of labels).

    One sort of the COO triplets by ``(item, label)``; no per-item loop.

    Args:
        cl: The labels; class indices ``0..K-1`` are taken as ordered.

    Returns:
        Two integer arrays of shape ``(n_items,)``: the lower and the upper median class.

    Examples:
        >>> cl = CrowdLabels.from_dense(np.array([[0, 2, 3], [1, 4, -1]]))
        >>> item_medians(cl)
        (array([2, 1]), array([2, 4]))
    """
    order = np.lexsort((cl.labels, cl.items))
    ranked = cl.labels[order]
    n = cl.labels_per_item()
    starts = np.concatenate([[0], np.cumsum(n)[:-1]])
    return ranked[starts + (n - 1) // 2], ranked[starts + n // 2]


class _OrdinalVote(BaseAggregator):
    """Vote shares as ``posteriors_``; ``labels_`` from an order-aware rule."""

    _parameter_constraints: ClassVar[dict[str, Any]] = {}
    _min_classes: ClassVar[int] = 1

    def __init__(self, *, random_state: int | np.random.Generator | None = None) -> None:
        self.random_state = random_state

    def _decide(self, cl: CrowdLabels, rng: Any) -> np.ndarray:
        raise NotImplementedError

    def _fit(self, cl: CrowdLabels, gold: np.ndarray | None) -> None:
        post = _shares(cl)
        decided = self._decide(cl, self._tie_random_state())
        if gold is not None:
            known = gold >= 0
            post[known] = 0.0
            post[known, gold[known]] = 1.0
            decided[known] = gold[known]
        self.posteriors_ = post
        self._decided = decided
        self.n_iter_ = 0
        self.converged_ = True
        self.log_likelihoods_: list[float] = []

    def fit(self, labels: Any, **kwargs: Any) -> Self:
        """Fit to the annotators' labels; see :meth:`BaseAggregator.fit`.

        Args:
            labels: A :class:`~crowdmed.data.CrowdLabels`, an integer array of shape
                ``(n_items, n_annotators)`` where ``-1`` marks a missing annotation, or a long
                ``DataFrame``.
            **kwargs: ``n_classes``, ``gold`` and ``callback`` as in
                :meth:`BaseAggregator.fit`.

        Returns:
            The fitted estimator.
        """
        super().fit(labels, **kwargs)
        self.labels_ = self._decided
        del self._decided
        return self

    def _predict_proba(self, cl: CrowdLabels) -> np.ndarray:
        return _shares(cl)

    def predict(self, labels: Any) -> np.ndarray:
        """Consensus class of new items by the same rule as ``labels_``, shape ``(n_items,)``."""
        cl = self._check_new_labels(labels)
        return self._decide(cl, self._tie_random_state())


def _shares(cl: CrowdLabels) -> np.ndarray:
    votes = cl.vote_counts()
    return votes / votes.sum(axis=1, keepdims=True)


class MedianVote(_OrdinalVote):
    """Median of each item's ordinal labels.

    With an even number of labels whose two middle labels differ, the median is tied between
    them: ``random_state=None`` takes the lower one (the lowest class index, as every tie in
    crowdmed), a seed draws one of the two uniformly (reproducibly). ``posteriors_`` are the
    vote shares, so here ``labels_`` is *not* their argmax.

    Args:
        random_state: Seed or ``numpy.random.Generator`` for tie-breaking; ``None`` for the
            lower middle label.

    Attributes:
        posteriors_ (ndarray of shape (n_items, n_classes)): Share of votes per class.
        labels_ (ndarray of shape (n_items,)): Median class.
        n_iter_ (int): Always 0.
        converged_ (bool): Always ``True``.
        log_likelihoods_ (list[float]): Always empty.

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 2, 3], [1, 4, -1], [4, 4, 0]])
        >>> MedianVote().fit(labels).labels_
        array([2, 1, 4])
    """

    def _decide(self, cl: CrowdLabels, rng: Any) -> np.ndarray:
        lo, hi = item_medians(cl)
        if rng is None:
            return lo
        return np.where(rng.random(lo.shape) < 0.5, lo, hi)


class OrdinalMajorityVote(_OrdinalVote):
    """Majority vote whose ties go to the class nearest the item's median.

    The most frequent label wins, as in :class:`~crowdmed.aggregation.MajorityVote`; among
    tied classes the one closest to the item's median (the mean of the two middle labels)
    wins, so a 1-1 split between classes 1 and 3 with a third reader at 2 is not settled by
    class order. Ties that remain (equal distance) go to the lower class with
    ``random_state=None`` and are drawn uniformly with a seed.

    Args:
        random_state: Seed or ``numpy.random.Generator`` for the remaining ties; ``None`` for
            the lowest class index.

    Attributes:
        posteriors_ (ndarray of shape (n_items, n_classes)): Share of votes per class.
        labels_ (ndarray of shape (n_items,)): Modal class, ties as above.
        n_iter_ (int): Always 0.
        converged_ (bool): Always ``True``.
        log_likelihoods_ (list[float]): Always empty.

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 3, 3, 2], [4, 4, 1, 1, 3]])
        >>> OrdinalMajorityVote().fit(labels).labels_
        array([3, 4])
    """

    def _decide(self, cl: CrowdLabels, rng: Any) -> np.ndarray:
        votes = cl.vote_counts()
        tied = votes >= votes.max(axis=1, keepdims=True) - 1e-12
        lo, hi = item_medians(cl)
        centre = 0.5 * (lo + hi)
        dist = np.abs(np.arange(cl.n_classes)[None, :] - centre[:, None])
        dist = np.where(tied, dist, np.inf)
        nearest = dist <= dist.min(axis=1, keepdims=True) + 1e-12
        return argmax_ties(nearest.astype(np.float64), rng)
