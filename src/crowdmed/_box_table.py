"""Box-table internals shared by the box readers, box fusion, box agreement and box metrics."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from crowdmed._text import short_list

#: Coordinate columns of a 2-D box table.
BOX_COLUMNS: tuple[str, ...] = ("xmin", "ymin", "xmax", "ymax")
#: Coordinate columns of a 3-D box table (the table's column order; arrays use conventions).
BOX_COLUMNS_3D: tuple[str, ...] = ("xmin", "ymin", "xmax", "ymax", "zmin", "zmax")

ID_COLUMNS = ("image", "reader", "class")
ALIASES: dict[str, tuple[str, ...]] = {
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


#: ``DataFrame.attrs`` key of an image-size table that may lack some images (sizes read from
#: the image files that could be read): boxes on the other images are not checked.
PARTIAL = "crowdmed_partial_sizes"

SIZE_ALIASES: dict[str, tuple[str, ...]] = {
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


def array_columns(ndim: int) -> tuple[str, ...]:
    """Table columns in the order of a box array (``xmin, ymin[, zmin], xmax, ymax[, zmax]``)."""
    return ("xmin", "ymin", "xmax", "ymax") if ndim == 2 else (
        "xmin", "ymin", "zmin", "xmax", "ymax", "zmax"
    )  # fmt: skip


# ---------------------------------------------------------------------- IoU
def as_box_array(boxes: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.size in (0,):
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] not in (4, 6):
        raise ValueError(
            f"`{name}` must have shape (n_boxes, 4) or (n_boxes, 6) in corner mode "
            f"xmin, ymin[, zmin], xmax, ymax[, zmax]; got shape {arr.shape}."
        )
    return arr


def paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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


# ---------------------------------------------------------------------- validation helpers
def row_label(index: Hashable) -> str:
    return f"row {index}"


def describe_row(frame: pd.DataFrame, pos: int, where: Callable[[Hashable], str]) -> str:
    row = frame.iloc[pos]
    parts = [where(frame.index[pos])]
    for col in ("image", "reader"):
        if col in frame.columns and not pd.isna(row[col]):
            parts.append(f"{col} {to_python(row[col])!r}")
    return parts[0] + (" (" + ", ".join(parts[1:]) + ")" if len(parts) > 1 else "")


def to_python(value: Any) -> Any:
    """A NumPy scalar as the plain Python value (so messages show ``14``, not ``np.int64(14)``)."""
    return value.item() if isinstance(value, np.generic) else value


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def rename_aliases(frame: pd.DataFrame) -> pd.DataFrame:
    lower = {str(c).strip().lower(): c for c in frame.columns}
    mapping: dict[Any, str] = {}
    for canonical, aliases in {**ALIASES, **SIZE_ALIASES}.items():
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
        sizes = rename_aliases(image_sizes)
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


def class_key(values: pd.Series) -> pd.Series:
    """Classes as text for comparison with a class list (``1`` and ``1.0`` both become ``"1"``)."""
    return values.map(_text_key)


def same_text_ids(*ids: Iterable[Any]) -> tuple[Any, Any] | None:
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
def factorize(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
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
    clash = same_text_ids(ids)
    if clash is not None:
        a, b = clash
        raise ValueError(
            f"Column '{column}' holds {to_python(a)!r} and {to_python(b)!r}, which differ only in "
            f"type and would count as two different {column} ids; use one type, e.g. "
            f"frame['{column}'] = frame['{column}'].astype(str)."
        )


@dataclasses.dataclass
class CheckedBoxes:
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
    score: np.ndarray | None = None  # (n_rows,) the ``score`` column, checked in [0, 1]


def _columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, int, tuple[str, ...]]:
    """The table with canonical column names, its dimension and its coordinate columns."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"`frame` must be a pandas DataFrame of boxes; got {type(frame).__name__}. Read a "
            "file with crowdmed.data.read_boxes."
        )
    df = rename_aliases(frame)
    ndim = 3 if ("zmin" in df.columns or "zmax" in df.columns) else 2
    cols = box_columns(ndim)
    need = [*ID_COLUMNS, *cols]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(
            f"The box table is missing columns {missing}; it needs {list(need)} (or the "
            "spellings image_id, rad_id, class_id, x_min ...); found "
            f"{short_list(list(df.columns), 12)}."
        )
    return df, ndim, cols


