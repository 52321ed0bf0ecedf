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

import dataclasses
import json
import os
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from crowdmed.data.labels import _short

__all__ = [
    "BOX_COLUMNS",
    "BOX_COLUMNS_3D",
    "box_columns",
    "box_iou",
    "check_boxes",
    "read_boxes",
]

#: Coordinate columns of a 2-D box table.
BOX_COLUMNS: tuple[str, ...] = ("xmin", "ymin", "xmax", "ymax")
#: Coordinate columns of a 3-D box table (the table's column order; arrays use conventions).
BOX_COLUMNS_3D: tuple[str, ...] = ("xmin", "ymin", "xmax", "ymax", "zmin", "zmax")

_ID_COLUMNS = ("image", "reader", "class")
_ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("image", "image_id", "item", "file", "file_name", "case"),
    "reader": ("reader", "rad_id", "reader_id", "annotator", "rater", "radiologist"),
    "class": ("class", "class_id", "label", "category", "category_id", "finding"),
    "xmin": ("xmin", "x_min", "x1"),
    "ymin": ("ymin", "y_min", "y1"),
    "zmin": ("zmin", "z_min", "z1"),
    "xmax": ("xmax", "x_max", "x2"),
    "ymax": ("ymax", "y_max", "y2"),
    "zmax": ("zmax", "z_max", "z2"),
}
_SIZE_ALIASES: dict[str, tuple[str, ...]] = {
    "width": ("width", "image_width"),
    "height": ("height", "image_height"),
    "depth": ("depth", "image_depth"),
}


def box_columns(ndim: int) -> tuple[str, ...]:
    """Coordinate columns of a box table with ``ndim`` spatial dimensions (2 or 3)."""
    if ndim == 2:
        return BOX_COLUMNS
    if ndim == 3:
        return BOX_COLUMNS_3D
    raise ValueError(f"`ndim` must be 2 or 3; got {ndim!r}.")


def _array_columns(ndim: int) -> tuple[str, ...]:
    """Table columns in the order of a box array (``xmin, ymin[, zmin], xmax, ymax[, zmax]``)."""
    return ("xmin", "ymin", "xmax", "ymax") if ndim == 2 else (
        "xmin", "ymin", "zmin", "xmax", "ymax", "zmax"
    )  # fmt: skip


def frame_ndim(frame: pd.DataFrame) -> int:
    """2 or 3: whether a checked box table has ``zmin``/``zmax`` columns."""
    return 3 if "zmin" in frame.columns else 2


def frame_to_array(frame: pd.DataFrame) -> np.ndarray:
    """Coordinates of a checked box table as a ``(n, 4 | 6)`` float array (conventions order)."""
    cols = list(_array_columns(frame_ndim(frame)))
    return np.ascontiguousarray(frame[cols].to_numpy(dtype=np.float64))


# ---------------------------------------------------------------------- IoU
def _as_box_array(boxes: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.size in (0,):
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] not in (4, 6):
        raise ValueError(
            f"`{name}` must have shape (n_boxes, 4) or (n_boxes, 6) in corner mode "
            f"xmin, ymin[, zmin], xmax, ymax[, zmax]; got shape {arr.shape}."
        )
    return arr


