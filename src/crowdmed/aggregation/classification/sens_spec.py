"""Binary sensitivity/specificity model (Raykar et al.) with AggNet's quiz-based trust prior."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from crowdmed._text import short_list
from crowdmed._validation import interval
from crowdmed.aggregation.base import EPS, EMAggregator
from crowdmed.aggregation.classification.dawid_skene import DawidSkene
from crowdmed.data.labels import CrowdLabels

__all__ = ["BinarySensSpec", "sens_spec_m_step"]


def sens_spec_m_step(
    counts: np.ndarray, quiz_accuracy: np.ndarray, tau: float
) -> tuple[np.ndarray, np.ndarray]:
    """M-step of the binary model with AggNet's trust prior.

    Args:
        counts: Float array of shape ``(n_annotators, 2, 2)``; ``counts[a, k, l]`` is the
            soft number of items of true class ``k`` that annotator ``a`` labelled ``l``.
        quiz_accuracy: Float array of shape ``(n_annotators,)``; ``NaN`` marks no quiz.
        tau: Strength ``τ`` of the trust prior.

    Returns:
        ``(sensitivity, specificity)``, each of shape ``(n_annotators,)``, in ``(0, 1)``;
        0.5 where the labels and quiz leave a value undetermined.

    Examples:
        >>> counts = np.array([[[8.0, 2.0], [1.0, 9.0]], [[0.0, 0.0], [0.0, 3.0]]])
        >>> sens, spec = sens_spec_m_step(counts, np.array([np.nan, np.nan]), 0.0)
        >>> sens.round(2), spec.round(2)
        (array([0.9, 1. ]), array([0.8, 0.5]))
    """
    gamma = np.asarray(quiz_accuracy, dtype=np.float64)
    has_quiz = ~np.isnan(gamma)
    prior_hits = np.where(has_quiz, tau * np.nan_to_num(gamma), 0.0)
    prior_n = np.where(has_quiz, tau, 0.0)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(den > EPS, num / np.where(den > EPS, den, 1.0), 0.5)
        return np.clip(out, EPS, 1 - EPS)

    sens = ratio(counts[:, 1, 1] + prior_hits, counts[:, 1].sum(axis=1) + prior_n)
    spec = ratio(counts[:, 0, 0] + prior_hits, counts[:, 0].sum(axis=1) + prior_n)
    return sens, spec


class BinarySensSpec(DawidSkene):
    """Binary latent-class model with per-annotator sensitivity α and specificity β.

    The model of Raykar et al. as used in AggNet: annotator ``j`` says 1 for a positive item
    with probability ``α_j`` and 0 for a negative item with probability ``β_j``. EM starts from
    the majority vote. When annotator ``j``'s quiz accuracy ``γ_j`` is known, the M-step adds
    AggNet's trust prior of ``τ·γ_j`` agreeing pseudo-counts out of ``τ``:

    ``α_j = (Σ_i μ_i y_ij + τ γ_j) / (Σ_i μ_i + τ)``,
    ``β_j = (Σ_i (1-μ_i)(1-y_ij) + τ γ_j) / (Σ_i (1-μ_i) + τ)``,

    where ``μ_i = P(z_i = 1 | labels)``. Where an annotator's labels (and quiz) leave α or β
    undetermined, it is set to 0.5.

    Args:
        max_iter: Maximum number of EM iterations.
        tol: Stop when the gain in log-likelihood per annotation is below ``tol``.
        tau: Strength ``τ`` of the trust prior (pseudo-counts); ``0`` ignores the quiz.
        random_state: Seed or ``numpy.random.Generator`` for tie-breaking.

    Attributes:
        sensitivity_ (ndarray of shape (n_annotators,)): α.
        specificity_ (ndarray of shape (n_annotators,)): β.
        prevalence_ (float): P(z = 1).
        confusion_ (ndarray of shape (n_annotators, 2, 2)): ``[[β, 1-β], [1-α, α]]``.
        priors_ (ndarray of shape (2,)): ``[1 - prevalence_, prevalence_]``.
        posteriors_, labels_, log_likelihoods_, n_iter_, converged_: As in :class:`DawidSkene`.

    References:
        Raykar, Yu, Zhao, Valadez, Florin, Bogoni & Moy (2010). Learning from crowds. JMLR 11.
        https://jmlr.org/papers/v11/raykar10a.html
        Albarqouni, Baur, Achilles, Belagiannis, Demirci & Navab (2016). AggNet: deep learning
        from crowds for mitosis detection in breast cancer histology images. IEEE TMI.
        https://doi.org/10.1109/TMI.2016.2528120

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[1, 1, 0], [0, 0, 0], [1, 1, 1], [0, 0, 1]])
        >>> m = BinarySensSpec().fit(labels, quiz_accuracy=[0.9, 0.9, 0.5])
        >>> m.labels_
        array([1, 0, 1, 0])
        >>> m.specificity_.round(2)
        array([0.92, 0.92, 0.5 ])
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        **EMAggregator._parameter_constraints,
        "tau": interval(0, None),
    }

    def __init__(
        self,
        *,
        max_iter: int = 100,
        tol: float = 1e-6,
        tau: float = 10.0,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.tau = tau
        self.random_state = random_state

    # DawidSkene's hyperparameters this model does not have.
    init = "majority_vote"
    smoothing = 0.0

    def fit(
        self,
        labels: Any,
        *,
        n_classes: int | None = None,
        gold: npt.ArrayLike | None = None,
        quiz_accuracy: npt.ArrayLike | None = None,
        callback: Callable[[int, float], None] | None = None,
    ) -> BinarySensSpec:
        """Fit the model.

        Args:
            labels: Binary labels in any accepted form; an integer array of shape
                ``(n_items, n_annotators)`` uses ``-1`` for a missing annotation.
            n_classes: Must be 2 when given.
            gold: Integer array of shape ``(n_items,)``; ``-1`` marks no gold label.
            quiz_accuracy: Float array of shape ``(n_annotators,)`` with each annotator's
                quiz accuracy ``γ``; ``NaN`` marks no quiz. Defaults to
                ``labels.quiz_accuracy`` for :class:`~crowdmed.data.CrowdLabels`.
            callback: Called after every EM iteration as ``callback(iteration,
                log_likelihood)``.

        Returns:
            The fitted estimator.
        """
        self._quiz = quiz_accuracy
        try:
            return super().fit(labels, n_classes=n_classes, gold=gold, callback=callback)
        finally:
            del self._quiz

    def _validate_data(self, cl: CrowdLabels) -> None:
        if cl.n_classes != 2:
            raise ValueError(
                f"BinarySensSpec needs binary labels (2 classes); got {cl.n_classes} classes "
                f"{short_list(cl.classes)}. Use DawidSkene for more classes."
            )
        quiz = self._quiz if self._quiz is not None else cl.quiz_accuracy
        if quiz is None:
            self.quiz_accuracy_ = np.full(cl.n_annotators, np.nan)
            return
        q = np.asarray(quiz, dtype=np.float64)
        if q.shape != (cl.n_annotators,):
            raise ValueError(
                f"`quiz_accuracy` must have shape (n_annotators,) = ({cl.n_annotators},); got "
                f"{q.shape}. Use NaN for annotators without a quiz."
            )
        bad = ~np.isnan(q) & ((q < 0) | (q > 1))
        if bad.any():
            raise ValueError(f"`quiz_accuracy` must lie in [0, 1]; got {q[bad][:5].tolist()}.")
        self.quiz_accuracy_ = q.copy()

    def _m_step(self, cl: CrowdLabels, posteriors: np.ndarray) -> None:
        counts = self._counts(cl, posteriors)  # counts[a, k, l]
        self.sensitivity_, self.specificity_ = sens_spec_m_step(
            counts, self.quiz_accuracy_, self.tau
        )
        a, b = self.sensitivity_, self.specificity_
        self.confusion_ = np.stack([np.stack([b, 1 - b], -1), np.stack([1 - a, a], -1)], axis=1)
        self.prevalence_ = float(np.clip(posteriors[:, 1].mean(), EPS, 1 - EPS))
        self.priors_ = np.array([1 - self.prevalence_, self.prevalence_])

    def _log_param_prior(self) -> float:
        g = self.quiz_accuracy_
        has = ~np.isnan(g)
        if not has.any() or self.tau == 0:
            return 0.0
        t, g = self.tau, g[has]
        a, b = self.sensitivity_[has], self.specificity_[has]
        return float(
            (t * g * np.log(a) + t * (1 - g) * np.log1p(-a)).sum()
            + (t * g * np.log(b) + t * (1 - g) * np.log1p(-b)).sum()
        )
