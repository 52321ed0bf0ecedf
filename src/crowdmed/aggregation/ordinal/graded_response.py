"""Graded-response (cumulative-link) annotator model for ordinal labels, fitted by EM."""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar

import numpy as np

from crowdmed._validation import check_option, interval
from crowdmed.aggregation.base import EPS, EMAggregator
from crowdmed.data.labels import CrowdLabels

__all__ = ["ClassPrior", "GradedResponse", "Link", "Locations", "ordinal_confusion"]

_SQRT_2PI = np.sqrt(2.0 * np.pi)
_THREADPOOLS: list[Any] = []  # created on first use (it scans the libraries)


def _one_blas_thread() -> Any:
    """Context manager limiting BLAS to one thread (L-BFGS-B's BLAS calls are on tiny vectors)."""
    if not _THREADPOOLS:
        from threadpoolctl import ThreadpoolController

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


class ClassPrior(str, Enum):
    """How the prior over the true classes is set."""

    LEARNED = "learned"
    UNIFORM = "uniform"


def _check_class_prior(value: Any) -> str | None:
    check_option(value, ClassPrior, "class_prior")
    return None


def _check_locations(value: Any) -> str | None:
    check_option(value, Locations, "locations")
    return None


def _check_link(value: Any) -> str | None:
    check_option(value, Link, "link")  # raises with a "did you mean" hint
    return None


