"""Base classes shared by the truth-inference estimators."""

from __future__ import annotations

import sys
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from crowdmed._params import ParamsMixin
from crowdmed._text import short_list
from crowdmed._validation import check_labels, check_params, check_random_state, interval
from crowdmed.data.labels import MISSING, CrowdLabels
from crowdmed.exceptions import ConvergenceWarning, NotFittedError

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

__all__ = ["BaseAggregator", "EMAggregator", "argmax_ties"]

#: Floor for probabilities before a logarithm (the value crowd-kit uses).
EPS = 1e-10


def argmax_ties(posteriors: np.ndarray, random_state: Any = None) -> np.ndarray:
    """Most probable class of each row, with a documented tie rule.

    Classes whose posterior is within ``1e-12`` of the row maximum are tied. With
    ``random_state=None`` the lowest tied class index wins; with a seed or Generator one of the
    tied classes is drawn uniformly.

    Args:
        posteriors: Float array of shape ``(n_items, n_classes)``.
        random_state: ``None`` (lowest index), an int seed, or a ``numpy.random.Generator``.

    Returns:
        Integer array of shape ``(n_items,)``.

    Examples:
        >>> argmax_ties(np.array([[0.5, 0.5], [0.2, 0.8]]))
        array([0, 1])
    """
    p = np.asarray(posteriors, dtype=np.float64)
    tied = p >= p.max(axis=1, keepdims=True) - 1e-12
    if random_state is None:
        return np.argmax(tied, axis=1).astype(np.int64)
    rng = check_random_state(random_state)
    score = np.where(tied, rng.random(p.shape), -1.0)
    return np.argmax(score, axis=1).astype(np.int64)


