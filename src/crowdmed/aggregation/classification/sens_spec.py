"""Binary sensitivity/specificity model (Raykar et al.) with AggNet's quiz-based trust prior."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from crowdmed._text import short_list
from crowdmed._validation import check_option, interval
from crowdmed.aggregation.base import EPS, EMAggregator
from crowdmed.aggregation.classification.dawid_skene import DawidSkene
from crowdmed.data.labels import CrowdLabels

__all__ = [
    "BinarySensSpec",
    "SensSpecInit",
    "TrustPrior",
    "binary_majority_vote",
    "sens_spec_m_step",
]

#: Soft counts at or below this leave α (or β) unknown: it is set to 0.5.
_UNKNOWN = 1e-9


class TrustPrior(str, Enum):
    """How an annotator's quiz accuracy ``γ`` enters the M-step.

    ``"aggnet"`` is AggNet's trust prior (Albarqouni et al. 2016, eq. 8): the agreeing counts
    are multiplied by ``1 + τγ``. ``"beta"`` adds Beta pseudo-counts ``τγ`` of ``τ`` instead
    (a maximum a posteriori estimate that pulls α and β towards ``γ``).
    """

    AGGNET = "aggnet"
    BETA = "beta"


def _check_prior(value: Any) -> str | None:
    check_option(value, TrustPrior, "prior")  # raises with a "did you mean" hint
    return None


class SensSpecInit(str, Enum):
    """Starting aggregated labels of EM.

    ``"aggnet"``: the eq. 2 majority vote as hard labels (``ȳ ≥ 0.5 → 1``, ties positive),
    as AggNet initialises its aggregation layer. ``"majority_vote"``: the soft vote (each
    item's share of positive labels), as :class:`DawidSkene` starts.
    """

    AGGNET = "aggnet"
    MAJORITY_VOTE = "majority_vote"


def _check_init(value: Any) -> str | None:
    check_option(value, SensSpecInit, "init")
    return None


def binary_majority_vote(labels: np.ndarray) -> np.ndarray:
    """AggNet's majority vote of binary labels (Albarqouni et al. 2016, eq. 2).

    ``μ = 1`` when the mean label ``ȳ`` of the annotators who labelled the item is at least
    0.5, else ``0``: a tie goes to the positive class.

    Args:
        labels: Integer array of shape ``(n_items, n_annotators)`` of 0/1 labels; ``-1``
            marks a missing annotation.

    Returns:
        Integer array of shape ``(n_items,)``; ``-1`` for an item nobody labelled.

    Examples:
        >>> binary_majority_vote(np.array([[1, 0], [0, 0], [1, -1], [-1, -1]]))
        array([ 1,  0,  1, -1])
    """
    y = np.asarray(labels)
    obs = y >= 0
    n = obs.sum(axis=1)
    ones = (y == 1).sum(axis=1)
    # ȳ ≥ 0.5  ⇔  2·ones ≥ n (integer arithmetic: no rounding at the tie)
    out = (2 * ones >= n).astype(np.int64)
    out[n == 0] = -1
    return out


def sens_spec_m_step(
    counts: np.ndarray,
    quiz_accuracy: np.ndarray,
    tau: float,
    *,
    prior: str | TrustPrior = "aggnet",
) -> tuple[np.ndarray, np.ndarray]:
    """M-step of the binary model: α and β from soft counts and the quiz trust prior.

    With ``TP = counts[:, 1, 1]``, ``FN = counts[:, 1, 0]``, ``TN = counts[:, 0, 0]`` and
    ``FP = counts[:, 0, 1]``:

    - ``prior="aggnet"`` (AggNet's trust prior, Albarqouni et al. 2016, eq. 8):
      ``α = (1 + τγ)·TP / ((1 + τγ)·TP + FN)``, ``β = (1 + τγ)·TN / ((1 + τγ)·TN + FP)``;
      without a quiz (``γ`` NaN) or with ``τ = 0`` this is eq. 6, ``α = TP / (TP + FN)``.
      Where the annotator labelled no item of the class (``TP + FN = 0``, resp.
      ``TN + FP = 0``) the value is unknown and set to 0.5, quiz or not, as in the paper.
    - ``prior="beta"`` (Beta pseudo-counts, not the paper's form):
      ``α = (TP + τγ) / (TP + FN + τ)``, ``β = (TN + τγ) / (TN + FP + τ)``; an annotator with
      a quiz but no labels of the class gets ``γ``, one without either gets 0.5.

    Args:
        counts: Float array of shape ``(n_annotators, 2, 2)``; ``counts[a, k, l]`` is the
            soft number of items of true class ``k`` that annotator ``a`` labelled ``l``.
        quiz_accuracy: Float array of shape ``(n_annotators,)``; ``NaN`` marks no quiz.
        tau: Strength ``τ`` of the trust prior (``>= 0``).
        prior: ``"aggnet"`` or ``"beta"`` (see above).

    Returns:
        ``(sensitivity, specificity)``, each of shape ``(n_annotators,)``, in ``(0, 1)``.

    Examples:
        Eq. 8 with ``τ = 10``, ``γ = 0.5``, ``TP = 8``, ``FN = 2``: ``6·8 / (6·8 + 2) = 0.96``
        (and ``β = 6·9 / (6·9 + 1)``); the second annotator labelled no positive item, so
        its α is unknown (0.5):

        >>> counts = np.array([[[9.0, 1.0], [2.0, 8.0]], [[3.0, 0.0], [0.0, 0.0]]])
        >>> sens, spec = sens_spec_m_step(counts, np.array([0.5, 0.9]), 10.0)
        >>> sens.round(4), spec.round(4)
        (array([0.96, 0.5 ]), array([0.9818, 1.    ]))
        >>> sens, _ = sens_spec_m_step(counts, np.array([0.5, 0.9]), 10.0, prior="beta")
        >>> sens.round(2)
        array([0.65, 0.9 ])
    """
    p = check_option(prior, TrustPrior, "prior")
    gamma = np.asarray(quiz_accuracy, dtype=np.float64)
    has_quiz = ~np.isnan(gamma)
    tp, fn = counts[:, 1, 1], counts[:, 1, 0]
    tn, fp = counts[:, 0, 0], counts[:, 0, 1]

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(den > _UNKNOWN, num / np.where(den > _UNKNOWN, den, 1.0), 0.5)
        return np.clip(out, EPS, 1 - EPS)

    if p is TrustPrior.AGGNET:
        boost = 1.0 + np.where(has_quiz, tau * np.nan_to_num(gamma), 0.0)
        # eq. 8 left undefined (0.5) when the class is absent from the annotator's labels
        sens = np.where(tp + fn > _UNKNOWN, ratio(boost * tp, boost * tp + fn), 0.5)
        spec = np.where(tn + fp > _UNKNOWN, ratio(boost * tn, boost * tn + fp), 0.5)
        return sens, spec
    prior_hits = np.where(has_quiz, tau * np.nan_to_num(gamma), 0.0)
    prior_n = np.where(has_quiz, tau, 0.0)
    sens = ratio(tp + prior_hits, tp + fn + prior_n)
    spec = ratio(tn + prior_hits, tn + fp + prior_n)
    return sens, spec


class BinarySensSpec(DawidSkene):
    """Binary latent-class model with per-annotator sensitivity α and specificity β.

    The model of Raykar et al. as used in AggNet (Albarqouni et al. 2016, section II-B):
    annotator ``j`` says 1 for a positive item with probability ``α_j`` and 0 for a negative
    item with probability ``β_j``.

    - **Initialisation**: with ``init="aggnet"`` (the paper's) the aggregated labels ``μ_i``
      start as the majority vote of eq. 2 (``ȳ ≥ 0.5 → 1``, ties positive,
      :func:`binary_majority_vote`) and α, β are computed from them by one M-step;
      ``max_iter=0`` stops there (AggNet's initialisation of its aggregation layer). The
      default ``init="majority_vote"`` starts from the soft vote instead: on small crowds
      the hard start can leave a good annotator with ``β = 1`` after the first M-step, after
      which a single one of their positive votes decides an item.
    - **E-step** (eq. 4): ``μ_i = a_i p / (a_i p + b_i (1 - p))`` with the prevalence ``p``
      in place of the network's output, ``a_i = Π_j α_j^{y_ij} (1-α_j)^{1-y_ij}``,
      ``b_i = Π_j β_j^{1-y_ij} (1-β_j)^{y_ij}``.
    - **M-step** (eq. 6, with the trust prior of eq. 8 when annotator ``j``'s quiz accuracy
      ``γ_j`` is known): ``α_j = (1 + τγ_j)·TP / ((1 + τγ_j)·TP + FN)`` and
      ``β_j = (1 + τγ_j)·TN / ((1 + τγ_j)·TN + FP)`` with the soft counts
      ``TP = Σ_i μ_i y_ij`` etc. (``prior="aggnet"``, AggNet's trust prior). α or β of an
      annotator who labelled no item of that class is unknown and set to 0.5, also with a
      quiz. ``prior="beta"`` uses Beta pseudo-counts instead (see :func:`sens_spec_m_step`).

    With ``prior="aggnet"`` and a quiz, eq. 8 is not the M-step of a likelihood, so
    ``log_likelihoods_`` (the plain log-likelihood of the labels) need not increase; with
    ``prior="beta"`` it is MAP-EM and ``log_likelihoods_`` includes the log-prior and never
    decreases.

    Args:
        max_iter: Maximum number of EM iterations.
        tol: Stop when the change of the log-likelihood per annotation is below ``tol``.
        tau: Strength ``τ`` of the trust prior; the paper validates ``τ ∈ [0.1, 1]``; ``0``
            ignores the quiz.
        prior: ``"aggnet"`` (eq. 8, AggNet's trust prior) or ``"beta"`` (pseudo-counts).
        init: ``"majority_vote"`` (soft vote) or ``"aggnet"`` (eq. 2 hard vote).
        random_state: Seed or ``numpy.random.Generator`` for tie-breaking of ``labels_``.

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

        Annotator 2 (``γ = 0.5``, τ = 0.5) has TP = FN = 1: ``α = 1.25 / (1.25 + 1)``:

        >>> m.sensitivity_.round(2), m.specificity_.round(2)
        (array([1.  , 1.  , 0.56]), array([1.  , 1.  , 0.56]))
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        **EMAggregator._parameter_constraints,
        "tau": interval(0, None),
        "prior": _check_prior,
        "init": _check_init,
    }

    def __init__(
        self,
        *,
        max_iter: int = 100,
        tol: float = 1e-6,
        tau: float = 0.5,
        prior: str = "aggnet",
        init: str = "majority_vote",
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.tau = tau
        self.prior = prior
        self.init = init
        self.random_state = random_state

    # DawidSkene's hyperparameter this model does not have.
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

    def _init_posteriors(self, cl: CrowdLabels) -> np.ndarray:
        """Soft vote, or (``init="aggnet"``) the eq. 2 vote one-hot (no labels: 0.5 each)."""
        if check_option(self.init, SensSpecInit, "init") is SensSpecInit.MAJORITY_VOTE:
            return super()._init_posteriors(cl)
        votes = cl.vote_counts()  # (n_items, 2)
        n = votes.sum(axis=1)
        mu = (2 * votes[:, 1] >= n).astype(np.float64)
        mu[n == 0] = 0.5
        return np.column_stack([1.0 - mu, mu])

    def _m_step(self, cl: CrowdLabels, posteriors: np.ndarray) -> None:
        counts = self._counts(cl, posteriors)  # counts[a, k, l]
        self.sensitivity_, self.specificity_ = sens_spec_m_step(
            counts, self.quiz_accuracy_, self.tau, prior=self.prior
        )
        a, b = self.sensitivity_, self.specificity_
        self.confusion_ = np.stack([np.stack([b, 1 - b], -1), np.stack([1 - a, a], -1)], axis=1)
        self.prevalence_ = float(np.clip(posteriors[:, 1].mean(), EPS, 1 - EPS))
        self.priors_ = np.array([1 - self.prevalence_, self.prevalence_])

    def _log_param_prior(self) -> float:
        # eq. 8 (prior="aggnet") reweights counts and has no prior density: plain likelihood
        if check_option(self.prior, TrustPrior, "prior") is TrustPrior.AGGNET:
            return 0.0
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
