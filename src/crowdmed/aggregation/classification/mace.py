"""MACE: multi-annotator competence estimation (Hovy et al., 2013)."""

from __future__ import annotations

import warnings
from enum import Enum
from typing import Any, ClassVar, NamedTuple

import numpy as np

from crowdmed._validation import check_option, check_random_state, interval
from crowdmed.aggregation.base import EPS, BaseAggregator, normalize_log, row_logsumexp
from crowdmed.data.labels import CrowdLabels
from crowdmed.exceptions import ConvergenceWarning

__all__ = ["MACE"]


class Method(str, Enum):
    """How MACE updates the annotator parameters."""

    VB = "vb"
    EM = "em"


def _check_method(value: Any) -> str | None:
    check_option(value, Method, "method")
    return None


def _check_smoothing(value: Any) -> str | None:
    return None if value is None else interval(0, None)(value)


def dirichlet_kl(a: np.ndarray, b: np.ndarray) -> float:
    """Sum over rows of ``KL(Dir(a_r) || Dir(b_r))``; ``a`` and ``b`` of shape ``(n, K)``."""
    a0, b0 = a.sum(axis=1), b.sum(axis=1)
    from scipy.special import digamma, gammaln  # imported when used: slow to load

    kl = gammaln(a0) - gammaln(a).sum(axis=1) - gammaln(b0) + gammaln(b).sum(axis=1)
    kl += ((a - b) * (digamma(a) - digamma(a0)[:, None])).sum(axis=1)
    return float(kl.sum())


class _Weights(NamedTuple):
    """Annotator parameters as the E-step uses them (point values, or exp E[log] under VB)."""

    spam: np.ndarray  # (A,) P(spamming)
    know: np.ndarray  # (A,) P(not spamming)
    strategy: np.ndarray  # (A, K) label distribution when spamming


