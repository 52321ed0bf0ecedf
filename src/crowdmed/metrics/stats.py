"""Paired comparison of two methods over seeds (or cases): mean difference with an interval.

A method is called better than a baseline only when the confidence interval of the mean
per-seed (paired) difference excludes 0; otherwise the verdict is "no difference detected".
Two intervals are offered: Student's t on the differences (``method="t"``) and the
percentile bootstrap of the mean difference (``method="bootstrap"``). When one claim rests on
a family of such tests (a method is no worse at every budget, on every data set), :func:`holm`
adjusts their p-values so that the family-wise error rate is controlled.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as _sp_stats

from crowdmed._validation import check_option, check_random_state

__all__ = ["PairedDifference", "format_difference", "holm", "paired_difference"]

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no difference detected"


class IntervalMethod(str, Enum):
    """How the interval of the mean paired difference is computed."""

    T = "t"
    BOOTSTRAP = "bootstrap"


@dataclass(frozen=True)
class PairedDifference:
    """Mean paired difference ``a − b`` with its confidence interval.

    Attributes:
        mean: Mean of the per-pair differences ``a[i] − b[i]``.
        low: Lower end of the interval (``NaN`` when ``n < 2``).
        high: Upper end of the interval (``NaN`` when ``n < 2``).
        n: Number of pairs.
        level: Confidence level of the interval.
        method: ``"t"`` or ``"bootstrap"``.
        verdict: ``"better"`` or ``"worse"`` (``a`` against ``b``, taking
            ``higher_is_better`` into account) when the interval excludes 0, else
            ``"no difference detected"``.
    """

    mean: float
    low: float
    high: float
    n: int
    level: float
    method: str
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dictionary (for JSON result files)."""
        return {
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "level": self.level,
            "method": self.method,
            "verdict": self.verdict,
        }


def _pairs(a: Any, b: Any) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"`a` and `b` must be 1-D arrays of equal length (one value per seed); got shapes "
            f"{x.shape} and {y.shape}."
        )
    if x.size == 0:
        raise ValueError("`a` and `b` must hold at least one pair; got none.")
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        raise ValueError(
            f"`a` and `b` must be finite; got NaN or inf at positions "
            f"{np.flatnonzero(bad).tolist()}. Drop those seeds from both arrays."
        )
    return x - y


def paired_difference(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    level: float = 0.95,
    method: str = "t",
    higher_is_better: bool = True,
    n_resamples: int = 10_000,
    rng: int | np.random.Generator | None = None,
) -> PairedDifference:
    """Mean of the paired differences ``a[i] − b[i]`` with a confidence interval and a verdict.

    ``method="t"``: ``mean ± t_{(1+level)/2, n−1} · sd / √n`` with the sample standard
    deviation (``ddof=1``) of the differences. ``method="bootstrap"``: the ``(1−level)/2``
    and ``(1+level)/2`` quantiles of the means of ``n_resamples`` resamples (with
    replacement) of the differences.

    Args:
        a: Float array of shape ``(n,)``: the method's score on each seed (or case).
        b: Float array of shape ``(n,)``: the baseline's score on the same seeds.
        level: Confidence level in ``(0, 1)``.
        method: ``"t"`` or ``"bootstrap"``.
        higher_is_better: Whether a larger score is better (Dice: yes; a distance: no).
        n_resamples: Number of bootstrap resamples.
        rng: Seed or ``np.random.Generator`` for the bootstrap.

    Returns:
        A :class:`PairedDifference`. With a single pair the interval is ``NaN`` and the
        verdict is ``"no difference detected"``.

    Raises:
        ValueError: If the arrays differ in length, are empty or hold NaN, or ``level``,
            ``method`` or ``n_resamples`` is invalid.

    Examples:
        >>> r = paired_difference([0.80, 0.82, 0.81, 0.83], [0.78, 0.79, 0.80, 0.80])
        >>> round(r.mean, 4), round(r.low, 4), round(r.high, 4), r.n, r.verdict
        (0.0225, 0.0073, 0.0377, 4, 'better')
        >>> paired_difference([1.0, 2.0], [2.0, 1.0]).verdict
        'no difference detected'
    """
    kind = check_option(method, IntervalMethod, "method")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"`level` must be in (0, 1); got {level}.")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)):
        raise ValueError(f"`n_resamples` must be a positive integer; got {n_resamples!r}.")
    if n_resamples < 1:
        raise ValueError(f"`n_resamples` must be a positive integer; got {n_resamples}.")
    d = _pairs(a, b)
    n = int(d.size)
    mean = float(d.mean())
    if n < 2:
        low = high = float("nan")
    elif kind is IntervalMethod.T:
        half = float(_sp_stats.t.ppf((1.0 + level) / 2.0, n - 1)) * float(d.std(ddof=1))
        half /= np.sqrt(n)
        low, high = mean - half, mean + half
    else:
        gen = check_random_state(rng)
        idx = gen.integers(0, n, size=(int(n_resamples), n))
        means = d[idx].mean(axis=1)
        low, high = (
            float(q) for q in np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
        )
    if n >= 2 and low > 0:
        verdict = BETTER if higher_is_better else WORSE
    elif n >= 2 and high < 0:
        verdict = WORSE if higher_is_better else BETTER
    else:
        verdict = NO_DIFFERENCE
    return PairedDifference(
        mean=mean,
        low=float(low),
        high=float(high),
        n=n,
        level=float(level),
        method=kind.value,
        verdict=verdict,
    )


