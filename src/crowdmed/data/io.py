"""Reading and writing crowd labels: long CSV/Parquet, wide CSV, gold and quiz tables.

Long format (one row per annotation) is for I/O only; the library works on
:class:`~crowdmed.data.CrowdLabels`. Accepted long layouts:

* ``item, annotator, label`` (crowdmed),
* ``task, worker, label`` (crowd-kit),
* headerless ``worker, task, label, gold[, extra]`` (the ActiveCrowdToolkit benchmark files,
  where ``gold = -1`` means unknown).

An optional ``gold`` column (constant per item; empty or ``-1`` for unknown) gives gold
labels, and an optional ``quiz_accuracy`` column (constant per annotator) gives each
annotator's quiz accuracy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from crowdmed._io import atomic_path
from crowdmed._tables import (
    ALIASES,
    LINE_OFFSET,
    find_column,
    parse_labels,
    read_table,
    resolve_columns,
    table_suffix,
)
from crowdmed._text import short_list
from crowdmed.data._csv import write_csv
from crowdmed.data.labels import MISSING, CrowdLabels

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "from_long_frame",
    "read_labels",
    "read_quiz",
    "read_wide",
    "to_long",
    "to_matrix",
    "write_labels",
]

_KNOWN_HEADER = {name for names in ALIASES.values() for name in names} | {
    "gold",
    "quiz_accuracy",
}


#: ``DataFrame.attrs`` keys a reader sets so messages name the file and its lines.
_SOURCE, _FIRST_LINE = "crowdmed_source", "crowdmed_first_line"
#: Column holding the class code of each row while a long table is encoded.
_CODE, _LINE = "__crowdmed_label_code__", "__crowdmed_line__"


def _with_source(df: pd.DataFrame, path: Path, first_line: int) -> pd.DataFrame:
    df.attrs[_SOURCE] = f"'{path}'"
    df.attrs[_FIRST_LINE] = first_line
    return df


def _resolve_duplicates(
    df: pd.DataFrame, c_item: str, c_ann: str, c_lab: str, on_duplicate: str
) -> tuple[pd.DataFrame, tuple[np.ndarray, pd.Index], tuple[np.ndarray, pd.Index]]:
    """The table without repeated (item, annotator) pairs, with item and annotator codes."""
    import pandas as pd

    items, item_ids = pd.factorize(df[c_item], sort=False)
    anns, ann_ids = pd.factorize(df[c_ann], sort=False)
    # Repeated (item, annotator) pairs, found from the codes: a sort of integers is several
    # times faster than hashing the rows with DataFrame.duplicated.
    pair_keys = np.sort(items.astype(np.int64) * max(len(ann_ids), 1) + anns)
    if (pair_keys[1:] == pair_keys[:-1]).any():
        dup = df.duplicated([c_item, c_ann], keep=False)
        if on_duplicate == "error":
            pairs = df.loc[dup, [c_item, c_ann]].drop_duplicates().head(5)
            raise ValueError(
                f"Each (item, annotator) pair must occur once; got {int(dup.sum())} rows for "
                f"{int(df.loc[dup, [c_item, c_ann]].drop_duplicates().shape[0])} repeated pairs, "
                f"e.g. {list(pairs.itertuples(index=False, name=None))}. Pass "
                "on_duplicate='first'|'last'|'drop' (--on-duplicate in the CLI) to resolve them."
            )
        if on_duplicate == "drop":
            n_lab = df.groupby([c_item, c_ann], sort=False)[c_lab].transform("nunique")
            df = df[n_lab == 1]
            on_duplicate = "first"
        keep: Literal["first", "last"] = "last" if on_duplicate == "last" else "first"
        df = df[~df.duplicated([c_item, c_ann], keep=keep)]
        items, item_ids = pd.factorize(df[c_item], sort=False)
        anns, ann_ids = pd.factorize(df[c_ann], sort=False)
    return df, (items, item_ids), (anns, ann_ids)


def _gold_codes(
    df: pd.DataFrame,
    gold: str | None,
    cls: np.ndarray,
    items: np.ndarray,
    item_ids: pd.Index,
    where: str,
    lines: np.ndarray,
) -> np.ndarray | None:
    """Gold class codes per item (``-1`` = unknown) from the optional gold column."""
    import pandas as pd

    n_items = len(item_ids)
    gold_arr = None
    if gold is not None and gold in df.columns:
        gold_arr = np.full(n_items, MISSING, dtype=np.int64)
        try:
            gcodes, _ = parse_labels(df[gold], cls, where=where, column=gold, lines=lines)
        except ValueError as exc:
            raise ValueError(
                f"{exc} Gold labels must be classes; use -1 or leave the cell empty for unknown."
            ) from None
        known = gcodes >= 0
        if known.any():
            per_item = pd.DataFrame({"i": items[known], "g": gcodes[known]}).drop_duplicates()
            if per_item["i"].duplicated().any():
                bad_items = item_ids[per_item["i"][per_item["i"].duplicated()].unique()[:5]]
                raise ValueError(
                    f"Items {short_list(list(bad_items))} have more than one gold label; each item "
                    "needs a single gold value."
                )
            gold_arr[per_item["i"].to_numpy()] = per_item["g"].to_numpy()
    return gold_arr


def _quiz_values(
    df: pd.DataFrame, quiz_accuracy: str | None, anns: np.ndarray, ann_ids: pd.Index
) -> np.ndarray | None:
    """Quiz accuracy per annotator (``NaN`` = none) from the optional quiz column."""
    import pandas as pd

    n_ann = len(ann_ids)
    quiz_arr = None
    if quiz_accuracy is not None and quiz_accuracy in df.columns:
        q = pd.to_numeric(df[quiz_accuracy], errors="coerce")
        per_ann = pd.DataFrame({"a": anns, "q": q}).dropna().drop_duplicates()
        if per_ann["a"].duplicated().any():
            bad = ann_ids[per_ann["a"][per_ann["a"].duplicated()].unique()[:5]]
            raise ValueError(
                f"Annotators {short_list(list(bad))} have more than one quiz accuracy; give one "
                "value per annotator."
            )
        quiz_arr = np.full(n_ann, np.nan)
        quiz_arr[per_ann["a"].to_numpy()] = per_ann["q"].to_numpy()
    return quiz_arr


def from_long_frame(
    df: pd.DataFrame,
    *,
    item: str | None = None,
    annotator: str | None = None,
    label: str | None = None,
    gold: str | None = "gold",
    quiz_accuracy: str | None = "quiz_accuracy",
    classes: Sequence[Any] | None = None,
    on_duplicate: str = "error",
) -> CrowdLabels:
    """Encode a long table (one row per annotation) as :class:`CrowdLabels`.

    Args:
        df: Table with item, annotator and label columns (names are detected among common
            aliases such as ``task``/``worker`` when not given).
        item: Name of the item column.
        annotator: Name of the annotator column.
        label: Name of the label column.
        gold: Name of an optional gold-label column; empty or ``-1`` means unknown.
        quiz_accuracy: Name of an optional per-annotator quiz-accuracy column.
        classes: All class values in order; the sorted observed labels when omitted.
        on_duplicate: What to do when an annotator labelled an item more than once:
            ``"error"``, keep the ``"first"`` or ``"last"`` row, or ``"drop"`` the pair when its
            labels conflict (keeping one row when they agree).

    Returns:
        The labels; items and annotators keep their order of first appearance.

    Raises:
        ValueError: Empty table, missing column, missing (NaN) labels, duplicated
            ``(item, annotator)`` pairs, or inconsistent gold / quiz values.

    Examples:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"task": ["a", "a", "b"], "worker": ["w1", "w2", "w1"],
        ...                    "label": ["cat", "dog", "dog"]})
        >>> cl = from_long_frame(df)
        >>> cl.to_dense(), list(cl.classes)
        (array([[ 0,  1],
               [ 1, -1]]), ['cat', 'dog'])
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"`df` must be a pandas DataFrame; got {type(df).__name__}.")
    where = str(df.attrs.get(_SOURCE, "the label table"))
    first_line = int(df.attrs.get(_FIRST_LINE, 1))
    if len(df) == 0:
        raise ValueError(f"{_table(where)} is empty; it needs one row per annotation.")
    roles = resolve_columns(
        list(df.columns),
        {"item": item, "annotator": annotator, "label": label},
        required=("item", "annotator", "label"),
    )
    c_item, c_ann, c_lab = roles["item"], roles["annotator"], roles["label"]
    for name, col in (("gold", gold), ("quiz_accuracy", quiz_accuracy)):
        if col is not None and col in roles.values():
            role = next(r for r, c in roles.items() if c == col)
            raise ValueError(
                f"Column {col!r} is used as both the {role} and the {name} column; each role "
                f"needs its own column (check --{role}-col)."
            )
    lines = np.arange(len(df)) + first_line
    for role, col in (("item", c_item), ("annotator", c_ann)):
        na = df[col].isna()
        if na.any():
            rows = lines[na.to_numpy()][:5].tolist()
            raise ValueError(
                f"Column {col!r} ({role}) of {where} has {int(na.sum())} empty cells (lines "
                f"{rows}); every annotation needs its {role} id: fill them or drop those rows."
            )
    if on_duplicate not in ("error", "first", "last", "drop"):
        raise ValueError(
            "`on_duplicate` must be one of ['error', 'first', 'last', 'drop']; got "
            f"{on_duplicate!r}."
        )
    codes, cls = parse_labels(df[c_lab], classes, where=where, column=c_lab, lines=lines)
    keep = codes >= 0
    if not keep.any():
        raise ValueError(
            f"{_table(where)} has no labels: every {c_lab!r} cell is -1 or empty (missing)."
        )
    df = df.assign(**{_CODE: codes, _LINE: lines}).loc[keep]
    df, (items, item_ids), (anns, ann_ids) = _resolve_duplicates(
        df, c_item, c_ann, _CODE, on_duplicate
    )
    labs = df[_CODE].to_numpy(dtype=np.int64)
    lines = df[_LINE].to_numpy()
    n_items, n_ann = len(item_ids), len(ann_ids)
    gold_arr = _gold_codes(df, gold, cls, items, item_ids, where, lines)
    quiz_arr = _quiz_values(df, quiz_accuracy, anns, ann_ids)
    return CrowdLabels.from_triplets(
        items,
        anns,
        labs,
        n_items=n_items,
        n_annotators=n_ann,
        n_classes=len(cls),
        item_ids=np.asarray(item_ids, dtype=object)
        if item_ids.dtype == object
        else np.asarray(item_ids),
        annotator_ids=np.asarray(ann_ids, dtype=object)
        if ann_ids.dtype == object
        else np.asarray(ann_ids),
        classes=cls,
        gold=gold_arr,
        quiz_accuracy=quiz_arr,
    )


