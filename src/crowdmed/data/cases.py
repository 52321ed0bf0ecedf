"""Segmentation cases from folders: images, and the masks of several raters.

Layout read by :func:`read_segmentation_cases`:

- an image folder with one image per case, named after the case id: 2-D images (PNG, TIFF,
  JPEG; grey or RGB) or 3-D volumes (NIfTI ``.nii``/``.nii.gz``, NRRD ``.nrrd``/``.nhdr``,
  MetaImage ``.mha``/``.mhd``, read with SimpleITK);
- a mask folder with one sub-folder per rater (the folder name is the rater's name), each with
  that rater's mask of some or all cases, named after the case id (``.png``, ``.tif``,
  ``.npy``, ``.npz``, ``.nii.gz``, ``.nrrd``, ``.mha`` ...). A case a rater did not annotate is
  simply absent. Masks are label maps: 0 background, ``1..K-1`` the classes; a mask holding
  only 0 and 255 is read as binary (0/1).

2-D images are scaled to [0, 1] like :func:`crowdmed.data.images.load_images`; each volume is
min-max scaled to [0, 1] (a constant volume becomes 0).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crowdmed.data.masks import SUFFIXES as MASK_SUFFIXES
from crowdmed.data.masks import read_mask

__all__ = [
    "VOLUME_SUFFIXES",
    "SegmentationCases",
    "case_id",
    "check_classes",
    "image_channels",
    "is_volume_folder",
    "list_cases",
    "mask_files",
    "read_cases",
    "read_label_map",
    "read_reference_cases",
    "read_segmentation_cases",
]

#: Suffixes of 3-D image volumes (read with SimpleITK).
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
_VOLUME_DATA = (".raw", ".zraw")  # data files of two-file volume formats
_COLOUR_MODES = ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def case_id(path: Path) -> str:
    """The case id of a file: its name without the format suffix (``.nii.gz`` as one)."""
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def is_volume_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether a folder holds 3-D volumes (any NIfTI, NRRD or MetaImage file)."""
    p = Path(folder)
    return p.is_dir() and any(
        f.is_file() and not f.name.startswith(".") and _suffix(f) in VOLUME_SUFFIXES
        for f in p.iterdir()
    )


def _volume_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        suffix = _suffix(p)
        if suffix not in VOLUME_SUFFIXES:
            if suffix in _VOLUME_DATA:
                continue
            raise ValueError(
                f"Volume folder '{folder}' holds '{p.name}'; a folder of volumes holds only "
                f"{', '.join(VOLUME_SUFFIXES)} files (no 2-D images)."
            )
        if case_id(p) in found:
            raise ValueError(
                f"Volume folder '{folder}' has two files for case {case_id(p)!r}: "
                f"'{found[case_id(p)].name}' and '{p.name}'; keep one."
            )
        found[case_id(p)] = p
    return found


def list_cases(folder: str | os.PathLike[str]) -> list[str]:
    """Case ids of the images of a folder: 2-D images or 3-D volumes, sorted by file name.

    Raises:
        ValueError: For a missing or empty folder or two files of one case.
    """
    from crowdmed.data.images import list_images

    if is_volume_folder(folder):
        return list(_volume_files(Path(folder)))
    return list_images(folder)


def case_paths(folder: str | os.PathLike[str], names: Sequence[str]) -> list[Path]:
    """The image file of each case (2-D images or volumes)."""
    from crowdmed.data.images import image_paths

    if is_volume_folder(folder):
        files = _volume_files(Path(folder))
        missing = [n for n in names if n not in files]
        if missing:
            raise ValueError(f"Volume folder '{folder}' has no volume of case {missing[0]!r}.")
        return [files[n] for n in names]
    return image_paths(folder, names)


def _read_volume(path: Path) -> tuple[np.ndarray, Any]:
    """One volume as float32 ``(1, D, H, W)`` min-max scaled to [0, 1], and its geometry."""
    image = read_mask(path)
    arr = np.asarray(image.array, dtype=np.float64)
    if arr.ndim != 3:
        raise ValueError(f"Volume '{path}' has {arr.ndim} dimensions; a volume has 3 (D, H, W).")
    if not np.isfinite(arr).all():
        raise ValueError(f"Volume '{path}' holds NaN or infinite values.")
    low, high = float(arr.min()), float(arr.max())
    scaled = (arr - low) / (high - low) if high > low else np.zeros_like(arr)
    return scaled[None].astype(np.float32), image.geometry


def read_cases(
    folder: str | os.PathLike[str], names: Sequence[str], channels: int = 1
) -> np.ndarray:
    """Images of the given cases as one float32 array ``(N, C, *spatial)`` scaled to [0, 1].

    2-D images are read by :func:`crowdmed.data.images.load_images` (``channels`` 1 or 3);
    volumes are single-channel ``(N, 1, D, H, W)``. All cases must have one size.

    Raises:
        ValueError: For a missing file, cases of different sizes, or ``channels=3`` volumes.
    """
    from crowdmed.data.images import load_images

    if not is_volume_folder(folder):
        return load_images(folder, list(names), channels=channels)
    if channels != 1:
        raise ValueError(f"Volumes have one channel; got channels={channels}.")
    arrays = [_read_volume(p)[0] for p in case_paths(folder, names)]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        shown = ", ".join("x".join(map(str, s)) for s in sorted(shapes)[:3])
        raise ValueError(
            f"Volumes in '{folder}' must have the same size to train together; got {shown} "
            "(DxHxW). Resample them to one grid."
        )
    return np.stack(arrays)


