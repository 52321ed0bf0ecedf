"""Box tables prepared for fusion and agreement: integer ids, reading pairs, reader weights."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from crowdmed._box_table import (
    CheckedBoxes,
    array_columns,
    box_columns,
    describe_row,
    factorize,
    row_label,
    to_python,
    validate_boxes,
)
from crowdmed._text import short_list


@dataclasses.dataclass
class PreparedBoxes:
    """A box table turned into integer-coded arrays (boxes only; readings kept apart)."""

    ndim: int
    coords: np.ndarray  # (n, 2d) conventions order
    image: np.ndarray  # (n,) image code
    klass: np.ndarray  # (n,) class code
    reader: np.ndarray  # (n,) reader code
    image_ids: np.ndarray
    class_ids: np.ndarray
    reader_ids: np.ndarray
    read_image: np.ndarray  # (n_readings,) image code of each distinct (image, reader) reading
    read_reader: np.ndarray  # (n_readings,) reader code
    n_read: np.ndarray  # (n_images,) readers per image
    score: np.ndarray  # (n,) score of each box (1 without a ``score`` column)
    has_score: bool  # whether the table has a ``score`` column


def _reading_pairs(readers: Any) -> pd.DataFrame:
    if isinstance(readers, pd.DataFrame):
        missing = [c for c in ("image", "reader") if c not in readers.columns]
        if missing:
            raise ValueError(
                f"`readers` is missing columns {missing}; it needs one row per (image, reader) "
                "reading."
            )
        pairs = readers[["image", "reader"]]
    elif isinstance(readers, Mapping):
        rows = [
            (img, r) for img, rs in readers.items() for r in ([rs] if isinstance(rs, str) else rs)
        ]
        pairs = pd.DataFrame(rows, columns=["image", "reader"])
    else:
        raise TypeError(
            "`readers` must be a mapping image -> list of readers or a DataFrame with columns "
            f"image, reader; got {type(readers).__name__}."
        )
    if pairs.isna().any().any():
        raise ValueError("`readers` has an empty image or reader; every reading needs both ids.")
    return pairs


def _integer_ids(uniques: np.ndarray) -> np.ndarray:
    """Float class ids holding integers (from empty CSV cells) back to integers."""
    values = list(uniques)
    if values and all(
        isinstance(v, (float, np.floating)) and float(v).is_integer() for v in values
    ):
        return np.asarray([int(v) for v in values], dtype=object)
    return np.asarray(uniques, dtype=object)


def _box_scores(checked: CheckedBoxes, skip_box_thr: float) -> tuple[np.ndarray, bool]:
    """Per-row scores (1 without a ``score`` column) and whether the column exists."""
    df = checked.frame
    n = len(df)
    if "score" not in df.columns:
        return np.ones(n), False
    values = df["score"]
    numeric = pd.to_numeric(values, errors="coerce") if values.dtype.kind not in "iuf" else values
    score = np.asarray(numeric, dtype=np.float64)
    is_box = checked.is_box
    bad = is_box & ~np.isfinite(score)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"The score of the box in {describe_row(df, pos, row_label)} is "
            f"{to_python(values.iloc[pos])!r}; every box needs a finite number as score (leave it "
            "empty only on rows that record a reading without boxes)."
        )
    low = is_box & (score < skip_box_thr)
    bad = is_box & ~low & (score <= 0)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"The score of the box in {describe_row(df, pos, row_label)} is "
            f"{float(score[pos])!r}; scores must be positive (set `skip_box_thr` above 0 to "
            "ignore boxes with score 0)."
        )
    return np.where(is_box, score, 1.0), True


def prepare_boxes(
    frame: pd.DataFrame, readers: Any = None, skip_box_thr: float = 0.0
) -> PreparedBoxes:
    checked = validate_boxes(frame, image_sizes=None, classes=None, images=None, where=row_label)
    ndim = checked.ndim
    row_score, has_score = _box_scores(checked, skip_box_thr)
    # a box scored below the threshold is dropped, but its row still records the reading
    is_box = checked.is_box & (row_score >= skip_box_thr)
    image_code, image_ids = checked.image_code, checked.image_ids
    reader_code, reader_ids = checked.reader_code, checked.reader_ids
    if readers is not None:
        df = checked.frame
        given = _reading_pairs(readers)
        have = pd.MultiIndex.from_arrays([df["image"].astype(str), df["reader"].astype(str)])
        listed = pd.MultiIndex.from_frame(given.astype(str))
        unlisted = ~have.isin(listed)
        if unlisted.any():
            pos = int(np.flatnonzero(unlisted)[0])
            raise ValueError(
                f"Reader {to_python(df['reader'].iloc[pos])!r} has boxes on image "
                f"{to_python(df['image'].iloc[pos])!r} but `readers` does not list them for that "
                "image; add the reading to `readers`."
            )
        image_code, image_ids = factorize(
            pd.Series(np.concatenate([df["image"].to_numpy(), given["image"].to_numpy()]))
        )
        reader_code, reader_ids = factorize(
            pd.Series(np.concatenate([df["reader"].to_numpy(), given["reader"].to_numpy()]))
        )
    n_rows = len(is_box)
    n_img, n_rd = len(image_ids), len(reader_ids)
    read = np.zeros((n_img, n_rd), dtype=bool)
    read[image_code, reader_code] = True
    read_image, read_reader = np.nonzero(read)
    n_read = read.sum(axis=1)
    # class ids of the boxes only (readings have code -1)
    used_classes = np.unique(checked.class_code[is_box])
    remap = np.full(len(checked.class_ids) + 1, -1, dtype=np.int64)
    remap[used_classes] = np.arange(len(used_classes))
    class_code = remap[checked.class_code[is_box]]
    class_ids = _integer_ids(checked.class_ids[used_classes])
    cols = [box_columns(ndim).index(c) for c in array_columns(ndim)]
    coords = checked.coords[is_box][:, cols]
    image = image_code[:n_rows][is_box]
    reader = reader_code[:n_rows][is_box]
    score = row_score[is_box]
    # canonical box order, so every sum below is independent of the input's row order
    n_cls = max(len(class_ids), 1)
    key = (image * n_cls + class_code) * max(n_rd, 1) + reader
    canon = np.argsort(key, kind="stable")
    sorted_key = key[canon]
    tie = np.zeros(len(key), dtype=bool)
    tie[1:] = sorted_key[1:] == sorted_key[:-1]
    tie[:-1] |= tie[1:]  # every row of a run of equal keys (a reader's boxes of one class)
    if tie.any():  # order those runs by coordinates too
        rows = canon[tie]
        canon[tie] = rows[np.lexsort((*coords[rows].T[::-1], key[rows]))]
    return PreparedBoxes(
        ndim=ndim,
        coords=np.ascontiguousarray(coords[canon]),
        image=image[canon],
        klass=class_code[canon],
        reader=reader[canon],
        image_ids=image_ids,
        class_ids=class_ids,
        reader_ids=reader_ids,
        read_image=read_image.astype(np.int64),
        read_reader=read_reader.astype(np.int64),
        n_read=n_read,
        score=score[canon],
        has_score=has_score,
    )


def reader_weights(prep: PreparedBoxes, proficiency: Any) -> np.ndarray:
    if isinstance(proficiency, pd.DataFrame):
        if not {"reader", "proficiency"} <= set(proficiency.columns):
            raise ValueError(
                "`proficiency` as a table needs columns reader, proficiency; got "
                f"{short_list(list(proficiency.columns))}."
            )
        proficiency = dict(zip(proficiency["reader"], proficiency["proficiency"], strict=True))
    if isinstance(proficiency, pd.Series):
        proficiency = proficiency.to_dict()
    if not isinstance(proficiency, Mapping):
        raise TypeError(
            "`proficiency` must be a mapping reader -> weight, a Series indexed by reader or a "
            f"table with columns reader, proficiency; got {type(proficiency).__name__}."
        )
    text = {str(k): v for k, v in proficiency.items()}
    weights = np.empty(len(prep.reader_ids))
    missing = []
    for i, r in enumerate(prep.reader_ids):
        value = proficiency.get(r, text.get(str(r)))
        if value is None:
            missing.append(r)
            continue
        try:
            weights[i] = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"The proficiency of reader {to_python(r)!r} must be a positive number; "
                f"got {value!r}."
            ) from None
    if missing:
        raise ValueError(
            f"`proficiency` has no weight for readers {short_list(missing)}; give every reader a "
            "positive weight (or omit `proficiency` to estimate it)."
        )
    bad = ~np.isfinite(weights) | (weights <= 0)
    if bad.any():
        r = prep.reader_ids[np.flatnonzero(bad)[0]]
        raise ValueError(
            f"The proficiency of reader {to_python(r)!r} must be a positive finite number; got "
            f"{float(weights[bad][0])!r}. Use a small positive weight for an unreliable reader."
        )
    return weights
