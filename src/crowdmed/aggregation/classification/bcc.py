"""Independent Bayesian classifier combination (BCC) fitted by variational Bayes."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from crowdmed._validation import interval
from crowdmed.aggregation.base import EMAggregator
from crowdmed.aggregation.classification.mace import dirichlet_kl
from crowdmed.data.labels import CrowdLabels

__all__ = ["BCC"]


class BCC(EMAggregator):
    """Independent Bayesian classifier combination, fitted by variational Bayes.

    The Dawid–Skene model with Dirichlet priors on every parameter, integrated over rather than
    maximised: each confusion row ``π_a[k, :] ~ Dir(α0[k, :])`` with ``α0`` equal to
    ``prior_diagonal`` on the diagonal and ``prior_off_diagonal`` elsewhere (annotators are
    believed better than chance), and the class prior ``κ ~ Dir(class_prior · 1)``. The mean-field
    posterior ``q(T) q(π) q(κ)`` is updated in turn: ``q(π_a[k, :]) = Dir(α0[k, :] + soft
    counts)``, ``q(κ) = Dir(ν0 + Σ_i q(T_i))``, and ``q(T_i = k) ∝ exp(E[log κ_k] + Σ_labels
    E[log π_a[k, l]])`` with ``E[log π] = ψ(α) - ψ(Σ α)``. It starts from the soft majority
    vote, so ``max_iter=0`` returns the majority vote. ``log_likelihoods_`` is the evidence lower
    bound (ELBO): the log-evidence of the labels under ``exp E[log π]`` minus the KL divergences
    of the Dirichlet posteriors from their priors; it never decreases. Both steps are sparse
    products over the labels, ``O(n_labels · K)`` per iteration. crowd-kit has no BCC.

    Args:
        max_iter: Maximum number of variational iterations.
        tol: Stop when the ELBO gains less than ``tol`` per label.
        prior_diagonal: Dirichlet pseudo-count of a correct label in each confusion row.
        prior_off_diagonal: Dirichlet pseudo-count of each wrong label.
        class_prior: Dirichlet pseudo-count of each class in the class prior.
        random_state: Seed or ``numpy.random.Generator`` for tie-breaking; ``None`` breaks ties
            by the lowest class index.

    Attributes:
        posteriors_ (ndarray of shape (n_items, n_classes)): ``q(T)``.
        labels_ (ndarray of shape (n_items,)): Argmax of ``posteriors_``.
        confusion_ (ndarray of shape (n_annotators, n_classes, n_classes)): Posterior mean of
            the confusion matrices (see conventions).
        confusion_alpha_ (ndarray of shape (n_annotators, n_classes, n_classes)): Dirichlet
            parameters of ``q(π)``, row ``[a, k]`` for true class ``k``.
        priors_ (ndarray of shape (n_classes,)): Posterior mean of the class prior.
        class_alpha_ (ndarray of shape (n_classes,)): Dirichlet parameters of ``q(κ)``.
        log_likelihoods_ (list[float]): ELBO, one value per iteration; never decreases.
        n_iter_ (int): Number of iterations run.
        converged_ (bool): Whether ``tol`` was reached.

    References:
        Kim & Ghahramani (2012). Bayesian classifier combination. AISTATS, PMLR 22:619-627.
        https://proceedings.mlr.press/v22/kim12.html
        Simpson, Roberts, Psorakis & Smith (2013). Dynamic Bayesian combination of multiple
        imperfect classifiers (the variational updates). https://doi.org/10.1007/978-3-642-36406-8_1

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 1, 1], [0, 1, -1]])
        >>> bcc = BCC().fit(labels)
        >>> bcc.labels_
        array([0, 1, 0, 1, 0])
        >>> bcc.confusion_.shape
        (3, 2, 2)
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        **EMAggregator._parameter_constraints,
        "prior_diagonal": interval(0, None, closed="right"),
        "prior_off_diagonal": interval(0, None, closed="right"),
        "class_prior": interval(0, None, closed="right"),
    }

    def __init__(
        self,
        *,
        max_iter: int = 100,
        tol: float = 1e-6,
        prior_diagonal: float = 2.0,
        prior_off_diagonal: float = 1.0,
        class_prior: float = 1.0,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.prior_diagonal = prior_diagonal
        self.prior_off_diagonal = prior_off_diagonal
        self.class_prior = class_prior
        self.random_state = random_state

    def _alpha0(self, k: int) -> np.ndarray:
        a0 = np.full((k, k), float(self.prior_off_diagonal))
        np.fill_diagonal(a0, float(self.prior_diagonal))
        return a0

    def _m_step(self, cl: CrowdLabels, posteriors: np.ndarray) -> None:
        k = cl.n_classes
        counts = (cl.incidence_t() @ posteriors).reshape(cl.n_annotators, k, k).transpose(0, 2, 1)
        alpha = counts + self._alpha0(k)
        nu = posteriors.sum(axis=0) + float(self.class_prior)
        self.confusion_alpha_ = alpha
        self.class_alpha_ = nu
        self.confusion_ = alpha / alpha.sum(axis=2, keepdims=True)
        self.priors_ = nu / nu.sum()
        from scipy.special import digamma  # imported when used: it is slow to load

        self._e_log_conf = digamma(alpha) - digamma(alpha.sum(axis=2, keepdims=True))
        self._e_log_prior = digamma(nu) - digamma(nu.sum())

    def _log_joint(self, cl: CrowdLabels) -> np.ndarray:
        k = cl.n_classes
        # Rows a*K + l, columns k: E[log π_a[k, l]]; one sparse product sums an item's labels.
        log_conf = self._e_log_conf.transpose(0, 2, 1).reshape(-1, k)
        return cl.incidence() @ log_conf + self._e_log_prior

    def _log_param_prior(self) -> float:
        """Minus the KL divergences of ``q(π)`` and ``q(κ)`` from their priors."""
        alpha = self.confusion_alpha_
        k = alpha.shape[1]
        a0 = np.broadcast_to(self._alpha0(k), alpha.shape).reshape(-1, k)
        nu0 = np.full((1, k), float(self.class_prior))
        return -dirichlet_kl(alpha.reshape(-1, k), a0) - dirichlet_kl(
            self.class_alpha_[None, :], nu0
        )