def _id_codes(
    df: pd.DataFrame, where: Callable[[Hashable], str]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    """Integer codes and ids of the image, reader and class columns (checked)."""
    codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for col in ("image", "reader"):
        codes[col] = factorize(df[col])
        bad = np.flatnonzero(codes[col][0] < 0)
        if bad.size:
            more = f" and {bad.size - 1} more rows" if bad.size > 1 else ""
            article = "an" if col == "image" else "a"
            raise ValueError(
                f"The {col} is empty in {describe_row(df, int(bad[0]), where)}{more}; every row "
                f"needs {article} {col} id."
            )
    class_code, class_ids = factorize(df["class"])
    for col, ids in (("image", codes["image"][1]), ("reader", codes["reader"][1])):
        _check_one_type(col, ids)
    _check_one_type("class", class_ids)
    return codes, class_code, class_ids


def _coordinates(
    df: pd.DataFrame, cols: tuple[str, ...], where: Callable[[Hashable], str]
) -> np.ndarray:
    """The coordinate columns as a float array ``(n_rows, 2 * ndim)``; NaN where empty."""
    n = len(df)
    coords = np.empty((n, len(cols)), dtype=np.float64)
    for j, col in enumerate(cols):
        values = df[col]
        if values.dtype == object or values.dtype.kind in "OSUb":
            numeric = pd.to_numeric(values, errors="coerce")
            bad = np.flatnonzero((numeric.isna() & values.notna()).to_numpy())
            if bad.size:
                raise TypeError(
                    f"Column {col!r} must be numeric; {describe_row(df, int(bad[0]), where)} has "
                    f"{to_python(values.iloc[int(bad[0])])!r}. Fix the value or remove the row."
                )
            values = numeric
        elif values.dtype.kind not in "iuf":
            raise TypeError(f"Column {col!r} must be numeric; got dtype {values.dtype}.")
        coords[:, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return coords


def _box_rows(
    df: pd.DataFrame,
    cols: tuple[str, ...],
    coords: np.ndarray,
    class_code: np.ndarray,
    where: Callable[[Hashable], str],
) -> np.ndarray:
    """Which rows are boxes (not empty readings); partly empty or infinite rows raise."""
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
            f"{_cap(describe_row(df, pos, where))} has empty (NaN) {empty}; fill them, or "
            "leave class and all coordinates empty to record that the reader marked nothing."
        )
    boxes = ~all_empty
    if np.isinf(coords[boxes]).any():
        pos = int(np.flatnonzero(boxes & np.isinf(coords).any(axis=1))[0])
        raise ValueError(
            f"{_cap(describe_row(df, pos, where))} has an infinite coordinate; "
            "coordinates must be finite pixels."
        )
    return boxes


def _corners(
    df: pd.DataFrame,
    coords: np.ndarray,
    boxes: np.ndarray,
    ndim: int,
    where: Callable[[Hashable], str],
    strict: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Lower and upper corners ``(n_rows, ndim)`` and axis names; inverted boxes raise."""
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
            f"{_cap(describe_row(df, pos, where))} {kind} along {a}: "
            f"{a}max={hi[pos, ax]:g} <= {a}min={lo[pos, ax]:g}. Boxes are corner mode "
            "xmin, ymin, xmax, ymax with xmax > xmin (swap the columns if they are inverted, "
            "or drop the box)."
        )
    negative = boxes[:, None] & (lo < 0)
    if strict and negative.any():
        pos, ax = (int(v[0]) for v in np.nonzero(negative))
        a = axes[ax]
        raise ValueError(
            f"{_cap(describe_row(df, pos, where))} has a negative coordinate: "
            f"{a}min={lo[pos, ax]:g}. Coordinates are absolute pixels from 0 (the image's "
            "top-left corner); clip the box at 0 or fix the coordinates."
        )
    return lo, hi, axes


def _check_inside_images(
    df: pd.DataFrame,
    image_sizes: Mapping[Any, Any] | pd.DataFrame | None,
    ndim: int,
    image: tuple[np.ndarray, np.ndarray],
    boxes: np.ndarray,
    corners: tuple[np.ndarray, np.ndarray, list[str]],
    where: Callable[[Hashable], str],
) -> None:
    image_code, image_ids = image
    lo, hi, axes = corners
    if image_sizes is None and {"width", "height"} <= set(df.columns):
        size_cols = ["image", "width", "height"] + (["depth"] if ndim == 3 else [])
        if all(c in df.columns for c in size_cols):
            image_sizes = df[size_cols].dropna()
    partial = isinstance(image_sizes, pd.DataFrame) and bool(image_sizes.attrs.get(PARTIAL))
    if partial and ndim == 3:
        return  # sizes read from 2-D image files say nothing about 3-D boxes
    sizes = _size_table(image_sizes, ndim)
    if sizes is not None:
        per_image = sizes.reindex([str(v) for v in image_ids]).to_numpy(dtype=np.float64)
        known = ~np.isnan(per_image).any(axis=1)
        unknown = boxes & ~known[image_code]
        if partial:
            boxes = boxes & known[image_code]
        elif unknown.any():
            pos = int(np.flatnonzero(unknown)[0])
            raise ValueError(
                f"No image size is given for image {to_python(df['image'].iloc[pos])!r} "
                f"({where(df.index[pos])}); add it to `image_sizes` (width, height in pixels)."
            )
        full = np.where(boxes[:, None], per_image[image_code], np.inf)
        outside = boxes[:, None] & ((lo < 0) | (hi > full))
        if outside.any():
            pos, ax = (int(v[0]) for v in np.nonzero(outside))
            a = axes[ax]
            size_name = ["width", "height", "depth"][ax]
            raise ValueError(
                f"{_cap(describe_row(df, pos, where))} lies outside the image: "
                f"{a}min={lo[pos, ax]:g}, {a}max={hi[pos, ax]:g} but the image {size_name} is "
                f"{full[pos, ax]:g}. Coordinates are absolute pixels in [0, {size_name}]; "
                "clip the box or fix the image size."
            )


def _check_classes(
    df: pd.DataFrame,
    classes: Iterable[Any] | None,
    class_code: np.ndarray,
    class_ids: np.ndarray,
    boxes: np.ndarray,
    where: Callable[[Hashable], str],
) -> None:
    if classes is not None:
        valid = set(class_key(pd.Series(list(classes), dtype=object)))
        ok = class_key(pd.Series(class_ids, dtype=object)).isin(valid).to_numpy()
        unknown = boxes & ~ok[np.maximum(class_code, 0)] if len(ok) else boxes & False
        if unknown.any():
            pos = int(np.flatnonzero(unknown)[0])
            others = sorted(set(class_key(pd.Series(class_ids[~ok], dtype=object))))
            raise ValueError(
                f"Unknown class {to_python(df['class'].iloc[pos])!r} in "
                f"{describe_row(df, pos, where)}"
                f"{f' (all unknown: {short_list(others)})' if len(others) > 1 else ''}; valid "
                f"classes are {short_list(sorted(valid), 20)}. Fix the class or extend `classes`."
            )


def _check_images_exist(
    df: pd.DataFrame,
    images: Iterable[Any] | str | os.PathLike[str] | None,
    image: tuple[np.ndarray, np.ndarray],
    where: Callable[[Hashable], str],
) -> None:
    image_code, image_ids = image
    existing = _image_set(images)
    if existing is not None:
        ok = np.array([str(v) in existing for v in image_ids], dtype=bool)
        unknown = ~ok[image_code]
        if unknown.any():
            pos = int(np.flatnonzero(unknown)[0])
            n_img = int((~ok).sum())
            raise ValueError(
                f"Reader {to_python(df['reader'].iloc[pos])!r} is listed for image "
                f"{to_python(df['image'].iloc[pos])!r} ({where(df.index[pos])}), which does not "
                "exist"
                f"{f' (nor do {n_img - 1} other images)' if n_img > 1 else ''}; fix the image id "
                "or add the image."
            )


def _check_scores(
    df: pd.DataFrame, boxes: np.ndarray, where: Callable[[Hashable], str]
) -> np.ndarray | None:
    """The ``score`` column as floats (``None`` without one); scores must lie in [0, 1]."""
    if "score" not in df.columns:
        return None
    values = df["score"]
    numeric = pd.to_numeric(values, errors="coerce") if values.dtype.kind not in "iuf" else values
    score = np.asarray(numeric, dtype=np.float64)
    bad = boxes & ~(np.isfinite(score) & (score >= 0) & (score <= 1))
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        n_bad = int(bad.sum())
        raise ValueError(
            f"{_cap(describe_row(df, pos, where))} has score {to_python(values.iloc[pos])!r}"
            f"{f' (and {n_bad - 1} more boxes have bad scores)' if n_bad > 1 else ''}; a score "
            "is a confidence in [0, 1]: fix it, or drop the score column to weigh every box "
            "equally."
        )
    return score


def validate_boxes(
    frame: pd.DataFrame,
    *,
    image_sizes: Mapping[Any, Any] | pd.DataFrame | None,
    classes: Iterable[Any] | None,
    images: Iterable[Any] | str | os.PathLike[str] | None,
    where: Callable[[Hashable], str],
    strict: bool = False,
) -> CheckedBoxes:
    """Check a box table (see ``check_boxes``).

    ``strict`` (the readers) also refuses negative coordinates and scores outside [0, 1], as
    every command reading boxes from a file does.
    """
    df, ndim, cols = _columns(frame)
    codes, class_code, class_ids = _id_codes(df, where)
    coords = _coordinates(df, cols, where)
    boxes = _box_rows(df, cols, coords, class_code, where)
    corners = _corners(df, coords, boxes, ndim, where, strict)
    image_code, image_ids = codes["image"]
    _check_inside_images(df, image_sizes, ndim, codes["image"], boxes, corners, where)
    _check_classes(df, classes, class_code, class_ids, boxes, where)
    _check_images_exist(df, images, codes["image"], where)
    score = _check_scores(df, boxes, where) if strict else None
    return CheckedBoxes(
        score=score,
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
