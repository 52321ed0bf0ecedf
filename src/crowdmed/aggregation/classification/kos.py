"""KOS: the message-passing algorithm of Karger, Oh and Shah for binary labels."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np

from crowdmed._validation import check_random_state, interval
from crowdmed.aggregation.base import BaseAggregator
from crowdmed.data.labels import CrowdLabels
from crowdmed.exceptions import ConvergenceWarning

__all__ = ["KOS"]


class KOS(BaseAggregator):
    """KOS: iterative message passing between items and annotators (binary labels).

    Labels are coded ``A = +1`` (class 1) and ``-1`` (class 0). Every label ``(i, j)`` carries
    two messages: the item message ``x_{i→j} = Σ_{j'≠j} A_{ij'} y_{j'→i}`` (evidence that
    item ``i`` is positive, from the other annotators) and the annotator message
    ``y_{j→i} = Σ_{i'≠i} A_{i'j} x_{i'→j}`` (reliability of annotator ``j``, judged on their
    other items). The annotator messages start as ``N(1, 1)`` draws. After the iterations the
    item decides by the sign of ``scores_[i] = Σ_j A_{ij} y_{j→i}``.

    The messages grow geometrically; their scale carries no information, so after every
    iteration they are divided by their largest absolute value (crowd-kit lets them grow and
    stops once they exceed 1e300, keeping the messages of the iteration before). The loop
    stops when no normalised annotator message moves by more than ``tol``. Both steps are
    ``np.bincount`` sums over the labels: one iteration costs ``O(n_labels)``.

    KOS gives a decision, not a probability: ``posteriors_`` is one-hot on the decided class
    (``[0.5, 0.5]`` for a zero score).

    Args:
        max_iter: Maximum number of message-passing iterations.
        tol: Stop when no normalised annotator message changes by more than ``tol``.
        random_state: Seed or ``numpy.random.Generator`` for the starting messages; a zero
            score gives ``[0.5, 0.5]`` and label 0.

    Attributes:
        scores_ (ndarray of shape (n_items,)): ``Σ_j A_ij y_{j→i}`` (normalised messages);
            positive means class 1.
        reliabilities_ (ndarray of shape (n_annotators,)): ``Σ_i A_ij x_{i→j}`` divided by its
            largest absolute value; negative for adversarial annotators.
        posteriors_ (ndarray of shape (n_items, 2)): One-hot decisions.
        labels_ (ndarray of shape (n_items,)): Decided class.
        message_changes_ (list[float]): Largest change of a normalised annotator message per
            iteration.
        n_iter_ (int): Number of iterations run.
        converged_ (bool): Whether ``tol`` was reached.
        log_likelihoods_ (list[float]): Always empty (KOS has no likelihood).

    References:
        Karger, Oh & Shah (2014). Budget-optimal task allocation for reliable crowdsourcing
        systems. Operations Research 62(1), 1-24. https://doi.org/10.1287/opre.2013.1235

    Examples:
        >>> import numpy as np
        >>> from crowdmed.simulate import binary_confusion, simulate_labels
        >>> rng = np.random.default_rng(0)
        >>> truth = rng.integers(0, 2, 500)
        >>> conf = binary_confusion(
        ...     sensitivity=rng.uniform(0.3, 0.95, 30), specificity=rng.uniform(0.5, 0.95, 30)
        ... )
        >>> labels = simulate_labels(truth, conf, labels_per_item=5, random_state=1)
        >>> kos = KOS().fit(labels)
        >>> float((kos.labels_ == truth).mean()), kos.n_iter_
        (0.864, 12)

    On a handful of items the messages can oscillate between two sign patterns (the
    iteration's dominant eigenvalue is then negative); KOS is meant for many items.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "max_iter": interval(0, None, integer=True),
        "tol": interval(0, None),
    }

    def __init__(
        self,
        *,
        max_iter: int = 100,
        tol: float = 1e-6,
        random_state: int | np.random.Generator | None = 0,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def _tie_random_state(self) -> None:
        """Ties go to the lowest class index: ``random_state`` seeds only the start."""
        return None

    def _validate_data(self, cl: CrowdLabels) -> None:
        if cl.n_classes != 2:
            raise ValueError(
                f"KOS needs binary labels (2 classes); got {cl.n_classes} classes "
                f"{list(cl.classes)[:5]}. Use DawidSkene or MACE for more classes."
            )

    def _init_messages(self, cl: CrowdLabels) -> np.ndarray:
        """Starting annotator messages ``y_{j→i}``, one per label, drawn from ``N(1, 1)``."""
        return check_random_state(self.random_state).normal(1.0, 1.0, size=cl.n_labels)

    def _fit(self, cl: CrowdLabels, gold: np.ndarray | None) -> None:
        a = np.where(cl.labels == 1, 1.0, -1.0)
        if gold is not None:
            # A gold item speaks with certainty: its messages to the annotators are ±1 with
            # the largest possible weight, whatever its other labels say.
            known = gold[cl.items] >= 0
            gold_sign = np.where(gold[cl.items] == 1, 1.0, -1.0)
        y = self._init_messages(cl)
        changes: list[float] = []
        converged = False
        n_iter = 0
        for iteration in range(1, self.max_iter + 1):
            n_iter = iteration
            m = a * y
            x = np.bincount(cl.items, weights=m, minlength=cl.n_items)[cl.items] - m
            if gold is not None:
                x = np.where(known, gold_sign * max(float(np.abs(x).max()), 1.0), x)
            m = a * x
            y_new = np.bincount(cl.annotators, weights=m, minlength=cl.n_annotators)
            y_new = y_new[cl.annotators] - m
            scale = float(np.abs(y_new).max())
            if scale > 0:
                y_new /= scale
            changes.append(float(np.abs(y_new - y).max()))
            y = y_new
            if changes[-1] <= self.tol:
                converged = True
                break
        if self.max_iter > 0 and not converged:
            warnings.warn(
                f"KOS did not converge in max_iter={self.max_iter} iterations (last message "
                f"change {changes[-1]:.2e} > tol={self.tol}). Increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=3,
            )
        scores = np.bincount(cl.items, weights=a * y, minlength=cl.n_items)
        if gold is not None:
            g = gold >= 0
            scores[g] = np.where(gold[g] == 1, 1.0, -1.0) * max(float(np.abs(scores).max()), 1.0)
        # Annotator reliability: Σ_i A_ij x_{i→j}, the item messages of the last iteration.
        m = a * y
        x = np.bincount(cl.items, weights=m, minlength=cl.n_items)[cl.items] - m
        rel = np.bincount(cl.annotators, weights=a * x, minlength=cl.n_annotators)
        top = float(np.abs(rel).max())
        self.reliabilities_ = rel / top if top > 0 else rel
        self.scores_ = scores
        self.posteriors_ = self._decide(scores)
        self.message_changes_ = changes
        self.n_iter_ = n_iter if self.max_iter > 0 else 0
        self.converged_ = converged
        self.log_likelihoods_: list[float] = []

    @staticmethod
    def _decide(scores: np.ndarray) -> np.ndarray:
        post = np.empty((len(scores), 2))
        post[:, 1] = np.where(scores > 0, 1.0, np.where(scores < 0, 0.0, 0.5))
        post[:, 0] = 1.0 - post[:, 1]
        return post

    def _predict_proba(self, cl: CrowdLabels) -> np.ndarray:
        # New items: each annotator speaks with their overall reliability.
        a = np.where(cl.labels == 1, 1.0, -1.0)
        w = self.reliabilities_[cl.annotators]
        return self._decide(np.bincount(cl.items, weights=a * w, minlength=cl.n_items))
