"""Gaussian reader models for continuous labels, fitted by EM on COO readings.

Raykar et al.'s bias-and-precision model and the scale-and-bias variant.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np

from crowdmed._validation import interval
from crowdmed.aggregation.continuous.base import BaseContinuousAggregator, ContinuousLabels
from crowdmed.exceptions import ConvergenceWarning

__all__ = ["RaykarRegression", "ScaleBiasRegression"]

_LOG_2PI = float(np.log(2.0 * np.pi))


def _bool(v: Any) -> str | None:
    return None if isinstance(v, (bool, np.bool_)) else "True or False"


class _GaussianReaders(BaseContinuousAggregator):
    """EM for ``y_ia = s_a z_i + b_a + N(0, 1/λ_a)`` with ``z_i ~ N(m, 1/λ_0)``.

    Subclasses choose which of ``s_a`` (scale) and ``b_a`` (bias) are free.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "max_iter": interval(0, None, integer=True),
        "tol": interval(0, None),
        "prior_strength": interval(0, None),
    }
    _free_scale: ClassVar[bool] = False
    max_iter: int
    tol: float
    prior_strength: float

    def _free_bias(self) -> bool:
        return True

    # ------------------------------------------------------------------ EM steps
    def _m_step(self, cl: ContinuousLabels, ez: np.ndarray, vz: np.ndarray) -> None:
        y = cl.values
        n = cl.per_annotator()
        active = n > 0
        # Prior of the truth: the exact maximiser of E[log N(z; m, 1/λ0)].
        m = float(ez.mean())
        var0 = float(((ez - m) ** 2 + vz).mean())
        lam0 = 1.0 / max(var0, 1e-12 * self._v0)
        e = ez[cl.items]
        e2 = e * e + vz[cl.items]
        s_z, s_y = cl.per_annotator(e), cl.per_annotator(y)
        safe_n = np.where(active, n, 1.0)
        scale = np.ones(cl.n_annotators)
        bias = np.zeros(cl.n_annotators)
        if self._free_scale:
            # Least squares of y on E[z] per annotator (2 × 2 normal equations, with E[z²]).
            s_zz, s_yz = cl.per_annotator(e2), cl.per_annotator(y * e)
            det = s_zz * n - s_z**2
            # A spread of the truth below 1e-8 of its second moment leaves the scale unidentified
            # (e.g. every item has the same value): keep the scale at 1 there.
            ok = active & (det > 1e-8 * np.maximum(s_zz * n, 1e-300))
            safe_det = np.where(ok, det, 1.0)
            scale = np.where(ok, (n * s_yz - s_z * s_y) / safe_det, 1.0)
            bias = np.where(ok, (s_zz * s_y - s_z * s_yz) / safe_det, (s_y - s_z) / safe_n)
            bias = np.where(active, bias, 0.0)
        elif self._free_bias():
            bias = np.where(active, (s_y - s_z) / safe_n, 0.0)
        a_r, b_r = scale[cl.annotators], bias[cl.annotators]
        ss = cl.per_annotator((y - a_r * e - b_r) ** 2 + a_r**2 * vz[cl.items])
        # MAP with the prior density ∝ σ^-ν exp(-ν v0 / 2σ²) on each noise variance σ²: ν =
        # prior_strength pseudo-readings whose squared residual is v0, so an annotator with
        # one reading keeps a finite precision; ν = 0 is maximum likelihood.
        nu = self.prior_strength
        var = np.where(n + nu > 0, (ss + nu * self._v0) / np.maximum(n + nu, 1e-300), self._v0)
        var = np.maximum(var, 1e-12 * self._v0)
        # Identify the latent axis (the marginal likelihood is unchanged): mean scale 1, mean
        # bias 0 over the annotators with readings.
        if active.any():
            if self._free_scale:
                alpha = float(scale[active].mean())
                if abs(alpha) > 1e-12:
                    scale = scale / alpha
                    m, lam0 = alpha * m, lam0 / alpha**2
            if self._free_scale or self._free_bias():
                c = float(bias[active].mean())
                bias = bias - scale * c
                m = m + c
        self.scale_ = scale
        self.bias_ = bias
        self.precision_ = 1.0 / var
        self.prior_mean_ = m
        self.prior_precision_ = lam0

    def _e_step(self, cl: ContinuousLabels) -> tuple[np.ndarray, np.ndarray, float]:
        """Gaussian posterior of every item's truth and the marginal log-likelihood."""
        y = cl.values
        s = self.scale_[cl.annotators]
        b = self.bias_[cl.annotators]
        lam = self.precision_[cl.annotators]
        lam0, m = self.prior_precision_, self.prior_mean_
        a_i = cl.per_item(lam * s * s)
        prec = lam0 + a_i
        ez = (lam0 * m + cl.per_item(lam * s * (y - b))) / prec
        vz = 1.0 / prec
        # Marginal of an item's readings: N(s m + b, diag(1/λ) + s sᵀ/λ0); determinant lemma
        # and Sherman–Morrison give it from per-item sums, without forming the covariance.
        r = y - s * m - b
        n_i = cl.per_item()
        logdet = -cl.per_item(np.log(lam)) + np.log1p(a_i / lam0)
        quad = cl.per_item(lam * r * r) - cl.per_item(lam * s * r) ** 2 / prec
        ll = -0.5 * float((n_i * _LOG_2PI + logdet + quad).sum())
        return ez, vz, ll

    def _log_param_prior(self) -> float:
        nu = self.prior_strength
        if nu == 0:
            return 0.0
        var = 1.0 / self.precision_
        return float((-0.5 * nu * np.log(var) - 0.5 * nu * self._v0 / var).sum())

    def _fit(self, cl: ContinuousLabels) -> None:
        v = float(np.var(cl.values))
        self._v0 = v if v > 0 else 1.0
        try:
            self._run_em(cl)
        finally:
            del self._v0

    def _run_em(self, cl: ContinuousLabels) -> None:
        # Start from the item means, as if they were the truth.
        ez = cl.per_item(cl.values) / cl.per_item()
        vz = np.zeros(cl.n_items)
        history: list[float] = []
        converged = False
        n_iter = 0
        if self.max_iter == 0:
            self._m_step(cl, ez, vz)
        for it in range(1, self.max_iter + 1):
            n_iter = it
            self._m_step(cl, ez, vz)
            ez, vz, ll = self._e_step(cl)
            history.append(ll + self._log_param_prior())
            if len(history) > 1 and (history[-1] - history[-2]) / cl.n_labels < self.tol:
                converged = True
                break
        if self.max_iter > 0 and not converged:
            warnings.warn(
                f"{type(self).__name__} did not converge in max_iter={self.max_iter} "
                f"iterations (tol={self.tol}). Increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=4,
            )
        self.labels_ = ez
        self.posterior_variances_ = vz
        self.log_likelihoods_ = history
        self.n_iter_ = n_iter if self.max_iter > 0 else 0
        self.converged_ = converged

    def _predict(self, cl: ContinuousLabels) -> np.ndarray:
        return self._e_step(cl)[0]


