"""Confusion-matrix families of simulated annotators.

Every builder returns a float array of shape ``(n_annotators, n_classes, n_classes)`` with
``confusion[a, k, l] = P(annotator a says l | true class k)``; each **row** (true class) sums
to 1. Stack annotators of different kinds with ``np.concatenate([...], axis=0)`` and draw
labels from the result with :func:`crowdmed.simulate.simulate_labels`.
"""

from __future__ import annotations

import numbers
from enum import Enum

import numpy as np
import numpy.typing as npt

from crowdmed._text import short_list
from crowdmed._validation import check_option, check_random_state
from crowdmed.simulate._common import check_confusion, check_int, fill_off_diagonal
from crowdmed.typing import RandomState

__all__ = [
    "adversarial_confusion",
    "biased_confusion",
    "binary_confusion",
    "diagonal_confusion",
    "spammer_confusion",
]


class Spread(str, Enum):
    """How probability mass is spread over classes."""

    UNIFORM = "uniform"
    RANDOM = "random"


class Derangement(str, Enum):
    """Which permutation without fixed points an adversarial annotator follows."""

    SHIFT = "shift"
    RANDOM = "random"


def _check_probabilities(value: npt.ArrayLike, name: str, *, size: int | None = None) -> np.ndarray:
    """Check a scalar or 1-D array of probabilities; return a float array of shape ``(size,)``.

    A scalar is broadcast to ``size`` entries (to one entry when ``size`` is ``None``).
    """
    arr = np.asarray(value)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"`{name}` must be a number or an array of numbers; got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if arr.ndim > 1:
        raise ValueError(f"`{name}` must be a number or a 1-D array; got shape {arr.shape}.")
    if arr.ndim == 0:
        arr = np.full(1 if size is None else size, float(arr))
    elif size is not None and arr.shape != (size,):
        raise ValueError(
            f"`{name}` must be a number or have shape ({size},) (one per annotator); "
            f"got shape {arr.shape}."
        )
    bad = ~((arr >= 0) & (arr <= 1))  # also catches NaN
    if bad.any():
        raise ValueError(
            f"`{name}` must lie in [0, 1]; got {short_list(arr[bad])}. Pass probabilities, "
            "not percentages."
        )
    return arr


