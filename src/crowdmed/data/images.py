"""Image folders as training inputs: one PNG, TIFF or JPEG file per item.

Each item's image is the file whose name (``case7.png``) or stem (``case7``) equals the item id.
Images are read with Pillow, converted to ``float32`` in ``[0, 1]`` and stacked into a batch of
shape ``(N, C, H, W)`` (the torch layout of :mod:`crowdmed.training`). Every problem (a missing
file, an unreadable file, images of different sizes) is reported before any training starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crowdmed._text import short_list

__all__ = ["IMAGE_SUFFIXES", "image_files", "image_paths", "list_images", "load_images"]

#: File suffixes read as images (compared case-insensitively).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")

_PILLOW_HINT = "Reading images needs Pillow: pip install 'crowdmed[torch]' (or pip install pillow)."


def _image_files(folder: str | os.PathLike[str]) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise ValueError(f"Image folder '{root}' {what}; pass a folder of PNG, TIFF or JPEG files.")
    files = sorted(
        p
        for p in root.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise ValueError(
            f"Image folder '{root}' has no PNG, TIFF or JPEG files "
            f"(suffixes {list(IMAGE_SUFFIXES)})."
        )
    return files


def list_images(folder: str | os.PathLike[str]) -> list[str]:
    """Item ids of the images in a folder: the file stems, sorted by file name.

    Args:
        folder: Folder of PNG, TIFF or JPEG files (not searched recursively; hidden files are
            skipped).

    Returns:
        One id per image file.

    Raises:
        ValueError: If the folder does not exist, holds no images, or two files share a stem
            (``a.png`` and ``a.tif``).
    """
    files = _image_files(folder)
    stems: dict[str, Path] = {}
    for p in files:
        if p.stem in stems:
            raise ValueError(
                f"Image folder '{folder}' has two files for item {p.stem!r}: "
                f"'{stems[p.stem].name}' and '{p.name}'; keep one."
            )
        stems[p.stem] = p
    return list(stems)


def image_files(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """The PNG, TIFF or JPEG files of a folder, by file stem.

    Args:
        folder: Folder of images (not searched recursively; hidden files are skipped).

    Returns:
        ``{stem: path}`` in sorted order.

    Raises:
        ValueError: ``folder`` is missing, not a folder, holds no images, or has two files
            with one stem (``a.png`` and ``a.tif``).
    """
    list_images(folder)  # checks the folder and refuses a stem shared by two files
    return {p.stem: p for p in _image_files(folder)}


def image_paths(folder: str | os.PathLike[str], item_ids: Sequence[Any] | np.ndarray) -> list[Path]:
    """The image file of each item: the file named ``str(item_id)``, else the file with that stem.

    Args:
        folder: Folder of PNG, TIFF or JPEG files.
        item_ids: Item ids, shape ``(N,)``; compared as strings with the file names.

    Returns:
        One path per item, in the order of ``item_ids``.

    Raises:
        ValueError: If an item has no image file or two files match it (``a.png`` and
            ``a.tif``).
    """
    files = _image_files(folder)
    by_name = {p.name: p for p in files}
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        by_stem.setdefault(p.stem, []).append(p)
    paths: list[Path] = []
    missing: list[str] = []
    for item in item_ids:
        key = str(item.item() if isinstance(item, np.generic) else item)
        if key in by_name:
            paths.append(by_name[key])
        elif key in by_stem:
            found = by_stem[key]
            if len(found) > 1:
                raise ValueError(
                    f"Item {key!r} matches {len(found)} files in '{folder}' "
                    f"({[p.name for p in found]}); keep one image per item."
                )
            paths.append(found[0])
        else:
            missing.append(key)
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(paths) + len(missing)} items have no image file in "
            f"'{folder}': {short_list(missing)}. Name each file after its item id (e.g. "
            f"'{missing[0]}.png')."
        )
    return paths


def _check_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(hw) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in hw
    ):
        raise ValueError(f"`size` must be a positive int or a pair (height, width); got {size!r}.")
    return int(hw[0]), int(hw[1])


def _decode(path: Path, channels: int) -> np.ndarray:
    """Read one image as ``float32`` of shape ``(channels, H, W)`` in ``[0, 1]``."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            n_frames = int(getattr(im, "n_frames", 1))
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F", "1"):
                arr = np.asarray(im)
            else:  # 8-bit modes: L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, ...
                arr = np.asarray(im.convert("L" if channels == 1 else "RGB"))
    except Exception as exc:  # any decoder failure: truncated, corrupt or unsupported file
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"Cannot read image '{path}': {detail}") from exc
    if n_frames > 1:
        raise ValueError(
            f"Image '{path}' has {n_frames} frames or pages; store one 2-D image per file."
        )
    if mode.startswith("I;16"):
        out = arr.astype(np.float32) / 65535.0
    elif mode == "I":
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(
                f"Image '{path}' has 32-bit values in [{arr.min()}, {arr.max()}]; only 8- and "
                "16-bit integer images can be scaled to [0, 1]. Convert it to 16 bits."
            )
        out = arr.astype(np.float32) / 65535.0
    elif mode == "F":
        out = arr.astype(np.float32)
        if not np.isfinite(out).all() or (out.size and (out.min() < 0 or out.max() > 1)):
            raise ValueError(
                f"Image '{path}' is a float image with values outside [0, 1] (or NaN); "
                "rescale it to [0, 1] or save it as an 8- or 16-bit image."
            )
    elif mode == "1":
        out = arr.astype(np.float32)
    else:
        out = arr.astype(np.float32) / 255.0
    # (H, W) grey -> (C, H, W); (H, W, 3) RGB -> (3, H, W)
    out = np.repeat(out[None], channels, axis=0) if out.ndim == 2 else np.moveaxis(out, -1, 0)
    return np.ascontiguousarray(out)