def _paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes broadcast against each other along the last axis (corner mode)."""
    d = a.shape[-1] // 2
    lo = np.maximum(a[..., :d], b[..., :d])
    hi = np.minimum(a[..., d:], b[..., d:])
    inter = np.prod(np.maximum(hi - lo, 0.0), axis=-1)
    area_a = np.prod(a[..., d:] - a[..., :d], axis=-1)
    area_b = np.prod(b[..., d:] - b[..., :d], axis=-1)
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.asarray(out, dtype=np.float64)


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
    aa = _as_box_array(a, "a")
    bb = _as_box_array(b, "b")
    if aa.shape[1] != bb.shape[1]:
        raise ValueError(
            f"`a` and `b` must both be 2-D (4 columns) or 3-D (6 columns) boxes; got "
            f"{aa.shape[1]} and {bb.shape[1]} columns."
        )
    return _paired_iou(aa[:, None, :], bb[None, :, :])


# ---------------------------------------------------------------------- validation helpers
def _row_label(index: Hashable) -> str:
    return f"row {index}"


def _describe(frame: pd.DataFrame, pos: int, where: Callable[[Hashable], str]) -> str:
    row = frame.iloc[pos]
    parts = [where(frame.index[pos])]
    for col in ("image", "reader"):
        if col in frame.columns and not pd.isna(row[col]):
            parts.append(f"{col} {_py(row[col])!r}")
    return parts[0] + (" (" + ", ".join(parts[1:]) + ")" if len(parts) > 1 else "")


def _py(value: Any) -> Any:
    """A NumPy scalar as the plain Python value (so messages show ``14``, not ``np.int64(14)``)."""
    return value.item() if isinstance(value, np.generic) else value


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _rename_aliases(frame: pd.DataFrame) -> pd.DataFrame:
    lower = {str(c).strip().lower(): c for c in frame.columns}
    mapping: dict[Any, str] = {}
    for canonical, aliases in {**_ALIASES, **_SIZE_ALIASES}.items():
        if canonical in frame.columns:
            continue
        for alias in aliases:
            if alias in lower and lower[alias] not in mapping:
                mapping[lower[alias]] = canonical
                break
    return frame.rename(columns=mapping) if mapping else frame


def _image_set(images: Any) -> set[str] | None:
    if images is None:
        return None
    if isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
        names: set[str] = set()
        for p in Path(images).iterdir():
            if p.name.startswith("."):
                continue
            name = p.name
            for suffix in reversed(p.suffixes):
                name = name[: -len(suffix)] if name.endswith(suffix) else name
            names.update({p.name, name, p.stem})
        return names
    if isinstance(images, (str, os.PathLike)):
        raise ValueError(
            f"`images` must be a folder of images or a list of image ids; '{images}' is not a "
            "folder."
        )
    return {str(v) for v in images}


def _size_table(image_sizes: Any, ndim: int) -> pd.DataFrame | None:
    """Image sizes as a frame indexed by the image id (as text), columns width/height[/depth]."""
    if image_sizes is None:
        return None
    if isinstance(image_sizes, pd.DataFrame):
        sizes = _rename_aliases(image_sizes)
        need = ["image", "width", "height"] + (["depth"] if ndim == 3 else [])
        missing = [c for c in need if c not in sizes.columns]
        if missing:
            raise ValueError(
                f"`image_sizes` is missing columns {missing}; it needs {need} (pixels)."
            )
        table = sizes[need].copy()
    elif isinstance(image_sizes, Mapping):
        rows = []
        for key, value in image_sizes.items():
            vals = list(np.ravel(np.asarray(value, dtype=float)))
            if len(vals) != ndim:
                raise ValueError(
                    f"`image_sizes[{key!r}]` must be (width, height"
                    + (", depth" if ndim == 3 else "")
                    + f") in pixels; got {value!r}."
                )
            rows.append([key, *vals])
        table = pd.DataFrame(
            rows, columns=["image", "width", "height"] + (["depth"] if ndim == 3 else [])
        )
    else:
        raise TypeError(
            "`image_sizes` must be a mapping image -> (width, height[, depth]) or a DataFrame "
            f"with columns image, width, height[, depth]; got {type(image_sizes).__name__}."
        )
    table["image"] = table["image"].astype(str)
    return table.drop_duplicates("image", keep="last").set_index("image")


def _text_key(v: Any) -> str:
    """An id as text (``1`` and ``1.0`` both become ``"1"``)."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _class_key(values: pd.Series) -> pd.Series:
    """Classes as text for comparison with a class list (``1`` and ``1.0`` both become ``"1"``)."""
    return values.map(_text_key)


def _maybe_int(values: pd.Series) -> pd.Series:
    if values.dtype.kind == "f":
        v = values.dropna()
        if len(v) and np.all(v == np.round(v)):
            if values.isna().any():
                return values.astype("Int64")
            return values.astype(np.int64)
    return values


def _same_text_ids(*ids: Iterable[Any]) -> tuple[Any, Any] | None:
    """Two ids of different types that read the same as text (``0`` and ``"0"``), or ``None``.

    Such ids print alike but compare unequal, so a table holding both would silently treat them
    as two classes (images, readers). Integral floats count as their integer (``1.0`` is ``1``).
    """
    seen: dict[str, Any] = {}
    for values in ids:
        for v in values:
            if v is None or (isinstance(v, float) and np.isnan(v)):
                continue
            other = seen.setdefault(_text_key(v), v)
            if isinstance(other, str) != isinstance(v, str):
                return other, v
    return None


