"""GLAD: annotator ability and item difficulty (Whitehill et al., 2009)."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_expit

from crowdmed._validation import interval
from crowdmed.aggregation.base import EMAggregator, normalize_log
from crowdmed.data.labels import CrowdLabels

__all__ = ["GLAD"]

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


class GLAD(EMAggregator):
    """GLAD: Generative model of Labels, Abilities and Difficulties.

    Annotator ``a`` labels item ``i`` correctly with probability ``σ(α_a · exp(β_i))``, where
    ``α_a`` is the annotator's ability (negative: adversarial) and ``exp(β_i)`` the item's
    inverse difficulty; wrong labels are spread evenly over the other ``K - 1`` classes. The
    class prior is fixed (uniform unless ``class_prior`` is given). α and β have Gaussian priors
    ``N(alpha_prior_mean, 1)`` and ``N(beta_prior_mean, 1)``. The M-step maximises the expected
    complete log-likelihood with conjugate gradients on vectorised gradients (no per-item
    loops).

    Args:
        max_iter: Maximum number of EM iterations.
        tol: Stop when the gain in log-likelihood per annotation is below ``tol``.
        m_step_max_iter: Conjugate-gradient iterations per M-step.
        m_step_tol: Gradient tolerance of the conjugate-gradient M-step.
        alpha_prior_mean: Mean of the Gaussian prior on abilities (also their start value).
        beta_prior_mean: Mean of the Gaussian prior on log inverse difficulties (also their
            start value).
        class_prior: Float array of shape ``(n_classes,)``; uniform when ``None``.
        random_state: Seed or ``numpy.random.Generator`` for tie-breaking.

    Attributes:
        alphas_ (ndarray of shape (n_annotators,)): Abilities α.
        betas_ (ndarray of shape (n_items,)): Log inverse difficulties β.
        skills_ (ndarray of shape (n_annotators,)): Probability of a correct label on an item
            of median difficulty, ``σ(α · exp(median β))``.
        priors_ (ndarray of shape (n_classes,)): The fixed class prior.
        posteriors_, labels_, log_likelihoods_, n_iter_, converged_: As in
            :class:`DawidSkene`.

    References:
        Whitehill, Ruvolo, Wu, Bergsma & Movellan (2009). Whose vote should count more:
        optimal integration of labels from labelers of unknown expertise. NeurIPS 22.
        https://papers.nips.cc/paper/3644

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 1, 1], [0, 1, 1]])
        >>> g = GLAD().fit(labels)
        >>> g.labels_
        array([0, 1, 0, 1, 1])
        >>> bool(g.alphas_[0] > g.alphas_[2])
        True
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        **EMAggregator._parameter_constraints,
        "m_step_max_iter": interval(1, None, integer=True),
        "m_step_tol": interval(0, None, closed="right"),
        "alpha_prior_mean": interval(None, None),
        "beta_prior_mean": interval(None, None),
    }

    def __init__(
        self,
        *,
        max_iter: int = 100,
        tol: float = 1e-5,
        m_step_max_iter: int = 25,
        m_step_tol: float = 1e-2,
        alpha_prior_mean: float = 1.0,
        beta_prior_mean: float = 1.0,
        class_prior: np.ndarray | None = None,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.m_step_max_iter = m_step_max_iter
        self.m_step_tol = m_step_tol
        self.alpha_prior_mean = alpha_prior_mean
        self.beta_prior_mean = beta_prior_mean
        self.class_prior = class_prior
        self.random_state = random_state

    def _validate_data(self, cl: CrowdLabels) -> None:
        if self.class_prior is None:
            self.priors_ = np.full(cl.n_classes, 1.0 / cl.n_classes)
        else:
            p = np.asarray(self.class_prior, dtype=np.float64)
            if p.shape != (cl.n_classes,) or (p <= 0).any() or not np.isclose(p.sum(), 1.0):
                raise ValueError(
                    f"`class_prior` must be {cl.n_classes} positive numbers summing to 1; got "
                    f"{p.tolist()}."
                )
            self.priors_ = p
        self.alphas_ = np.full(cl.n_annotators, float(self.alpha_prior_mean))
        self.betas_ = np.full(cl.n_items, float(self.beta_prior_mean))

    # --------------------------------------------------------------- model terms
    @staticmethod
    def _log_terms(
        cl: CrowdLabels, alphas: np.ndarray, betas: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-annotation ``z = α e^β``, ``log σ(z)`` and ``log(1 - σ(z))``."""
        e_beta = np.exp(betas[cl.items])
        z = alphas[cl.annotators] * e_beta
        return z, log_expit(z), log_expit(-z)

    def _log_joint_with(self, cl: CrowdLabels, alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
        k = cl.n_classes
        _, log_s, log_1ms = self._log_terms(cl, alphas, betas)
        wrong = log_1ms - np.log(k - 1)
        # Every label contributes `wrong` to all classes, and `log σ - wrong` more to its own.
        base = np.bincount(cl.items, weights=wrong, minlength=cl.n_items)
        own = np.bincount(
            cl.items * k + cl.labels, weights=log_s - wrong, minlength=cl.n_items * k
        ).reshape(cl.n_items, k)
        return base[:, None] + own + np.log(self.priors_)

    def _log_joint(self, cl: CrowdLabels) -> np.ndarray:
        return self._log_joint_with(cl, self.alphas_, self.betas_)

    def _log_param_prior(self) -> float:
        return float(
            -0.5 * ((self.alphas_ - self.alpha_prior_mean) ** 2).sum()
            - 0.5 * ((self.betas_ - self.beta_prior_mean) ** 2).sum()
            - _LOG_SQRT_2PI * (len(self.alphas_) + len(self.betas_))
        )

    # --------------------------------------------------------------- EM steps
    def _m_step(self, cl: CrowdLabels, posteriors: np.ndarray) -> None:
        k = cl.n_classes
        n_a = cl.n_annotators
        p_own = posteriors[cl.items, cl.labels]  # P(true class == given label)
        log_k1 = np.log(k - 1)
        am, bm = self.alpha_prior_mean, self.beta_prior_mean

        def neg_q(x: np.ndarray) -> tuple[float, np.ndarray]:
            alphas, betas = x[:n_a], x[n_a:]
            e_beta = np.exp(betas[cl.items])
            z = alphas[cl.annotators] * e_beta
            log_s, log_1ms = log_expit(z), log_expit(-z)
            q = float(np.dot(p_own, log_s) + np.dot(1 - p_own, log_1ms - log_k1))
            q -= 0.5 * float(((alphas - am) ** 2).sum() + ((betas - bm) ** 2).sum())
            q -= _LOG_SQRT_2PI * len(x)
            # dQ/dz = p - σ(z); chain rule through z = α e^β.
            r = p_own - np.exp(log_s)
            g_alpha = np.bincount(cl.annotators, weights=r * e_beta, minlength=n_a) - (alphas - am)
            g_beta = np.bincount(cl.items, weights=r * z, minlength=cl.n_items) - (betas - bm)
            return -q, -np.concatenate([g_alpha, g_beta])

        x0 = np.concatenate([self.alphas_, self.betas_])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = minimize(
                neg_q,
                x0,
                jac=True,
                method="CG",
                tol=self.m_step_tol,
                options={"maxiter": self.m_step_max_iter},
            )
        self.alphas_ = res.x[:n_a].copy()
        self.betas_ = res.x[n_a:].copy()
        self.skills_ = np.exp(log_expit(self.alphas_ * np.exp(np.median(self.betas_))))

    def _init_posteriors(self, cl: CrowdLabels) -> np.ndarray:
        # The first E-step with the starting abilities (crowd-kit's initialisation).
        return normalize_log(self._log_joint(cl))[0]

    def _predict_proba(self, cl: CrowdLabels) -> np.ndarray:
        # New items have unknown difficulty: use the prior mean of β.
        betas = np.full(cl.n_items, float(self.beta_prior_mean))
        return normalize_log(self._log_joint_with(cl, self.alphas_, betas))[0]

    def _zero_iter_params(self, cl: CrowdLabels, posteriors: np.ndarray) -> None:
        # No M-step runs: keep the starting abilities and difficulties.
        self.skills_ = np.exp(log_expit(self.alphas_ * np.exp(np.median(self.betas_))))
