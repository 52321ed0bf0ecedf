"""Image views shown to annotators: context crops and the blue-ratio image.

The blue-ratio image of Chang et al. (2012) brightens pixels that are blue relative to red and
green (haematoxylin-stained nuclei) and darkens the rest; AggNet showed it next to each RGB
patch to help non-experts spot mitotic figures.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["BLUE_RATIO_MAX", "blue_ratio", "blue_ratio_display", "context_crop", "context_crops"]

#: Largest blue-ratio value of an 8-bit image (pure blue, ``R = G = 0``, ``B = 255``).
BLUE_RATIO_MAX = 25500.0


def _check_rgb(image: npt.ArrayLike, name: str = "image") -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"`{name}` must be an RGB array of shape (H, W, 3); got {arr.shape}.")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"`{name}` must hold numbers in 0..255; got dtype {arr.dtype}.")
    return arr


def blue_ratio(image: npt.ArrayLike) -> np.ndarray:
    """Blue-ratio transform of an RGB image with values in ``0..255``.

    ``BR = (100 · B / (1 + R + G)) · (256 / (1 + R + G + B))``, computed per pixel in
    ``float64``.

    Args:
        image: Array of shape ``(H, W, 3)`` (RGB, ``uint8`` or floats in ``0..255``).

    Returns:
        Float array of shape ``(H, W)``; ``0`` where the pixel has no blue, up to ``25500``
        for pure blue.

    Raises:
        ValueError: If the image is not ``(H, W, 3)``.

    References:
        Chang, Loss, Parvin et al. (2012). Batch-invariant nuclear segmentation in
        whole mount histology sections. IEEE ISBI. https://doi.org/10.1109/ISBI.2012.6235753

    Examples:
        >>> import numpy as np
        >>> px = np.array([[[0, 0, 255], [255, 255, 255], [10, 20, 0]]], dtype=np.uint8)
        >>> [round(float(v), 2) for v in blue_ratio(px)[0]]
        [25500.0, 16.68, 0.0]
    """
    rgb = _check_rgb(image).astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (100.0 * b / (1.0 + r + g)) * (256.0 / (1.0 + r + g + b))


def blue_ratio_display(image: npt.ArrayLike, *, vmax: float | None = None) -> np.ndarray:
    """Blue-ratio image rescaled to ``uint8`` for display.

    Args:
        image: Array of shape ``(H, W, 3)`` (RGB in ``0..255``).
        vmax: Blue-ratio value shown as white; the image's own maximum when omitted (values
            above ``vmax`` are clipped).

    Returns:
        ``uint8`` array of shape ``(H, W)``; ``round(255 · min(BR / vmax, 1))``, all zeros when
        the image has no blue at all.

    Examples:
        >>> import numpy as np
        >>> px = np.array([[[0, 0, 255], [255, 255, 255], [10, 20, 0]]], dtype=np.uint8)
        >>> blue_ratio_display(px)
        array([[255,   0,   0]], dtype=uint8)
    """
    br = blue_ratio(image)
    top = float(br.max()) if vmax is None else float(vmax)
    if vmax is not None and not top > 0:
        raise ValueError(f"`vmax` must be positive; got {vmax}.")
    if top <= 0:
        return np.zeros(br.shape, dtype=np.uint8)
    return np.round(255.0 * np.clip(br / top, 0.0, 1.0)).astype(np.uint8)


def context_crop(image: npt.ArrayLike, x: float, y: float, size: int) -> np.ndarray:
    """A square crop of ``size`` pixels centred on ``(x, y)``, mirrored at the image border.

    Args:
        image: Array of shape ``(H, W, 3)``.
        x: Column of the centre (pixels; rounded).
        y: Row of the centre (pixels; rounded).
        size: Side of the crop in pixels (odd sizes centre exactly).

    Returns:
        Array of shape ``(size, size, 3)`` with the image's dtype.

    Examples:
        >>> import numpy as np
        >>> img = np.arange(25 * 3, dtype=np.uint8).reshape(5, 5, 3)
        >>> context_crop(img, 2, 2, 3)[..., 0]
        array([[18, 21, 24],
               [33, 36, 39],
               [48, 51, 54]], dtype=uint8)
    """
    return context_crops(image, np.array([x]), np.array([y]), size)[0]


def context_crops(
    image: npt.ArrayLike, xs: npt.ArrayLike, ys: npt.ArrayLike, size: int
) -> np.ndarray:
    """Crops of ``size`` pixels centred on every ``(xs[i], ys[i])`` (see :func:`context_crop`).

    Args:
        image: Array of shape ``(H, W, 3)``.
        xs: Float array of shape ``(n,)``: columns of the centres.
        ys: Float array of shape ``(n,)``: rows of the centres.
        size: Side of each crop in pixels.

    Returns:
        Array of shape ``(n, size, size, 3)`` with the image's dtype.
    """
    img = _check_rgb(image)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"`size` must be a positive integer; got {size!r}.")
    x = np.rint(np.asarray(xs, dtype=np.float64)).astype(np.int64)
    y = np.rint(np.asarray(ys, dtype=np.float64)).astype(np.int64)
    h, w = img.shape[:2]
    if len(x) and (x.min() < 0 or x.max() >= w or y.min() < 0 or y.max() >= h):
        raise ValueError(
            f"Crop centres must lie inside the {w}x{h} image; got x in [{x.min()}, {x.max()}] "
            f"and y in [{y.min()}, {y.max()}]."
        )
    half = size // 2
    # "symmetric" mirroring needs a pad no larger than the image; tile for tiny images.
    pad = half + 1
    padded = np.pad(
        img, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric" if pad <= min(h, w) else "wrap"
    )
    offs = np.arange(size) - half
    rows = (y[:, None] + pad + offs[None, :])[:, :, None]
    cols = (x[:, None] + pad + offs[None, :])[:, None, :]
    return padded[rows, cols]
