"""Majority vote and weighted majority vote (Wawa)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from crowdmed._validation import interval
from crowdmed.aggregation.base import BaseAggregator, argmax_ties
from crowdmed.data.labels import CrowdLabels

__all__ = ["MajorityVote", "WeightedMajorityVote"]


def soft_confusion(cl: CrowdLabels, posteriors: np.ndarray, smoothing: float = 0.0) -> np.ndarray:
    """Per-annotator confusion matrices against soft reference posteriors.

    Args:
        cl: The labels.
        posteriors: Float array of shape ``(n_items, n_classes)``.
        smoothing: Pseudo-count added to every cell.

    Returns:
        Float array of shape ``(n_annotators, n_classes, n_classes)``; ``[a, k, l]`` is the
        (smoothed) share of annotator ``a``'s labels ``l`` among items of class ``k``. Rows
        without any evidence are uniform.
    """
    k = cl.n_classes
    counts = (cl.incidence_t() @ posteriors).reshape(cl.n_annotators, k, k).transpose(0, 2, 1)
    return confusion_from_counts(counts, smoothing)


def confusion_from_counts(counts: np.ndarray, smoothing: float = 0.0) -> np.ndarray:
    """Confusion matrices from soft counts ``[a, k, l]`` (rows normalised, see conventions).

    Args:
        counts: Float array of shape ``(n_annotators, n_classes, n_classes)``: summed
            posterior of class ``k`` over the items annotator ``a`` labelled ``l``.
        smoothing: Pseudo-count added to every cell.

    Returns:
        Float array of the same shape; rows without any evidence are uniform.
    """
    k = counts.shape[1]
    counts = counts + smoothing
    totals = counts.sum(axis=2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), 1.0 / k)
    return conf


class MajorityVote(BaseAggregator):
    """Majority vote: each item takes the class chosen by most of its annotators.

    ``posteriors_`` are the vote shares. Ties are broken by ``random_state``: ``None`` picks the
    lowest class index, a seed draws uniformly among the tied classes (reproducibly).

    Args:
        random_state: Seed or ``numpy.random.Generator`` for tie-breaking; ``None`` for the
            lowest class index.

    Attributes:
        posteriors_ (ndarray of shape (n_items, n_classes)): Share of votes per class.
        labels_ (ndarray of shape (n_items,)): Winning class.
        confusion_ (ndarray of shape (n_annotators, n_classes, n_classes)): Each annotator's
            confusion against the vote shares (see conventions).
        n_iter_ (int): Always 0.
        converged_ (bool): Always ``True``.
        log_likelihoods_ (list[float]): Always empty.

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 1], [1, 1, -1], [0, 1, -1]])
        >>> mv = MajorityVote().fit(labels)
        >>> mv.labels_
        array([0, 1, 0])
        >>> mv.posteriors_[0].round(3)
        array([0.667, 0.333])
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {}
    _min_classes: ClassVar[int] = 1

    def __init__(self, *, random_state: int | np.random.Generator | None = None) -> None:
        self.random_state = random_state

    def _weights(self, cl: CrowdLabels) -> np.ndarray | None:
        return None

    def _fit(self, cl: CrowdLabels, gold: np.ndarray | None) -> None:
        post = self._votes(cl, self._weights(cl))
        if gold is not None:
            known = gold >= 0
            post[known] = 0.0
            post[known, gold[known]] = 1.0
        self.posteriors_ = post
        self.confusion_ = soft_confusion(cl, post)
        self.n_iter_ = 0
        self.converged_ = True
        self.log_likelihoods_: list[float] = []

    @staticmethod
    def _votes(cl: CrowdLabels, weights: np.ndarray | None) -> np.ndarray:
        votes = cl.vote_counts(weights)
        total = votes.sum(axis=1, keepdims=True)
        k = votes.shape[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, votes / np.where(total > 0, total, 1.0), 1.0 / k)

    def _predict_proba(self, cl: CrowdLabels) -> np.ndarray:
        return self._votes(cl, getattr(self, "weights_", None))


class WeightedMajorityVote(MajorityVote):
    """Wawa: majority vote weighted by each annotator's agreement with the plain majority.

    Each annotator's weight is their accuracy against the majority-vote labels; the consensus
    is the weighted vote. This is crowd-kit's ``Wawa`` ("worker agreement with aggregate").

    Args:
        random_state: Seed or ``numpy.random.Generator`` for tie-breaking (in the majority vote
            used for the weights and in the final vote); ``None`` for the lowest class index.
        min_weight: Floor of an annotator's weight, so an annotator who never agrees still
            counts a little and items labelled only by such annotators keep a vote.

    Attributes:
        skills_ (ndarray of shape (n_annotators,)): Agreement with the majority vote; ``NaN``
            for annotators without labels.
        weights_ (ndarray of shape (n_annotators,)): Vote weights.
        posteriors_, labels_, confusion_, n_iter_, converged_, log_likelihoods_: As in
            :class:`MajorityVote`.

    References:
        crowd-kit ``Wawa``: https://github.com/Toloka/crowd-kit (Ustalov et al., 2021,
        https://doi.org/10.48550/arXiv.2109.08584).

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]])
        >>> WeightedMajorityVote().fit(labels).skills_.round(2)
        array([0.75, 0.75, 0.5 ])
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {"min_weight": interval(0, 1)}

    def __init__(
        self, *, random_state: int | np.random.Generator | None = None, min_weight: float = 1e-6
    ) -> None:
        self.random_state = random_state
        self.min_weight = min_weight

    def _weights(self, cl: CrowdLabels) -> np.ndarray:
        mv = argmax_ties(self._votes(cl, None), self._tie_random_state())
        agree = (mv[cl.items] == cl.labels).astype(np.float64)
        n = cl.labels_per_annotator()
        hits = np.bincount(cl.annotators, weights=agree, minlength=cl.n_annotators)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.skills_ = np.where(n > 0, hits / np.maximum(n, 1), np.nan)
        self.weights_ = np.maximum(np.nan_to_num(self.skills_, nan=0.0), self.min_weight)
        return self.weights_
