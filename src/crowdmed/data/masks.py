"""Reading and writing mask files: NumPy, common image formats and medical volumes.

``.npy``/``.npz`` are read with NumPy; ``.png``, ``.gif``, ``.bmp``, ``.tif``/``.tiff`` and
``.jpg`` with Pillow; NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) and MetaImage
(``.mha``, ``.mhd``) with SimpleITK, keeping the voxel geometry (spacing, origin, direction) so
a consensus written in the same format overlays the inputs. Arrays are in NumPy axis order
(SimpleITK's ``GetArrayFromImage`` order, i.e. ``z, y, x`` for volumes).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crowdmed._io import _umask

__all__ = [
    "MaskFile",
    "binarize",
    "check_mask_output",
    "check_same_grid",
    "mask_suffix",
    "read_mask",
    "write_mask",
]

_NUMPY = (".npy", ".npz")
_PIL = (".png", ".gif", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
_MEDICAL = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
SUFFIXES = _NUMPY + _PIL + _MEDICAL
_LOSSY = (".jpg", ".jpeg")
#: Formats whose header names a separate data file.
_TWO_FILE = (".nhdr", ".mhd")
#: Suffixes :func:`write_mask` writes (JPEG is read but never written: it is lossy).
WRITE_SUFFIXES = tuple(s for s in SUFFIXES if s not in _LOSSY)


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


def mask_suffix(path: Path) -> str:
    """Lower-case suffix of a mask file; ``.nii.gz`` counts as one suffix."""
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
    if p.is_dir():
        raise ValueError(f"Mask file '{p}' is a folder, not a file; pass the mask file inside it.")
    if not p.is_file():
        raise FileNotFoundError(f"Mask file '{p}' does not exist; check the path.")
    if mask_suffix(p) not in SUFFIXES:
        raise ValueError(
            f"'{p}' has an unsupported suffix {mask_suffix(p)!r}; use one of {', '.join(SUFFIXES)}."
        )
    try:
        return _read_mask(p)
    except (ValueError, OSError, RuntimeError, EOFError) as exc:
        if isinstance(exc, _MaskError):
            raise
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR" in line]  # SimpleITK: the useful line
        first = (errors or lines or [type(exc).__name__])[0]
        raise ValueError(
            f"Cannot read mask file '{p}' ({first}); check that it is a complete "
            f"{mask_suffix(p)} file."
        ) from exc


class _MaskError(ValueError):
    """A readable file that is not a valid mask (message already names the file)."""


def _read_mask(p: Path) -> MaskFile:
    suffix = mask_suffix(p)
    if suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
        return MaskFile(arr, None, (1.0,) * arr.ndim)
    if suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.files)
            if len(keys) != 1:
                raise _MaskError(
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
                raise _MaskError(
                    f"'{p}' is a {im.mode} colour image; a mask must be single-channel "
                    "(grayscale, 1-bit or palette)."
                )
            arr = np.array(im)
        return MaskFile(arr, None, (1.0,) * arr.ndim)
    if suffix in _MEDICAL:
        sitk = _sitk(f"Reading '{p.name}'")
        img = sitk.ReadImage(str(p))
        if img.GetNumberOfComponentsPerPixel() != 1:
            raise _MaskError(f"'{p}' has several components per voxel; a mask must have one.")
        arr = sitk.GetArrayFromImage(img)
        return MaskFile(arr, img, tuple(float(s) for s in reversed(img.GetSpacing())))
    raise _MaskError(
        f"'{p}' has an unsupported suffix {suffix!r}; use one of {', '.join(SUFFIXES)}."
    )


def binarize(array: np.ndarray, name: str) -> np.ndarray:
    """Read a mask file's values as a binary mask.

    0/1 values and masks with exactly one non-zero value (e.g. 0/255) are accepted; the
    non-zero value is the foreground. ``-1`` marks a voxel that was not annotated, never
    foreground.

    Raises:
        ValueError: NaN, ``-1`` (not annotated) voxels, or more than one non-zero value (a
            label map), naming ``name``.
    """
    if array.dtype.kind == "b":
        return array
    if array.dtype.kind == "f" and np.isnan(array).any():
        raise ValueError(f"{name} contains NaN; a mask must hold 0 and one foreground value.")
    if array.dtype.kind in "if" and (array == -1).any():
        what = "every voxel is" if (array == -1).all() else f"{int((array == -1).sum())} voxels are"
        raise ValueError(
            f"{name}: {what} -1 (not annotated); binary consensus needs masks of 0 and one "
            "foreground value. Leave out a rater who annotated nothing, or use --method "
            "multilabel-staple, which skips -1 voxels."
        )
    values = np.unique(array)
    nonzero = values[values != 0]
    if nonzero.size > 1:
        raise ValueError(
            f"{name} has {values.size} distinct values (e.g. {values[:4].tolist()}); binary "
            "consensus needs masks with 0 and one foreground value. Use --method "
            "multilabel-staple for label maps."
        )
    return array != 0


def not_annotated(array: np.ndarray) -> bool:
    """Whether a rater's mask is all ``-1``: the rater annotated no voxel."""
    return array.dtype.kind in "if" and array.size > 0 and bool((array == -1).all())


