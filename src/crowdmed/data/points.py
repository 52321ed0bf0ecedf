"""Point annotations of mitoses: a folder of high-power fields plus one CSV of points.

The CSV has one row per annotated mitosis with the columns ``image`` (the file name, with or
without its suffix), ``x`` (column) and ``y`` (row), in pixels of the image, pixel centres at
integer coordinates. Every image of the folder must appear: a field without mitoses is listed
once with empty ``x`` and ``y``. This makes a forgotten image an error instead of a silent
"no mitoses here".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from crowdmed._tables import check_file, read_table
from crowdmed._text import short_list
from crowdmed.data.images import image_files

__all__ = [
    "check_points",
    "image_files",
    "load_field",
    "read_points",
    "repeated_points",
    "write_points",
]


def load_field(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one high-power field as a ``uint8`` RGB array of shape ``(H, W, 3)``.

    Grey, palette and RGBA images are converted to RGB; 16-bit images are scaled to 8 bits.

    Raises:
        ValueError: If the file cannot be read as an image, has several frames or pages, or
            is a float image with values outside [0, 1].
    """
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow comes with the torch extra
        raise ImportError("Reading images needs Pillow: pip install pillow.") from exc
    p = Path(path)
    try:
        with Image.open(p) as im:
            n_frames = int(getattr(im, "n_frames", 1))
            if n_frames > 1:
                raise ValueError(
                    f"Image '{p}' has {n_frames} frames or pages; store one field per file."
                )
            if im.mode == "F":
                arr = np.asarray(im, dtype=np.float64)
                if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
                    raise ValueError(
                        f"Image '{p}' is a float image with values outside [0, 1] (or NaN); "
                        "save it as an 8- or 16-bit image."
                    )
                grey = np.rint(arr * 255.0).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                arr = np.asarray(im, dtype=np.float64)
                top = max(float(arr.max()), 1.0)
                grey = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except OSError as exc:
        raise ValueError(f"Cannot read image '{p}': {exc}. Pass PNG, TIFF or JPEG files.") from exc


def check_points(points: pd.DataFrame, name: str = "points") -> pd.DataFrame:
    """Validate a points table and return a clean copy with columns ``image, x, y``.

    Rows with both ``x`` and ``y`` missing (an image without mitoses) are dropped; ``image``
    values are kept as given (compared as strings elsewhere).

    Raises:
        ValueError: Missing columns, a row with only one coordinate, or non-numeric or
            infinite coordinates.
        TypeError: If ``points`` is not a ``DataFrame``.
    """
    if not isinstance(points, pd.DataFrame):
        raise TypeError(
            f"`{name}` must be a DataFrame with columns image, x, y; got {type(points).__name__}."
        )
    missing = [c for c in ("image", "x", "y") if c not in points.columns]
    if missing:
        raise ValueError(
            f"`{name}` must have the columns image, x, y; missing {missing} "
            f"(columns: {short_list([str(c) for c in points.columns])})."
        )
    out = points.copy()
    for col in ("x", "y"):
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna() & out[col].notna()
        if bad.any():
            raise ValueError(
                f"`{name}` column {col!r} must be numeric; rows {short_list(list(out.index[bad]))} "
                f"hold {short_list(list(out.loc[bad, col]))}."
            )
        out[col] = values.astype(np.float64)
    one = out["x"].isna() ^ out["y"].isna()
    if one.any():
        raise ValueError(
            f"`{name}` rows {short_list(list(out.index[one]))} have only one of x and y; give both "
            "(or leave both empty for an image without mitoses)."
        )
    out = out[out["x"].notna()].reset_index(drop=True)
    if not np.isfinite(out[["x", "y"]].to_numpy()).all():
        raise ValueError(f"`{name}` holds infinite coordinates; give x and y in pixels.")
    return out


def repeated_points(points: pd.DataFrame, lines: np.ndarray) -> list[str]:
    """``"line L repeats line M (image (x, y))"`` for every exact repeat of a point."""
    first: dict[tuple[str, float, float], int] = {}
    out: list[str] = []
    for line, image, x, y in zip(
        lines, points["image"].astype(str), points["x"], points["y"], strict=True
    ):
        key = (image, float(x), float(y))
        if key in first:
            out.append(f"line {line} repeats line {first[key]} ({image} ({x:g}, {y:g}))")
        else:
            first[key] = int(line)
    return out


