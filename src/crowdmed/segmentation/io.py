"""Reading and writing mask files: NumPy, common image formats and medical volumes.

``.npy``/``.npz`` are read with NumPy; ``.png``, ``.gif``, ``.bmp``, ``.tif``/``.tiff`` and
``.jpg`` with Pillow; NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) and MetaImage
(``.mha``, ``.mhd``) with SimpleITK, keeping the voxel geometry (spacing, origin, direction) so
a consensus written in the same format overlays the inputs. Arrays are in NumPy axis order
(SimpleITK's ``GetArrayFromImage`` order, i.e. ``z, y, x`` for volumes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MaskFile", "binarize", "read_mask", "write_mask"]

_NUMPY = (".npy", ".npz")
_PIL = (".png", ".gif", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
_MEDICAL = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
SUFFIXES = _NUMPY + _PIL + _MEDICAL


@dataclass
class MaskFile:
    """A mask read from a file.

    Attributes:
        array: The voxel values, in NumPy axis order.
        geometry: SimpleITK image the array came from (for its spacing, origin and direction),
            or ``None`` for non-medical formats.
        spacing: Voxel size per NumPy axis (1 for formats without one).
    """

    array: np.ndarray
    geometry: Any = None
    spacing: tuple[float, ...] = ()


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _sitk(purpose: str) -> Any:
    try:
        import SimpleITK as sitk
    except ImportError as exc:
        raise ImportError(f"{purpose} needs SimpleITK: pip install 'crowdmed[medical]'.") from exc
    return sitk


def read_mask(path: str | os.PathLike[str]) -> MaskFile:
    """Read one rater's mask or label map.

    Args:
        path: A ``.npy``/``.npz`` (a single array), image (``.png``, ``.gif``, ``.tif`` ...,
            single channel) or medical volume (``.nii.gz``, ``.nrrd``, ``.mha`` ...) file.

    Returns:
        The array and, for medical formats, its geometry.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: An unknown suffix, an ``.npz`` with several arrays, or a colour image.
        ImportError: Pillow or SimpleITK is needed and missing.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Mask file '{p}' does not exist.")
    suffix = _suffix(p)
    if suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
        return MaskFile(arr, None, (1.0,) * arr.ndim)
    if suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.files)
            if len(keys) != 1:
                raise ValueError(
                    f"'{p}' holds {len(keys)} arrays ({keys[:5]}); a mask .npz must hold exactly "
                    "one (save each rater's mask separately)."
                )
            arr = z[keys[0]]
        return MaskFile(arr, None, (1.0,) * arr.ndim)
    if suffix in _PIL:
        try:
            from PIL import Image
        except ImportError as exc:
            raise ImportError(
                "Reading image masks needs Pillow: pip install pillow (or 'crowdmed[torch]')."
            ) from exc
        with Image.open(p) as im:
            if im.mode in ("RGB", "RGBA", "CMYK", "LA"):
                raise ValueError(
                    f"'{p}' is a {im.mode} colour image; a mask must be single-channel "
                    "(grayscale, 1-bit or palette)."
                )
            arr = np.array(im)
        return MaskFile(arr, None, (1.0,) * arr.ndim)
    if suffix in _MEDICAL:
        sitk = _sitk(f"Reading '{p.name}'")
        img = sitk.ReadImage(str(p))
        if img.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(f"'{p}' has several components per voxel; a mask must have one.")
        arr = sitk.GetArrayFromImage(img)
        return MaskFile(arr, img, tuple(float(s) for s in reversed(img.GetSpacing())))
    raise ValueError(
        f"'{p}' has an unsupported suffix {suffix!r}; use one of {', '.join(SUFFIXES)}."
    )


def binarize(array: np.ndarray, name: str) -> np.ndarray:
    """Read a mask file's values as a binary mask.

    0/1 values and masks with exactly one non-zero value (e.g. 0/255) are accepted; the
    non-zero value is the foreground.

    Raises:
        ValueError: NaN, or more than one non-zero value (a label map), naming ``name``.
    """
    if array.dtype.kind == "b":
        return array
    if array.dtype.kind == "f" and np.isnan(array).any():
        raise ValueError(f"{name} contains NaN; a mask must hold 0 and one foreground value.")
    values = np.unique(array)
    nonzero = values[values != 0]
    if nonzero.size > 1:
        raise ValueError(
            f"{name} has {values.size} distinct values (e.g. {values[:4].tolist()}); binary "
            "consensus needs masks with 0 and one foreground value. Use --method "
            "multilabel-staple for label maps."
        )
    return array != 0


def write_mask(path: str | os.PathLike[str], array: np.ndarray, geometry: Any = None) -> None:
    """Write an array in the format given by the suffix of ``path``.

    Args:
        path: Destination (``.npy``, ``.npz``, an image format, or a medical format).
        array: The array to write (``bool`` is written as ``uint8``).
        geometry: SimpleITK image whose spacing, origin and direction the output copies
            (medical formats only).

    Raises:
        ValueError: An unknown suffix, a float or 3-D array for an image format, or values that
            do not fit ``uint8`` in an image format.
    """
    p = Path(path)
    suffix = _suffix(p)
    arr = array.astype(np.uint8) if array.dtype == bool else array
    if suffix == ".npy":
        np.save(p, arr)
        return
    if suffix == ".npz":
        np.savez_compressed(p, mask=arr)
        return
    if suffix in _PIL:
        if arr.ndim != 2:
            raise ValueError(f"Image formats hold 2-D masks; got shape {arr.shape}. Use .npy.")
        if arr.dtype.kind == "f":
            raise ValueError("Image formats hold integer masks; write soft masks to .npy.")
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError(
                f"Values {int(arr.min())}..{int(arr.max())} do not fit an 8-bit image; use .npy "
                "or a medical format (or --undecided 255)."
            )
        from PIL import Image

        fmt = {".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(
            suffix, suffix.lstrip(".").upper()
        )
        Image.fromarray(arr.astype(np.uint8)).save(p, format=fmt)
        return
    if suffix in _MEDICAL:
        sitk = _sitk(f"Writing '{p.name}'")
        if arr.dtype == np.int64:
            arr = arr.astype(np.int32)
        img = sitk.GetImageFromArray(arr)
        if geometry is not None and tuple(geometry.GetSize()) == tuple(img.GetSize()):
            img.CopyInformation(geometry)
        sitk.WriteImage(img, str(p), useCompression=True)
        return
    raise ValueError(
        f"'{p}' has an unsupported suffix {suffix!r}; use one of {', '.join(SUFFIXES)}."
    )