def check_mask_output(
    path: str | os.PathLike[str], *, what: str = "`path`", soft: bool = False
) -> None:
    """Check that a mask can be written to ``path`` before any work is done.

    Args:
        path: Destination of :func:`write_mask`.
        what: Name of the destination in messages (e.g. ``"`--out`"``).
        soft: Whether a float (soft) mask will be written; image formats hold integers only.

    Raises:
        ValueError: An unknown or lossy (JPEG) suffix, a two-file format (``.mhd``,
            ``.nhdr``: the CLI stages single files), or a soft mask for an image format.
    """
    p = Path(path)
    suffix = mask_suffix(p)
    if suffix in _LOSSY:
        raise ValueError(
            f"{what} '{p}': JPEG is lossy and would change mask values; write .png, .npy or a "
            "medical format instead."
        )
    if suffix not in WRITE_SUFFIXES:
        raise ValueError(
            f"{what} '{p}' has an unsupported suffix {suffix!r}; use one of "
            f"{', '.join(WRITE_SUFFIXES)}."
        )
    if suffix in _TWO_FILE:
        raise ValueError(
            f"{what} '{p}': {suffix} writes a header and a separate data file; write a "
            f"single-file {'.nrrd' if suffix == '.nhdr' else '.mha'} instead."
        )
    if soft and suffix in _PIL:
        raise ValueError(
            f"{what} '{p}': image formats hold integer masks; write soft masks to .npy, .npz "
            "or a medical format."
        )


def _grid(image: Any) -> dict[str, np.ndarray]:
    return {
        "spacing": np.asarray(image.GetSpacing(), dtype=np.float64),
        "origin": np.asarray(image.GetOrigin(), dtype=np.float64),
        "direction": np.asarray(image.GetDirection(), dtype=np.float64),
    }


def check_same_grid(files: list[MaskFile], names: list[str]) -> None:
    """Check that medical mask files share one physical grid (spacing, origin, direction).

    Masks with equal voxel counts but different grids cover different places, so a voxel-wise
    consensus of them would be wrong. Differences below ITK's tolerance (``1e-6`` of the
    spacing, ``1e-6`` in the direction cosines) are ignored. Files without a geometry
    (NumPy, images) are not compared.

    Args:
        files: The masks, as read by :func:`read_mask`.
        names: How to name each file in messages.

    Raises:
        ValueError: Naming the first file whose grid differs from the first medical file's.
    """
    ref: tuple[int, dict[str, np.ndarray]] | None = None
    for i, f in enumerate(files):
        if f.geometry is None:
            continue
        grid = _grid(f.geometry)
        if ref is None:
            ref = (i, grid)
            continue
        j, first = ref
        scale = float(first["spacing"].min()) if first["spacing"].size else 1.0
        tol = {"spacing": 1e-6 * scale, "origin": 1e-6 * scale, "direction": 1e-6}
        for key in ("spacing", "origin", "direction"):
            if grid[key].shape != first[key].shape or not np.allclose(
                grid[key], first[key], rtol=0.0, atol=tol[key]
            ):
                raise ValueError(
                    f"{names[i]} has a different {key} ({grid[key].round(6).tolist()}) than "
                    f"{names[j]} ({first[key].round(6).tolist()}); the raters' masks must lie "
                    "on one grid: resample them onto the first rater's image first."
                )


def write_mask(path: str | os.PathLike[str], array: np.ndarray, geometry: Any = None) -> None:
    """Write an array in the format given by the suffix of ``path``.

    Args:
        path: Destination (``.npy``, ``.npz``, an image format, or a medical format).
        array: The array to write (``bool`` is written as ``uint8``).
        geometry: SimpleITK image whose spacing, origin and direction the output copies
            (medical formats only).

    Raises:
        ValueError: An unknown or lossy (JPEG) suffix, a float or 3-D array for an image
            format, or values that do not fit ``uint8`` in an image format.
    """
    p = Path(path)
    suffix = mask_suffix(p)
    if suffix in _LOSSY:
        raise ValueError(
            f"'{p}': JPEG is lossy and would change mask values; write .png, .npy or a medical "
            "format instead."
        )
    if suffix not in WRITE_SUFFIXES:
        raise ValueError(
            f"'{p}' has an unsupported suffix {suffix!r}; use one of {', '.join(WRITE_SUFFIXES)}."
        )
    arr = array.astype(np.uint8) if array.dtype == bool else array
    p.parent.mkdir(parents=True, exist_ok=True)
    if suffix in _TWO_FILE:
        # Header and data file are written under their final names in a temporary folder
        # (the header names the data file), then moved in place, data file first.
        with tempfile.TemporaryDirectory(prefix=f".{p.name}.", dir=p.parent) as folder:
            _write(Path(folder) / p.name, suffix, arr, geometry)
            for f in sorted(Path(folder).iterdir(), key=lambda f: f.name == p.name):
                os.chmod(f, 0o666 & ~_umask())
                os.replace(f, p.parent / f.name)
        return
    # Written next to the target under a name that keeps the suffix (NumPy and SimpleITK pick
    # the format from it), then moved in place: a failure never leaves a partial file.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=suffix, dir=p.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write(tmp, suffix, arr, geometry)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write(p: Path, suffix: str, arr: np.ndarray, geometry: Any) -> None:
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

        fmt = {".tif": "TIFF", ".tiff": "TIFF"}.get(suffix, suffix.lstrip(".").upper())
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
        f"'{p}' has an unsupported suffix {suffix!r}; use one of {', '.join(WRITE_SUFFIXES)}."
    )