class RaykarRegression(_GaussianReaders):
    """Per-annotator bias and precision for continuous labels (Raykar et al. 2010), by EM.

    Annotator ``a`` reads item ``i`` as ``y_ia = z_i + b_a + ε``, ``ε ~ N(0, 1/λ_a)``, and the
    true values follow ``z_i ~ N(m, 1/λ_0)`` with ``m`` and ``λ_0`` estimated (empirical
    Bayes). This is the regression model of Raykar et al. (2010, section 3) without item
    features, plus a per-annotator bias (``bias=False`` gives their model exactly). The
    E-step gives each truth a Gaussian posterior — a precision-weighted mean of the
    bias-corrected readings shrunk towards ``m``; the M-step is closed-form. The biases have
    mean zero (the origin of the truth is the average annotator's). A weak prior on each
    noise variance, worth ``prior_strength`` pseudo-readings whose squared residual is the
    variance of all readings, keeps an annotator with one or two readings from getting an
    infinite precision; its log-density is part of ``log_likelihoods_``.

    Args:
        max_iter: Maximum number of EM iterations.
        tol: Stop when the gain in log-likelihood per reading is below ``tol``.
        bias: Whether annotators have a bias ``b_a``.
        prior_strength: Pseudo-readings ``ν`` of the variance prior; ``0`` gives maximum
            likelihood.

    Attributes:
        labels_ (ndarray of shape (n_items,)): Posterior mean of each item's true value.
        posterior_variances_ (ndarray of shape (n_items,)): Posterior variance.
        bias_ (ndarray of shape (n_annotators,)): ``b_a`` (mean 0 over annotators with
            readings); zeros with ``bias=False``.
        precision_ (ndarray of shape (n_annotators,)): ``λ_a``, inverse noise variance.
        scale_ (ndarray of shape (n_annotators,)): Ones (see :class:`ScaleBiasRegression`).
        prior_mean_ (float): ``m``.
        prior_precision_ (float): ``λ_0``.
        log_likelihoods_ (list[float]): Marginal log-likelihood plus log-prior, one value
            per iteration; never decreases.
        n_iter_ (int): Number of iterations run.
        converged_ (bool): Whether ``tol`` was reached.

    References:
        Raykar, Yu, Zhao, Valadez, Florin, Bogoni & Moy (2010). Learning from crowds. JMLR 11,
        1297–1322. https://www.jmlr.org/papers/v11/raykar10a.html

    Examples:
        >>> import numpy as np
        >>> y = np.array([[1.0, 2.1, 0.2], [2.0, 3.0, 1.1], [3.0, 3.9, 2.0], [4.0, 5.1, np.nan]])
        >>> rr = RaykarRegression().fit(y)
        >>> rr.bias_.round(1) + 0.0  # reader 2 reads about 1 higher, reader 3 about 1 lower
        array([ 0. ,  1. , -1.1])
    """

    def __init__(
        self,
        *,
        max_iter: int = 200,
        tol: float = 1e-7,
        bias: bool = True,
        prior_strength: float = 2.0,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.bias = bias
        self.prior_strength = prior_strength

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        **_GaussianReaders._parameter_constraints,
        "bias": _bool,
    }

    def _free_bias(self) -> bool:
        return bool(self.bias)


