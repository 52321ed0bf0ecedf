"""Image scales, patches around points and the eight rotations/mirrors (NumPy only).

Scaling an image by ``s`` gives ``round(H·s) × round(W·s)`` pixels, resampled bilinearly with
the corner pixels aligned (``scipy.ndimage.zoom(..., order=1, grid_mode=False)``); a point
``(x, y)`` maps to ``(x·(w'-1)/(W-1), y·(h'-1)/(H-1))``. The same mapping is used for training
patches, dense inference and resizing a detection map back, so they agree pixel for pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

__all__ = [
    "DIHEDRAL",
    "apply_dihedral",
    "extract_patches",
    "invert_dihedral",
    "rescale_image",
    "scale_points",
    "scaled_shape",
    "to_float",
]

#: The eight rotations/mirrors as ``(k, flip)``: rotate by ``k`` quarter turns, then mirror
#: left–right when ``flip``.
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))


def apply_dihedral(
    array: np.ndarray, k: int, flip: bool, axes: tuple[int, int] = (0, 1)
) -> np.ndarray:
    """Rotate ``array`` by ``k`` quarter turns in the plane ``axes``, then mirror if ``flip``."""
    out = np.rot90(array, k, axes=axes)
    return np.flip(out, axis=axes[1]) if flip else out


def invert_dihedral(
    array: np.ndarray, k: int, flip: bool, axes: tuple[int, int] = (0, 1)
) -> np.ndarray:
    """Undo :func:`apply_dihedral` with the same ``k`` and ``flip``."""
    out = np.flip(array, axis=axes[1]) if flip else array
    return np.rot90(out, -k, axes=axes)


def to_float(image: np.ndarray) -> np.ndarray:
    """An RGB field ``(H, W, 3)`` (``uint8`` or float in [0, 1]) as ``float32`` in [0, 1]."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"An image must be RGB of shape (H, W, 3); got shape {arr.shape}.")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"An image must be uint8 or float in [0, 1]; got dtype {arr.dtype}.")
    return arr.astype(np.float32)


def scaled_shape(shape: Sequence[int], scale: float) -> tuple[int, int]:
    """``(round(H·scale), round(W·scale))``, at least 1 × 1."""
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"`scale` must be a positive number; got {scale!r}.")
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def rescale_image(
    image: np.ndarray, scale: float | None = None, *, shape: Sequence[int] | None = None
) -> np.ndarray:
    """Resample an image of shape ``(H, W[, C])`` by ``scale`` or to ``shape`` (bilinear).

    Corner pixels stay aligned (see the module documentation). ``scale == 1`` returns a
    ``float32`` copy.
    """
    arr = np.asarray(image, dtype=np.float32)
    h, w = arr.shape[:2]
    if shape is None:
        if scale is None:
            raise ValueError("Pass `scale` or `shape`.")
        shape = scaled_shape((h, w), scale)
    th, tw = int(shape[0]), int(shape[1])
    if (th, tw) == (h, w):
        return arr.copy()
    # zoom's output size is round(h * factor), so these factors give exactly (th, tw).
    zoom = [th / h, tw / w] + [1.0] * (arr.ndim - 2)
    return ndimage.zoom(arr, zoom, order=1, mode="nearest", grid_mode=False, prefilter=False)


def scale_points(xy: np.ndarray, shape: Sequence[int], scaled: Sequence[int]) -> np.ndarray:
    """Map ``(x, y)`` pixel coordinates from an image of ``shape`` to one of ``scaled`` shape."""
    h, w = shape[0], shape[1]
    sh, sw = scaled[0], scaled[1]
    fx = (sw - 1) / (w - 1) if w > 1 else 1.0
    fy = (sh - 1) / (h - 1) if h > 1 else 1.0
    out = np.asarray(xy, dtype=np.float64).reshape(-1, 2).copy()
    out[:, 0] *= fx
    out[:, 1] *= fy
    return out


def _lookup(images: Mapping[Any, np.ndarray] | Sequence[np.ndarray], key: Any) -> np.ndarray:
    if isinstance(images, Mapping):
        if key in images:
            return images[key]
        if str(key) in images:
            return images[str(key)]
        raise ValueError(f"Points name image {key!r}, which is not among the images.")
    try:
        return images[int(key)]
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError(
            f"With a list of images, `points.image` must be an index 0..{len(images) - 1}; "
            f"got {key!r}."
        ) from exc


def extract_patches(
    images: Mapping[Any, np.ndarray] | Sequence[np.ndarray],
    points: pd.DataFrame,
    *,
    size: int = 33,
    scale: float = 1.0,
) -> np.ndarray:
    """Square patches centred on points, from the images rescaled by ``scale``.

    Args:
        images: RGB fields ``(H, W, 3)`` (``uint8`` or float in [0, 1]) keyed by name, or a list
            indexed by the integer ``points.image``.
        points: ``DataFrame`` with ``image, x, y`` in full-scale pixels (``x`` column, ``y`` row).
        size: Odd patch side in pixels of the rescaled image.
        scale: Image scale; points are mapped as in the module documentation and rounded to
            the nearest pixel.

    Returns:
        ``float32`` array of shape ``(N, 3, size, size)`` in [0, 1], one patch per row of
        ``points`` in order. Borders are padded by reflection.

    Raises:
        ValueError: If ``size`` is even or not positive, or a point names an unknown image.

    Examples:
        >>> img = np.zeros((40, 40, 3), np.uint8); img[20, 10] = 255
        >>> p = extract_patches([img], pd.DataFrame({"image": [0], "x": [10], "y": [20]}), size=5)
        >>> p.shape, float(p[0, 0, 2, 2])
        ((1, 3, 5, 5), 1.0)
    """
    if not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
        raise ValueError(f"`size` must be a positive odd integer; got {size!r}.")
    half = size // 2
    out = np.empty((len(points), 3, size, size), dtype=np.float32)
    if len(points) == 0:
        return out
    positions = np.arange(len(points))
    for key, idx in pd.Series(positions).groupby(points["image"].to_numpy(), sort=False):
        image = to_float(_lookup(images, key))
        scaled = rescale_image(image, scale) if scale != 1.0 else image
        xy = points[["x", "y"]].to_numpy(dtype=np.float64)[idx.to_numpy()]
        xy = scale_points(xy, image.shape, scaled.shape)
        padded = np.pad(scaled, ((half, half), (half, half), (0, 0)), mode="reflect")
        cols = np.clip(np.rint(xy[:, 0]).astype(int), 0, scaled.shape[1] - 1)
        rows = np.clip(np.rint(xy[:, 1]).astype(int), 0, scaled.shape[0] - 1)
        for j, r, c in zip(idx.to_numpy(), rows, cols, strict=True):
            out[j] = padded[r : r + size, c : c + size].transpose(2, 0, 1)
    return out