class BaseAggregator(ParamsMixin, ABC):
    """Common API of every truth-inference estimator (sklearn-style).

    Subclasses store their keyword-only hyperparameters unchanged in ``__init__`` and check
    them in :meth:`fit` against ``_parameter_constraints``.
    """

    # ------------------------------------------------------------------ fitting
    def _check_params(self) -> None:
        check_params(self, self._parameter_constraints)

    def _check_gold(self, cl: CrowdLabels, gold: npt.ArrayLike | None) -> np.ndarray | None:
        if gold is None:
            return None
        g = np.asarray(gold)
        if g.shape != (cl.n_items,):
            raise ValueError(
                f"`gold` must have shape (n_items,) = ({cl.n_items},); got {g.shape}. Use -1 "
                "for items without a gold label."
            )
        if g.dtype.kind == "f" and np.isnan(g).any():
            raise ValueError("`gold` must not contain NaN; use -1 for items without a gold label.")
        g = g.astype(np.int64)
        bad = (g < MISSING) | (g >= cl.n_classes)
        if bad.any():
            raise ValueError(
                f"`gold` must lie in -1..{cl.n_classes - 1}; got {short_list(np.unique(g[bad]))}."
            )
        return g if (g >= 0).any() else None

    def fit(
        self,
        labels: Any,
        *,
        n_classes: int | None = None,
        gold: npt.ArrayLike | None = None,
        callback: Callable[[int, float], None] | None = None,
    ) -> Self:
        """Fit the model to the annotators' labels.

        Args:
            labels: A :class:`~crowdmed.data.CrowdLabels`, an integer array of shape
                ``(n_items, n_annotators)`` where ``-1`` marks a missing annotation, or a long
                ``DataFrame`` with ``item, annotator, label`` columns.
            n_classes: Number of classes ``K``; inferred from the labels when omitted.
            gold: Integer array of shape ``(n_items,)`` with known true classes of gold
                items, ``-1`` elsewhere. Gold items are clamped to their class during EM.
                ``labels.gold`` is *not* used implicitly, so gold kept for evaluation never
                leaks into the fit.
            callback: Called after every EM iteration as ``callback(iteration,
                log_likelihood)`` (e.g. to drive a progress bar); not called by models
                without iterations.

        Returns:
            The fitted estimator.
        """
        self._check_params()
        self._callback = callback
        cl = check_labels(labels, n_classes=n_classes, min_classes=self._min_classes)
        self._validate_data(cl)
        g = self._check_gold(cl, gold)
        self.n_items_ = cl.n_items
        self.n_annotators_ = cl.n_annotators
        self.n_classes_ = cl.n_classes
        self.classes_ = cl.classes
        self.item_ids_ = cl.item_ids
        self.annotator_ids_ = cl.annotator_ids
        try:
            self._fit(cl, g)
        finally:
            del self._callback
        self.labels_ = argmax_ties(self.posteriors_, self._tie_random_state())
        return self

    _min_classes: ClassVar[int] = 2
    posteriors_: np.ndarray
    labels_: np.ndarray

    def _validate_data(self, cl: CrowdLabels) -> None:
        """Model-specific checks of the labels (e.g. binary only)."""

    def _tie_random_state(self) -> Any:
        seed = getattr(self, "random_state", None)
        if isinstance(seed, np.random.Generator):
            return seed
        return None if seed is None else np.random.default_rng(seed)

    @abstractmethod
    def _fit(self, cl: CrowdLabels, gold: np.ndarray | None) -> None:
        """Set ``posteriors_`` and the model's fitted attributes."""

    def fit_predict_proba(self, labels: Any, **kwargs: Any) -> np.ndarray:
        """Fit and return ``posteriors_``, shape ``(n_items, n_classes)``.

        Args:
            labels: See :meth:`fit`.
            **kwargs: ``n_classes`` and ``gold``, as in :meth:`fit`.
        """
        return self.fit(labels, **kwargs).posteriors_

    def fit_predict(self, labels: Any, **kwargs: Any) -> np.ndarray:
        """Fit and return ``labels_``, shape ``(n_items,)``.

        Args:
            labels: See :meth:`fit`.
            **kwargs: ``n_classes`` and ``gold``, as in :meth:`fit`.
        """
        return self.fit(labels, **kwargs).labels_

    # ------------------------------------------------------------------ prediction
    def _check_is_fitted(self) -> None:
        if not hasattr(self, "posteriors_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first."
            )

    def _check_new_labels(self, labels: Any) -> CrowdLabels:
        self._check_is_fitted()
        cl = check_labels(labels, n_classes=self.n_classes_, min_classes=1)
        if cl.n_annotators != self.n_annotators_:
            raise ValueError(
                f"`labels` must come from the {self.n_annotators_} annotators seen in fit; got "
                f"{cl.n_annotators} annotators. Keep the annotator columns of the fit."
            )
        return cl

    def predict_proba(self, labels: Any) -> np.ndarray:
        """Posteriors for new items labelled by the fitted annotators (an E-step).

        Args:
            labels: Labels of new items by the same annotators, in any accepted form.

        Returns:
            Float array of shape ``(n_items, n_classes)``; rows sum to 1.
        """
        cl = self._check_new_labels(labels)
        return self._predict_proba(cl)

    @abstractmethod
    def _predict_proba(self, cl: CrowdLabels) -> np.ndarray:
        """Posteriors of new items with the fitted parameters."""

    def predict(self, labels: Any) -> np.ndarray:
        """Most probable class of new items, shape ``(n_items,)`` (ties as in ``labels_``)."""
        return argmax_ties(self.predict_proba(labels), self._tie_random_state())


def _row_max(x: np.ndarray) -> np.ndarray:
    """Maximum of each row of a narrow array, 0 where it is not finite, shape ``(n,)``.

    Few classes: element-wise passes over the columns beat a reduction along a short axis.
    """
    m = x[:, 0].copy()
    for k in range(1, x.shape[1]):
        np.maximum(m, x[:, k], out=m)
    m[~np.isfinite(m)] = 0.0
    return m


