"""Box tables of several readers: reading, validation and intersection over union.

A *box table* is a tidy ``DataFrame`` with one row per box and the columns ``image, reader,
class, xmin, ymin, xmax, ymax`` (plus ``zmin, zmax`` for 3-D boxes). Coordinates are absolute
pixels (voxels) in corner mode with ``xmax - xmin = width``. A row whose class and coordinates
are all empty records that the reader read the image and marked nothing; such rows count in
the agreement denominators and never become boxes.

Box *arrays* follow ``docs/conventions.md``: float, shape ``(n_boxes, 4 | 6)``, columns
``xmin, ymin[, zmin], xmax, ymax[, zmax]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from crowdmed._box_table import (
    ALIASES,
    BOX_COLUMNS,
    BOX_COLUMNS_3D,
    PARTIAL,
    array_columns,
    as_box_array,
    box_columns,
    class_key,
    paired_iou,
    rename_aliases,
    row_label,
    validate_boxes,
)
from crowdmed._tables import LINE_OFFSET, check_file, read_table
from crowdmed._text import short_list

#: Header names read as text ids (image, reader and class columns, any spelling).
_ID_NAMES = tuple(name for role in ("image", "reader", "class") for name in ALIASES[role])

__all__ = [
    "BOX_COLUMNS",
    "BOX_COLUMNS_3D",
    "box_columns",
    "box_iou",
    "check_boxes",
    "read_boxes",
]


def frame_ndim(frame: pd.DataFrame) -> int:
    """2 or 3: whether a checked box table has ``zmin``/``zmax`` columns."""
    return 3 if "zmin" in frame.columns else 2


def frame_to_array(frame: pd.DataFrame) -> np.ndarray:
    """Coordinates of a checked box table as a ``(n, 4 | 6)`` float array (conventions order)."""
    cols = list(array_columns(frame_ndim(frame)))
    return np.ascontiguousarray(frame[cols].to_numpy(dtype=np.float64))


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
    """Intersection over union of every box in ``a`` with every box in ``b``.

    Args:
        a: Float array of shape ``(n, 4)`` or ``(n, 6)``, corner mode
            ``xmin, ymin[, zmin], xmax, ymax[, zmax]``.
        b: Float array of shape ``(m, 4)`` or ``(m, 6)``, same dimension as ``a``.

    Returns:
        Float array of shape ``(n, m)``; 0 where a pair has zero union.

    Raises:
        ValueError: Wrong shapes or different dimensions.

    Examples:
        >>> box_iou([[0, 0, 2, 2]], [[1, 0, 3, 2], [0, 0, 2, 2]])
        array([[0.33333333, 1.        ]])
    """
    aa = as_box_array(a, "a")
    bb = as_box_array(b, "b")
    if aa.shape[1] != bb.shape[1]:
        raise ValueError(
            f"`a` and `b` must both be 2-D (4 columns) or 3-D (6 columns) boxes; got "
            f"{aa.shape[1]} and {bb.shape[1]} columns."
        )
    return paired_iou(aa[:, None, :], bb[None, :, :])


def _maybe_int(values: pd.Series) -> pd.Series:
    if values.dtype.kind == "f":
        v = values.dropna()
        if len(v) and np.all(v == np.round(v)):
            if values.isna().any():
                return values.astype("Int64")
            return values.astype(np.int64)
    return values


def check_boxes(
    frame: pd.DataFrame,
    *,
    image_sizes: Mapping[Any, Any] | pd.DataFrame | None = None,
    classes: Iterable[Any] | None = None,
    images: Iterable[Any] | str | os.PathLike[str] | None = None,
    _where: Callable[[Hashable], str] = row_label,
) -> pd.DataFrame:
    """Validate a box table and return it in the tidy layout.

    Common column spellings are accepted and renamed (``image_id``, ``rad_id``, ``class_id``,
    ``x_min`` ...). ``image_width`` / ``image_height`` (``width``/``height``) columns are used
    as image sizes when ``image_sizes`` is not given.

    Args:
        frame: One row per box with columns ``image, reader, class, xmin, ymin, xmax, ymax``
            (plus ``zmin, zmax`` for 3-D boxes), absolute pixel coordinates in corner mode.
            A row whose class and coordinates are all empty records a reading without boxes.
        image_sizes: Mapping ``image -> (width, height[, depth])`` in pixels, or a frame with
            columns ``image, width, height[, depth]``; boxes must then lie inside the image.
        classes: The valid classes; any other class is an error.
        images: The images that exist (a list of ids or a folder whose file names, with or
            without suffixes, are the ids); a box on any other image is an error.

    Returns:
        A new frame with columns ``image, reader, class`` and the coordinate columns
        (:data:`BOX_COLUMNS`, or :data:`BOX_COLUMNS_3D`) as ``float64``; the input index is kept.

    Raises:
        TypeError: ``frame`` is not a DataFrame or a coordinate column is not numeric.
        ValueError: Missing columns, empty or NaN fields, inverted or zero-size boxes, boxes
            outside the image, unknown classes or images. The message names the row, image and
            reader and says how to fix it.
    """
    checked = validate_boxes(
        frame, image_sizes=image_sizes, classes=classes, images=images, where=_where, strict=True
    )
    df = checked.frame
    out = pd.DataFrame(
        {"image": df["image"], "reader": df["reader"], "class": df["class"]}, index=df.index
    )
    for j, col in enumerate(box_columns(checked.ndim)):
        out[col] = checked.coords[:, j]
    if checked.score is not None:
        out["score"] = checked.score
    out["class"] = _maybe_int(out["class"])
    if out["image"].dtype.kind == "f":
        out["image"] = _maybe_int(out["image"])
    return out


# ---------------------------------------------------------------------- read_boxes
def _line_label(path: Path) -> Callable[[Hashable], str]:
    def where(index: Hashable) -> str:
        return f"line {index} of {path.name}"

    return where


def _whole_number_classes(values: pd.Series) -> pd.Series:
    """Class texts that are all integers written plainly (``0``, ``14``) as integers."""
    present = values.dropna()
    if not len(present):
        return values
    text = present.astype(str)
    if not text.str.fullmatch(r"-?(0|[1-9][0-9]*)").all():
        return values
    out = pd.to_numeric(values)
    return out.astype("Int64") if values.isna().any() else out.astype(np.int64)


def _text(value: Any) -> Any:
    """An id from JSON as text (``7`` -> ``"7"``); ``None`` stays missing."""
    if value is None or isinstance(value, str):
        return value
    return str(value)


def folder_image_sizes(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """Width and height of the 2-D images of a folder that Pillow can read (header only).

    Returns:
        A frame ``image, width, height`` with one row per file name and one per name without
        suffix; marked partial: boxes on images it does not list are not checked.
    """
    rows = []
    try:
        from PIL import Image
    except ImportError:
        Image = None
    for f in sorted(Path(folder).iterdir()) if Image is not None else []:
        if f.name.startswith(".") or not f.is_file():
            continue
        if f.suffix.lower() not in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
            continue
        try:
            with Image.open(f) as im:
                width, height = im.size
        except Exception:  # unreadable: its boxes are not size-checked
            continue
        for name in {f.name, f.stem}:
            rows.append({"image": name, "width": width, "height": height})
    sizes = pd.DataFrame(rows, columns=["image", "width", "height"])
    sizes.attrs[PARTIAL] = True
    return sizes


def _read_coco(path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"File '{path}' is not valid JSON: {exc}.") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"File '{path}' is not UTF-8 text (byte offset {exc.start}); save it as UTF-8 JSON."
        ) from exc
    if not isinstance(data, dict) or "annotations" not in data:
        raise ValueError(
            f"File '{path}' must be COCO JSON with an 'annotations' list (each with image_id, "
            "category_id, bbox and a 'reader' field)."
        )
    image_name: dict[Any, Any] = {}
    size_rows = []
    for img in data.get("images", []) or []:
        if "id" not in img:
            raise ValueError(f"An entry of 'images' in '{path}' has no 'id'; add it.")
        name = img.get("file_name", img["id"])
        name = Path(str(name)).name
        for suffix in (".nii.gz", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nii"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        image_name[img["id"]] = name if "file_name" in img else img["id"]
        if "width" in img and "height" in img:
            size_rows.append(
                {
                    "image": image_name[img["id"]],
                    "width": img["width"],
                    "height": img["height"],
                    **({"depth": img["depth"]} if "depth" in img else {}),
                }
            )
    categories = data.get("categories", []) or []
    if not isinstance(categories, list) or not all(
        isinstance(c, dict) and "id" in c for c in categories
    ):
        raise ValueError(f"'categories' of '{path}' must be a list of objects with an 'id'.")
    category_name = {c["id"]: _text(c.get("name", c["id"])) for c in categories}
    rows = []
    for i, ann in enumerate(data["annotations"]):
        reader = next((ann[k] for k in ("reader", "annotator", "rater") if k in ann), None)
        if reader is None:
            raise ValueError(
                f"Annotation {i} (id {ann.get('id')!r}) of '{path}' has no 'reader' field; add "
                "the reader id to every annotation."
            )
        bbox = ann.get("bbox")
        if bbox is None or len(bbox) not in (4, 6):
            raise ValueError(
                f"Annotation {i} (id {ann.get('id')!r}) of '{path}' must have a bbox "
                f"[x, y, width, height] (or [x, y, z, width, height, depth]); got {bbox!r}."
            )
        image_id = ann.get("image_id")
        if image_name and image_id not in image_name:
            raise ValueError(
                f"Reader {reader!r} is listed for image {image_id!r} (annotation {i} of "
                f"'{path}'), which is not in 'images'; fix the image_id or add the image."
            )
        cat = ann.get("category_id")
        if category_name and cat not in category_name:
            raise ValueError(
                f"Annotation {i} (id {ann.get('id')!r}) of '{path}' has category_id {cat!r}, "
                f"which is not in 'categories' (ids {short_list(list(category_name))}); fix the "
                "category_id or add the category."
            )
        row: dict[str, Any] = {
            "image": _text(image_name.get(image_id, image_id)),
            "reader": _text(reader),
            "class": category_name.get(cat, _text(cat)),
        }
        if "score" in ann:
            row["score"] = ann["score"]
        try:
            b = [float(v) for v in bbox]
        except (TypeError, ValueError):
            raise ValueError(
                f"Annotation {i} (id {ann.get('id')!r}) of '{path}' has a bbox with a value that "
                f"is not a number: {bbox!r}."
            ) from None
        if len(b) == 4:
            row.update(xmin=b[0], ymin=b[1], xmax=b[0] + b[2], ymax=b[1] + b[3])
        else:
            row.update(
                xmin=b[0],
                ymin=b[1],
                xmax=b[0] + b[3],
                ymax=b[1] + b[4],
                zmin=b[2],
                zmax=b[2] + b[5],
            )
        rows.append(row)
    for reading in data.get("readings", []) or []:
        image_id = reading.get("image_id")
        rows.append(
            {
                "image": _text(image_name.get(image_id, image_id)),
                "reader": _text(reading.get("reader")),
            }
        )
    frame = pd.DataFrame(rows)
    for col in ("image", "reader", "class", *BOX_COLUMNS):
        if col not in frame.columns:
            frame[col] = np.nan
    sizes = pd.DataFrame(size_rows) if size_rows else None
    return frame, sizes


def read_boxes(
    path: str | os.PathLike[str],
    *,
    images: Iterable[Any] | str | os.PathLike[str] | None = None,
    classes: Iterable[Any] | None = None,
    image_sizes: Mapping[Any, Any] | pd.DataFrame | str | None = None,
    no_finding: Any = None,
) -> pd.DataFrame:
    """Read the boxes of several readers from a CSV/TSV table or a COCO JSON file.

    A table has one row per box: ``image, reader, class, xmin, ymin, xmax, ymax`` (plus
    ``zmin, zmax`` for 3-D), absolute pixels; common spellings (``image_id, rad_id, class_id,
    x_min, ...``, as in the VinDr-CXR tables) are accepted, and ``image_width``/``image_height``
    columns give the image sizes. A row with empty class and coordinates records a reading
    without boxes. COCO JSON needs a ``reader`` field on every annotation; ``bbox`` is
    ``[x, y, width, height]``, classes are the category names, image ids are the file names
    without suffix, and image sizes come from ``images``. An optional top-level ``readings``
    list of ``{"image_id", "reader"}`` records readings without boxes.

    Args:
        path: A ``.csv``, ``.tsv`` (optionally ``.gz``) or ``.json`` file.
        images: The images that exist (ids or a folder); boxes on other images are an error.
        classes: The valid classes; other classes are an error.
        image_sizes: ``image -> (width, height[, depth])`` or a frame; boxes must lie inside.
            ``"images"``: the sizes of the image files in the ``images`` folder that Pillow
            reads (boxes on other files are not checked).
        no_finding: A class that means "nothing found" (VinDr-CXR's ``14``); its rows become
            readings without boxes.

    Returns:
        The checked box table (see :func:`check_boxes`), one row per box or reading.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Unreadable file or invalid boxes (the message names the line and the fix).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Box file '{p}' does not exist; check the path.")
    check_file(p, "Box file")
    suffixes = [s.lower() for s in p.suffixes]
    suffix = suffixes[-2] if suffixes[-1:] == [".gz"] and len(suffixes) > 1 else (
        suffixes[-1] if suffixes else ""
    )  # fmt: skip
    where = _line_label(p)
    sizes: pd.DataFrame | None = None
    if suffix == ".json":
        frame, sizes = _read_coco(p)
        frame.index = pd.RangeIndex(len(frame))

        def where(index: Hashable) -> str:
            return f"annotation {index} of {p.name}"
    else:
        if suffix in (".parquet", ".pq"):
            raise ValueError(
                f"Box file '{p}' must be a CSV/TSV table or COCO JSON; got {suffix!r}."
            )
        frame = read_table(p, text_columns=_ID_NAMES, what="Box file", folder=False)
        frame.index = pd.RangeIndex(LINE_OFFSET, len(frame) + LINE_OFFSET)  # file lines
        frame = rename_aliases(frame)
        if "class" in frame.columns:
            frame["class"] = _whole_number_classes(frame["class"])
    if no_finding is not None:
        frame = rename_aliases(frame)
        if "class" in frame.columns:
            mask = class_key(frame["class"]) == class_key(pd.Series([no_finding])).iloc[0]
            frame = frame.copy()
            frame.loc[mask, "class"] = np.nan
            for col in (*BOX_COLUMNS, "zmin", "zmax"):
                if col in frame.columns:
                    frame[col] = frame[col].astype(np.float64)
                    frame.loc[mask, col] = np.nan
    if image_sizes is None and sizes is not None:
        image_sizes = sizes
    if isinstance(image_sizes, str) and image_sizes == "images":
        folder = isinstance(images, (str, os.PathLike)) and Path(images).is_dir()
        if not folder:
            raise ValueError('`image_sizes="images"` needs `images`, a folder of images.')
        has_sizes = {"width", "height"} <= set(rename_aliases(frame).columns)
        image_sizes = None if has_sizes else folder_image_sizes(images)  # type: ignore[arg-type]
    return check_boxes(frame, image_sizes=image_sizes, classes=classes, images=images, _where=where)
