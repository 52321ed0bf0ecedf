"""Zero-based skill: a weighted vote whose weights chase each annotator's agreement with it."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np

from crowdmed._validation import interval
from crowdmed.aggregation.base import argmax_ties
from crowdmed.aggregation.classification.majority_vote import MajorityVote, soft_confusion
from crowdmed.data.labels import CrowdLabels
from crowdmed.exceptions import ConvergenceWarning

__all__ = ["ZeroBasedSkill"]

#: Added to the starting skill ``1 / K`` (crowd-kit's ``eps``).
_INIT_OFFSET = 1e-5


class ZeroBasedSkill(MajorityVote):
    """Zero-based skill (ZBS): weighted majority vote with skills learnt by gradient steps.

    All annotators start with skill ``1/K + 1e-5``. Each iteration takes the vote weighted by
    the skills, measures each annotator's accuracy ``acc_a`` against its labels, and moves the
    skills a step towards it: ``skill_a ← skill_a + lr · (acc_a - skill_a)``, a gradient step
    on the squared error between skill and accuracy. The learning rate starts at ``lr_init``
    and is multiplied by ``lr_reduce_factor`` at every ``lr_steps_to_reduce``-th iteration.
    ``posteriors_`` are the vote shares weighted by the final skills.

    crowd-kit's ``ZeroBasedSkill`` always runs all its iterations. Here the loop stops as soon
    as no skill moves by more than ``tol``: from then on the labels and accuracies no longer
    change, so the result is the one crowd-kit reaches after all its iterations.

    Args:
        max_iter: Maximum number of skill updates.
        tol: Stop when no skill changes by more than ``tol`` in an iteration.
        lr_init: Initial learning rate.
        lr_steps_to_reduce: The learning rate is reduced at every iteration whose number is a
            multiple of this.
        lr_reduce_factor: Factor applied to the learning rate at each reduction.
        random_state: Seed or ``numpy.random.Generator`` for tie-breaking; ``None`` for the
            lowest class index (crowd-kit's rule).

    Attributes:
        skills_ (ndarray of shape (n_annotators,)): Final skills (≈ accuracy against the
            consensus).
        weights_ (ndarray of shape (n_annotators,)): Vote weights (equal to ``skills_``).
        posteriors_ (ndarray of shape (n_items, n_classes)): Vote shares weighted by
            ``skills_``.
        labels_ (ndarray of shape (n_items,)): Argmax of ``posteriors_``.
        confusion_ (ndarray of shape (n_annotators, n_classes, n_classes)): Each annotator's
            confusion against the weighted vote (see conventions).
        skill_changes_ (list[float]): Largest skill change of each iteration.
        n_iter_ (int): Number of iterations run.
        converged_ (bool): Whether ``tol`` was reached.
        log_likelihoods_ (list[float]): Always empty (the model has no likelihood).

    References:
        crowd-kit ``ZeroBasedSkill``: Ustalov, Pavlichenko & Tseitlin (2024). Learning from
        crowds with Crowd-Kit. JOSS 9(96), 6227. https://doi.org/10.21105/joss.06227

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 1]])
        >>> zbs = ZeroBasedSkill().fit(labels)
        >>> zbs.skills_
        array([1.  , 0.75, 0.5 ])
        >>> zbs.labels_
        array([0, 1, 0, 1])
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "max_iter": interval(0, None, integer=True),
        "tol": interval(0, None),
        "lr_init": interval(0, None, closed="right"),
        "lr_steps_to_reduce": interval(1, None, integer=True),
        "lr_reduce_factor": interval(0, 1, closed="right"),
    }
    _min_classes: ClassVar[int] = 2

    def __init__(
        self,
        *,
        max_iter: int = 100,
        tol: float = 1e-10,
        lr_init: float = 1.0,
        lr_steps_to_reduce: int = 20,
        lr_reduce_factor: float = 0.5,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.lr_init = lr_init
        self.lr_steps_to_reduce = lr_steps_to_reduce
        self.lr_reduce_factor = lr_reduce_factor
        self.random_state = random_state

    def _fit(self, cl: CrowdLabels, gold: np.ndarray | None) -> None:
        rng = self._tie_random_state()
        n = cl.labels_per_annotator()
        active = n > 0
        skills = np.full(cl.n_annotators, 1.0 / cl.n_classes + _INIT_OFFSET)
        known = None if gold is None else gold >= 0
        gold_class = None if gold is None else gold[gold >= 0]
        lr = float(self.lr_init)
        changes: list[float] = []
        converged = False
        n_iter = 0
        for n_iter in range(1, self.max_iter + 1):
            if n_iter % self.lr_steps_to_reduce == 0:
                lr *= self.lr_reduce_factor
            consensus = argmax_ties(self._votes(cl, skills), rng)
            if known is not None:
                consensus[known] = gold_class
            hits = np.bincount(
                cl.annotators,
                weights=(consensus[cl.items] == cl.labels).astype(np.float64),
                minlength=cl.n_annotators,
            )
            accuracy = np.where(active, hits / np.maximum(n, 1), skills)
            new = skills + lr * (accuracy - skills)
            changes.append(float(np.abs(new - skills).max()))
            skills = new
            if changes[-1] <= self.tol:
                converged = True
                break
        if self.max_iter > 0 and not converged:
            warnings.warn(
                f"ZeroBasedSkill did not converge in max_iter={self.max_iter} iterations "
                f"(last skill change {changes[-1]:.2e} > tol={self.tol}). Increase max_iter "
                "or tol.",
                ConvergenceWarning,
                stacklevel=3,
            )
        self.skills_ = skills
        self.weights_ = skills
        post = self._votes(cl, skills)
        if known is not None:
            post[known] = 0.0
            post[known, gold_class] = 1.0
        self.posteriors_ = post
        self.confusion_ = soft_confusion(cl, post)
        self.skill_changes_ = changes
        self.n_iter_ = n_iter if self.max_iter > 0 else 0
        self.converged_ = converged
        self.log_likelihoods_: list[float] = []
