"""Simulated segmentation raters: boundary bias and noise, shifts, missed and spurious parts.

A :class:`MaskRater` describes how one rater distorts the true mask of a case;
:func:`simulate_mask_raters` applies a panel of raters to a stack of true masks (2-D or 3-D,
binary or multiclass) with a seeded generator, so experiments can vary rater quality.

The distortions, applied in this order to each foreground class:

1. **shift** — the whole mask is translated by a random integer offset (normal, sd ``shift``
   pixels per axis; the uncovered border is background);
2. **missed components** — each connected component is dropped with probability
   ``miss_prob``;
3. **boundary** — the boundary moves outward by ``bias`` pixels (``bias < 0`` moves it
   inward: a rater who systematically over- or under-segments) plus a smooth random
   displacement of sd ``boundary_noise`` pixels and correlation length ``smoothness``. The
   mask is thresholded from its signed distance map: ``d(x) + bias + noise(x) > 0``, where
   ``d`` is positive inside (so ``bias = 1`` dilates by about one pixel with a round
   structuring element and thin structures vanish when ``bias`` is below minus their half
   width);
4. **spurious components** — a Poisson number (mean ``spurious_rate``) of discs / balls of
   radius about ``spurious_radius`` are added at random places;
5. **absent** — with probability ``absent_prob`` the rater did not annotate the case: the
   mask is ``-1`` everywhere.

Only NumPy and scipy.ndimage are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["MaskRater", "distort_mask", "simulate_mask_raters", "varied_mask_raters"]


@dataclass(frozen=True)
class MaskRater:
    """How one simulated rater distorts a true mask (see the module docstring).

    Args:
        bias: Boundary displacement in pixels; ``> 0`` over-segments, ``< 0`` under-segments.
        boundary_noise: Standard deviation in pixels of a smooth random boundary displacement.
        smoothness: Correlation length (Gaussian sigma, pixels) of that displacement.
        shift: Standard deviation in pixels of a random translation of the whole mask.
        miss_prob: Probability that each connected component is missed.
        spurious_rate: Mean number of spurious components added per case.
        spurious_radius: Typical radius in pixels of a spurious component.
        absent_prob: Probability that the rater did not annotate a case (mask all ``-1``).
    """

    bias: float = 0.0
    boundary_noise: float = 0.0
    smoothness: float = 4.0
    shift: float = 0.0
    miss_prob: float = 0.0
    spurious_rate: float = 0.0
    spurious_radius: float = 3.0
    absent_prob: float = 0.0

    def check(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        for name in ("boundary_noise", "shift", "spurious_rate"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"`MaskRater.{name}` must be a finite number >= 0; got {v!r}.")
        for name in ("smoothness", "spurious_radius"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"`MaskRater.{name}` must be a positive number; got {v!r}.")
        for name in ("miss_prob", "absent_prob"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise ValueError(f"`MaskRater.{name}` must be a probability in [0, 1]; got {v!r}.")
        if not np.isfinite(self.bias):
            raise ValueError(f"`MaskRater.bias` must be a finite number; got {self.bias!r}.")


def varied_mask_raters(n_raters: int, *, scale: float = 1.0) -> list[MaskRater]:
    """A panel of raters of varied quality, cycling through five profiles.

    The profiles are: careful (small boundary noise), over-segmenting (``bias = +scale``),
    under-segmenting (``bias = -scale``), noisy (boundary noise and shifts) and careless
    (missed and spurious components). ``scale`` (pixels) sets the size of the distortions.

    Args:
        n_raters: Number of raters.
        scale: Size of the distortions in pixels.

    Returns:
        A list of ``n_raters`` :class:`MaskRater`.

    Examples:
        >>> [r.bias for r in varied_mask_raters(3)]
        [0.0, 1.0, -1.0]
    """
    if isinstance(n_raters, bool) or not isinstance(n_raters, int) or n_raters < 1:
        raise ValueError(f"`n_raters` must be a positive integer; got {n_raters!r}.")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"`scale` must be a positive number; got {scale!r}.")
    s = float(scale)
    profiles = [
        MaskRater(boundary_noise=0.3 * s),
        MaskRater(bias=s, boundary_noise=0.3 * s),
        MaskRater(bias=-s, boundary_noise=0.3 * s),
        MaskRater(boundary_noise=1.0 * s, shift=0.7 * s),
        MaskRater(boundary_noise=0.5 * s, miss_prob=0.3, spurious_rate=3.0, spurious_radius=2 * s),
    ]
    return [profiles[i % len(profiles)] for i in range(n_raters)]


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """Distance to the boundary, positive inside, negative outside (boundary at 0)."""
    if not mask.any():
        return np.full(mask.shape, -np.inf)
    if mask.all():
        return np.full(mask.shape, np.inf)
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return np.where(mask, inside - 0.5, 0.5 - outside)


def _shift(labels: np.ndarray, rng: np.random.Generator, sd: float) -> np.ndarray:
    offset = np.rint(rng.normal(0.0, sd, size=labels.ndim)).astype(int)
    if not offset.any():
        return labels
    return ndimage.shift(labels, offset, order=0, mode="constant", cval=0)


def _binary(mask: np.ndarray, rater: MaskRater, rng: np.random.Generator) -> np.ndarray:
    out = mask
    if rater.miss_prob > 0 and out.any():
        comp, n = ndimage.label(out)
        keep = rng.random(n) >= rater.miss_prob
        out = np.concatenate([[False], keep])[comp]
    if rater.bias != 0 or rater.boundary_noise > 0:
        field = _signed_distance(out) + rater.bias
        if rater.boundary_noise > 0:
            noise = ndimage.gaussian_filter(rng.standard_normal(out.shape), rater.smoothness)
            sd = float(noise.std())
            if sd > 0:
                field = field + noise * (rater.boundary_noise / sd)
        out = field > 0
    return np.asarray(out, dtype=bool)


def _spurious(shape: tuple[int, ...], rater: MaskRater, rng: np.random.Generator) -> list[Any]:
    blobs = []
    for _ in range(rng.poisson(rater.spurious_rate)):
        centre = np.array([rng.uniform(0, s) for s in shape])
        radius = rater.spurious_radius * rng.uniform(0.5, 1.5)
        lo = np.maximum(np.floor(centre - radius).astype(int), 0)
        hi = np.minimum(np.ceil(centre + radius).astype(int) + 1, shape)
        grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        dist2 = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
        blobs.append((tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)), dist2 <= radius**2))
    return blobs


def distort_mask(
    mask: Any, rater: MaskRater, *, random_state: int | np.random.Generator | None = None
) -> np.ndarray:
    """One rater's version of one true mask.

    Args:
        mask: Bool array ``(*spatial)`` (binary) or integer label map ``(*spatial)`` with
            classes ``0..K-1`` (0 = background); 2-D or 3-D.
        rater: The rater model.
        random_state: Seed or ``np.random.Generator``.

    Returns:
        The distorted mask, ``bool`` for a binary input, else ``int64``; ``int64`` filled with
        ``-1`` when the rater did not annotate the case (``absent_prob``).
    """
    from crowdmed._validation import check_random_state

    rater.check()
    rng = check_random_state(random_state)
    m = np.asarray(mask)
    binary = m.dtype == bool
    labels = m.astype(np.int64)
    classes = [int(c) for c in np.unique(labels) if c > 0]
    if rater.shift > 0:
        labels = _shift(labels, rng, rater.shift)
    out = np.zeros(labels.shape, dtype=np.int64)
    for c in classes:
        out[_binary(labels == c, rater, rng)] = c
    fg = classes or [1]
    for region, blob in _spurious(labels.shape, rater, rng):
        out[region][blob] = fg[int(rng.integers(len(fg)))]
    if rater.absent_prob > 0 and rng.random() < rater.absent_prob:
        return np.full(labels.shape, -1, dtype=np.int64)
    return out.astype(bool) if binary else out


def simulate_mask_raters(
    masks: Any,
    raters: Sequence[MaskRater],
    *,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Masks of a panel of simulated raters for a stack of true masks.

    Args:
        masks: Bool array ``(n_cases, *spatial)`` (binary) or integer label maps with classes
            ``0..K-1``; 2 or 3 spatial axes.
        raters: One :class:`MaskRater` per simulated rater.
        random_state: Seed or ``np.random.Generator``; the same seed gives the same masks.

    Returns:
        Array ``(n_cases, n_raters, *spatial)``: ``bool`` for binary input when no rater can
        be absent, otherwise ``int64`` label maps with ``-1`` marking a case a rater did not
        annotate.

    Raises:
        ValueError: On a bad shape, negative classes, non-finite values or bad rater fields.

    Examples:
        >>> import numpy as np
        >>> truth = np.zeros((1, 9, 9), bool); truth[0, 3:6, 3:6] = True
        >>> out = simulate_mask_raters(truth, [MaskRater(), MaskRater(bias=1.0)], random_state=0)
        >>> out.shape, int(out[0, 0].sum()), int(out[0, 1].sum()) > 9
        ((1, 2, 9, 9), 9, True)
    """
    from crowdmed._validation import check_random_state

    m = np.asarray(masks)
    if m.ndim not in (3, 4):
        raise ValueError(
            f"`masks` must have shape (n_cases, H, W) or (n_cases, D, H, W); got {m.shape}."
        )
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.number):
            raise TypeError(f"`masks` must be bool or integer; got dtype {m.dtype}.")
        if np.issubdtype(m.dtype, np.floating):
            if not np.isfinite(m).all():
                raise ValueError("`masks` contain NaN or infinite values.")
            if not np.equal(np.mod(m, 1), 0).all():
                raise ValueError("`masks` must hold integer class labels; got fractional values.")
        if (m < 0).any():
            raise ValueError("`masks` must hold classes >= 0 (true masks have no missing pixels).")
    if len(raters) == 0:
        raise ValueError("`raters` must hold at least one MaskRater.")
    for i, r in enumerate(raters):
        if not isinstance(r, MaskRater):
            raise TypeError(f"`raters[{i}]` must be a MaskRater; got {type(r).__name__}.")
        r.check()
    rng = check_random_state(random_state)
    binary = m.dtype == bool and all(r.absent_prob == 0 for r in raters)
    out = np.empty((m.shape[0], len(raters), *m.shape[1:]), dtype=bool if binary else np.int64)
    for i in range(m.shape[0]):
        for a, r in enumerate(raters):
            out[i, a] = distort_mask(m[i], r, random_state=rng)
    return out
