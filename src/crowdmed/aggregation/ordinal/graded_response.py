"""Graded-response (cumulative-link) annotator model for ordinal labels, fitted by EM."""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar

import numpy as np
from scipy import optimize, special

from crowdmed._validation import check_option, interval
from crowdmed.aggregation.base import EPS, EMAggregator
from crowdmed.data.labels import CrowdLabels

__all__ = ["GradedResponse", "Link", "ordinal_confusion"]

_SQRT_2PI = np.sqrt(2.0 * np.pi)


class Link(str, Enum):
    """Distribution of an annotator's perception noise (the link of the cumulative model)."""

    PROBIT = "probit"
    LOGIT = "logit"


def _check_link(value: Any) -> str | None:
    check_option(value, Link, "link")  # raises with a "did you mean" hint
    return None


def _cdf_sf_pdf(u: np.ndarray, link: Link) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CDF, survival function and density of the standard noise at ``u`` (``±inf`` allowed)."""
    if link is Link.PROBIT:
        with np.errstate(over="ignore"):
            pdf = np.exp(-0.5 * u * u) / _SQRT_2PI
        return special.ndtr(u), special.ndtr(-u), pdf
    cdf = special.expit(u)
    sf = special.expit(-u)
    return cdf, sf, cdf * sf


def _link_parts(
    thresholds: np.ndarray, offsets: np.ndarray, noise: np.ndarray, link: Link
) -> dict[str, np.ndarray]:
    """Category probabilities and the pieces of their derivatives, shape ``(A, K, K)``.

    Entry ``[a, k, l]`` belongs to true class ``k`` and reported class ``l``; the class
    locations are ``0..K-1``.
    """
    k = thresholds.size + 1
    tau = np.concatenate([[-np.inf], thresholds, [np.inf]])
    mu = np.arange(k, dtype=np.float64)
    shift = offsets[:, None, None] + mu[None, :, None]  # (A, K, 1)
    s = noise[:, None, None]
    u_hi = (tau[None, None, 1:] - shift) / s
    u_lo = (tau[None, None, :-1] - shift) / s
    cdf_hi, sf_hi, pdf_hi = _cdf_sf_pdf(u_hi, link)
    cdf_lo, sf_lo, pdf_lo = _cdf_sf_pdf(u_lo, link)
    # Upper tail: a difference of survival functions keeps its precision where the CDFs are
    # both close to one.
    prob = np.where(u_lo > 0, sf_lo - sf_hi, cdf_hi - cdf_lo)
    return {
        "prob": prob,
        "u_hi": np.where(np.isfinite(u_hi), u_hi, 0.0),
        "u_lo": np.where(np.isfinite(u_lo), u_lo, 0.0),
        "pdf_hi": np.where(np.isfinite(u_hi), pdf_hi, 0.0),
        "pdf_lo": np.where(np.isfinite(u_lo), pdf_lo, 0.0),
    }


def ordinal_confusion(
    thresholds: np.ndarray,
    offsets: np.ndarray,
    noise: np.ndarray,
    *,
    link: str = "probit",
) -> np.ndarray:
    """Confusion matrices implied by the graded-response annotator model.

    An annotator perceives an item of true class ``k`` at ``k + offset + noise · ε`` (``ε``
    standard normal for ``"probit"``, standard logistic for ``"logit"``) and reports the class
    ``l`` whose interval ``(thresholds[l-1], thresholds[l]]`` holds it, with
    ``thresholds[-1] = -inf`` and ``thresholds[K-1] = +inf``:
    ``P(l | k) = F((τ_l − b_a − k) / s_a) − F((τ_{l−1} − b_a − k) / s_a)``.

    Args:
        thresholds: Float array of shape ``(K - 1,)``, increasing.
        offsets: Float array of shape ``(n_annotators,)``; a positive offset rates higher.
        noise: Float array of shape ``(n_annotators,)``, positive noise scales.
        link: ``"probit"`` or ``"logit"``.

    Returns:
        Float array of shape ``(n_annotators, K, K)``: ``[a, k, l] = P(a says l | true class
        k)``; rows sum to 1.

    Examples:
        >>> conf = ordinal_confusion(np.array([0.5]), np.array([0.0]), np.array([1.0]))
        >>> conf.round(4)  # Φ(0.5) = 0.6915
        array([[[0.6915, 0.3085],
                [0.3085, 0.6915]]])
    """
    parts = _link_parts(
        np.asarray(thresholds, dtype=np.float64),
        np.asarray(offsets, dtype=np.float64),
        np.asarray(noise, dtype=np.float64),
        check_option(link, Link, "link"),
    )
    return np.clip(parts["prob"], 0.0, 1.0)


class GradedResponse(EMAggregator):
    """Graded-response (cumulative-link) annotator model for ordinal classes, fitted by EM.

    Classes ``0..K-1`` are ordered (in the order of ``classes``). Annotator ``a`` perceives an
    item of true class ``k`` at ``k + b_a + s_a ε`` and reports the class whose interval of
    the shared thresholds ``τ_1 < … < τ_{K-1}`` holds it, so

    ``P(a says l | k) = F((τ_{l+1} − b_a − k) / s_a) − F((τ_l − b_a − k) / s_a)``

    with ``F`` the normal (``"probit"``) or logistic (``"logit"``) CDF, ``τ_0 = −∞`` and
    ``τ_K = +∞``. ``b_a`` (``offsets_``) is the annotator's severity: a reader with
    ``b_a = 0.5`` rates half a class higher than the average reader; ``s_a`` (``noise_``) is
    their noise. The class locations are fixed at ``0..K-1`` (this fixes the scale of the
    latent axis) and the offsets have mean zero (this fixes its origin): thresholds, offsets
    and noise are then identified. A reader one grade stricter than the others is thereby
    told apart from a reader who answers at random, which a nominal model such as Dawid–Skene
    cannot do with few items per class.

    The E-step is Dawid–Skene's with the model's confusion matrices, summed in log space (a
    product of many probabilities underflows). The M-step maximises the expected complete-data
    log-likelihood, which depends on the labels only through the soft counts ``C[a, k, l]``
    (``n_annotators × K × K`` numbers), by a few L-BFGS steps with the analytic gradient over
    ``(τ, b, log s)``, warm-started from the previous iteration; a step that does not improve
    the objective is rejected, so ``log_likelihoods_`` never decreases (generalised EM). A
    Gaussian penalty ``regularization / 2 · Σ (b_a² + (log s_a)² + (log gap)²)`` on the
    offsets, log noise scales and log gaps between thresholds keeps readers with few or
    one-sided labels finite (MAP-EM; its log-density is part of ``log_likelihoods_``).

    Args:
        max_iter: Maximum number of EM iterations.
        tol: Stop when the gain in log-likelihood per annotation is below ``tol``.
        link: ``"probit"`` (normal perception noise) or ``"logit"`` (logistic noise).
        regularization: Precision of the Gaussian penalty described above; ``0`` gives
            maximum likelihood.
        m_step_iter: Maximum L-BFGS iterations per M-step.
        random_state: Seed or ``numpy.random.Generator`` for tie-breaking of ``labels_``;
            ``None`` breaks ties by the lowest class index.

    Attributes:
        posteriors_ (ndarray of shape (n_items, n_classes)): P(true class | labels) over the
            ordered classes.
        labels_ (ndarray of shape (n_items,)): Argmax of ``posteriors_``.
        thresholds_ (ndarray of shape (n_classes - 1,)): Shared thresholds ``τ``, increasing,
            on the latent axis where class ``k`` sits at ``k``.
        offsets_ (ndarray of shape (n_annotators,)): Severity offsets ``b_a`` (mean 0);
            positive rates higher.
        noise_ (ndarray of shape (n_annotators,)): Noise scales ``s_a`` (latent-axis units).
        confusion_ (ndarray of shape (n_annotators, n_classes, n_classes)): Implied
            ``P(a says l | true class k)`` (see conventions), floored at ``1e-10``.
        priors_ (ndarray of shape (n_classes,)): Class prior.
        log_likelihoods_ (list[float]): Log-likelihood plus log-penalty, one value per
            iteration; never decreases.
        n_iter_ (int): Number of iterations run.
        converged_ (bool): Whether ``tol`` was reached.

    References:
        Samejima (1969). Estimation of latent ability using a response pattern of graded
        scores. Psychometrika Monograph 17. https://doi.org/10.1007/BF03372160

        Johnson & Albert (1999). Ordinal Data Modeling, ch. 5 (multiple raters).
        https://doi.org/10.1007/b98832

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 1, 0], [2, 2, 1], [1, 2, 1], [3, 3, 2], [0, 0, -1]])
        >>> gr = GradedResponse().fit(labels)
        >>> gr.labels_
        array([0, 2, 2, 3, 0])
        >>> bool(gr.offsets_[1] > gr.offsets_[2])  # reader 1 rates higher than reader 2
        True
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        **EMAggregator._parameter_constraints,
        "link": _check_link,
        "regularization": interval(0, None),
        "m_step_iter": interval(1, None, integer=True),
    }

    def __init__(
        self,
        *,
        max_iter: int = 100,
        tol: float = 1e-6,
        link: str = "probit",
        regularization: float = 0.1,
        m_step_iter: int = 20,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.link = link
        self.regularization = regularization
        self.m_step_iter = m_step_iter
        self.random_state = random_state

    # ------------------------------------------------------------------ parameters
    def _unpack(self, theta: np.ndarray, k: int, n_ann: int) -> tuple[np.ndarray, ...]:
        """``theta = [τ_1, log gaps (K-2), offsets (A), log noise (A)]``."""
        gaps = theta[1 : k - 1]
        tau = theta[0] + np.concatenate([[0.0], np.cumsum(np.exp(gaps))])
        offsets = theta[k - 1 : k - 1 + n_ann]
        log_s = theta[k - 1 + n_ann :]
        return tau, gaps, offsets, log_s

    def _objective(
        self, theta: np.ndarray, counts: np.ndarray, scale: float, link: Link
    ) -> tuple[float, np.ndarray]:
        """Negative expected complete-data log-likelihood plus penalty, divided by ``scale``."""
        n_ann, k, _ = counts.shape
        tau, gaps, offsets, log_s = self._unpack(theta, k, n_ann)
        s = np.exp(log_s)
        parts = _link_parts(tau, offsets, s, link)
        prob = parts["prob"]
        ok = prob > EPS  # floored cells are constant: no gradient
        logp = np.log(np.where(ok, prob, EPS))
        value = float((counts * logp).sum())
        w = np.where(ok & (counts > 0), counts / np.where(ok, prob, 1.0), 0.0)
        g_hi = w * parts["pdf_hi"]  # d/du_hi of counts · log P
        g_lo = w * parts["pdf_lo"]  # minus d/du_lo
        inv_s = (1.0 / s)[:, None, None]
        # d/dτ_j: τ_j is the upper bound of class j-1 and the lower bound of class j.
        d_tau = (g_hi * inv_s).sum(axis=(0, 1))[:-1] - (g_lo * inv_s).sum(axis=(0, 1))[1:]
        d_offsets = -((g_hi - g_lo) * inv_s).sum(axis=(1, 2))
        d_log_s = -(g_hi * parts["u_hi"] - g_lo * parts["u_lo"]).sum(axis=(1, 2))
        d_t1 = d_tau.sum()
        # τ_j = τ_1 + Σ_{m ≤ j} exp(gap_m): a gap moves every later threshold.
        d_gaps = np.exp(gaps) * np.cumsum(d_tau[::-1])[::-1][1:]
        lam = self.regularization
        value -= 0.5 * lam * float((offsets**2).sum() + (log_s**2).sum() + (gaps**2).sum())
        grad = np.concatenate(
            [[d_t1], d_gaps - lam * gaps, d_offsets - lam * offsets, d_log_s - lam * log_s]
        )
        return -value / scale, -grad / scale

    def _set_theta(self, theta: np.ndarray, k: int, n_ann: int, link: Link) -> None:
        tau, _, offsets, log_s = self._unpack(theta, k, n_ann)
        self._theta = theta
        self.thresholds_ = tau
        self.offsets_ = offsets.copy()
        self.noise_ = np.exp(log_s)
        parts = _link_parts(tau, self.offsets_, self.noise_, link)
        self.confusion_ = np.maximum(parts["prob"], EPS)

    # ------------------------------------------------------------------ EM steps
    def _fit(self, cl: CrowdLabels, gold: np.ndarray | None) -> None:
        k, n_ann = cl.n_classes, cl.n_annotators
        # Start: thresholds half-way between class locations, no offset, unit noise.
        self._theta = np.concatenate([[0.5], np.zeros(k - 2), np.zeros(n_ann), np.zeros(n_ann)])
        try:
            super()._fit(cl, gold)
        finally:
            del self._theta

    def _m_step(self, cl: CrowdLabels, posteriors: np.ndarray) -> None:
        k, n_ann = cl.n_classes, cl.n_annotators
        link = check_option(self.link, Link, "link")
        # Soft counts C[a, k, l] = Σ P(class k) over the items a labelled l: the expected
        # complete-data log-likelihood is Σ C · log P(l | k).
        counts = (cl.incidence_t() @ posteriors).reshape(n_ann, k, k).transpose(0, 2, 1)
        scale = float(max(cl.n_labels, 1))
        theta0 = self._theta
        f0, _ = self._objective(theta0, counts, scale, link)
        res = optimize.minimize(
            self._objective,
            theta0,
            args=(counts, scale, link),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.m_step_iter},
        )
        theta = res.x if np.all(np.isfinite(res.x)) and res.fun <= f0 else theta0
        # Identify the origin: the likelihood is unchanged by moving every offset and
        # threshold by the same amount; centring the offsets also lowers the penalty.
        shift = theta[k - 1 : k - 1 + n_ann].mean() if n_ann else 0.0
        theta = theta.copy()
        theta[0] += shift
        theta[k - 1 : k - 1 + n_ann] -= shift
        self._set_theta(theta, k, n_ann, link)
        self.priors_ = np.maximum(posteriors.mean(axis=0), EPS)

    def _log_joint(self, cl: CrowdLabels) -> np.ndarray:
        k = cl.n_classes
        # log_conf[a*K + l, k] = log P(a says l | class k): one sparse product sums each item's
        # log-probabilities (log space: the product of many probabilities underflows).
        log_conf = np.log(self.confusion_).transpose(0, 2, 1).reshape(-1, k)
        return cl.incidence() @ log_conf + np.log(self.priors_)

    def _log_param_prior(self) -> float:
        k = self.thresholds_.size + 1
        gaps = self._theta[1 : k - 1] if hasattr(self, "_theta") else np.zeros(0)
        lam = self.regularization
        return float(
            -0.5
            * lam
            * ((self.offsets_**2).sum() + (np.log(self.noise_) ** 2).sum() + (gaps**2).sum())
        )
