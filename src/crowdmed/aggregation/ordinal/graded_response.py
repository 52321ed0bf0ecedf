"""Graded-response (cumulative-link) annotator model for ordinal labels, fitted by EM."""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar

import numpy as np
from scipy import optimize, special
from threadpoolctl import ThreadpoolController

from crowdmed._validation import check_option, interval
from crowdmed.aggregation.base import EPS, EMAggregator
from crowdmed.data.labels import CrowdLabels

__all__ = ["GradedResponse", "Link", "Locations", "ordinal_confusion"]

_SQRT_2PI = np.sqrt(2.0 * np.pi)
_THREADPOOLS: list[ThreadpoolController] = []  # created on first use (it scans the libraries)


def _one_blas_thread() -> Any:
    """Context manager limiting BLAS to one thread (L-BFGS-B's BLAS calls are on tiny vectors)."""
    if not _THREADPOOLS:
        _THREADPOOLS.append(ThreadpoolController())
    return _THREADPOOLS[0].limit(limits=1, user_api="blas")


class Link(str, Enum):
    """Distribution of an annotator's perception noise (the link of the cumulative model)."""

    PROBIT = "probit"
    LOGIT = "logit"


class Locations(str, Enum):
    """Whether the middle class locations on the latent axis are estimated."""

    FREE = "free"
    FIXED = "fixed"


def _check_locations(value: Any) -> str | None:
    check_option(value, Locations, "locations")
    return None


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
    thresholds: np.ndarray,
    offsets: np.ndarray,
    noise: np.ndarray,
    link: Link,
    locations: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Category probabilities and the pieces of their derivatives, shape ``(A, K, K)``.

    Entry ``[a, k, l]`` belongs to true class ``k`` and reported class ``l``; the class
    locations are ``0..K-1`` unless given.
    """
    k = thresholds.size + 1
    tau = np.concatenate([[-np.inf], thresholds, [np.inf]])
    mu = np.arange(k, dtype=np.float64) if locations is None else locations
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
    locations: np.ndarray | None = None,
    link: str = "probit",
) -> np.ndarray:
    """Confusion matrices implied by the graded-response annotator model.

    An annotator perceives an item of true class ``k`` at ``μ_k + offset + noise · ε`` (``ε``
    standard normal for ``"probit"``, standard logistic for ``"logit"``) and reports the class
    ``l`` whose interval ``(thresholds[l-1], thresholds[l]]`` holds it, with
    ``thresholds[-1] = -inf`` and ``thresholds[K-1] = +inf``:
    ``P(l | k) = F((τ_l − b_a − μ_k) / s_a) − F((τ_{l−1} − b_a − μ_k) / s_a)``.

    Args:
        thresholds: Float array of shape ``(K - 1,)``, increasing.
        offsets: Float array of shape ``(n_annotators,)``; a positive offset rates higher.
        noise: Float array of shape ``(n_annotators,)``, positive noise scales.
        locations: Float array of shape ``(K,)``: class locations ``μ``; ``0..K-1`` when
            omitted.
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
        None if locations is None else np.asarray(locations, dtype=np.float64),
    )
    return np.clip(parts["prob"], 0.0, 1.0)