def row_logsumexp(x: np.ndarray) -> np.ndarray:
    """``log Σ_k exp(x[:, k])`` per row, shape ``(n, 1)``, shifted by the row maximum.

    A plain NumPy version: ``scipy.special.logsumexp`` is several times slower on the tall,
    narrow arrays of an E-step and dominated the time of a Dawid–Skene iteration.
    """
    if x.shape[1] > 16:
        m = x.max(axis=1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        return m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    m = _row_max(x)
    total = np.zeros_like(m)
    for k in range(x.shape[1]):
        total += np.exp(x[:, k] - m)
    return (m + np.log(total))[:, None]


def normalize_log(log_joint: np.ndarray) -> tuple[np.ndarray, float]:
    """Posteriors and total log-evidence from unnormalised log joint probabilities.

    Works in log space: products of many probabilities underflow to zero, so each row is
    shifted by its maximum before exponentiating (the log-sum-exp trick). The shifted
    exponentials are computed once and serve both the evidence and the posteriors.
    """
    n, k = log_joint.shape
    if k > 16 or n == 0:
        lse = row_logsumexp(log_joint)
        return np.exp(log_joint - lse), float(lse.sum())
    m = _row_max(log_joint)
    post = log_joint - m[:, None]
    np.exp(post, out=post)
    total = post[:, 0].copy()
    for j in range(1, k):
        total += post[:, j]
    post /= total[:, None]
    return post, float((m + np.log(total)).sum())


class EMAggregator(BaseAggregator):
    """Expectation–maximisation skeleton shared by the latent-class models.

    The loop alternates an M-step (parameters from posteriors) and an E-step (posteriors from
    parameters), starting from the soft majority vote, so ``max_iter=0`` returns the majority
    vote and every fit ends with an E-step: ``posteriors_`` always belongs to the fitted
    parameters. ``log_likelihoods_[t]`` is the log-likelihood of the labels under the
    parameters of iteration ``t`` plus the log-density of the parameter prior (the smoothing
    pseudo-counts); EM never decreases it. EM stops when the gain per annotation falls below
    ``tol``.
    """

    _parameter_constraints: ClassVar[Mapping[str, Callable[[Any], str | None]]] = {
        "max_iter": interval(0, None, integer=True),
        "tol": interval(0, None),
    }

    max_iter: int
    tol: float

    @abstractmethod
    def _m_step(self, cl: CrowdLabels, posteriors: np.ndarray) -> None:
        """Update the parameters from the posteriors."""

    @abstractmethod
    def _log_joint(self, cl: CrowdLabels) -> np.ndarray:
        """Log of P(true class, labels of item) under the current parameters, (n_items, K)."""

    def _log_param_prior(self) -> float:
        """Log prior density of the current parameters (up to a constant)."""
        return 0.0

    def _zero_iter_params(self, cl: CrowdLabels, posteriors: np.ndarray) -> None:
        """Parameters reported when ``max_iter=0``: one M-step from the starting posteriors."""
        self._m_step(cl, posteriors)

    def _init_posteriors(self, cl: CrowdLabels) -> np.ndarray:
        votes = cl.vote_counts()
        return votes / votes.sum(axis=1, keepdims=True)

    def _e_step(self, cl: CrowdLabels, gold: np.ndarray | None) -> tuple[np.ndarray, float]:
        log_joint = self._log_joint(cl)
        if gold is None:
            return normalize_log(log_joint)
        # Gold items are observed: their term is the joint of the known class.
        known = gold >= 0
        post, _ = normalize_log(log_joint)
        post[known] = 0.0
        post[known, gold[known]] = 1.0
        ll = float(row_logsumexp(log_joint[~known]).sum()) if (~known).any() else 0.0
        ll += float(log_joint[known, gold[known]].sum())
        return post, ll

    def _fit(self, cl: CrowdLabels, gold: np.ndarray | None) -> None:
        post = self._init_posteriors(cl)
        if gold is not None:
            known = gold >= 0
            post[known] = 0.0
            post[known, gold[known]] = 1.0
        history: list[float] = []
        converged = False
        n_iter = 0
        if self.max_iter == 0:
            self._zero_iter_params(cl, post)
        for n_iter in range(1, self.max_iter + 1):
            self._m_step(cl, post)
            post, ll = self._e_step(cl, gold)
            history.append(ll + self._log_param_prior())
            if self._callback is not None:
                self._callback(n_iter, history[-1])
            if len(history) > 1 and (history[-1] - history[-2]) / cl.n_labels < self.tol:
                converged = True
                break
        if self.max_iter > 0 and not converged:
            last_gain = (
                (history[-1] - history[-2]) / cl.n_labels if len(history) > 1 else float("nan")
            )
            warnings.warn(
                f"{type(self).__name__} did not converge in max_iter={self.max_iter} "
                f"iterations (last gain per label {last_gain:.2e} > tol={self.tol}). "
                "Increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=3,
            )
        self.posteriors_ = post
        self.log_likelihoods_ = history
        self.n_iter_ = n_iter if self.max_iter > 0 else 0
        self.converged_ = converged

    def _predict_proba(self, cl: CrowdLabels) -> np.ndarray:
        return normalize_log(self._log_joint(cl))[0]
