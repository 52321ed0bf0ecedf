"""Simulated readers of ordinal grades and of continuous measurements.

* :func:`simulate_ordinal_readers`: the graded-response reader of
  :class:`~crowdmed.aggregation.ordinal.GradedResponse` (severity offset, noise scale, shared
  thresholds).
* :func:`simulate_continuous_readers`: a reader who reports ``scale · truth + bias`` plus
  Gaussian noise of a given precision (the model of
  :class:`~crowdmed.aggregation.continuous.ScaleBiasRegression`).

All randomness comes from ``random_state``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from crowdmed._validation import check_random_state

__all__ = [
    "SimulatedContinuous",
    "SimulatedOrdinal",
    "simulate_continuous_readers",
    "simulate_ordinal_readers",
]


@dataclass(frozen=True)
class SimulatedOrdinal:
    """Ordinal grades drawn from known readers.

    Attributes:
        labels: Integer array of shape ``(n_items, n_annotators)``; classes ``0..K-1``, ``-1``
            marks a missing annotation.
        truth: Integer array of shape ``(n_items,)``: the true class.
        offsets: Float array of shape ``(n_annotators,)``: the readers' severity offsets.
        noise: Float array of shape ``(n_annotators,)``: the readers' noise scales.
        thresholds: Float array of shape ``(K - 1,)``.
    """

    labels: np.ndarray
    truth: np.ndarray
    offsets: np.ndarray
    noise: np.ndarray
    thresholds: np.ndarray


@dataclass(frozen=True)
class SimulatedContinuous:
    """Continuous readings drawn from known readers.

    Attributes:
        values: Float array of shape ``(n_items, n_annotators)``; ``NaN`` marks a missing
            reading.
        truth: Float array of shape ``(n_items,)``.
        bias: Float array of shape ``(n_annotators,)``.
        precision: Float array of shape ``(n_annotators,)``: inverse noise variance.
        scale: Float array of shape ``(n_annotators,)``.
    """

    values: np.ndarray
    truth: np.ndarray
    bias: np.ndarray
    precision: np.ndarray
    scale: np.ndarray


def _reader_mask(
    n_items: int, n_annotators: int, labels_per_item: int | None, rng: np.random.Generator
) -> np.ndarray:
    """Boolean ``(n_items, n_annotators)``: which reader reads which item."""
    if labels_per_item is None:
        return np.ones((n_items, n_annotators), dtype=bool)
    if not 1 <= labels_per_item <= n_annotators:
        raise ValueError(
            f"`labels_per_item` must lie in 1..{n_annotators} (the number of readers); got "
            f"{labels_per_item}."
        )
    # The `labels_per_item` smallest of n_annotators uniform keys: a uniform random subset.
    keys = rng.random((n_items, n_annotators))
    ranks = keys.argsort(axis=1).argsort(axis=1)
    return ranks < labels_per_item


def _per_reader(values: npt.ArrayLike, name: str, n: int | None = None) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.ndim != 1 or (n is not None and arr.size != n) or not np.all(np.isfinite(arr)):
        want = "a finite 1-D array" + ("" if n is None else f" of length {n}")
        raise ValueError(f"`{name}` must be {want}; got shape {arr.shape}.")
    return arr


def simulate_ordinal_readers(
    n_items: int,
    offsets: npt.ArrayLike,
    noise: npt.ArrayLike,
    *,
    n_classes: int = 5,
    thresholds: npt.ArrayLike | None = None,
    priors: npt.ArrayLike | None = None,
    labels_per_item: int | None = None,
    random_state: int | np.random.Generator | None = None,
) -> SimulatedOrdinal:
    """Draw ordinal grades from graded-response readers.

    Reader ``a`` perceives an item of true class ``k`` at ``k + offsets[a] + noise[a] · ε``
    (``ε`` standard normal) and reports the class ``l`` with ``thresholds[l-1] < x ≤
    thresholds[l]``.

    Args:
        n_items: Number of items.
        offsets: Float array of shape ``(n_annotators,)``; positive rates higher.
        noise: Float array of shape ``(n_annotators,)``, positive.
        n_classes: Number of ordered classes ``K``.
        thresholds: Float array of shape ``(K - 1,)``, increasing; ``0.5, 1.5, …`` (half-way
            between class locations) when omitted.
        priors: Float array of shape ``(K,)`` of true-class probabilities; uniform when omitted.
        labels_per_item: Readers per item (a random subset); every reader reads every item
            when omitted.
        random_state: Seed or ``numpy.random.Generator``.

    Returns:
        The labels, truth and reader parameters.

    Examples:
        >>> sim = simulate_ordinal_readers(4, [0.0, 1.0], [0.3, 0.3], random_state=0)
        >>> sim.labels.shape, sim.truth.shape
        ((4, 2), (4,))
    """
    rng = check_random_state(random_state)
    b = _per_reader(offsets, "offsets")
    s = _per_reader(noise, "noise", b.size)
    if np.any(s <= 0):
        raise ValueError(f"`noise` must be positive; got {s.min():g}.")
    k = int(n_classes)
    tau = (
        np.arange(k - 1) + 0.5
        if thresholds is None
        else _per_reader(thresholds, "thresholds", k - 1)
    )
    if np.any(np.diff(tau) <= 0):
        raise ValueError(f"`thresholds` must be strictly increasing; got {tau.tolist()}.")
    p = np.full(k, 1.0 / k) if priors is None else _per_reader(priors, "priors", k)
    truth = rng.choice(k, size=n_items, p=p / p.sum())
    x = truth[:, None] + b[None, :] + s[None, :] * rng.standard_normal((n_items, b.size))
    labels = np.searchsorted(tau, x, side="left").astype(np.int64)
    mask = _reader_mask(n_items, b.size, labels_per_item, rng)
    labels[~mask] = -1
    return SimulatedOrdinal(labels, truth.astype(np.int64), b, s, tau)


def simulate_continuous_readers(
    n_items: int,
    bias: npt.ArrayLike,
    precision: npt.ArrayLike,
    *,
    scale: npt.ArrayLike | None = None,
    truth_mean: float = 0.0,
    truth_sd: float = 1.0,
    labels_per_item: int | None = None,
    random_state: int | np.random.Generator | None = None,
) -> SimulatedContinuous:
    """Draw continuous readings ``scale · truth + bias + N(0, 1 / precision)``.

    Args:
        n_items: Number of items.
        bias: Float array of shape ``(n_annotators,)``.
        precision: Float array of shape ``(n_annotators,)``, positive (inverse variance).
        scale: Float array of shape ``(n_annotators,)``; ones when omitted.
        truth_mean: Mean of the normal distribution of the true values.
        truth_sd: Standard deviation of the true values.
        labels_per_item: Readers per item (a random subset); all readers when omitted.
        random_state: Seed or ``numpy.random.Generator``.

    Returns:
        The readings (``NaN`` where missing), truth and reader parameters.

    Examples:
        >>> sim = simulate_continuous_readers(3, [0.0, 1.0], [4.0, 4.0], random_state=0)
        >>> sim.values.shape
        (3, 2)
    """
    rng = check_random_state(random_state)
    b = _per_reader(bias, "bias")
    lam = _per_reader(precision, "precision", b.size)
    if np.any(lam <= 0):
        raise ValueError(f"`precision` must be positive; got {lam.min():g}.")
    a = np.ones_like(b) if scale is None else _per_reader(scale, "scale", b.size)
    truth = truth_mean + truth_sd * rng.standard_normal(n_items)
    eps = rng.standard_normal((n_items, b.size)) / np.sqrt(lam)[None, :]
    values = a[None, :] * truth[:, None] + b[None, :] + eps
    mask = _reader_mask(n_items, b.size, labels_per_item, rng)
    values[~mask] = np.nan
    return SimulatedContinuous(values, truth, b, lam, a)