class MACE(BaseAggregator):
    """MACE: each annotator is either right or spamming from a favourite label distribution.

    The true class ``T_i`` is uniform. On each item annotator ``j`` spams with probability
    ``1 - θ_j`` and then draws the label from their strategy ``ξ_j``; otherwise they give
    ``T_i``. So ``P(label l | T = k) = (1 - θ_j) ξ_jl + θ_j [l = k]``. The E-step sums these
    log-probabilities over the labels (log space: products of many probabilities underflow)
    with ``np.bincount``; the expected spamming and strategy counts are closed-form per label,
    so an iteration costs ``O(n_labels · K)``.

    ``method="vb"`` (the paper's variational Bayes, crowd-kit's default) puts a
    ``Beta(beta, alpha)`` prior on ``θ_j`` and a symmetric ``Dirichlet(strategy_prior)`` prior on
    ``ξ_j``; the E-step uses ``exp E[log θ]`` and ``exp E[log ξ]`` and ``log_likelihoods_`` is the
    evidence lower bound (ELBO), which never decreases. ``method="em"`` is MAP-EM with
    ``smoothing`` pseudo-counts (``0.01 / K`` when ``None``, the paper's value) and
    ``log_likelihoods_`` is the log-likelihood plus the log-prior of the pseudo-counts.

    Each of ``n_restarts`` runs starts from parameters drawn from ``U(1, 2.5)`` and normalised
    (crowd-kit's start); the run with the highest final objective is kept.

    Differences from crowd-kit 1.4.2's ``MACE``: crowd-kit seeds every restart with the same
    ``random_state``, so its restarts are identical copies (here each restart draws new
    values); it ignores its ``smoothing`` argument (always ``0.01 / K``); it always runs
    ``n_iter`` iterations (here the loop stops when the gain per label is below ``tol``); it
    selects restarts by ``Σ log(P(labels_i) + 1e-8)`` computed with the E-step parameters, not
    by the ELBO; and it indexes its per-worker strategy counts in sorted worker and label order
    but its parameters in order of first appearance, which mixes up annotators unless the
    workers and labels of the input first appear in sorted order.

    Args:
        method: ``"vb"`` (variational Bayes) or ``"em"`` (MAP-EM).
        max_iter: Maximum number of iterations per restart.
        tol: Stop a restart when its objective gains less than ``tol`` per label.
        n_restarts: Number of random starts.
        alpha: Beta prior pseudo-count of spamming (``vb``).
        beta: Beta prior pseudo-count of not spamming (``vb``).
        strategy_prior: Dirichlet prior pseudo-count of each label in the strategy (``vb``).
        smoothing: Pseudo-count of every count in the ``em`` M-step; ``None`` for ``0.01 / K``.
        random_state: Seed or ``numpy.random.Generator`` for the starting parameters of
            the restarts; ties go to the lowest class index.

    Attributes:
        posteriors_ (ndarray of shape (n_items, n_classes)): P(true class | labels).
        labels_ (ndarray of shape (n_items,)): Argmax of ``posteriors_``.
        competence_ (ndarray of shape (n_annotators,)): ``θ``, the probability of not spamming
            (posterior mean under ``vb``).
        spamming_ (ndarray of shape (n_annotators,)): ``1 - competence_``.
        strategy_ (ndarray of shape (n_annotators, n_classes)): ``ξ``, the label distribution
            when spamming (posterior mean under ``vb``).
        confusion_ (ndarray of shape (n_annotators, n_classes, n_classes)): ``θ I + (1 - θ) ξ``
            (see conventions).
        priors_ (ndarray of shape (n_classes,)): The uniform class prior.
        log_likelihoods_ (list[float]): ELBO (``vb``) or penalised log-likelihood (``em``) of
            the kept restart, one value per iteration; never decreases.
        restart_objectives_ (list[float]): Final objective of each restart.
        n_iter_ (int): Iterations of the kept restart.
        converged_ (bool): Whether the kept restart reached ``tol``.

    References:
        Hovy, Berg-Kirkpatrick, Vaswani & Hovy (2013). Learning whom to trust with MACE.
        NAACL-HLT, 1120-1130. https://aclanthology.org/N13-1132

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 1, 1], [2, 2, 0]])
        >>> mace = MACE().fit(labels)
        >>> mace.labels_
        array([0, 1, 0, 1, 2])
        >>> bool(mace.competence_[0] > mace.competence_[2])
        True
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "method": _check_method,
        "max_iter": interval(0, None, integer=True),
        "tol": interval(0, None),
        "n_restarts": interval(1, None, integer=True),
        "alpha": interval(0, None, closed="right"),
        "beta": interval(0, None, closed="right"),
        "strategy_prior": interval(0, None, closed="right"),
        "smoothing": _check_smoothing,
    }

    def __init__(
        self,
        *,
        method: str = "vb",
        max_iter: int = 50,
        tol: float = 1e-6,
        n_restarts: int = 10,
        alpha: float = 0.5,
        beta: float = 0.5,
        strategy_prior: float = 10.0,
        smoothing: float | None = None,
        random_state: int | np.random.Generator | None = 0,
    ) -> None:
        self.method = method
        self.max_iter = max_iter
        self.tol = tol
        self.n_restarts = n_restarts
        self.alpha = alpha
        self.beta = beta
        self.strategy_prior = strategy_prior
        self.smoothing = smoothing
        self.random_state = random_state

    def _tie_random_state(self) -> None:
        """Ties go to the lowest class index: ``random_state`` seeds only the start."""
        return None

    # ------------------------------------------------------------------ model terms
    def _init_params(
        self, rng: np.random.Generator, n_annotators: int, n_classes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Starting ``[P(spam), P(not spam)]`` of shape (A, 2) and strategies of shape (A, K)."""
        spam = rng.uniform(1.0, 2.5, size=(n_annotators, 2))
        strategy = rng.uniform(1.0, 2.5, size=(n_annotators, n_classes))
        return (
            spam / spam.sum(axis=1, keepdims=True),
            strategy / strategy.sum(axis=1, keepdims=True),
        )

    @staticmethod
    def _log_joint(cl: CrowdLabels, w: _Weights, flat: np.ndarray) -> tuple[np.ndarray, ...]:
        k = cl.n_classes
        spam_xi = w.spam[cl.annotators] * w.strategy.ravel()[flat]  # (1 - θ) ξ_l per label
        know = w.know[cl.annotators]
        base = np.log(np.maximum(spam_xi, EPS))  # classes other than the label
        own = np.log(spam_xi + know)  # the labelled class
        log_joint = np.bincount(cl.items, weights=base, minlength=cl.n_items)[:, None]
        log_joint = log_joint + np.bincount(
            cl.items * k + cl.labels, weights=own - base, minlength=cl.n_items * k
        ).reshape(cl.n_items, k)
        return log_joint - np.log(k), spam_xi, know

    def _e_step(
        self, cl: CrowdLabels, w: _Weights, flat: np.ndarray, gold: np.ndarray | None
    ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray]:
        """Posteriors, log-evidence and the expected counts of the next M-step."""
        log_joint, spam_xi, know = self._log_joint(cl, w, flat)
        if gold is None:
            post, ll = normalize_log(log_joint)
        else:
            known = gold >= 0
            post, _ = normalize_log(log_joint)
            post[known] = 0.0
            post[known, gold[known]] = 1.0
            ll = float(row_logsumexp(log_joint[~known]).sum()) if (~known).any() else 0.0
            ll += float(log_joint[known, gold[known]].sum())
        # P(not spamming on this label) = P(T = label) · θ / ((1 - θ) ξ_l + θ).
        p_know = post.ravel()[cl.items * cl.n_classes + cl.labels] * know / (spam_xi + know)
        n_a, k = cl.n_annotators, cl.n_classes
        know_count = np.bincount(cl.annotators, weights=p_know, minlength=n_a)
        spam_count = cl.labels_per_annotator() - know_count
        strategy_count = np.bincount(flat, weights=1.0 - p_know, minlength=n_a * k)
        return post, ll, spam_count, know_count, strategy_count.reshape(n_a, k)

    def _m_step(
        self, spam_count: np.ndarray, know_count: np.ndarray, strategy_count: np.ndarray
    ) -> tuple[_Weights, float]:
        """New E-step weights and the prior term of the objective (log-prior or -KL)."""
        k = strategy_count.shape[1]
        if check_option(self.method, Method, "method") is Method.VB:
            a = np.stack([spam_count + self.alpha, know_count + self.beta], axis=1)
            b = strategy_count + self.strategy_prior
            self._post_theta, self._post_strategy = a, b
            from scipy.special import digamma

            log_a = digamma(a) - digamma(a.sum(axis=1, keepdims=True))
            log_b = digamma(b) - digamma(b.sum(axis=1, keepdims=True))
            prior_a = np.tile([self.alpha, self.beta], (len(a), 1))
            penalty = -dirichlet_kl(a, prior_a) - dirichlet_kl(
                b, np.full_like(b, self.strategy_prior)
            )
            return _Weights(np.exp(log_a[:, 0]), np.exp(log_a[:, 1]), np.exp(log_b)), penalty
        s = 0.01 / k if self.smoothing is None else float(self.smoothing)
        theta = np.stack([spam_count, know_count], axis=1) + s
        theta = _normalize_rows(theta)
        strategy = _normalize_rows(strategy_count + s)
        theta, strategy = np.maximum(theta, EPS), np.maximum(strategy, EPS)
        self._post_theta, self._post_strategy = theta, strategy
        penalty = s * float(np.log(theta).sum() + np.log(strategy).sum())
        return _Weights(theta[:, 0], theta[:, 1], strategy), penalty

    # ------------------------------------------------------------------ fitting
    def _fit(self, cl: CrowdLabels, gold: np.ndarray | None) -> None:
        rng = check_random_state(self.random_state)
        flat = cl.annotators * cl.n_classes + cl.labels
        best: dict[str, Any] | None = None
        objectives: list[float] = []
        for _ in range(self.n_restarts):
            run = self._run(cl, flat, gold, rng)
            objectives.append(run["objective"])
            if best is None or run["objective"] > best["objective"]:
                best = run
        assert best is not None  # n_restarts >= 1 is checked in fit
        if self.max_iter > 0 and not best["converged"]:
            h = best["history"]
            gain = (h[-1] - h[-2]) / cl.n_labels if len(h) > 1 else float("nan")
            warnings.warn(
                f"MACE did not converge in max_iter={self.max_iter} iterations (last gain per "
                f"label {gain:.2e} > tol={self.tol}). Increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._weights = best["weights"]
        self.posteriors_ = best["posteriors"]
        theta, strategy = best["theta"], best["strategy"]
        self.competence_ = theta[:, 1] / theta.sum(axis=1)
        self.spamming_ = 1.0 - self.competence_
        self.strategy_ = strategy / strategy.sum(axis=1, keepdims=True)
        k = cl.n_classes
        conf = (self.spamming_[:, None, None] * self.strategy_[:, None, :]).repeat(k, axis=1)
        conf[:, np.arange(k), np.arange(k)] += self.competence_[:, None]
        self.confusion_ = conf
        self.priors_ = np.full(k, 1.0 / k)
        self.log_likelihoods_ = best["history"]
        self.restart_objectives_ = objectives
        self.n_iter_ = best["n_iter"]
        self.converged_ = best["converged"]
        del self._post_theta, self._post_strategy

    def _run(
        self, cl: CrowdLabels, flat: np.ndarray, gold: np.ndarray | None, rng: np.random.Generator
    ) -> dict[str, Any]:
        theta, strategy = self._init_params(rng, cl.n_annotators, cl.n_classes)
        self._post_theta, self._post_strategy = theta, strategy
        w = _Weights(theta[:, 0], theta[:, 1], strategy)
        post, ll, *counts = self._e_step(cl, w, flat, gold)
        history: list[float] = []
        converged = False
        n_iter = 0
        for n_iter in range(1, self.max_iter + 1):
            w, penalty = self._m_step(*counts)
            post, ll, *counts = self._e_step(cl, w, flat, gold)
            history.append(ll + penalty)
            if self._callback is not None:
                self._callback(n_iter, history[-1])
            if len(history) > 1 and (history[-1] - history[-2]) / cl.n_labels < self.tol:
                converged = True
                break
        return {
            "weights": w,
            "posteriors": post,
            "theta": self._post_theta,
            "strategy": self._post_strategy,
            "history": history,
            "objective": history[-1] if history else ll,
            "n_iter": n_iter if self.max_iter > 0 else 0,
            "converged": converged,
        }

    def _predict_proba(self, cl: CrowdLabels) -> np.ndarray:
        flat = cl.annotators * cl.n_classes + cl.labels
        return normalize_log(self._log_joint(cl, self._weights, flat)[0])[0]


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    total = x.sum(axis=1, keepdims=True)
    return np.where(total > 0, x / np.where(total > 0, total, 1.0), 1.0 / x.shape[1])