def _cdf_sf_pdf(u: np.ndarray, link: Link) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CDF, survival function and density of the standard noise at ``u`` (``±inf`` allowed)."""
    from scipy import special  # imported when used: it is slow to load

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

    Classes ``0..K-1`` are ordered (in the order of ``classes``) and sit at increasing
    locations ``μ_0 = 0 < μ_1 < … < μ_{K-1} = K-1`` on a latent severity axis, with the
    thresholds half-way between neighbours, ``τ_k = (μ_{k-1} + μ_k) / 2``. Annotator ``a``
    perceives an item of true class ``k`` at ``μ_k + b_a + s_a ε`` and reports the class
    whose interval holds it:

    ``P(a says l | k) = F((τ_{l+1} − b_a − μ_k) / s_a) − F((τ_l − b_a − μ_k) / s_a)``

    with ``F`` the normal (``"probit"``) or logistic (``"logit"``) CDF, ``τ_0 = −∞`` and
    ``τ_K = +∞``. ``b_a`` (``offsets_``) is the annotator's severity, in grades: a reader
    with ``b_a = 0.5`` rates half a class higher than the average reader; ``s_a``
    (``noise_``) is their noise. The fixed end locations set the scale of the axis, and the
    offsets of the annotators with labels are kept at mean zero: the latent classes are those
    of the average reader, whose most likely report for a class-``k`` item is ``k``. The
    middle locations are estimated (``locations="fixed"`` keeps ``μ_k = k``, equally spaced
    grades). A reader one grade stricter than the others is thereby told apart from a reader
    who answers at random, which a nominal model such as Dawid–Skene cannot do with few items
    per class.

    The E-step is Dawid–Skene's with the model's confusion matrices, summed in log space (a
    product of many probabilities underflows). The M-step maximises the expected complete-data
    log-likelihood, which depends on the labels only through the soft counts ``C[a, k, l]``
    (``n_annotators × K × K`` numbers), by a few L-BFGS steps with the analytic gradient,
    warm-started from the previous iteration, over the gaps between locations (a softmax, so
    they stay ordered), the offsets (on the mean-zero subspace) and ``log s``. A step that
    does not improve the objective is rejected, so ``log_likelihoods_`` never decreases
    (generalised EM). A Gaussian penalty ``regularization / 2 · Σ (b_a² + (log s_a)² + (z − z̄)²)``
    on the offsets, log noise scales and the centred softmax logits ``z`` of the gaps keeps readers
    with few or one-sided labels, and classes nobody uses, finite (MAP-EM; its log-density
    is part of ``log_likelihoods_``).

    Args:
        max_iter: Maximum number of EM iterations.
        tol: Stop when the gain in log-likelihood per annotation is below ``tol``.
        link: ``"probit"`` (normal perception noise) or ``"logit"`` (logistic noise).
        locations: ``"free"`` (estimate the middle class locations) or ``"fixed"``
            (``μ_k = k``).
        class_prior: ``"learned"`` (the share of each class, estimated) or ``"uniform"``
            (every class equally likely a priori: the consensus is not drawn towards the most
            frequent class, which suits noisy readers and a skewed grade distribution).
        regularization: Precision of the Gaussian penalty described above; ``0`` gives
            maximum likelihood.
        m_step_iter: Maximum L-BFGS iterations per M-step.
        random_state: Seed or ``numpy.random.Generator`` for tie-breaking of ``labels_``;
            ``None`` breaks ties by the lowest class index.

    Attributes:
        posteriors_ (ndarray of shape (n_items, n_classes)): P(true class | labels) over the
            ordered classes.
        labels_ (ndarray of shape (n_items,)): Argmax of ``posteriors_``.
        thresholds_ (ndarray of shape (n_classes - 1,)): Thresholds ``τ``, half-way between
            neighbouring class locations.
        locations_ (ndarray of shape (n_classes,)): Class locations ``μ``; the first is 0 and
            the last ``K - 1``.
        offsets_ (ndarray of shape (n_annotators,)): Severity offsets ``b_a`` (mean 0);
            positive rates higher.
        noise_ (ndarray of shape (n_annotators,)): Noise scales ``s_a`` (latent-axis units).
        confusion_ (ndarray of shape (n_annotators, n_classes, n_classes)): Implied
            ``P(a says l | true class k)`` (see conventions), floored at ``1e-10``.
        priors_ (ndarray of shape (n_classes,)): Class prior (``1 / K`` each with
            ``class_prior="uniform"``).
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
        >>> gr.offsets_.round(1) + 0.0  # true offsets -0.5, 0, 0.5
        array([-0.5,  0. ,  0.6])
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        **EMAggregator._parameter_constraints,
        "link": _check_link,
        "locations": _check_locations,
        "class_prior": _check_class_prior,
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
        class_prior: str = "learned",
        regularization: float = 0.1,
        m_step_iter: int = 20,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.link = link
        self.locations = locations
        self.class_prior = class_prior
        self.regularization = regularization
        self.m_step_iter = m_step_iter
        self.random_state = random_state

    # ------------------------------------------------------------------ parameters
    @staticmethod
    def _unpack(theta: np.ndarray, k: int, n_ann: int) -> tuple[np.ndarray, ...]:
        """Split ``theta = [η (K-2), offsets (A), log noise (A)]`` and build the axis.

        The gaps between consecutive class locations are ``(K-1) · softmax([0, η])``, so the
        locations increase from ``μ_0 = 0`` to ``μ_{K-1} = K-1``; each threshold lies
        half-way between two neighbouring locations.

        Returns:
            ``tau`` (K-1,), ``eta`` (K-2,), ``weights`` (K-1,) of the softmax, ``mu`` (K,),
            ``offsets`` (A,), ``log_s`` (A,).
        """
        eta = theta[: k - 2]
        z = np.concatenate([[0.0], eta])
        w = np.exp(z - z.max())
        w /= w.sum()
        mu = np.concatenate([[0.0], np.cumsum((k - 1) * w)])
        mu[-1] = k - 1.0  # exact end despite rounding
        tau = 0.5 * (mu[:-1] + mu[1:])
        offsets = theta[k - 2 : k - 2 + n_ann]
        log_s = theta[k - 2 + n_ann :]
        return tau, eta, w, mu, offsets, log_s

    @staticmethod
    def _centred_logits(eta: np.ndarray) -> np.ndarray:
        """Softmax logits ``[0, η]`` minus their mean (the same for reversed classes)."""
        z = np.concatenate([[0.0], eta])
        return z - z.mean()

    def _penalty(self, eta: np.ndarray, offsets: np.ndarray, log_s: np.ndarray) -> float:
        """Log-density of the Gaussian penalty (up to a constant)."""
        zc = self._centred_logits(eta)
        value = (offsets**2).sum() + (log_s**2).sum() + (zc**2).sum()
        return -0.5 * self.regularization * float(value)

    def _objective(
        self, theta: np.ndarray, counts: np.ndarray, scale: float, link: Link
    ) -> tuple[float, np.ndarray]:
        """Negative expected complete-data log-likelihood plus penalty, divided by ``scale``."""
        n_ann, k, _ = counts.shape
        tau, eta, w, mu, offsets, log_s = self._unpack(theta, k, n_ann)
        s = np.exp(log_s)
        parts = _link_parts(tau, offsets, s, link, mu)
        prob = parts["prob"]
        ok = prob > EPS  # floored cells are constant: no gradient
        logp = np.log(np.where(ok, prob, EPS))
        value = float((counts * logp).sum())
        w_c = np.where(ok & (counts > 0), counts / np.where(ok, prob, 1.0), 0.0)
        g_hi = w_c * parts["pdf_hi"]  # d/du_hi of counts · log P
        g_lo = w_c * parts["pdf_lo"]  # minus d/du_lo
        inv_s = (1.0 / s)[:, None, None]
        # d/dτ_j: τ_j is the upper bound of class j-1 and the lower bound of class j.
        d_tau = (g_hi * inv_s).sum(axis=(0, 1))[:-1] - (g_lo * inv_s).sum(axis=(0, 1))[1:]
        d_shift = (g_hi - g_lo) * inv_s  # minus d/d(b_a + μ_k)
        d_offsets = -d_shift.sum(axis=(1, 2))
        d_log_s = -(g_hi * parts["u_hi"] - g_lo * parts["u_lo"]).sum(axis=(1, 2))
        # Chain rule to the locations: μ_k directly, and through τ_k and τ_{k+1} (midpoints).
        d_mu = -d_shift.sum(axis=(0, 2))
        d_mu[:-1] += 0.5 * d_tau
        d_mu[1:] += 0.5 * d_tau
        # μ_j = Σ_{m < j} gap_m, gap = (K-1) softmax(z), z = [0, η].
        d_gap = np.cumsum(d_mu[::-1])[::-1][1:]
        d_z = (k - 1) * w * (d_gap - float(w @ d_gap))
        lam = self.regularization
        pen = self._penalty(eta, offsets, log_s)
        grad = np.concatenate(
            [
                d_z[1:] - lam * self._centred_logits(eta)[1:],
                d_offsets - lam * offsets,
                d_log_s - lam * log_s,
            ]
        )
        return -(value + pen) / scale, -grad / scale

    def _objective_centred(
        self,
        theta: np.ndarray,
        counts: np.ndarray,
        scale: float,
        link: Link,
        active: np.ndarray,
    ) -> tuple[float, np.ndarray]:
        """:meth:`_objective` on the subspace where the active annotators' offsets sum to 0.

        The gradient of those offsets is projected to mean zero, so quasi-Newton steps (built
        from past gradients and steps) stay on the subspace.
        """
        value, grad = self._objective(theta, counts, scale, link)
        k = counts.shape[1]
        g_off = grad[k - 2 : k - 2 + counts.shape[0]]
        if active.any():
            g_off[active] -= g_off[active].mean()
        return value, grad

    def _set_theta(self, theta: np.ndarray, k: int, n_ann: int, link: Link) -> None:
        tau, _, _, mu, offsets, log_s = self._unpack(theta, k, n_ann)
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

        Classes at ``0..K-1`` (thresholds half-way between them), no offset, unit noise.
        """
        self._theta = np.zeros(n_classes - 2 + 2 * n_annotators)

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
        # The M-step keeps the offsets of the annotators with labels at mean 0: the latent
        # classes are those of the average reader (a common shift of all readers could
        # otherwise be traded against the class prior).
        active = label_counts.sum(axis=1) > 0
        f0, _ = self._objective(theta0, counts, scale, link)
        bounds: list[tuple[float | None, float | None]] = [(None, None)] * theta0.size
        if check_option(self.locations, Locations, "locations") is Locations.FIXED:
            bounds[: k - 2] = [(0.0, 0.0)] * (k - 2)  # equal gaps: μ_k = k
        # L-BFGS costs O(n_params) per step (dense BFGS is cubic in the 2 · n_annotators
        # parameters). Its BLAS calls are on tiny vectors: extra threads only contend.
        with _one_blas_thread():
            from scipy import optimize

            res = optimize.minimize(
                self._objective_centred,
                theta0,
                args=(counts, scale, link, active),
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                options={"maxiter": self.m_step_iter},
            )
        theta = res.x.copy()
        # Remove rounding drift off the subspace; annotators without labels sit at the
        # penalty's minimum.
        offsets = theta[k - 2 : k - 2 + n_ann]
        log_s = theta[k - 2 + n_ann :]
        shift = offsets[active].mean() if active.any() else 0.0
        offsets[active] -= shift
        offsets[~active] = 0.0
        log_s[~active] = 0.0
        # Generalised EM: keep the old parameters unless the objective improved.
        if not (
            np.all(np.isfinite(theta)) and self._objective(theta, counts, scale, link)[0] <= f0
        ):
            theta = theta0
        self._set_theta(theta, k, n_ann, link)
        if check_option(self.class_prior, ClassPrior, "class_prior") is ClassPrior.UNIFORM:
            self.priors_ = np.full(k, 1.0 / k)
        else:
            self.priors_ = np.maximum(class_totals / max(n_items, 1), EPS)

    def _log_joint(self, cl: CrowdLabels) -> np.ndarray:
        k = cl.n_classes
        # log_conf[a*K + l, k] = log P(a says l | class k): one sparse product sums each item's
        # log-probabilities (log space: the product of many probabilities underflows).
        log_conf = np.log(self.confusion_).transpose(0, 2, 1).reshape(-1, k)
        return cl.incidence() @ log_conf + np.log(self.priors_)

    def _log_param_prior(self) -> float:
        k = self.thresholds_.size + 1
        _, eta, _, _, offsets, log_s = self._unpack(self._theta, k, self.offsets_.size)
        return self._penalty(eta, offsets, log_s)