def _random_derangements(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniformly random permutations of ``0..k-1`` without fixed points, ``(n, k)``.

    Rejection sampling: about ``1/e`` of random permutations are derangements, so each round
    redraws only the rejected rows and a handful of rounds suffice.
    """
    perms = np.argsort(rng.random((n, k)), axis=1)
    bad = (perms == np.arange(k)).any(axis=1)
    while bad.any():
        perms[bad] = np.argsort(rng.random((int(bad.sum()), k)), axis=1)
        bad = (perms == np.arange(k)).any(axis=1)
    return perms


# ---------------------------------------------------------------------------- builders
def binary_confusion(*, sensitivity: npt.ArrayLike, specificity: npt.ArrayLike) -> np.ndarray:
    """Binary confusion matrices from sensitivity and specificity.

    Class 1 is the positive class: ``confusion[a] = [[spec, 1 - spec], [1 - sens, sens]]``,
    so ``sensitivity = confusion[:, 1, 1]`` and ``specificity = confusion[:, 0, 0]``.

    Args:
        sensitivity: Float array of shape ``(n_annotators,)`` with P(says 1 | true 1), or a
            number shared by all annotators.
        specificity: Float array of shape ``(n_annotators,)`` with P(says 0 | true 0), or a
            number shared by all annotators.

    Returns:
        Float array of shape ``(n_annotators, 2, 2)``; rows sum to 1. ``n_annotators`` is the
        length of the array argument (1 when both are numbers).

    Raises:
        ValueError: If a value lies outside ``[0, 1]`` or the two lengths differ.

    Examples:
        >>> binary_confusion(sensitivity=[0.9, 0.6], specificity=[0.8, 0.7])
        array([[[0.8, 0.2],
                [0.1, 0.9]],
        <BLANKLINE>
               [[0.7, 0.3],
                [0.4, 0.6]]])
        >>> binary_confusion(sensitivity=0.75, specificity=[1.0, 0.5]).shape
        (2, 2, 2)
    """
    sens = _check_probabilities(sensitivity, "sensitivity")
    spec = _check_probabilities(specificity, "specificity")
    if np.ndim(sensitivity) == 0:
        sens = np.full_like(spec, sens[0])
    elif np.ndim(specificity) == 0:
        spec = np.full_like(sens, spec[0])
    if sens.shape != spec.shape:
        raise ValueError(
            "`sensitivity` and `specificity` must have the same length (one per annotator); "
            f"got {len(sens)} and {len(spec)}."
        )
    conf = np.empty((len(sens), 2, 2))
    conf[:, 0, 0] = spec
    conf[:, 0, 1] = 1.0 - spec
    conf[:, 1, 0] = 1.0 - sens
    conf[:, 1, 1] = sens
    return conf


def diagonal_confusion(
    n_annotators: int,
    n_classes: int,
    *,
    p: float,
    sigma: float,
    zeta: float | None = None,
    off_diagonal: str = "uniform",
    random_state: RandomState = None,
) -> np.ndarray:
    """Diagonally dominant confusion matrices with Gaussian accuracies.

    Each diagonal entry is drawn independently for every annotator and class,
    ``confusion[a, k, k] = min(max(zeta, alpha), 1)`` with ``alpha ~ Normal(p, sigma)``, so the
    accuracy of an annotator may differ between classes. The rest of the row,
    ``1 - confusion[a, k, k]``, is spread over the other ``K - 1`` classes:

    - ``"uniform"``: equally, ``(1 - confusion[a, k, k]) / (K - 1)`` each;
    - ``"random"``: in shares drawn from a flat Dirichlet, independently for every row, which
      gives each annotator preferred confusions between particular classes.

    The rows are diagonally dominant when ``zeta >= 0.5`` or, with ``"uniform"``, when
    ``zeta > 1/K``.

    Args:
        n_annotators: Number of annotators ``A``.
        n_classes: Number of classes ``K`` (at least 2).
        p: Mean of the diagonal entries before clipping, in ``[0, 1]``.
        sigma: Standard deviation of the diagonal entries before clipping (``>= 0``).
        zeta: Lower clip of the diagonal entries, in ``[0, 1]``; ``None`` uses ``1 / K``, the
            accuracy of a random guess, so no annotator is worse than chance on any class.
        off_diagonal: ``"uniform"`` or ``"random"`` (see above).
        random_state: Seed or ``numpy.random.Generator``.

    Returns:
        Float array of shape ``(n_annotators, n_classes, n_classes)``; rows sum to 1.

    Raises:
        ValueError: If a count is too small or a probability lies outside ``[0, 1]``.

    References:
        Rodrigues & Pereira (2018). Deep learning from crowds. AAAI.
        https://doi.org/10.1609/aaai.v32i1.11506

        Albarqouni et al. (2016). AggNet: deep learning from crowds for mitosis detection in
        breast cancer histology images. IEEE TMI. https://doi.org/10.1109/TMI.2016.2528120

    Examples:
        >>> import numpy as np
        >>> conf = diagonal_confusion(3, 4, p=0.8, sigma=0.1, random_state=0)
        >>> conf.shape
        (3, 4, 4)
        >>> bool(np.allclose(conf.sum(axis=2), 1.0))
        True
        >>> diagonal_confusion(1, 3, p=0.7, sigma=0.0, random_state=0)[0]
        array([[0.7 , 0.15, 0.15],
               [0.15, 0.7 , 0.15],
               [0.15, 0.15, 0.7 ]])
    """
    n_annotators = check_int(n_annotators, "n_annotators", minimum=1)
    n_classes = check_int(n_classes, "n_classes", minimum=2)
    p_ = float(_check_probabilities(p, "p")[0])
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"`sigma` must be a number; got {sigma!r}.")
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"`sigma` must be a finite number >= 0; got {sigma!r}.")
    zeta_ = 1.0 / n_classes if zeta is None else float(_check_probabilities(zeta, "zeta")[0])
    spread = check_option(off_diagonal, Spread, "off_diagonal")
    rng = check_random_state(random_state)
    alpha = rng.normal(p_, float(sigma), size=(n_annotators, n_classes))
    diag = np.clip(alpha, zeta_, 1.0)
    return fill_off_diagonal(diag, uniform=spread is Spread.UNIFORM, rng=rng)


def spammer_confusion(
    n_annotators: int,
    n_classes: int,
    *,
    distribution: str = "uniform",
    random_state: RandomState = None,
) -> np.ndarray:
    """Confusion matrices of spammers, whose labels do not depend on the truth.

    All rows of an annotator's matrix are the same distribution ``q_a``:

    - ``"uniform"``: ``q_a = 1/K`` for every class (random clicking);
    - ``"random"``: ``q_a`` drawn from a flat Dirichlet per annotator (a spammer with
      favourite buttons).

    Args:
        n_annotators: Number of annotators ``A``.
        n_classes: Number of classes ``K`` (at least 2).
        distribution: ``"uniform"`` or ``"random"`` (see above).
        random_state: Seed or ``numpy.random.Generator`` (used by ``"random"``).

    Returns:
        Float array of shape ``(n_annotators, n_classes, n_classes)``; rows sum to 1 and are
        identical within an annotator.

    Examples:
        >>> spammer_confusion(1, 2)
        array([[[0.5, 0.5],
                [0.5, 0.5]]])
        >>> conf = spammer_confusion(2, 3, distribution="random", random_state=0)
        >>> bool((conf == conf[:, :1, :]).all())
        True
    """
    n_annotators = check_int(n_annotators, "n_annotators", minimum=1)
    n_classes = check_int(n_classes, "n_classes", minimum=2)
    spread = check_option(distribution, Spread, "distribution")
    rng = check_random_state(random_state)
    if spread is Spread.UNIFORM:
        q = np.full((n_annotators, n_classes), 1.0 / n_classes)
    else:
        w = rng.standard_exponential((n_annotators, n_classes))
        q = w / w.sum(axis=1, keepdims=True)
    return np.repeat(q[:, None, :], n_classes, axis=1)


def adversarial_confusion(
    n_annotators: int,
    n_classes: int,
    *,
    strength: npt.ArrayLike = 1.0,
    permutation: str = "shift",
    random_state: RandomState = None,
) -> np.ndarray:
    """Confusion matrices of adversarial annotators, who flip labels systematically.

    With probability ``strength`` annotator ``a`` answers ``pi_a(k)`` instead of the true class
    ``k``, where ``pi_a`` is a permutation without fixed points; otherwise the true class:
    ``confusion[a] = (1 - strength[a]) * I + strength[a] * P(pi_a)``. The accuracy is
    ``1 - strength``. Such labels carry information (a model that learns ``pi_a`` can undo
    them) but mislead majority vote.

    - ``"shift"``: ``pi_a(k) = (k + 1) mod K`` for every annotator (no randomness);
    - ``"random"``: a uniformly random derangement per annotator.

    For ``K = 2`` both give the swap of the two classes.

    Args:
        n_annotators: Number of annotators ``A``.
        n_classes: Number of classes ``K`` (at least 2).
        strength: Probability of a flip, in ``[0, 1]``; a number, or a float array of shape
            ``(n_annotators,)``.
        permutation: ``"shift"`` or ``"random"`` (see above).
        random_state: Seed or ``numpy.random.Generator`` (used by ``"random"``).

    Returns:
        Float array of shape ``(n_annotators, n_classes, n_classes)``; rows sum to 1.

    Raises:
        ValueError: If ``strength`` lies outside ``[0, 1]`` or has the wrong length.

    Examples:
        >>> adversarial_confusion(1, 3, strength=0.9)
        array([[[0.1, 0.9, 0. ],
                [0. , 0.1, 0.9],
                [0.9, 0. , 0.1]]])
    """
    n_annotators = check_int(n_annotators, "n_annotators", minimum=1)
    n_classes = check_int(n_classes, "n_classes", minimum=2)
    s = _check_probabilities(strength, "strength", size=n_annotators)
    mode = check_option(permutation, Derangement, "permutation")
    rng = check_random_state(random_state)
    if mode is Derangement.SHIFT:
        perms = np.broadcast_to((np.arange(n_classes) + 1) % n_classes, (n_annotators, n_classes))
    else:
        perms = _random_derangements(n_annotators, n_classes, rng)
    flip = np.zeros((n_annotators, n_classes, n_classes))
    np.put_along_axis(flip, perms[:, :, None], 1.0, axis=2)
    eye = np.eye(n_classes)
    return (1.0 - s)[:, None, None] * eye + s[:, None, None] * flip


def biased_confusion(
    n_annotators: int,
    n_classes: int,
    *,
    preferred_class: int | npt.ArrayLike,
    bias: npt.ArrayLike,
    base: npt.ArrayLike | None = None,
) -> np.ndarray:
    """Confusion matrices of annotators biased towards one class.

    Every row is mixed with a point mass on the preferred class ``c_a``:
    ``confusion[a, k] = (1 - bias[a]) * base[a, k] + bias[a] * onehot(c_a)``. With the default
    perfect ``base`` (identity) the annotator is always right on class ``c_a`` and right with
    probability ``1 - bias`` on the others, e.g. a reader who over-calls "malignant".

    Args:
        n_annotators: Number of annotators ``A``.
        n_classes: Number of classes ``K`` (at least 2).
        preferred_class: Class index in ``0..K-1``; an int, or an integer array of shape
            ``(n_annotators,)``.
        bias: Weight of the point mass, in ``[0, 1]``; a number, or a float array of shape
            ``(n_annotators,)``.
        base: Float array of shape ``(n_annotators, n_classes, n_classes)``, rows summing to 1,
            to be biased; ``None`` uses the identity (perfect annotators).

    Returns:
        Float array of shape ``(n_annotators, n_classes, n_classes)``; rows sum to 1.

    Raises:
        ValueError: If ``preferred_class`` is not a class index, ``bias`` lies outside
            ``[0, 1]``, or ``base`` has the wrong shape.

    Examples:
        >>> biased_confusion(1, 3, preferred_class=2, bias=0.25)
        array([[[0.75, 0.  , 0.25],
                [0.  , 0.75, 0.25],
                [0.  , 0.  , 1.  ]]])
    """
    n_annotators = check_int(n_annotators, "n_annotators", minimum=1)
    n_classes = check_int(n_classes, "n_classes", minimum=2)
    b = _check_probabilities(bias, "bias", size=n_annotators)
    pc = np.asarray(preferred_class)
    if pc.dtype == bool or not np.issubdtype(pc.dtype, np.integer):
        raise TypeError(
            f"`preferred_class` must be an int or an integer array; got dtype {pc.dtype}."
        )
    if pc.ndim > 1 or (pc.ndim == 1 and pc.shape != (n_annotators,)):
        raise ValueError(
            f"`preferred_class` must be an int or have shape ({n_annotators},); got shape "
            f"{pc.shape}."
        )
    pc = np.broadcast_to(pc, (n_annotators,)).astype(np.int64)
    bad = (pc < 0) | (pc >= n_classes)
    if bad.any():
        raise ValueError(
            f"`preferred_class` must lie in 0..{n_classes - 1}; "
            f"got {short_list(np.unique(pc[bad]))}."
        )
    if base is None:
        base_ = np.broadcast_to(np.eye(n_classes), (n_annotators, n_classes, n_classes))
    else:
        base_ = check_confusion(base, "base")
        if base_.shape != (n_annotators, n_classes, n_classes):
            raise ValueError(
                f"`base` must have shape ({n_annotators}, {n_classes}, {n_classes}); got "
                f"{base_.shape}."
            )
    point = np.zeros((n_annotators, 1, n_classes))
    point[np.arange(n_annotators), 0, pc] = 1.0
    return (1.0 - b)[:, None, None] * base_ + b[:, None, None] * point