def _resize(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = hw
    out = [
        np.asarray(Image.fromarray(channel).resize((w, h), Image.Resampling.BILINEAR))
        for channel in image
    ]
    return np.clip(np.stack(out), 0.0, 1.0)


def load_images(
    folder: str | os.PathLike[str],
    item_ids: Sequence[Any] | np.ndarray,
    *,
    size: int | tuple[int, int] | None = None,
    channels: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Read one image per item into a float batch.

    Intensities are scaled to ``[0, 1]``: 8-bit images are divided by 255, 16-bit images by
    65535; float TIFFs must already lie in ``[0, 1]``. Colour images become grey (luminance)
    for ``channels=1``; grey images are repeated for ``channels=3``. Alpha is dropped.

    Args:
        folder: Folder with one PNG, TIFF or JPEG file per item, named after the item id
            (``<id>.png``, or exactly ``<id>`` when the id has a suffix).
        item_ids: Item ids, shape ``(N,)``, in the order of the output rows.
        size: Resize every image to ``size x size`` (int) or ``(height, width)`` with bilinear
            interpolation; when omitted all images must have the same size.
        channels: Output channels, 1 (grey) or 3 (RGB).
        progress: Optional callable ``progress(done, total)`` called after each image.

    Returns:
        Float array of shape ``(N, channels, H, W)`` with values in ``[0, 1]``.

    Raises:
        ImportError: If Pillow is not installed.
        ValueError: If an item has no image file (the first few are named), a file cannot be
            read (the file is named), or the images differ in size and ``size`` is omitted.

    Examples:
        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> folder = tempfile.mkdtemp()
        >>> Image.fromarray(np.full((4, 6), 255, np.uint8)).save(f"{folder}/a.png")
        >>> load_images(folder, ["a"]).shape
        (1, 1, 4, 6)
        >>> float(load_images(folder, ["a.png"], size=2).max())
        1.0
    """
    try:
        import PIL  # noqa: F401
    except ImportError as exc:
        raise ImportError(_PILLOW_HINT) from exc
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 (grey) or 3 (RGB); got {channels!r}.")
    hw = _check_size(size)
    ids = list(item_ids)
    if not ids:
        raise ValueError("`item_ids` must name at least one item; got none.")
    paths = image_paths(folder, ids)
    first = _decode(paths[0], channels)
    if hw is not None and first.shape[1:] != hw:
        first = _resize(first, hw)
    batch = np.empty((len(paths), *first.shape), dtype=np.float32)
    batch[0] = first
    if progress is not None:
        progress(1, len(paths))
    for i, path in enumerate(paths[1:], start=1):
        image = _decode(path, channels)
        if hw is not None:
            if image.shape[1:] != hw:
                image = _resize(image, hw)
        elif image.shape != first.shape:
            (h0, w0), (h, w) = first.shape[1:], image.shape[1:]
            raise ValueError(
                f"Images must all have the same size unless `size` is given; "
                f"'{paths[0].name}' is {h0}x{w0} (HxW) but '{path.name}' is {h}x{w}. "
                "Pass `size` (--image-size in the CLI) to resize them."
            )
        batch[i] = image
        if progress is not None:
            progress(i + 1, len(paths))
    return batch
