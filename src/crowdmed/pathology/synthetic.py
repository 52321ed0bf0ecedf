"""Synthetic H&E high-power fields with mitotic figures (for demos, tests and benchmarks).

The fields are **synthetic**: they are drawn from a simple optical model, not from tissue.
Each pixel's colour follows the Beer–Lambert law of two stains,
``RGB = 255 · exp(-(c_H · od_H + c_E · od_E))``, where ``od_H`` and ``od_E`` are the optical
density vectors of hematoxylin (blue/purple) and eosin (pink) and ``c_H``, ``c_E`` are
concentration maps:

- eosin: a smooth, fibrous pink texture with a few pale gaps (stroma and cytoplasm);
- nuclei: round or oval hematoxylin blobs with a grainy chromatin texture;
- lymphocytes: small, round, dark and uniform nuclei (a known mimic of mitoses);
- mitotic figures: darker, irregular clumps of chromatin (a cluster of small blobs or a jagged
  metaphase plate) in a pale halo of cytoplasm. The point annotation is the figure's centre.

Per-image stain variation perturbs both optical density vectors and the stain amounts, which is
what stain normalisation removes. Coordinates follow :mod:`crowdmed.pathology` (``x`` is the
column, ``y`` the row, in pixels of the full-scale image).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from crowdmed._validation import check_random_state

__all__ = ["SyntheticFields", "make_synthetic_fields"]

# Optical density (absorbance per unit concentration) of the two stains, RGB order.
_OD_HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
_OD_EOSIN = np.array([0.07, 0.99, 0.11])


@dataclasses.dataclass
class SyntheticFields:
    """Synthetic high-power fields and their point annotations.

    Attributes:
        images: One ``uint8`` RGB array of shape ``(H, W, 3)`` per field.
        points: ``DataFrame`` with columns ``image`` (a name from ``names``), ``x`` (column) and
            ``y`` (row): the centre of every mitotic figure, in pixels.
        names: The name of each field, in the order of ``images`` (``synthetic_000``, ...).
    """

    images: list[np.ndarray]
    points: pd.DataFrame
    names: list[str]

    def as_dict(self) -> dict[str, np.ndarray]:
        """The images keyed by name (the form :func:`crowdmed.pathology.detect` accepts)."""
        return dict(zip(self.names, self.images, strict=True))

    def subset(self, indices: Sequence[int]) -> SyntheticFields:
        """The fields at ``indices`` (e.g. a train/validation/test split) with their points."""
        names = [self.names[i] for i in indices]
        points = self.points[self.points["image"].isin(names)].reset_index(drop=True)
        return SyntheticFields([self.images[i] for i in indices], points, names)

    def save(self, folder: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write one PNG per field and ``points.csv`` (``image, x, y``) into ``folder``.

        Fields without mitoses get one row with empty ``x`` and ``y`` so that every image is
        listed (the format :func:`crowdmed.data.read_points` expects).

        Returns:
            The image folder and the path of ``points.csv``.
        """
        from PIL import Image

        from crowdmed._io import atomic_path
        from crowdmed.data.points import write_points

        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        for name, image in zip(self.names, self.images, strict=True):
            with atomic_path(root / f"{name}.png") as tmp:
                Image.fromarray(image).save(tmp, format="PNG")
        csv = root / "points.csv"
        write_points(self.points, csv, image_names=self.names)
        return root, csv


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def _place(
    rng: np.random.Generator,
    shape: tuple[int, int],
    taken: list[tuple[float, float, float]],
    radius: float,
    margin: float,
    tries: int = 200,
) -> tuple[float, float] | None:
    """A random centre at least ``radius + r_other`` away from every centre already taken."""
    h, w = shape
    for _ in range(tries):
        y, x = rng.uniform(margin, h - 1 - margin), rng.uniform(margin, w - 1 - margin)
        if all((y - ty) ** 2 + (x - tx) ** 2 >= (radius + tr) ** 2 for ty, tx, tr in taken):
            return y, x
    return None


def _ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float
) -> np.ndarray:
    """Soft ellipse mask (1 inside, a one-pixel ramp at the edge)."""
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u, v = (c * dx + s * dy) / rx, (-s * dx + c * dy) / ry
    r = np.sqrt(u**2 + v**2)
    return np.clip((1.0 - r) * min(rx, ry) + 0.5, 0.0, 1.0)


