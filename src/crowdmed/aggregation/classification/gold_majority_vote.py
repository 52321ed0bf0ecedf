"""Gold majority vote: a vote weighted by each annotator's accuracy on gold items."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from crowdmed._validation import interval
from crowdmed.aggregation.classification.majority_vote import MajorityVote, soft_confusion
from crowdmed.data.labels import CrowdLabels

__all__ = ["GoldMajorityVote"]


def _check_default_skill(value: Any) -> str | None:
    return None if value is None else interval(0, 1)(value)


class GoldMajorityVote(MajorityVote):
    """Majority vote weighted by each annotator's accuracy on the gold items.

    ``skills_[a]`` is the share of annotator ``a``'s labels on gold items that equal the gold
    class; the consensus of every item (gold items included: they are *not* clamped, so the
    vote can be evaluated on them) is the vote weighted by the skills, and ``posteriors_`` are
    the weighted vote shares. This is crowd-kit's ``GoldMajorityVote``. crowd-kit refuses
    annotators without gold labels; here they vote with ``default_skill``.

    Args:
        default_skill: Weight of annotators who labelled no gold item, in ``[0, 1]``; ``None``
            uses the mean skill of the annotators who did.
        random_state: Seed or ``numpy.random.Generator`` for tie-breaking; ``None`` for the
            lowest class index.

    Attributes:
        skills_ (ndarray of shape (n_annotators,)): Accuracy on the gold items; ``NaN`` for
            annotators without gold labels.
        n_gold_ (ndarray of shape (n_annotators,)): Number of gold items each annotator
            labelled.
        weights_ (ndarray of shape (n_annotators,)): Vote weights (``skills_`` with the
            ``NaN`` replaced by the default skill).
        posteriors_ (ndarray of shape (n_items, n_classes)): Weighted vote shares.
        labels_ (ndarray of shape (n_items,)): Argmax of ``posteriors_``.
        confusion_ (ndarray of shape (n_annotators, n_classes, n_classes)): Each annotator's
            confusion against the weighted vote (see conventions).
        n_iter_ (int): Always 0.
        converged_ (bool): Always ``True``.
        log_likelihoods_ (list[float]): Always empty.

    References:
        crowd-kit ``GoldMajorityVote``: Ustalov, Pavlichenko & Tseitlin (2024). Learning from
        crowds with Crowd-Kit. JOSS 9(96), 6227. https://doi.org/10.21105/joss.06227

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 1], [1, 0, 1], [1, 0, -1], [0, 1, -1]])
        >>> gmv = GoldMajorityVote().fit(labels, gold=[0, 1, -1, -1])
        >>> gmv.skills_
        array([1. , 0.5, 0.5])
        >>> gmv.labels_
        array([0, 1, 1, 0])
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {"default_skill": _check_default_skill}

    def __init__(
        self,
        *,
        default_skill: float | None = None,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.default_skill = default_skill
        self.random_state = random_state

    def _fit(self, cl: CrowdLabels, gold: np.ndarray | None) -> None:
        if gold is None:
            raise ValueError(
                "`gold` must hold the true class of at least one item for GoldMajorityVote; "
                "got none. Pass gold=... (-1 for items without gold), or on the command line "
                "a 'gold' column with --use-gold."
            )
        item_gold = gold[cl.items]
        on_gold = item_gold >= 0
        n = np.bincount(cl.annotators[on_gold], minlength=cl.n_annotators)
        hits = np.bincount(
            cl.annotators[on_gold],
            weights=(cl.labels[on_gold] == item_gold[on_gold]).astype(np.float64),
            minlength=cl.n_annotators,
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            self.skills_ = np.where(n > 0, hits / np.maximum(n, 1), np.nan)
        self.n_gold_ = n
        fill = self.default_skill
        if fill is None:
            fill = float(np.nanmean(self.skills_))
        self.weights_ = np.where(n > 0, self.skills_, fill)
        post = self._votes(cl, self.weights_)
        self.posteriors_ = post
        self.confusion_ = soft_confusion(cl, post)
        self.n_iter_ = 0
        self.converged_ = True
        self.log_likelihoods_: list[float] = []