class ScaleBiasRegression(_GaussianReaders):
    """Per-annotator scale, bias and precision for continuous labels, by EM.

    Annotator ``a`` reads item ``i`` as ``y_ia = s_a z_i + b_a + ε``, ``ε ~ N(0, 1/λ_a)``,
    with ``z_i ~ N(m, 1/λ_0)``: the scale-and-bias extension of
    :class:`RaykarRegression` (a one-factor model of the readings), for readers who use a
    compressed or stretched range. The M-step solves each annotator's 2 × 2 least-squares
    problem in ``(s_a, b_a)`` with the posterior moments of the truth, then the noise
    variance. The latent axis is identified by mean scale 1 and mean bias 0 over the
    annotators with readings (the truth is on the average annotator's scale). The variance
    prior is as in :class:`RaykarRegression`.

    Args:
        max_iter: Maximum number of EM iterations.
        tol: Stop when the gain in log-likelihood per reading is below ``tol``.
        prior_strength: Pseudo-readings ``ν`` of the variance prior; ``0`` gives maximum
            likelihood.

    Attributes:
        labels_ (ndarray of shape (n_items,)): Posterior mean of each item's true value.
        posterior_variances_ (ndarray of shape (n_items,)): Posterior variance.
        scale_ (ndarray of shape (n_annotators,)): ``s_a`` (mean 1).
        bias_ (ndarray of shape (n_annotators,)): ``b_a`` (mean 0).
        precision_ (ndarray of shape (n_annotators,)): ``λ_a``.
        prior_mean_ (float): ``m``.
        prior_precision_ (float): ``λ_0``.
        log_likelihoods_ (list[float]): Marginal log-likelihood plus log-prior; never
            decreases.
        n_iter_ (int): Number of iterations run.
        converged_ (bool): Whether ``tol`` was reached.

    References:
        Raykar et al. (2010). Learning from crowds. JMLR 11, 1297–1322 (the Gaussian reader
        model this extends). https://www.jmlr.org/papers/v11/raykar10a.html

    Examples:
        >>> import numpy as np
        >>> y = np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
        >>> ScaleBiasRegression().fit(y).scale_.round(2)
        array([0.67, 1.33])
    """

    _free_scale: ClassVar[bool] = True

    def __init__(
        self,
        *,
        max_iter: int = 200,
        tol: float = 1e-7,
        prior_strength: float = 2.0,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.prior_strength = prior_strength