# ---------------------------------------------------------------------- check_boxes
def _factorize(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``0..n-1`` in sorted order of the values (as text when types are mixed); -1 = NaN."""
    codes, found = pd.factorize(values)
    uniques: np.ndarray = np.asarray(found, dtype=object if found.dtype.kind == "O" else None)
    keys: np.ndarray
    if len(uniques) > 1:
        if uniques.dtype.kind == "O":
            if pd.api.types.infer_dtype(uniques, skipna=False) == "string":
                keys = uniques.astype(np.str_)  # fixed-width text sorts in C
            else:
                try:
                    keys = np.argsort(
                        np.asarray(sorted(range(len(uniques)), key=uniques.__getitem__))
                    )
                except TypeError:  # mixed types sort as text
                    keys = np.asarray([str(u) for u in uniques])
        else:
            keys = uniques
        order = np.argsort(keys, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        codes = np.where(codes >= 0, rank[np.maximum(codes, 0)], -1)
        uniques = uniques[order]
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def _check_one_type(column: str, ids: np.ndarray) -> None:
    if ids.dtype.kind != "O" or len(ids) < 2:
        return
    clash = _same_text_ids(ids)
    if clash is not None:
        a, b = clash
        raise ValueError(
            f"Column '{column}' holds {_py(a)!r} and {_py(b)!r}, which differ only in type and "
            f"would count as two different {column} ids; use one type, e.g. "
            f"frame['{column}'] = frame['{column}'].astype(str)."
        )


@dataclasses.dataclass
class _Checked:
    """A validated box table as integer codes and a coordinate array (no copies of the ids)."""

    frame: pd.DataFrame  # the input with canonical column names
    ndim: int
    coords: np.ndarray  # (n_rows, 2 * ndim) float64, in the table's column order
    is_box: np.ndarray  # (n_rows,) bool; False for readings without boxes
    image_code: np.ndarray
    image_ids: np.ndarray
    reader_code: np.ndarray
    reader_ids: np.ndarray
    class_code: np.ndarray  # -1 for readings without boxes
    class_ids: np.ndarray


def _validate(
    frame: pd.DataFrame,
    *,
    image_sizes: Mapping[Any, Any] | pd.DataFrame | None,
    classes: Iterable[Any] | None,
    images: Iterable[Any] | str | os.PathLike[str] | None,
    where: Callable[[Hashable], str],
) -> _Checked:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"`frame` must be a pandas DataFrame of boxes; got {type(frame).__name__}. Read a "
            "file with crowdmed.data.read_boxes."
        )
    df = _rename_aliases(frame)
    ndim = 3 if ("zmin" in df.columns or "zmax" in df.columns) else 2
    cols = box_columns(ndim)
    need = [*_ID_COLUMNS, *cols]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(
            f"The box table is missing columns {missing}; it needs {list(need)} (or the "
            "spellings image_id, rad_id, class_id, x_min ...); found "
            f"{_short(list(df.columns), 12)}."
        )
    codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for col in ("image", "reader"):
        codes[col] = _factorize(df[col])
        bad = np.flatnonzero(codes[col][0] < 0)
        if bad.size:
            more = f" and {bad.size - 1} more rows" if bad.size > 1 else ""
            article = "an" if col == "image" else "a"
            raise ValueError(
                f"The {col} is empty in {_describe(df, int(bad[0]), where)}{more}; every row "
                f"needs {article} {col} id."
            )
    class_code, class_ids = _factorize(df["class"])
    for col, ids in (("image", codes["image"][1]), ("reader", codes["reader"][1])):
        _check_one_type(col, ids)
    _check_one_type("class", class_ids)
    n = len(df)
    coords = np.empty((n, len(cols)), dtype=np.float64)
    for j, col in enumerate(cols):
        values = df[col]
        if values.dtype == object or values.dtype.kind in "OSUb":
            numeric = pd.to_numeric(values, errors="coerce")
            bad = np.flatnonzero((numeric.isna() & values.notna()).to_numpy())
            if bad.size:
                raise TypeError(
                    f"Column {col!r} must be numeric; {_describe(df, int(bad[0]), where)} has "
                    f"{_py(values.iloc[int(bad[0])])!r}. Fix the value or remove the row."
                )
            values = numeric
        elif values.dtype.kind not in "iuf":
            raise TypeError(f"Column {col!r} must be numeric; got dtype {values.dtype}.")
        coords[:, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
    coord_nan = np.isnan(coords)
    class_nan = class_code < 0
    all_empty = coord_nan.all(axis=1) & class_nan
    partial = (coord_nan.any(axis=1) | class_nan) & ~all_empty
    if partial.any():
        pos = int(np.flatnonzero(partial)[0])
        empty = [c for c, isnan in zip(cols, coord_nan[pos], strict=True) if isnan]
        if class_nan[pos]:
            empty = ["class", *empty]
        raise ValueError(
            f"{_cap(_describe(df, pos, where))} has empty (NaN) {empty}; fill them, or "
            "leave class and all coordinates empty to record that the reader marked nothing."
        )
    boxes = ~all_empty
    if np.isinf(coords[boxes]).any():
        pos = int(np.flatnonzero(boxes & np.isinf(coords).any(axis=1))[0])
        raise ValueError(
            f"{_cap(_describe(df, pos, where))} has an infinite coordinate; "
            "coordinates must be finite pixels."
        )
    d = ndim
    lo = coords[:, [0, 1] + ([4] if d == 3 else [])]
    hi = coords[:, [2, 3] + ([5] if d == 3 else [])]
    axes = ["x", "y", "z"][:d]
    inverted = boxes[:, None] & (hi <= lo)
    if inverted.any():
        pos, ax = (int(v[0]) for v in np.nonzero(inverted))
        a = axes[ax]
        kind = "has zero size" if hi[pos, ax] == lo[pos, ax] else "is inverted"
        raise ValueError(
            f"{_cap(_describe(df, pos, where))} {kind} along {a}: "
            f"{a}max={hi[pos, ax]:g} <= {a}min={lo[pos, ax]:g}. Boxes are corner mode "
            "xmin, ymin, xmax, ymax with xmax > xmin (swap the columns if they are inverted, "
            "or drop the box)."
        )
    image_code, image_ids = codes["image"]
    if image_sizes is None and {"width", "height"} <= set(df.columns):
        size_cols = ["image", "width", "height"] + (["depth"] if ndim == 3 else [])
        if all(c in df.columns for c in size_cols):
            image_sizes = df[size_cols].dropna()
    sizes = _size_table(image_sizes, ndim)
    if sizes is not None:
        per_image = sizes.reindex([str(v) for v in image_ids]).to_numpy(dtype=np.float64)
        known = ~np.isnan(per_image).any(axis=1)
        unknown = boxes & ~known[image_code]
        if unknown.any():
            pos = int(np.flatnonzero(unknown)[0])
            raise ValueError(
                f"No image size is given for image {_py(df['image'].iloc[pos])!r} "
                f"({where(df.index[pos])}); add it to `image_sizes` (width, height in pixels)."
            )
        full = np.where(boxes[:, None], per_image[image_code], np.inf)
        outside = boxes[:, None] & ((lo < 0) | (hi > full))
        if outside.any():
            pos, ax = (int(v[0]) for v in np.nonzero(outside))
            a = axes[ax]
            size_name = ["width", "height", "depth"][ax]
            raise ValueError(
                f"{_cap(_describe(df, pos, where))} lies outside the image: "
                f"{a}min={lo[pos, ax]:g}, {a}max={hi[pos, ax]:g} but the image {size_name} is "
                f"{full[pos, ax]:g}. Coordinates are absolute pixels in [0, {size_name}]; "
                "clip the box or fix the image size."
            )
    if classes is not None:
        valid = set(_class_key(pd.Series(list(classes), dtype=object)))
        ok = _class_key(pd.Series(class_ids, dtype=object)).isin(valid).to_numpy()
        unknown = boxes & ~ok[np.maximum(class_code, 0)] if len(ok) else boxes & False
        if unknown.any():
            pos = int(np.flatnonzero(unknown)[0])
            others = sorted(set(_class_key(pd.Series(class_ids[~ok], dtype=object))))
            raise ValueError(
                f"Unknown class {_py(df['class'].iloc[pos])!r} in {_describe(df, pos, where)}"
                f"{f' (all unknown: {_short(others)})' if len(others) > 1 else ''}; valid "
                f"classes are {_short(sorted(valid), 20)}. Fix the class or extend `classes`."
            )
    existing = _image_set(images)
    if existing is not None:
        ok = np.array([str(v) in existing for v in image_ids], dtype=bool)
        unknown = ~ok[image_code]
        if unknown.any():
            pos = int(np.flatnonzero(unknown)[0])
            n_img = int((~ok).sum())
            raise ValueError(
                f"Reader {_py(df['reader'].iloc[pos])!r} is listed for image "
                f"{_py(df['image'].iloc[pos])!r} ({where(df.index[pos])}), which does not exist"
                f"{f' (nor do {n_img - 1} other images)' if n_img > 1 else ''}; fix the image id "
                "or add the image."
            )
    return _Checked(
        frame=df,
        ndim=ndim,
        coords=coords,
        is_box=boxes,
        image_code=image_code,
        image_ids=image_ids,
        reader_code=codes["reader"][0],
        reader_ids=codes["reader"][1],
        class_code=class_code,
        class_ids=class_ids,
    )


def check_boxes(
    frame: pd.DataFrame,
    *,
    image_sizes: Mapping[Any, Any] | pd.DataFrame | None = None,
    classes: Iterable[Any] | None = None,
    images: Iterable[Any] | str | os.PathLike[str] | None = None,
    _where: Callable[[Hashable], str] = _row_label,
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
    checked = _validate(
        frame, image_sizes=image_sizes, classes=classes, images=images, where=_where
    )
    df = checked.frame
    out = pd.DataFrame(
        {"image": df["image"], "reader": df["reader"], "class": df["class"]}, index=df.index
    )
    for j, col in enumerate(box_columns(checked.ndim)):
        out[col] = checked.coords[:, j]
    out["class"] = _maybe_int(out["class"])
    if out["image"].dtype.kind == "f":
        out["image"] = _maybe_int(out["image"])
    return out


# ---------------------------------------------------------------------- read_boxes
def _line_label(path: Path) -> Callable[[Hashable], str]:
    def where(index: Hashable) -> str:
        return f"line {index} of {path.name}"

    return where


def _read_coco(path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"File '{path}' is not valid JSON: {exc}.") from exc
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
    category_name = {c["id"]: c.get("name", c["id"]) for c in data.get("categories", []) or []}
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
        row: dict[str, Any] = {
            "image": image_name.get(image_id, image_id),
            "reader": reader,
            "class": category_name.get(cat, cat),
        }
        b = [float(v) for v in bbox]
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
        rows.append({"image": image_name.get(image_id, image_id), "reader": reading.get("reader")})
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
    image_sizes: Mapping[Any, Any] | pd.DataFrame | None = None,
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
        no_finding: A class that means "nothing found" (VinDr-CXR's ``14``); its rows become
            readings without boxes.

    Returns:
        The checked box table (see :func:`check_boxes`), one row per box or reading.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Unreadable file or invalid boxes (the message names the line and the fix).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Box file '{p}' does not exist; check the path.")
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
        sep = "\t" if suffix in (".tsv", ".tab") else ","
        try:
            frame = pd.read_csv(p, sep=sep, low_memory=False)
        except pd.errors.EmptyDataError as exc:
            raise ValueError(
                f"Box file '{p}' is empty; it needs a header and one row per box."
            ) from exc
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ValueError(f"Box file '{p}' is not a valid table: {exc}".splitlines()[0]) from exc
        frame.index = pd.RangeIndex(2, len(frame) + 2)  # file line numbers (header is line 1)
    if no_finding is not None:
        frame = _rename_aliases(frame)
        if "class" in frame.columns:
            mask = _class_key(frame["class"]) == _class_key(pd.Series([no_finding])).iloc[0]
            frame = frame.copy()
            frame.loc[mask, "class"] = np.nan
            for col in (*BOX_COLUMNS, "zmin", "zmax"):
                if col in frame.columns:
                    frame[col] = frame[col].astype(np.float64)
                    frame.loc[mask, col] = np.nan
    if image_sizes is None and sizes is not None:
        image_sizes = sizes
    return check_boxes(frame, image_sizes=image_sizes, classes=classes, images=images, _where=where)