def read_case(
    folder: str | os.PathLike[str], name: str, channels: int = 1
) -> tuple[np.ndarray, Any]:
    """One case as float32 ``(1, C, *spatial)`` and its SimpleITK geometry (volumes only)."""
    if is_volume_folder(folder):
        arr, geometry = _read_volume(case_paths(folder, [name])[0])
        return arr[None], geometry
    return read_cases(folder, [name], channels), None


def mask_files(folder: Path, what: str) -> dict[str, Path]:
    """Mask files of a folder by case id.

    Raises:
        ValueError: For an unsupported suffix or two masks of one case.
    """
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if _suffix(p) in _VOLUME_DATA:
            continue  # data file of a two-file format (.nhdr/.mhd)
        if _suffix(p) not in MASK_SUFFIXES:
            raise ValueError(
                f"{what} file '{p}' has an unsupported suffix {_suffix(p)!r}; use one of "
                f"{', '.join(MASK_SUFFIXES)}."
            )
        case = case_id(p)
        if case in found:
            raise ValueError(
                f"{what} has two masks for case {case!r}: '{found[case].name}' and '{p.name}'; "
                "keep one."
            )
        found[case] = p
    return found


def read_label_map(path: Path, shape: tuple[int, ...], what: str) -> np.ndarray:
    """One mask as an int64 label map of ``shape``; 0/255 masks become 0/1.

    Args:
        path: The mask file.
        shape: The spatial shape of its image, ``(H, W)`` or ``(D, H, W)``.
        what: How to name the mask in messages.

    Raises:
        ValueError: For another size, non-integer or negative values.
    """
    arr = read_mask(path).array
    while arr.ndim > len(shape) and arr.shape[0] == 1:  # 2-D NIfTI slices read as (1, H, W)
        arr = arr[0]
    if arr.shape != shape:
        kind = "HxW" if len(shape) == 2 else "DxHxW"
        raise ValueError(
            f"{what} is {'x'.join(map(str, arr.shape))} but its image is "
            f"{'x'.join(map(str, shape))} ({kind}); masks must have the size of their image."
        )
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{what} holds non-integer values; a mask must be a label map.")
    elif arr.dtype.kind not in "biu":
        raise ValueError(f"{what} has dtype {arr.dtype}; a mask must be a label map.")
    out = arr.astype(np.int64)
    if out.size and out.min() < 0:
        raise ValueError(
            f"{what} holds the negative value {int(out.min())}; classes must be 0..K-1."
        )
    values = np.unique(out)
    if values.size and values.max() == 255 and np.isin(values, (0, 255)).all():
        out = (out == 255).astype(np.int64)
    return out


def check_classes(values: set[int], name: str = "--masks") -> int:
    """Number of classes of the training masks; classes must be 0..K-1 without gaps.

    Raises:
        ValueError: For more than 256 classes or a class never used.
    """
    k = max(2, max(values) + 1)
    if k > 256:
        raise ValueError(
            f"`{name}` hold class {k - 1}; at most 256 classes (0..255) are supported."
        )
    missing = sorted(set(range(1, k)) - values)
    if missing:
        shown = sorted(values)[:8]
        raise ValueError(
            f"`{name}` hold the values {shown}: classes must be numbered 0..K-1 without gaps "
            f"(class {missing[0]} is never used); renumber the label maps."
        )
    return k


def image_channels(folder: Path, names: Sequence[str]) -> int:
    """3 when any image of the cases is a colour image, else 1 (volumes: 1)."""
    from PIL import Image

    if is_volume_folder(folder):
        return 1
    for p in case_paths(folder, names):
        try:
            with Image.open(p) as im:
                mode = im.mode
                if mode in _COLOUR_MODES:
                    return 3
                if mode in ("P", "PA"):
                    rgb = np.asarray(im.convert("RGB"))
                    if (
                        not (rgb[..., 0] == rgb[..., 1]).all()
                        or not (rgb[..., 1] == rgb[..., 2]).all()
                    ):
                        return 3
        except OSError as exc:
            raise ValueError(f"Cannot read image '{p}': {exc}") from exc
    return 1