def _mitotic_figure(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float
) -> np.ndarray:
    """Chromatin of one mitotic figure: a clump of small blobs or a jagged metaphase plate."""
    mask = np.zeros(yy.shape)
    if rng.random() < 0.5:  # clumped chromosomes (prophase/prometaphase-like)
        for _ in range(rng.integers(5, 10)):
            r = rng.uniform(1.5, 3.0)
            oy, ox = rng.normal(0.0, 2.6, size=2)
            mask = np.maximum(
                mask, _ellipse(yy, xx, cy + oy, cx + ox, r, r * 1.3, rng.uniform(0, np.pi))
            )
    else:  # metaphase plate: an elongated, jagged band of chromatin
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(6.0, 9.0)
        for t in np.linspace(-1.0, 1.0, 7):
            oy = t * length * np.sin(angle) + rng.normal(0, 0.8)
            ox = t * length * np.cos(angle) + rng.normal(0, 0.8)
            r = rng.uniform(1.6, 2.6)
            mask = np.maximum(mask, _ellipse(yy, xx, cy + oy, cx + ox, r, r, 0.0))
    return mask


def _one_field(
    rng: np.random.Generator,
    size: tuple[int, int],
    n_mitoses: int,
    n_nuclei: int,
    stain_variation: float,
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    # ---- eosin: fibrous stroma with pale gaps
    fibres = _smooth_noise(rng, size, 1.5) * 0.5 + _smooth_noise(rng, size, 6.0)
    eosin = 0.55 + 0.18 * fibres
    gaps = _smooth_noise(rng, size, 10.0) > 1.3
    eosin = np.where(gaps, eosin * 0.25, eosin)
    hema = np.clip(0.02 + 0.01 * _smooth_noise(rng, size, 3.0), 0.0, None)
    chromatin = _smooth_noise(rng, size, 0.8)

    taken: list[tuple[float, float, float]] = []
    centres: list[tuple[float, float]] = []
    # ---- mitotic figures first (so that they are never dropped for lack of room)
    for _ in range(n_mitoses):
        spot = _place(rng, size, taken, radius=16.0, margin=10.0)
        if spot is None:
            continue
        cy, cx = spot
        taken.append((cy, cx, 16.0))
        halo = _ellipse(yy, xx, cy, cx, 10.0, 11.0, rng.uniform(0, np.pi))
        eosin = eosin * (1.0 - rng.uniform(0.3, 0.6) * halo)
        figure = _mitotic_figure(rng, yy, xx, cy, cx)
        eosin = eosin * (1.0 - 0.8 * figure)  # chromatin displaces the cytoplasm
        hema = hema + figure * rng.uniform(1.5, 2.0) * (1.0 + 0.15 * chromatin)
        ys, xs = np.nonzero(figure > 0.5)
        if len(ys):  # the annotation is the centre of the chromatin
            cy, cx = float(ys.mean()), float(xs.mean())
        centres.append((cy, cx))
    # ---- normal nuclei and lymphocytes
    for _ in range(n_nuclei):
        lymphocyte = rng.random() < 0.2
        r = rng.uniform(3.5, 4.5) if lymphocyte else rng.uniform(5.0, 8.5)
        spot = _place(rng, size, taken, radius=r, margin=0.0, tries=30)
        if spot is None:
            continue
        cy, cx = spot
        taken.append((cy, cx, r))
        if lymphocyte:
            blob = _ellipse(yy, xx, cy, cx, r, r * rng.uniform(0.9, 1.1), 0.0)
            eosin = eosin * (1.0 - 0.8 * blob)
            hema = hema + blob * rng.uniform(1.1, 1.5) * (1.0 + 0.05 * chromatin)
        else:
            ratio = rng.uniform(0.65, 1.0)
            blob = _ellipse(yy, xx, cy, cx, r * ratio, r, rng.uniform(0, np.pi))
            eosin = eosin * (1.0 - 0.7 * blob)
            hema = hema + blob * rng.uniform(0.45, 0.8) * (1.0 + 0.35 * chromatin)
    hema = ndimage.gaussian_filter(np.clip(hema, 0.0, None), 0.6)
    eosin = np.clip(eosin, 0.0, None)

    # ---- per-image stain variation: the stain colours and amounts
    od_h = np.clip(_OD_HEMATOXYLIN * (1.0 + stain_variation * rng.standard_normal(3)), 0.02, None)
    od_e = np.clip(_OD_EOSIN * (1.0 + stain_variation * rng.standard_normal(3)), 0.02, None)
    amount = np.clip(1.0 + stain_variation * rng.standard_normal(2), 0.3, None)
    od = hema[..., None] * amount[0] * od_h / np.linalg.norm(od_h) * np.linalg.norm(
        _OD_HEMATOXYLIN
    ) + eosin[..., None] * amount[1] * od_e / np.linalg.norm(od_e) * np.linalg.norm(_OD_EOSIN)
    rgb = 245.0 * np.exp(-od) + rng.normal(0.0, 2.0, size=(h, w, 3))
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), centres