def _table(where: str) -> str:
    """``"The label table"`` or ``"The label table 'x.csv'"`` for messages."""
    return "The label table" + ("" if where == "the label table" else f" {where}")


def to_matrix(
    df: pd.DataFrame,
    *,
    item: str | None = None,
    annotator: str | None = None,
    label: str | None = None,
    classes: Sequence[Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Convert a long table to the dense view.

    Args:
        df: Long table, one row per annotation (see :func:`from_long_frame`).
        item: Name of the item column.
        annotator: Name of the annotator column.
        label: Name of the label column.
        classes: All class values in order.

    Returns:
        ``(labels, item_ids, annotator_ids, classes)``: ``labels`` is an integer array of shape
        ``(n_items, n_annotators)`` with ``-1`` marking a missing annotation.
    """
    cl = from_long_frame(df, item=item, annotator=annotator, label=label, classes=classes)
    return cl.to_dense(), cl.item_ids, cl.annotator_ids, cl.classes


def to_long(
    labels: npt.ArrayLike,
    item_ids: npt.ArrayLike | None = None,
    annotator_ids: npt.ArrayLike | None = None,
    classes: npt.ArrayLike | None = None,
) -> pd.DataFrame:
    """Convert the dense view back to a long table ``item, annotator, label``.

    Args:
        labels: Integer array of shape ``(n_items, n_annotators)``; ``-1`` marks a missing
            annotation.
        item_ids: Ids of the items, shape ``(n_items,)``.
        annotator_ids: Ids of the annotators, shape ``(n_annotators,)``.
        classes: Class values, shape ``(n_classes,)``.

    Returns:
        One row per annotation, with ids and class values decoded.

    Examples:
        >>> to_long([[0, -1], [1, 1]], item_ids=["a", "b"])
          item  annotator  label
        0    a          0      0
        1    b          0      1
        2    b          1      1
    """
    cl = CrowdLabels.from_dense(
        labels,
        item_ids=item_ids,
        annotator_ids=annotator_ids,
        classes=classes,
        n_classes=None if classes is None else len(np.asarray(classes)),
    )
    return cl.to_long()


def read_labels(
    path: str | os.PathLike[str],
    *,
    item: str | None = None,
    annotator: str | None = None,
    label: str | None = None,
    classes: Sequence[Any] | None = None,
    quiz: str | os.PathLike[str] | None = None,
    on_duplicate: str = "error",
) -> CrowdLabels:
    """Read a long label file (CSV, TSV or Parquet).

    Headerless CSVs with four or five columns are read as ActiveCrowdToolkit files
    ``worker, task, label, gold[, extra]`` (``gold = -1``: unknown).

    Args:
        path: The file.
        item: Name of the item column (detected when omitted).
        annotator: Name of the annotator column (detected when omitted).
        label: Name of the label column (detected when omitted).
        classes: All class values in order; the sorted observed labels when omitted.
        quiz: Optional CSV ``annotator, quiz_accuracy`` with each annotator's quiz accuracy.
        on_duplicate: Repeated ``(item, annotator)`` pairs: ``"error"``, ``"first"``,
            ``"last"`` or ``"drop"`` (see :func:`from_long_frame`).

    Returns:
        The labels, with gold labels and quiz accuracy when present.
    """
    p = Path(path)
    df = read_table(p, all_text=True)
    given = {str(c).lower() for c in (item, annotator, label) if c is not None}
    first_line = LINE_OFFSET
    if (
        not p.is_dir()
        and table_suffix(p) not in (".parquet", ".pq")
        and not ({str(c).strip().lower() for c in df.columns} & (_KNOWN_HEADER | given))
    ):
        raw = read_table(p, header=False, all_text=True)
        if raw.shape[1] in (4, 5):
            cols = ["annotator", "item", "label", "gold", "extra"][: raw.shape[1]]
            df = raw.set_axis(cols, axis=1)
            first_line = 1
        else:
            raise ValueError(
                f"Label file '{p}' has no recognised header; first row is {list(df.columns)}. "
                "Add a header row 'item,annotator,label' (or 'task,worker,label')."
            )
    df = _with_source(df, p, first_line)
    cl = from_long_frame(
        df, item=item, annotator=annotator, label=label, classes=classes, on_duplicate=on_duplicate
    )
    if quiz is not None:
        cl = cl.with_quiz_accuracy(read_quiz(quiz, cl.annotator_ids))
    return cl


def read_quiz(path: str | os.PathLike[str], annotator_ids: npt.ArrayLike) -> np.ndarray:
    """Read per-annotator quiz accuracy from a CSV ``annotator, quiz_accuracy``.

    Args:
        path: The file.
        annotator_ids: Annotator ids of the labels, shape ``(n_annotators,)``.

    Returns:
        Float array of shape ``(n_annotators,)``; ``NaN`` for annotators not in the file.
    """
    import pandas as pd

    p = Path(path)
    df = read_table(p, all_text=True)
    c_ann = find_column(df, "annotator", None)
    acc_cols = [c for c in df.columns if str(c).lower() in ("quiz_accuracy", "accuracy", "gamma")]
    if not acc_cols:
        raise ValueError(
            f"Quiz file '{p}' needs a 'quiz_accuracy' column; columns are {list(df.columns)}."
        )
    values = pd.to_numeric(df[acc_cols[0]], errors="coerce")
    bad = values.isna() | ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())
        raise ValueError(
            f"Quiz file '{p}' has {rows.size} accuracies that are not numbers in [0, 1] (line "
            f"{int(rows[0]) + LINE_OFFSET}: {df[acc_cols[0]].iloc[int(rows[0])]!r}); use numbers "
            "in [0, 1]."
        )
    if df[c_ann].isna().any():
        line = int(np.flatnonzero(df[c_ann].isna().to_numpy())[0]) + LINE_OFFSET
        raise ValueError(f"Quiz file '{p}' has an empty annotator id on line {line}; fill it.")
    if df[c_ann].duplicated().any():
        dup = df[c_ann][df[c_ann].duplicated()].unique()[:5].tolist()
        raise ValueError(f"Quiz file '{p}' lists annotators {dup} twice; keep one row.")
    ids = pd.Index(np.asarray(annotator_ids, dtype=object)).map(str)
    key = df[c_ann].astype(str)
    out = pd.Series(values.to_numpy(), index=key).reindex(ids).to_numpy(dtype=np.float64)
    return out


def read_wide(
    path: str | os.PathLike[str],
    *,
    item: str | None = None,
    gold: str | None = "gold",
    classes: Sequence[Any] | None = None,
) -> CrowdLabels:
    """Read a wide CSV: one row per item, one column per annotator, empty cells missing.

    Args:
        path: The file.
        item: Name of the item-id column; the first column when omitted.
        gold: Name of an optional gold-label column.
        classes: All class values in order; the sorted observed labels when omitted.

    Returns:
        The labels.
    """
    import pandas as pd

    p = Path(path)
    df = read_table(p, all_text=True, what="Wide file")
    if df.shape[1] < 2:
        raise ValueError(
            f"Wide file '{p}' needs an item column and at least one annotator column; got "
            f"columns {list(df.columns)}."
        )
    c_item = item if item is not None else str(df.columns[0])
    if c_item not in df.columns:
        raise ValueError(
            f"Column {c_item!r} (the item column) is not in '{p}'; columns are {list(df.columns)}."
        )
    if gold is not None and gold == c_item:
        raise ValueError(
            f"Column {c_item!r} is used as both the item and the gold column; each role needs "
            "its own column (check --item-col and --gold-col)."
        )
    if df[c_item].isna().any():
        line = int(np.flatnonzero(df[c_item].isna().to_numpy())[0]) + LINE_OFFSET
        raise ValueError(f"Wide file '{p}' has an empty item id on line {line}; fill it.")
    if df[c_item].duplicated().any():
        dup = df[c_item][df[c_item].duplicated()].unique()[:5].tolist()
        raise ValueError(f"Wide file '{p}' lists items {dup} on more than one row; keep one.")
    value_cols = [c for c in df.columns if c not in (c_item, gold)]
    frame = df.reset_index(drop=True)
    frame["__line__"] = np.arange(len(frame)) + LINE_OFFSET
    long = frame.melt(
        id_vars=[c_item, "__line__"],
        value_vars=value_cols,
        var_name="annotator",
        value_name="label",
    ).rename(columns={c_item: "item"})
    if gold is not None and gold in df.columns:
        long = long.merge(
            frame[[c_item, gold]].rename(columns={c_item: "item", gold: "gold"}), on="item"
        )
    where = f"'{p}'"
    lines = long.pop("__line__").to_numpy()
    codes, cls = parse_labels(long["label"], classes, where=where, column="label", lines=lines)
    if not (codes >= 0).any():
        raise ValueError(f"Wide file '{p}' has no labels; every annotator cell is -1 or empty.")
    long = long.loc[codes >= 0].reset_index(drop=True)
    long.attrs[_SOURCE] = where
    cl = from_long_frame(long, item="item", annotator="annotator", label="label", classes=list(cls))
    lost = df[c_item][~df[c_item].isin(pd.Index(cl.item_ids))]
    if len(lost):
        raise ValueError(
            f"Items {short_list(lost.tolist())} have no labels in '{p}' (every cell is -1 or "
            "empty); drop those rows."
        )
    return cl


def write_labels(labels: CrowdLabels, path: str | os.PathLike[str]) -> Path:
    """Write labels as a long table (CSV, TSV or Parquet), atomically.

    Args:
        labels: The labels.
        path: Destination; the format follows the suffix.

    Returns:
        The path written.
    """
    import pandas as pd

    p = Path(path)
    df = labels.to_long()
    if labels.gold is not None:
        g = labels.gold[labels.items]
        df["gold"] = pd.Series(labels.classes[np.maximum(g, 0)]).where(g >= 0)
    if labels.quiz_accuracy is not None:
        df["quiz_accuracy"] = labels.quiz_accuracy[labels.annotators]
    write_table(df, p)
    return p


def write_table(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a table atomically; Parquet for ``.parquet``, TSV for ``.tsv``, else CSV."""
    p = Path(path)
    suffix = table_suffix(p)
    with atomic_path(p) as tmp:
        if suffix in (".parquet", ".pq"):
            try:
                df.to_parquet(tmp, index=False)
            except ImportError as exc:
                raise ImportError(
                    "Writing Parquet needs pyarrow: pip install 'crowdmed[parquet]'."
                ) from exc
            except (ValueError, TypeError) as exc:  # pyarrow's conversion errors
                detail = " ".join(str(exc).split())[:200]
                raise ValueError(f"Cannot write '{p}' as Parquet: {detail}.") from exc
        else:
            # Same text as df.to_csv(index=False), built with pyarrow when it is installed.
            sep = "\t" if suffix in (".tsv", ".tab") else ","
            write_csv(df, tmp, sep=sep, compress=p.suffix.lower() == ".gz")