class GradedResponse(EMAggregator):
    """Graded-response (cumulative-link) annotator model for ordinal classes, fitted by EM.

    Classes ``0..K-1`` are ordered (in the order of ``classes``). Annotator ``a`` perceives an
    item of true class ``k`` at ``μ_k + b_a + s_a ε`` and reports the class whose interval of
    the shared thresholds ``τ_1 < … < τ_{K-1}`` holds it, so

    ``P(a says l | k) = F((τ_{l+1} − b_a − μ_k) / s_a) − F((τ_l − b_a − μ_k) / s_a)``

    with ``F`` the normal (``"probit"``) or logistic (``"logit"``) CDF, ``τ_0 = −∞`` and
    ``τ_K = +∞``. ``b_a`` (``offsets_``) is the annotator's severity: a reader with
    ``b_a = 0.5`` rates half a class higher than the average reader; ``s_a`` (``noise_``) is
    their noise. The likelihood is unchanged by shifting or stretching the latent axis, so the
    model is identified by fixing the end classes at ``μ_0 = 0`` and ``μ_{K-1} = K-1`` (the
    scale: one unit per class on average) and the offsets at mean zero over the annotators
    with labels (the origin: the average reader); the thresholds, the middle class locations,
    the offsets and the noise scales are estimated (``locations="fixed"`` keeps every class at
    ``μ_k = k``: equally spaced grades, which suits data generated that way). A reader one
    grade stricter than the others is thereby told apart from a reader who answers at random,
    which a nominal model such as Dawid–Skene cannot do with few items per class.

    The E-step is Dawid–Skene's with the model's confusion matrices, summed in log space (a
    product of many probabilities underflows). The M-step maximises the expected complete-data
    log-likelihood, which depends on the labels only through the soft counts ``C[a, k, l]``
    (``n_annotators × K × K`` numbers), by a few L-BFGS steps with the analytic gradient over
    ``(τ, μ, b, log s)``, warm-started from the previous iteration; a step that does not improve
    the objective is rejected, so ``log_likelihoods_`` never decreases (generalised EM). A
    Gaussian penalty ``regularization / 2 · Σ (b_a² + (log s_a)² + (log gap)² + (μ_k − k)²)``
    on the offsets, log noise scales, log gaps between thresholds and middle class locations
    keeps readers with few or one-sided labels, and classes nobody uses, finite (MAP-EM; its
    log-density is part of ``log_likelihoods_``).

    Args:
        max_iter: Maximum number of EM iterations.
        tol: Stop when the gain in log-likelihood per annotation is below ``tol``.
        link: ``"probit"`` (normal perception noise) or ``"logit"`` (logistic noise).
        locations: ``"free"`` (estimate the middle class locations) or ``"fixed"``
            (``μ_k = k``).
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
            on the latent axis.
        locations_ (ndarray of shape (n_classes,)): Class locations ``μ``; the first is 0 and
            the last ``K - 1``.
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
        >>> from crowdmed.simulate import simulate_ordinal_readers
        >>> sim = simulate_ordinal_readers(200, [-0.5, 0.0, 0.5], [0.5, 0.5, 0.5], random_state=0)
        >>> gr = GradedResponse().fit(sim.labels)  # 3 readers, K = 5
        >>> gr.offsets_.round(1) + 0.0
        array([-0.5,  0. ,  0.5])
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        **EMAggregator._parameter_constraints,
        "link": _check_link,
        "locations": _check_locations,
        "regularization": interval(0, None),
        "m_step_iter": interval(1, None, integer=True),
    }

    def __init__(
        self,
        *,
        max_iter: int = 100,
        tol: float = 1e-6,
        link: str = "probit",
        locations: str = "free",
        regularization: float = 0.1,
        m_step_iter: int = 20,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.link = link
        self.locations = locations
        self.regularization = regularization
        self.m_step_iter = m_step_iter
        self.random_state = random_state

    # ------------------------------------------------------------------ parameters
    @staticmethod
    def _unpack(theta: np.ndarray, k: int, n_ann: int) -> tuple[np.ndarray, ...]:
        """Split ``theta = [τ_1, log gaps (K-2), μ_1..μ_{K-2}, offsets (A), log noise (A)]``."""
        gaps = theta[1 : k - 1]
        tau = theta[0] + np.concatenate([[0.0], np.cumsum(np.exp(gaps))])
        mid = theta[k - 1 : 2 * k - 3]
        mu = np.concatenate([[0.0], mid, [k - 1.0]]) if k > 1 else np.zeros(1)
        offsets = theta[2 * k - 3 : 2 * k - 3 + n_ann]
        log_s = theta[2 * k - 3 + n_ann :]
        return tau, gaps, mu, offsets, log_s

    def _penalty(
        self, gaps: np.ndarray, mu: np.ndarray, offsets: np.ndarray, log_s: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """Log-density of the Gaussian penalty (up to a constant) and its parts' residuals."""
        dev = mu[1:-1] - np.arange(1, mu.size - 1)
        value = (offsets**2).sum() + (log_s**2).sum() + (gaps**2).sum() + (dev**2).sum()
        return -0.5 * self.regularization * float(value), dev

    def _objective(
        self, theta: np.ndarray, counts: np.ndarray, scale: float, link: Link
    ) -> tuple[float, np.ndarray]:
        """Negative expected complete-data log-likelihood plus penalty, divided by ``scale``."""
        n_ann, k, _ = counts.shape
        tau, gaps, mu, offsets, log_s = self._unpack(theta, k, n_ann)
        s = np.exp(log_s)
        parts = _link_parts(tau, offsets, s, link, mu)
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
        d_shift = (g_hi - g_lo) * inv_s  # minus d/d(b_a + μ_k)
        d_offsets = -d_shift.sum(axis=(1, 2))
        d_mu = -d_shift.sum(axis=(0, 2))[1:-1]
        d_log_s = -(g_hi * parts["u_hi"] - g_lo * parts["u_lo"]).sum(axis=(1, 2))
        d_t1 = d_tau.sum()
        # τ_j = τ_1 + Σ_{m ≤ j} exp(gap_m): a gap moves every later threshold.
        d_gaps = np.exp(gaps) * np.cumsum(d_tau[::-1])[::-1][1:]
        pen, dev = self._penalty(gaps, mu, offsets, log_s)
        lam = self.regularization
        grad = np.concatenate(
            [
                [d_t1],
                d_gaps - lam * gaps,
                d_mu - lam * dev,
                d_offsets - lam * offsets,
                d_log_s - lam * log_s,
            ]
        )
        return -(value + pen) / scale, -grad / scale

    def _set_theta(self, theta: np.ndarray, k: int, n_ann: int, link: Link) -> None:
        tau, _, mu, offsets, log_s = self._unpack(theta, k, n_ann)
        self._theta = theta
        self.thresholds_ = tau
        self.locations_ = mu
        self.offsets_ = offsets.copy()
        self.noise_ = np.exp(log_s)
        parts = _link_parts(tau, self.offsets_, self.noise_, link, mu)
        self.confusion_ = np.maximum(parts["prob"], EPS)

    # ------------------------------------------------------------------ EM steps
    def _init_params(self, n_classes: int, n_annotators: int) -> None:
        """Set the starting point of the first M-step.

        Classes at ``0..K-1``, thresholds half-way between them, no offset, unit noise.
        """
        k = n_classes
        mid = np.arange(1.0, k - 1)
        self._theta = np.concatenate([[0.5], np.zeros(k - 2), mid, np.zeros(2 * n_annotators)])

    def _fit(self, cl: CrowdLabels, gold: np.ndarray | None) -> None:
        self._init_params(cl.n_classes, cl.n_annotators)
        try:
            super()._fit(cl, gold)
        finally:
            del self._theta

    def _m_step(self, cl: CrowdLabels, posteriors: np.ndarray) -> None:
        k, n_ann = cl.n_classes, cl.n_annotators
        # Soft counts C[a, k, l] = Σ P(class k) over the items a labelled l: the expected
        # complete-data log-likelihood is Σ C · log P(l | k).
        counts = (cl.incidence_t() @ posteriors).reshape(n_ann, k, k).transpose(0, 2, 1)
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
            counts: Soft counts ``[a, k, l]``: sum of P(class k) over the items annotator
                ``a`` labelled ``l``.
            label_counts: Integer array ``[a, l]``: how often annotator ``a`` gave label ``l``.
            class_totals: Sum of the posteriors over items, shape ``(n_classes,)``.
            n_items: Number of items.
        """
        n_ann, k, _ = counts.shape
        link = check_option(self.link, Link, "link")
        scale = float(max(label_counts.sum(), 1))
        theta0 = self._theta
        f0, _ = self._objective(theta0, counts, scale, link)
        bounds: list[tuple[float | None, float | None]] = [(None, None)] * theta0.size
        if check_option(self.locations, Locations, "locations") is Locations.FIXED:
            for z in range(1, k - 1):  # μ_z held at z
                bounds[k - 2 + z] = (float(z), float(z))
        # L-BFGS costs O(n_params) per step (dense BFGS is cubic in the 2 · n_annotators
        # parameters). Its BLAS calls are on tiny vectors: extra threads only contend.
        with _one_blas_thread():
            res = optimize.minimize(
                self._objective,
                theta0,
                args=(counts, scale, link),
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                options={"maxiter": self.m_step_iter},
            )
        theta = (res.x if np.all(np.isfinite(res.x)) and res.fun <= f0 else theta0).copy()
        # Identify the origin: the likelihood is unchanged by moving the thresholds and the
        # offsets of the annotators with labels by the same amount; centring those offsets
        # also lowers the penalty. Annotators without labels sit at the penalty's minimum.
        active = label_counts.sum(axis=1) > 0
        offsets = theta[2 * k - 3 : 2 * k - 3 + n_ann]
        log_s = theta[2 * k - 3 + n_ann :]
        shift = offsets[active].mean() if active.any() else 0.0
        theta[0] += shift
        offsets[active] -= shift
        offsets[~active] = 0.0
        log_s[~active] = 0.0
        self._set_theta(theta, k, n_ann, link)
        self.priors_ = np.maximum(class_totals / max(n_items, 1), EPS)

    def _log_joint(self, cl: CrowdLabels) -> np.ndarray:
        k = cl.n_classes
        # log_conf[a*K + l, k] = log P(a says l | class k): one sparse product sums each item's
        # log-probabilities (log space: the product of many probabilities underflows).
        log_conf = np.log(self.confusion_).transpose(0, 2, 1).reshape(-1, k)
        return cl.incidence() @ log_conf + np.log(self.priors_)

    def _log_param_prior(self) -> float:
        k = self.thresholds_.size + 1
        _, gaps, mu, offsets, log_s = self._unpack(self._theta, k, self.offsets_.size)
        return self._penalty(gaps, mu, offsets, log_s)[0]