def read_points(
    csv_path: str | os.PathLike[str], images_dir: str | os.PathLike[str]
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Read a folder of high-power fields and the CSV of their mitosis points.

    Args:
        csv_path: CSV with the columns ``image, x, y`` (see the module documentation). A field
            without mitoses is listed once with empty ``x`` and ``y``.
        images_dir: Folder of PNG, TIFF or JPEG fields (not searched recursively).

    Returns:
        ``(images, points)``: the ``uint8`` RGB fields of shape ``(H, W, 3)`` keyed by image
        name (the file stem), and a ``DataFrame`` ``image, x, y`` with one row per mitosis whose
        ``image`` is that name.

    Raises:
        FileNotFoundError: If the CSV does not exist.
        ValueError: Unknown image names in the CSV, images without a row, points outside their
            image, or a malformed CSV; the message names the rows or images.
    """
    csv = Path(csv_path)
    if not csv.exists():
        raise FileNotFoundError(f"Points file '{csv}' does not exist; pass a CSV image,x,y.")
    check_file(csv, "Points file")
    files = image_files(Path(images_dir))
    raw = read_table(csv, text_columns=("image",), what="Points file", folder=False)
    if "image" in raw.columns and raw["image"].isna().any():
        rows = list(raw.index[raw["image"].isna()] + 2)
        raise ValueError(
            f"Points file '{csv}' has rows without an image name (lines {short_list(rows)})."
        )
    if "image" in raw.columns:
        keys = []
        unknown: list[str] = []
        for value in raw["image"].astype(str).str.strip():
            key = value if value in files else Path(value).stem
            if key not in files or (value not in files and files[key].name != value):
                unknown.append(value)
            keys.append(key)
        if unknown:
            raise ValueError(
                f"Points file '{csv}' names {len(set(unknown))} images that are not in "
                f"'{images_dir}': {short_list(sorted(set(unknown)))}. Use the file names of the "
                "folder."
            )
        raw["image"] = keys
    raw["_line"] = np.arange(len(raw)) + 2  # CSV line numbers for the messages below
    points = check_points(raw, f"points file '{csv}'")
    lines = points.pop("_line").to_numpy()
    repeated = repeated_points(points, lines)
    if repeated:
        raise ValueError(
            f"Points file '{csv}' repeats {len(repeated)} point(s): {short_list(repeated, 3)}. "
            "Keep one row per mitosis (a repeated point would count as a missed mitosis)."
        )
    listed = set(raw["image"])
    absent = [k for k in files if k not in listed]
    if absent:
        raise ValueError(
            f"{len(absent)} images in '{images_dir}' have no row in '{csv}': {short_list(absent)}. "
            "List an image without mitoses once with empty x and y."
        )
    images = {k: load_field(p) for k, p in files.items()}
    outside: list[str] = []
    for line, (_, row) in zip(lines, points.iterrows(), strict=True):
        h, w = images[row["image"]].shape[:2]
        if not (-0.5 <= row["x"] <= w - 0.5 and -0.5 <= row["y"] <= h - 0.5):
            outside.append(
                f"line {line}: {row['image']} ({row['x']:g}, {row['y']:g}) not in {w}x{h}"
            )
    if outside:
        raise ValueError(
            f"{len(outside)} points in '{csv}' lie outside their image: {short_list(outside, 3)}. "
            "Coordinates are pixels with x the column and y the row."
        )
    return images, points


def write_points(
    points: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    image_names: Sequence[str] | None = None,
) -> Path:
    """Write points ``image, x, y`` (plus any extra columns such as ``score``) to a CSV.

    Args:
        points: ``DataFrame`` with at least ``image, x, y``.
        path: Output CSV, written atomically.
        image_names: Every image of the folder; those without a point get one row with empty
            ``x`` and ``y`` (as :func:`read_points` expects).

    Returns:
        The path written.
    """
    from crowdmed._io import atomic_path

    out = check_points(points)
    if image_names is not None:
        have = set(out["image"].astype(str))
        empty = [n for n in image_names if str(n) not in have]
        if empty:
            out = pd.concat([out, pd.DataFrame({"image": empty})], ignore_index=True)
    target = Path(path)
    with atomic_path(target) as tmp:
        out.to_csv(tmp, index=False)
    return target
