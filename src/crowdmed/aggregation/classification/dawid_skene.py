"""Dawid–Skene and one-coin Dawid–Skene, fitted by EM on sparse COO labels."""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar

import numpy as np

from crowdmed._validation import check_option, check_random_state, interval
from crowdmed.aggregation.base import EPS, EMAggregator
from crowdmed.data.labels import CrowdLabels

__all__ = ["DawidSkene", "OneCoinDawidSkene"]


class Init(str, Enum):
    """Starting posteriors of EM."""

    MAJORITY_VOTE = "majority_vote"
    RANDOM = "random"


def _check_init(value: Any) -> str | None:
    check_option(value, Init, "init")  # raises with a "did you mean" hint
    return None


class DawidSkene(EMAggregator):
    """Dawid–Skene confusion-matrix model fitted by EM.

    Each annotator ``a`` has a full confusion matrix ``confusion_[a, k, l] = P(a says l | true
    class k)`` and the classes have a prior. The E-step sums the annotators' log-confusions in
    log space (a product of many probabilities underflows); both steps are sparse
    matrix products over the ``(item, annotator, label)`` triplets, so one iteration costs
    ``O(n_labels · K)``.

    Args:
        max_iter: Maximum number of EM iterations.
        tol: Stop when the gain in log-likelihood per annotation is below ``tol``.
        init: ``"majority_vote"`` (soft vote) or ``"random"`` (Dirichlet draws).
        smoothing: Dirichlet pseudo-count added to every confusion count (MAP-EM).
            ``0`` gives maximum likelihood, with probabilities floored at ``1e-10``.
        random_state: Seed or ``numpy.random.Generator`` for ``init="random"`` and
            tie-breaking; ``None`` breaks ties by the lowest class index.

    Attributes:
        posteriors_ (ndarray of shape (n_items, n_classes)): P(true class | labels).
        labels_ (ndarray of shape (n_items,)): Argmax of ``posteriors_``.
        confusion_ (ndarray of shape (n_annotators, n_classes, n_classes)): See conventions.
        priors_ (ndarray of shape (n_classes,)): Class prior.
        log_likelihoods_ (list[float]): Log-likelihood plus log-prior of the parameters, one
            value per iteration; never decreases.
        n_iter_ (int): Number of iterations run.
        converged_ (bool): Whether ``tol`` was reached.

    References:
        Dawid & Skene (1979). Maximum likelihood estimation of observer error-rates using the
        EM algorithm. https://doi.org/10.2307/2346806

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 1], [1, 1, -1], [0, -1, 0]])
        >>> DawidSkene(random_state=0).fit(labels).labels_
        array([0, 1, 0])
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        **EMAggregator._parameter_constraints,
        "init": _check_init,
        "smoothing": interval(0, None),
    }

    def __init__(
        self,
        *,
        max_iter: int = 100,
        tol: float = 1e-6,
        init: str = "majority_vote",
        smoothing: float = 0.01,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.smoothing = smoothing
        self.random_state = random_state

    def _init_posteriors(self, cl: CrowdLabels) -> np.ndarray:
        if check_option(self.init, Init, "init") is Init.RANDOM:
            rng = check_random_state(self.random_state)
            return rng.dirichlet(np.ones(cl.n_classes), size=cl.n_items)
        return super()._init_posteriors(cl)

    def _counts(self, cl: CrowdLabels, posteriors: np.ndarray) -> np.ndarray:
        """Soft confusion counts ``[a, k, l]`` = sum of P(class k) over items a labelled l."""
        k = cl.n_classes
        flat = cl.incidence_t() @ posteriors  # (A*K_l, K_k)
        return flat.reshape(cl.n_annotators, k, k).transpose(0, 2, 1)

    def _m_step(self, cl: CrowdLabels, posteriors: np.ndarray) -> None:
        counts = self._counts(cl, posteriors)
        self._m_step_from_stats(counts, cl.label_counts(), posteriors.sum(axis=0), cl.n_items)

    def _m_step_from_stats(
        self,
        counts: np.ndarray,
        label_counts: np.ndarray,
        class_totals: np.ndarray,
        n_items: int,
    ) -> None:
        """M-step from sums over items, which partitions of the items can add up.

        Args:
            counts: Soft confusion counts ``[a, k, l]`` (see :meth:`_counts`).
            label_counts: Integer array ``[a, l]``: how often annotator ``a`` gave label ``l``.
            class_totals: Sum of the posteriors over items, shape ``(n_classes,)``.
            n_items: Number of items.
        """
        # Floor the counts of labels the annotator used (so a class never seen with that
        # annotator gets a uniform row over their labels rather than 0/0); labels never used
        # keep only the smoothing pseudo-count.
        used = (label_counts > 0)[:, None, :]
        counts = np.where(used, np.maximum(counts, EPS), 0.0) + self.smoothing
        totals = counts.sum(axis=2, keepdims=True)
        # An annotator without labels (and no smoothing) has no evidence: uniform rows.
        k = counts.shape[1]
        conf = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), 1.0 / k)
        # Labels an annotator never gave have probability 0 without smoothing; floor them so
        # new labels in predict_proba stay finite (fitted items never use these entries).
        self.confusion_ = np.where(conf > 0, conf, EPS)
        self.priors_ = np.maximum(class_totals / n_items, EPS)

    def _log_joint(self, cl: CrowdLabels) -> np.ndarray:
        k = cl.n_classes
        # log_conf[a*K + l, k] = log P(a says l | class k): one sparse product gathers and sums
        # the log-probabilities of every item's labels.
        log_conf = np.log(self.confusion_).transpose(0, 2, 1).reshape(-1, k)
        log_joint = cl.incidence() @ log_conf
        log_joint += np.log(self.priors_)  # in place: one (n_items, K) array per E-step
        return log_joint

    def _log_param_prior(self) -> float:
        if self.smoothing == 0:
            return 0.0
        return float(self.smoothing * np.log(self.confusion_).sum())


class OneCoinDawidSkene(DawidSkene):
    """One-coin Dawid–Skene: each annotator is right with probability ``skill``.

    An annotator's confusion matrix has ``skills_[a]`` on the diagonal and
    ``(1 - skills_[a]) / (K - 1)`` elsewhere. The M-step sets the skill to the expected share
    of correct labels, ``(E[correct] + s) / (n_labels + K s)`` with ``s = smoothing``, so an
    annotator without labels gets the uninformative ``1 / K``.

    Args:
        max_iter: Maximum number of EM iterations.
        tol: Stop when the gain in log-likelihood per annotation is below ``tol``.
        init: ``"majority_vote"`` or ``"random"``.
        smoothing: Pseudo-count ``s`` of the skill estimate.
        random_state: Seed or ``numpy.random.Generator`` for ``init="random"`` and ties.

    Attributes:
        skills_ (ndarray of shape (n_annotators,)): Probability of a correct label.
        posteriors_, labels_, confusion_, priors_, log_likelihoods_, n_iter_, converged_: As in
            :class:`DawidSkene`.

    References:
        Zhang, Chen, Zhou & Jordan (2016). Spectral methods meet EM: a provably optimal
        algorithm for crowdsourcing. JMLR 17. https://doi.org/10.48550/arXiv.1406.3824

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 1], [1, 1, 1], [0, 0, 0], [1, 1, 0]])
        >>> OneCoinDawidSkene().fit(labels).skills_.round(2)
        array([1. , 1. , 0.5])
    """

    def _m_step_from_stats(
        self,
        counts: np.ndarray,
        label_counts: np.ndarray,
        class_totals: np.ndarray,
        n_items: int,
    ) -> None:
        k = counts.shape[1]
        correct = np.trace(counts, axis1=1, axis2=2)
        n = label_counts.sum(axis=1)
        s = self.smoothing
        with np.errstate(invalid="ignore", divide="ignore"):
            skill = np.where(n + k * s > 0, (correct + s) / (n + k * s), 1.0 / k)
        self.skills_ = np.clip(skill, EPS, 1 - EPS)
        off = (1 - self.skills_) / (k - 1)
        conf = np.repeat(off[:, None, None], k, axis=1).repeat(k, axis=2)
        idx = np.arange(k)
        conf[:, idx, idx] = self.skills_[:, None]
        self.confusion_ = np.clip(conf, EPS, 1 - EPS)
        self.priors_ = np.maximum(class_totals / n_items, EPS)

    def _log_param_prior(self) -> float:
        k = self.confusion_.shape[1]
        s = self.smoothing
        return float(s * np.log(self.skills_).sum() + (k - 1) * s * np.log1p(-self.skills_).sum())