@dataclasses.dataclass
class SegmentationCases:
    """Images and rater masks read by :func:`read_segmentation_cases`.

    Attributes:
        images: float32 ``(N, C, *spatial)`` scaled to [0, 1].
        masks: int64 ``(N, A, *spatial)`` label maps; ``-1`` marks a case a rater skipped.
        case_ids: Case id of each image.
        raters: Name of each rater (mask sub-folder).
        files: Mask file of each case, per rater.
        image_files: Image file of each case.
        counts: Number of masks per rater.
        n_classes: Number of classes ``K`` (at least 2).
    """

    images: np.ndarray
    masks: np.ndarray
    case_ids: list[str]
    raters: list[str]
    files: list[dict[str, Path]]
    image_files: list[Path]
    counts: list[int]
    n_classes: int

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes."""
        return self.images.ndim - 2


def _rater_files(images: Path, masks: Path, case_ids: list[str]) -> dict[str, dict[str, Path]]:
    rater_dirs = sorted(p for p in masks.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not rater_dirs:
        raise ValueError(
            f"`--masks` folder '{masks}' has no rater sub-folders; put each rater's masks in "
            "their own sub-folder (masks/<rater>/<case>.png)."
        )
    known = set(case_ids)
    files: dict[str, dict[str, Path]] = {}
    for d in rater_dirs:
        found = mask_files(d, f"Rater {d.name!r}")
        unknown = sorted(set(found) - known)
        if unknown:
            raise ValueError(
                f"Rater {d.name!r} has a mask for case {unknown[0]!r} ('{found[unknown[0]].name}') "
                f"but --images has no image of that case; add the image or remove the mask."
            )
        files[d.name] = found
    bare = [c for c in case_ids if not any(c in f for f in files.values())]
    if bare:
        raise ValueError(
            f"{len(bare)} image(s) have no rater mask, e.g. case {bare[0]!r}; add a mask in a "
            "rater sub-folder of --masks or remove the image."
        )
    return files


def list_raters(images: Path, masks: Path) -> tuple[list[str], dict[str, dict[str, Path]]]:
    """Case ids of an image folder and the mask files of each rater, checked against each other.

    Raises:
        ValueError: For a mask folder without rater sub-folders, a mask of an unknown case or
            an image without any mask.
    """
    case_ids = list_cases(images)
    return case_ids, _rater_files(images, masks, case_ids)


def read_segmentation_cases(
    images: Path,
    masks: Path,
    *,
    channels: int | None = None,
    progress: Any = None,
) -> SegmentationCases:
    """Read the images of a folder and the masks of every rater (sub-folders of ``masks``).

    Args:
        images: Folder with one image (2-D) or volume (3-D) per case.
        masks: Folder with one sub-folder of masks per rater.
        channels: Image channels, 1 or 3; 3 when any 2-D image is in colour when ``None``.
        progress: Called with a ``description`` keyword before each step.

    Returns:
        The cases.

    Raises:
        ValueError: For unreadable, missing or inconsistent files (one line each).
    """
    report = progress or (lambda **_: None)
    case_ids, by_rater = list_raters(images, masks)
    raters, files = list(by_rater), list(by_rater.values())
    report(description=f"Reading {len(case_ids):,} images")
    n_channels = channels if channels is not None else image_channels(images, case_ids)
    x = read_cases(images, case_ids, channels=n_channels)
    shape = tuple(int(s) for s in x.shape[2:])
    report(description=f"Reading the masks of {len(raters)} rater(s)")
    y = np.full((len(case_ids), len(raters), *shape), -1, dtype=np.int64)
    counts = [0] * len(raters)
    values: set[int] = set()
    for j, found in enumerate(files):
        for i, case in enumerate(case_ids):
            if case in found:
                what = f"Rater {raters[j]!r} mask of case {case!r} ('{found[case]}')"
                y[i, j] = read_label_map(found[case], shape, what)
                values.update(int(v) for v in np.unique(y[i, j]))
                counts[j] += 1
    k = check_classes(values)
    return SegmentationCases(x, y, case_ids, raters, files, case_paths(images, case_ids), counts, k)


def read_reference_cases(
    images: Path, masks: Path, *, channels: int, n_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str], list[Path]]:
    """Read validation cases: one image and one reference mask per case.

    Args:
        images: Folder of images (or volumes).
        masks: Folder with one reference mask per image, named by case id.
        channels: Image channels of the network.
        n_classes: Classes of the training masks; a reference mask must not hold more.

    Returns:
        ``(images (N, C, *spatial), masks (N, *spatial) int64, case ids, mask files)``.

    Raises:
        ValueError: For a missing or extra mask, another size or an unknown class.
    """
    ids = list_cases(images)
    files = mask_files(masks, "`--val-masks`")
    missing = [c for c in ids if c not in files]
    if missing:
        raise ValueError(
            f"`--val-masks` has no mask for validation case {missing[0]!r}; give one "
            "reference mask per --val-images image."
        )
    extra = sorted(set(files) - set(ids))
    if extra:
        raise ValueError(
            f"`--val-masks` has a mask for case {extra[0]!r} but --val-images has no image "
            "of that case."
        )
    x = read_cases(images, ids, channels=channels)
    shape = tuple(int(s) for s in x.shape[2:])
    y = np.stack(
        [
            read_label_map(files[c], shape, f"Validation mask of case {c!r} ('{files[c]}')")
            for c in ids
        ]
    )
    if n_classes is not None and y.max() >= n_classes:
        raise ValueError(
            f"`--val-masks` hold class {int(y.max())} but the training masks have "
            f"classes 0..{n_classes - 1}; use the same label numbering."
        )
    return x, y, ids, [files[c] for c in ids]