def format_difference(result: PairedDifference, *, digits: int = 3, scale: float = 1.0) -> str:
    """One table cell: ``+0.012 [−0.003, +0.027], no difference detected``.

    Args:
        result: The output of :func:`paired_difference`.
        digits: Decimal places.
        scale: Factor applied to the numbers (100 for Dice points).

    Returns:
        The mean difference, its interval and the verdict as text.

    Examples:
        >>> r = paired_difference([0.80, 0.82, 0.81, 0.83], [0.78, 0.79, 0.80, 0.80])
        >>> print(format_difference(r, digits=1, scale=100))
        +2.2 [+0.7, +3.8], better
    """
    m, lo, hi = (scale * v for v in (result.mean, result.low, result.high))
    if result.n < 2:
        return f"{m:+.{digits}f} (n=1), {result.verdict}"
    return f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}], {result.verdict}"


def holm(p_values: npt.ArrayLike) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values of a family of ``m`` tests.

    With the p-values sorted, ``p_(1) <= ... <= p_(m)``, the adjusted value of the ``i``-th
    is ``max_{j <= i} min(1, (m − j + 1) · p_(j))``, returned in the input order. Rejecting
    every hypothesis whose adjusted p-value is ``<= alpha`` keeps the probability of any
    false rejection at most ``alpha``, whatever the dependence between the tests.

    Args:
        p_values: Float array of shape ``(m,)`` with values in ``[0, 1]``.

    Returns:
        Float array of shape ``(m,)``: the adjusted p-values, each ``>=`` its raw value.

    Raises:
        ValueError: If ``p_values`` is not 1-D or holds values outside ``[0, 1]`` or NaN.

    References:
        Holm (1979), "A simple sequentially rejective multiple test procedure".
        https://www.jstor.org/stable/4615733

    Examples:
        >>> holm([0.01, 0.04, 0.03, 0.005]).round(4)
        array([0.03, 0.06, 0.06, 0.02])
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"`p_values` must be a 1-D array; got shape {p.shape}.")
    bad = ~((p >= 0.0) & (p <= 1.0))  # also catches NaN
    if bad.any():
        raise ValueError(
            f"`p_values` must lie in [0, 1]; got {p[bad][:5].tolist()} at positions "
            f"{np.flatnonzero(bad)[:5].tolist()}."
        )
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(scaled)
    return out
