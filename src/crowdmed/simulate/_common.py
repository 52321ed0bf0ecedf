"""Checks and helpers shared by the annotator simulators."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import numpy.typing as npt

from crowdmed._text import short_list

#: Largest deviation of a confusion row sum (or a prior sum) from 1 that is accepted.
ROW_SUM_TOL = 1e-6


# ---------------------------------------------------------------------------- checks
def check_int(value: Any, name: str, *, minimum: int, maximum: int | None = None) -> int:
    """Check that ``value`` is an integer in ``minimum..maximum``."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"`{name}` must be an integer; got {value!r}.")
    v = int(value)
    if v < minimum or (maximum is not None and v > maximum):
        rng = f"at least {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ValueError(f"`{name}` must be an integer {rng}; got {v}.")
    return v


def check_confusion(confusion: npt.ArrayLike, name: str = "confusion") -> np.ndarray:
    """Validate confusion matrices; return a float copy whose rows sum to 1 exactly."""
    conf = np.asarray(confusion)
    if conf.dtype == bool or not (
        np.issubdtype(conf.dtype, np.floating) or np.issubdtype(conf.dtype, np.integer)
    ):
        raise TypeError(f"`{name}` must be a float array; got dtype {conf.dtype}.")
    conf = conf.astype(np.float64)
    if conf.ndim != 3 or conf.shape[1] != conf.shape[2] or conf.shape[0] == 0:
        hint = " Use confusion[None] for a single annotator." if conf.ndim == 2 else ""
        raise ValueError(
            f"`{name}` must have shape (n_annotators, n_classes, n_classes); got shape "
            f"{conf.shape}.{hint}"
        )
    if conf.shape[1] < 2:
        raise ValueError(f"`{name}` must have at least 2 classes; got {conf.shape[1]}.")
    bad = ~((conf >= 0) & (conf <= 1))
    if bad.any():
        raise ValueError(
            f"`{name}` must hold probabilities in [0, 1]; got {short_list(conf[bad])}."
        )
    sums = conf.sum(axis=2)
    off = np.abs(sums - 1) > ROW_SUM_TOL
    if off.any():
        a, k = np.argwhere(off)[0]
        raise ValueError(
            f"Each row of `{name}` must sum to 1 (rows are the true class, see "
            f"docs/conventions.md); got {off.sum()} rows that do not, e.g. "
            f"{name}[{a}, {k}].sum() = {sums[a, k]:.6g}. Transpose if your matrices "
            "keep the true class in the columns."
        )
    return conf / sums[..., None]


def fill_off_diagonal(diag: np.ndarray, *, uniform: bool, rng: np.random.Generator) -> np.ndarray:
    """Confusion matrices with the given diagonal, ``diag`` of shape ``(A, K)``.

    The mass ``1 - diag[a, k]`` of row ``k`` goes to the other classes, equally
    (``uniform``) or in Dirichlet(1, ..., 1) shares drawn per row.
    """
    n_annotators, k = diag.shape
    eye = np.eye(k, dtype=bool)
    if uniform:
        shares = np.broadcast_to(np.where(eye, 0.0, 1.0 / (k - 1)), (n_annotators, k, k))
    else:
        # normalised exponentials on the K-1 off-diagonal cells are Dirichlet(1) shares
        w = np.where(eye, 0.0, rng.standard_exponential((n_annotators, k, k)))
        shares = w / w.sum(axis=2, keepdims=True)
    return np.where(eye, diag[:, :, None], (1.0 - diag)[:, :, None] * shares)