def _count_range(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    lo, hi = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if not (isinstance(lo, (int, np.integer)) and isinstance(hi, (int, np.integer))) or not (
        0 <= lo <= hi
    ):
        raise ValueError(
            f"`{name}` must be a count or a range (low, high) with 0 <= low <= high; got {value!r}."
        )
    return int(lo), int(hi)


def make_synthetic_fields(
    n_images: int,
    *,
    size: tuple[int, int] = (256, 256),
    n_mitoses: int | tuple[int, int] = (1, 4),
    n_nuclei: int | tuple[int, int] = (30, 60),
    stain_variation: float = 0.1,
    random_state: int | np.random.Generator | None = None,
    prefix: str = "synthetic",
) -> SyntheticFields:
    """Draw synthetic H&E high-power fields with mitotic figures and their point annotations.

    The images are synthetic (an optical model of two stains; see the module documentation),
    meant for demos, tests and benchmarks of the mitosis workflow, not as a stand-in for tissue.
    The sizes of nuclei (radius 5–8.5 px) and mitotic figures (about 15 px across) correspond
    to roughly half the resolution of a 40× high-power field, so evaluate with
    ``match_points(..., scale=0.5)`` (a 15 px radius) to mirror the usual 30 px rule.

    Args:
        n_images: Number of fields.
        size: ``(height, width)`` of every field in pixels.
        n_mitoses: Number of mitotic figures per field: a count or an inclusive range
            ``(low, high)`` drawn uniformly. Figures are at least 32 px apart.
        n_nuclei: Number of other nuclei (about a fifth of them lymphocytes) per field; a count
            or an inclusive range. Fewer are placed when the field is full.
        stain_variation: Relative standard deviation of the per-image stain colours and
            amounts; ``0`` gives identical staining.
        random_state: Seed or ``np.random.Generator``; the same seed gives the same fields.
        prefix: Field names are ``<prefix>_000``, ``<prefix>_001``, ...; give sets that will
            be mixed in one folder different prefixes.

    Returns:
        :class:`SyntheticFields` with ``uint8`` images of shape ``(H, W, 3)`` and the points.

    Raises:
        ValueError: If a count, range, size or the stain variation is invalid.

    Examples:
        >>> fields = make_synthetic_fields(2, size=(64, 64), n_mitoses=1, n_nuclei=5,
        ...                                random_state=0)
        >>> fields.images[0].shape, fields.names
        ((64, 64, 3), ['synthetic_000', 'synthetic_001'])
        >>> list(fields.points.columns)
        ['image', 'x', 'y']
    """
    if not isinstance(n_images, (int, np.integer)) or isinstance(n_images, bool) or n_images < 1:
        raise ValueError(f"`n_images` must be a positive integer; got {n_images!r}.")
    hw = tuple(size)
    if len(hw) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 48 for v in hw):
        raise ValueError(
            f"`size` must be (height, width) with both at least 48 pixels; got {size!r}."
        )
    m_lo, m_hi = _count_range(n_mitoses, "n_mitoses")
    n_lo, n_hi = _count_range(n_nuclei, "n_nuclei")
    if not (np.isfinite(stain_variation) and 0.0 <= stain_variation <= 0.5):
        raise ValueError(f"`stain_variation` must be in [0, 0.5]; got {stain_variation!r}.")
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in '/\\:*?"<>|'):
        raise ValueError(f"`prefix` must be a non-empty name usable in file names; got {prefix!r}.")
    rng = check_random_state(random_state)
    images: list[np.ndarray] = []
    rows: list[tuple[str, float, float]] = []
    names = [f"{prefix}_{i:03d}" for i in range(n_images)]
    for name in names:
        image, centres = _one_field(
            rng,
            (int(hw[0]), int(hw[1])),
            int(rng.integers(m_lo, m_hi + 1)),
            int(rng.integers(n_lo, n_hi + 1)),
            float(stain_variation),
        )
        images.append(image)
        rows.extend((name, round(cx, 1), round(cy, 1)) for cy, cx in centres)
    points = pd.DataFrame(rows, columns=["image", "x", "y"]).astype({"x": float, "y": float})
    return SyntheticFields(images, points, names)
