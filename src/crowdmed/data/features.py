"""Network inputs of classification items: feature matrices named by item ids, image folders.

A classifier learns from a NumPy feature matrix whose rows are named by an id file, or from a
folder with one image per item. Both are matched to the items of a label file by item id (as
text, so ``7`` and ``"7"`` agree), so the order of rows or files does not matter.

Every reader takes ``name``, the argument or command-line option that named the file, and
uses it in its one-line error messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdmed._tables import find_column, parse_labels, read_table, table_suffix
from crowdmed._text import short_list

__all__ = [
    "FeatureInputs",
    "ImageInputs",
    "id_key",
    "input_source",
    "read_feature_matrix",
    "read_item_ids",
    "read_true_labels",
]


def id_key(value: Any) -> str:
    """The text form under which an item id is matched across files."""
    return str(value.item() if isinstance(value, np.generic) else value)


def _missing(path: Path, name: str) -> ValueError:
    if path.is_dir():
        return ValueError(f"File '{path}' is a folder, not a file; pass the file (`{name}`).")
    return ValueError(f"File '{path}' does not exist; check the path (`{name}`).")


def read_feature_matrix(path: Path, name: str = "features") -> np.ndarray:
    """Read a feature matrix saved with :func:`numpy.save`.

    Args:
        path: A ``.npy`` file holding one numeric array of shape ``(n_rows, n_features)``.
        name: The argument or option that named ``path`` (for messages).

    Returns:
        float32 array of shape ``(n_rows, n_features)``.

    Raises:
        ValueError: For a missing file, an ``.npz`` archive, another shape, NaN or infinite
            values.
        TypeError: For a non-numeric array.
    """
    if not path.is_file():
        raise _missing(path, name)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        detail = " ".join(str(exc).split())
        raise ValueError(
            f"`{name}` must be a NumPy .npy file; cannot read '{path}': {detail}"
        ) from exc
    if hasattr(arr, "files"):  # an .npz archive
        arr.close()
        raise ValueError(
            f"`{name}` must be a .npy file holding one array; '{path}' is an .npz archive. "
            "Save the features with numpy.save."
        )
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"`{name}` must hold numbers; got dtype {arr.dtype} in '{path}'.")
    if arr.ndim != 2:
        raise ValueError(
            f"`{name}` must have shape (n_items, n_features); got shape {arr.shape} in '{path}'."
        )
    x = arr.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise ValueError(
            f"`{name}` has NaN or infinite values in {len(bad)} rows "
            f"({bad[:5].tolist()}, counting from 0); clean or drop them."
        )
    return x


def read_item_ids(path: Path, name: str = "feature_ids") -> list[str]:
    """Read item ids, one per feature row.

    Args:
        path: A CSV/TSV/Parquet file with an item column (or a single column), or a text file
            with one id per line and no header.
        name: The argument or option that named ``path`` (for messages).

    Returns:
        The ids as text, in file order.

    Raises:
        ValueError: For a missing or empty file, empty or repeated ids.
    """
    if not path.is_file():
        raise _missing(path, name)
    if table_suffix(path) in (".csv", ".tsv", ".tab", ".parquet", ".pq"):
        df = read_table(path, all_text=True)
        column = df[find_column(df, "item", None)] if df.shape[1] > 1 else df.iloc[:, 0]
    else:  # plain text, one id per line; ids are text, as in the label file
        try:
            df = pd.read_csv(
                path, header=None, sep="\t", dtype=str, keep_default_na=False, na_values=[""],
                skip_blank_lines=True, encoding="utf-8-sig",
            )  # fmt: skip
        except pd.errors.EmptyDataError as exc:
            raise ValueError(f"`{name}` file '{path}' is empty; list one id per line.") from exc
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"`{name}` file '{path}' is not UTF-8 text; save it as UTF-8."
            ) from exc
        if df.shape[1] != 1:
            raise ValueError(
                f"`{name}` file '{path}' must list one item id per line; a line has "
                f"{df.shape[1]} tab-separated fields."
            )
        column = df.iloc[:, 0]
    if column.isna().any():
        rows = (np.flatnonzero(column.isna().to_numpy())[:5] + 1).tolist()
        raise ValueError(f"`{name}` file '{path}' has empty ids (rows {rows}); fill them.")
    ids = [id_key(v) for v in column]
    dup = pd.Series(ids)[pd.Series(ids).duplicated()].unique()
    if len(dup):
        raise ValueError(
            f"`{name}` file '{path}' repeats ids {short_list(list(dup))}; each row needs a "
            "unique id."
        )
    return ids


@dataclasses.dataclass
class FeatureInputs:
    """Network inputs from a feature matrix whose rows are named by item ids.

    Attributes:
        option: Name of the feature argument or option (for messages).
        matrix: float32 array of shape ``(n_rows, n_features)``.
        ids: Item id of each row, as text.
        kind: ``"features"``.
    """

    option: str
    matrix: np.ndarray
    ids: list[str]
    kind: str = "features"

    def take(self, item_ids: Sequence[Any] | np.ndarray, what: str, **_: Any) -> np.ndarray:
        """Return the rows of ``item_ids`` in that order; every item must have a row."""
        rows = {k: i for i, k in enumerate(self.ids)}
        keys = [id_key(i) for i in item_ids]
        missing = [k for k in keys if k not in rows]
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(keys)} {what} have no row in `{self.option}`: "
                f"{short_list(missing)}. Add their features (ids in the file are e.g. "
                f"{short_list(self.ids, 3)})."
            )
        return self.matrix[[rows[k] for k in keys]]


@dataclasses.dataclass
class ImageInputs:
    """Network inputs from a folder with one image file per item.

    Attributes:
        option: Name of the folder argument or option (for messages).
        folder: The folder.
        kind: ``"images"``.
    """

    option: str
    folder: Path
    kind: str = "images"

    def take(
        self,
        item_ids: Sequence[Any] | np.ndarray,
        what: str,
        *,
        size: tuple[int, int] | None = None,
        channels: int = 1,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Return the images of ``item_ids`` in that order; every item must have a file."""
        from crowdmed.data.images import load_images

        try:
            return load_images(
                self.folder, item_ids, size=size, channels=channels, progress=progress
            )
        except ValueError as exc:
            raise ValueError(f"{what.capitalize()}: {exc}") from exc


def _feature_inputs(features: Path, feature_ids: Path | None, prefix: str) -> FeatureInputs:
    if feature_ids is None:
        raise ValueError(
            f"`{prefix}features` needs `{prefix}feature-ids`: the item id of each row, as a "
            "text file with one id per line or a CSV with an 'item' column."
        )
    x = read_feature_matrix(features, f"{prefix}features")
    ids = read_item_ids(feature_ids, f"{prefix}feature-ids")
    if len(ids) != len(x):
        raise ValueError(
            f"`{prefix}feature-ids` lists {len(ids)} ids but `{prefix}features` has {len(x)} "
            "rows; they must match row for row."
        )
    return FeatureInputs(f"{prefix}features", x, ids)


def input_source(
    features: Path | None = None,
    feature_ids: Path | None = None,
    images: Path | None = None,
    prefix: str = "--",
) -> FeatureInputs | ImageInputs | None:
    """The inputs named by a feature matrix and its ids, or by an image folder (or none).

    Args:
        features: ``.npy`` feature matrix (:func:`read_feature_matrix`).
        feature_ids: Item id of each feature row (:func:`read_item_ids`).
        images: Folder with one image per item.
        prefix: Prefix of the option names in messages (``"--"`` or ``"--val-"``).

    Returns:
        :class:`FeatureInputs`, :class:`ImageInputs` or ``None`` when nothing is given.

    Raises:
        ValueError: When both kinds are given, ids without features, or a missing folder.
    """
    if features is not None and images is not None:
        raise ValueError(
            f"Pass either `{prefix}features` or `{prefix}images`, not both; a network takes "
            "one kind of input."
        )
    if feature_ids is not None and features is None:
        raise ValueError(f"`{prefix}feature-ids` applies to `{prefix}features` only.")
    if features is not None:
        return _feature_inputs(features, feature_ids, prefix)
    if images is not None:
        if not images.is_dir():
            what = "is a file" if images.exists() else "does not exist"
            raise ValueError(f"`{prefix}images` must be a folder of images; '{images}' {what}.")
        return ImageInputs(f"{prefix}images", images)
    return None


def read_true_labels(
    path: Path, classes: np.ndarray, name: str = "--val-labels"
) -> tuple[list[Any], np.ndarray]:
    """Read items and their true classes (e.g. a validation set).

    Args:
        path: CSV/TSV/Parquet with an item column and a ``label`` (or ``gold``, ``truth``,
            ``true_label``, ``class``) column.
        classes: The class values of the network, in output order.
        name: The argument or option that named ``path`` (for messages).

    Returns:
        ``(item ids, class indices)``: the ids as read and an int64 array of indices into
        ``classes``.

    Raises:
        ValueError: For an empty file, a missing column, empty values, repeated items or
            classes not in ``classes``.
    """
    df = read_table(path, all_text=True)
    if df.empty:
        raise ValueError(f"`{name}` file '{path}' has no rows; add one row per item.")
    c_item = find_column(df, "item", None)
    lower = {str(c).lower(): c for c in df.columns}
    names = ("label", "gold", "truth", "true_label", "class")
    c_label = next((lower[n] for n in names if n in lower), None)
    if c_label is None:
        raise ValueError(
            f"`{name}` file '{path}' needs a 'label' column with the true class of each "
            f"item; columns are {list(df.columns)}."
        )
    for col in (c_item, c_label):
        na = df[col].isna()
        if na.any():
            rows = (np.flatnonzero(na.to_numpy())[:5] + 1).tolist()
            raise ValueError(
                f"`{name}` column {col!r} has {int(na.sum())} empty values (rows {rows}); "
                "drop those rows."
            )
    dup = df[c_item][df[c_item].duplicated()].unique()
    if len(dup):
        raise ValueError(
            f"`{name}` lists items {short_list(list(dup))} more than once; give one true "
            "class per item."
        )
    values = [id_key(v) for v in df[c_label]]
    code_of: dict[str, int] = {}
    for v in dict.fromkeys(values):  # the label file's rule: "1" and "1.0" are class 1
        try:
            code_of[v] = int(parse_labels(pd.Series([v], dtype=object), list(classes))[0][0])
        except ValueError:
            code_of[v] = -1
    codes = np.array([code_of[v] for v in values], dtype=np.int64)
    unknown = sorted({v for v, c in zip(values, codes, strict=True) if c < 0})
    if unknown:
        raise ValueError(
            f"`{name}` has classes {short_list(unknown)} that are not among the "
            f"{len(classes)} classes of LABELS {short_list(list(classes), 10)}; the network has "
            "one output per class seen in LABELS."
        )
    return df[c_item].tolist(), codes
