"""Truth inference on a label file: what ``crowdmed aggregate`` runs.

:func:`aggregate_file` reads a long or wide label file, fits an aggregator and returns an
:class:`AggregateResult` with the consensus table (item, label, confidence, p_<class>...,
gold), the annotator table and the fit figures. Labels are nominal classes, ordinal grades
(in the order of ``classes``) or continuous values (``label_type``).

Examples:
    >>> result = aggregate_file(Path("labels.csv"), method="dawid-skene")  # doctest: +SKIP
    >>> result.consensus.head()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import time
import warnings
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crowdmed._lazy import preload
from crowdmed._tables import (
    ALIASES,
    LINE_OFFSET,
    parse_labels,
    read_table,
    resolve_columns,
    table_suffix,
)
from crowdmed._validation import check_option
from crowdmed.aggregation import (
    CONTINUOUS_METHODS,
    ORDINAL_METHODS,
    ContinuousMethod,
    Method,
    OrdinalMethod,
    make_aggregator,
)
from crowdmed.aggregation.base import BaseAggregator
from crowdmed.aggregation.continuous import ContinuousLabels, check_continuous
from crowdmed.data.io import read_labels, read_quiz, read_wide, write_table
from crowdmed.data.labels import CrowdLabels

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "AUTO",
    "AggregateResult",
    "InputFormat",
    "LabelType",
    "OnDuplicate",
    "aggregate_file",
    "annotator_frame",
    "consensus_frame",
    "method_names",
    "read_continuous_file",
    "read_label_file",
    "resolve_method",
    "write_consensus",
]

#: The method name that chooses a classification aggregator by cross-validation.
AUTO = "auto"


class LabelType(str, Enum):
    """What the labels are: classes without order, ordered grades, or numbers."""

    NOMINAL = "nominal"
    ORDINAL = "ordinal"
    CONTINUOUS = "continuous"


#: The method used when none is given, per label type.
DEFAULT_METHODS = {
    LabelType.NOMINAL: Method.DAWID_SKENE.value,
    LabelType.ORDINAL: OrdinalMethod.GRADED_RESPONSE.value,
    LabelType.CONTINUOUS: ContinuousMethod.RAYKAR.value,
}


def method_names(label_type: str | LabelType) -> list[str]:
    """Every ``--method`` value of a label type, in the order of the registries."""
    t = check_option(label_type, LabelType, "--label-type")
    if t is LabelType.ORDINAL:
        return [m.value for m in ORDINAL_METHODS]
    if t is LabelType.CONTINUOUS:
        return [m.value for m in CONTINUOUS_METHODS]
    return [m.value for m in Method] + [AUTO]


def resolve_method(method: str | None, label_type: str | LabelType) -> tuple[LabelType, str]:
    """The label type and the method name, checked against each other.

    Args:
        method: A method name, or ``None`` for the default of the label type.
        label_type: ``nominal``, ``ordinal`` or ``continuous``.

    Raises:
        ValueError: If the method does not belong to the label type (the message names the
            label type it belongs to).
    """
    t = check_option(label_type, LabelType, "--label-type")
    if method is None:
        return t, DEFAULT_METHODS[t]
    names = method_names(t)
    if method in names:
        return t, method
    owners = [other.value for other in LabelType if method in method_names(other)]
    if owners:
        hint = (
            f", a method for {' and '.join(owners)} labels. Pass --label-type {owners[0]} (this "
            f"is --label-type {t.value})."
        )
    else:
        close = difflib.get_close_matches(str(method), names, n=1)
        hint = f". Did you mean {close[0]!r}?" if close else f" (--label-type {t.value})."
    raise ValueError(f"`--method` must be one of {names}; got {method!r}{hint}")


class InputFormat(str, Enum):
    """Layout of the label file."""

    AUTO = "auto"
    LONG = "long"
    WIDE = "wide"


class OnDuplicate(str, Enum):
    """What to do with repeated (item, annotator) pairs (see ``read_labels``)."""

    ERROR = "error"
    FIRST = "first"
    LAST = "last"
    DROP = "drop"


#: Fitted per-annotator attributes added to the annotator table, and their column names.
#: Model sensitivity/specificity get a prefix because ``annotator_table`` already has
#: ``sensitivity``/``specificity`` columns (from the soft confusion matrices).
_ANNOTATOR_ATTRIBUTES = {
    "sensitivity_": "model_sensitivity",
    "specificity_": "model_specificity",
    "skills_": "skill",
    "weights_": "weight",
    "alphas_": "alpha",
    "offsets_": "offset",
    "noise_": "noise",
    "bias_": "bias",
    "precision_": "precision",
    "scale_": "scale",
}

#: Columns of the per-annotator records in the run record (those present are kept).
_RECORD_COLUMNS = (
    "annotator",
    "n_labels",
    "n_positive",
    "n_negative",
    "sensitivity",
    "sensitivity_low",
    "sensitivity_high",
    "specificity",
    "specificity_low",
    "specificity_high",
    *_ANNOTATOR_ATTRIBUTES.values(),
)


def read_label_file(
    path: Path,
    fmt: str = "auto",
    *,
    item_col: str | None = None,
    annotator_col: str | None = None,
    label_col: str | None = None,
    gold_col: str | None = None,
    quiz: Path | None = None,
    on_duplicate: str = "error",
    classes: list[Any] | None = None,
) -> CrowdLabels:
    """Read a long or wide label file (``fmt`` long, wide or auto; see ``crowdmed aggregate``).

    ``classes`` lists every class value in order (the sorted observed labels when omitted).

    Raises:
        ValueError: For options that do not apply to the layout, or an unreadable file; with
            ``fmt="auto"`` a long file without long columns suggests ``--format wide``.
    """
    layout = check_option(fmt, InputFormat, "--format")
    duplicates = check_option(on_duplicate, OnDuplicate, "--on-duplicate").value
    if layout is InputFormat.WIDE:
        for option, value in (("--annotator-col", annotator_col), ("--label-col", label_col)):
            if value is not None:
                raise ValueError(
                    f"`{option}` applies to long files only; a wide file has one column per "
                    "annotator. Drop it or pass --format long."
                )
        if duplicates != "error":
            raise ValueError(
                "`--on-duplicate` applies to long files only; a wide file has one cell per "
                "(item, annotator) pair."
            )
        cl = read_wide(path, item=item_col, gold=gold_col or "gold", classes=classes)
        if quiz is not None:
            cl = cl.with_quiz_accuracy(read_quiz(quiz, cl.annotator_ids))
        return cl
    if gold_col is not None and gold_col != "gold":
        raise ValueError(
            "`--gold-col` applies to wide files only; in a long file name the gold column "
            f"'gold' (got {gold_col!r})."
        )
    if quiz is None:
        fast = _read_plain_long(
            path, item_col=item_col, annotator_col=annotator_col, label_col=label_col,
            classes=classes,
        )  # fmt: skip
        if fast is not None:
            return fast
    try:
        return read_labels(
            path,
            item=item_col,
            annotator=annotator_col,
            label=label_col,
            quiz=quiz,
            on_duplicate=duplicates,
            classes=classes,
        )
    except ValueError as exc:
        msg = str(exc)
        if layout is InputFormat.AUTO and ("column found" in msg or "no recognised header" in msg):
            raise ValueError(
                f"{msg} If this is a wide file (one row per item, one column per annotator), "
                "pass --format wide."
            ) from exc
        raise


#: Header names that make a CSV a long label file with a header (as ``read_labels``).
_LONG_HEADER = {name for names in ALIASES.values() for name in names} | {"gold", "quiz_accuracy"}


def _read_plain_long(
    path: Path,
    *,
    item_col: str | None,
    annotator_col: str | None,
    label_col: str | None,
    classes: list[Any] | None,
) -> CrowdLabels | None:
    """A plain long CSV/TSV read by pyarrow: the same labels as ``read_labels``, faster.

    Plain: a header naming the item, annotator and label columns, no gold or quiz column,
    every row with its item and annotator id, labels that ``parse_labels`` accepts and no
    repeated (item, annotator) pair. Ids are encoded by pyarrow (each distinct id becomes
    one Python string) and labels are parsed once per distinct cell. ``None`` for anything
    else (or without pyarrow): ``read_labels`` then reads the file, and names any problem
    with its line.
    """
    if not path.is_file() or table_suffix(path) in (".parquet", ".pq"):
        return None
    try:
        if path.stat().st_size == 0:
            return None
        import pyarrow as pa
        import pyarrow.csv as pcsv
    except (ImportError, OSError):
        return None
    parse = pcsv.ParseOptions(delimiter="\t" if table_suffix(path) in (".tsv", ".tab") else ",")
    try:
        with pcsv.open_csv(
            path, read_options=pcsv.ReadOptions(block_size=1 << 16), parse_options=parse
        ) as reader:
            raw = list(reader.schema.names)
        names = [n.strip() for n in raw]
        given = {str(c).lower() for c in (item_col, annotator_col, label_col) if c is not None}
        lower = {n.lower() for n in names}
        if len(set(names)) != len(names) or not lower & (_LONG_HEADER | given):
            return None
        if {"gold", "quiz_accuracy"} & set(names):
            return None
        roles = resolve_columns(
            names,
            {"item": item_col, "annotator": annotator_col, "label": label_col},
            required=("item", "annotator", "label"),
        )
        wanted = [raw[names.index(roles[r])] for r in ("item", "annotator", "label")]
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=1 << 22),
            parse_options=parse,
            convert_options=pcsv.ConvertOptions(
                include_columns=wanted,
                # Encoded while parsed, on the reader's threads (dictionary_encode would
                # afterwards, on one thread, and import pyarrow.compute for it).
                column_types=dict.fromkeys(wanted, pa.dictionary(pa.int32(), pa.string())),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except (pa.ArrowException, OSError, ValueError):
        return None
    if table.num_rows == 0:
        return None
    table = table.unify_dictionaries()  # one dictionary per column, in order of appearance
    encoded = [table.column(c).combine_chunks() for c in wanted]
    if encoded[0].null_count or encoded[1].null_count:
        return None
    # Labels: parsed once per distinct cell (an empty cell is NaN, as the pandas reader has it).
    cells = _arrow_strings(encoded[2].dictionary)
    label_idx = _arrow_ints(encoded[2].indices)
    if encoded[2].indices.null_count:
        cells = np.append(cells, np.nan)
        label_idx[label_idx < 0] = len(cells) - 1
    try:
        cell_codes, cls = parse_labels(cells, classes, column=roles["label"])
    except ValueError:
        return None
    codes = cell_codes[label_idx]
    keep = codes >= 0
    if not keep.any():
        return None
    ids = []
    for enc in encoded[:2]:
        # Codes in order of first appearance among the labelled rows, as read_labels has them.
        idx, first = _first_appearance(_arrow_ints(enc.indices), keep)
        distinct = _arrow_strings(enc.dictionary)
        ids.append((idx, distinct[first]))
    (items, item_ids), (anns, ann_ids) = ids
    try:  # refuses a repeated (item, annotator) pair
        return CrowdLabels.from_triplets(
            items,
            anns,
            codes[keep].astype(np.int64),
            n_items=len(item_ids),
            n_annotators=len(ann_ids),
            n_classes=len(cls),
            item_ids=item_ids,
            annotator_ids=ann_ids,
            classes=cls,
        )
    except ValueError:
        return None


# pyarrow's own conversions to and from NumPy (to_numpy, pa.array, fill_null with a Python
# value) import pandas when it is installed; these go through the buffers instead.
def _arrow_ints(arr: Any) -> np.ndarray:
    """An integer pyarrow array (dictionary indices) as NumPy; ``-1`` where null.

    Without nulls a read-only view of the array's buffer, else an ``int64`` copy.
    """
    width = arr.type.bit_width // 8
    dtype = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}[width]
    buffers = arr.buffers()
    values = np.frombuffer(buffers[1], dtype=dtype, count=len(arr), offset=arr.offset * width)
    if arr.null_count:
        values = values.astype(np.int64)
        bits = np.unpackbits(np.frombuffer(buffers[0], dtype=np.uint8), bitorder="little")
        values[~bits[arr.offset : arr.offset + len(arr)].astype(bool)] = -1
    return values


def _arrow_strings(arr: Any) -> np.ndarray:
    """A pyarrow string array as an object array of ``str``."""
    out = np.empty(len(arr), dtype=object)
    out[:] = arr.to_pylist()
    return out


def _arrow_column(values: Any) -> Any:
    """A consensus column as a pyarrow array, as ``pa.Table.from_pandas`` makes it.

    Numbers without NaN and text go through the buffers (no pandas import); anything else
    through ``pa.array(..., from_pandas=True)``.
    """
    import pyarrow as pa

    v = np.asarray(values)
    if v.ndim == 1 and v.dtype.kind in "iuf" and not (v.dtype.kind == "f" and np.isnan(v).any()):
        v = np.ascontiguousarray(v)
        kind = pa.from_numpy_dtype(v.dtype)
        return pa.Array.from_buffers(kind, len(v), [None, pa.py_buffer(v)])
    if v.ndim == 1 and v.dtype.kind == "O" and all(type(x) is str for x in v.tolist()):
        encoded = [x.encode() for x in v.tolist()]
        offsets = np.zeros(len(v) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), np.int64, len(v)), out=offsets[1:])
        large = offsets[-1] >= 2**31
        kind = pa.large_string() if large else pa.string()
        offsets = offsets if large else offsets.astype(np.int32)
        data = pa.py_buffer(b"".join(encoded))
        return pa.Array.from_buffers(kind, len(v), [None, pa.py_buffer(offsets), data])
    return pa.array(v, from_pandas=True)


def _first_appearance(codes: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``codes[keep]`` renumbered in order of first appearance, and the old code of each.

    pyarrow's dictionary codes are already in that order over all rows: kept as they are
    when every row is kept (and checked to be), else renumbered with ``np.unique``.
    """
    if keep.all():
        running = np.maximum.accumulate(codes)
        if codes[0] == 0 and not (np.diff(running) > 1).any():
            return codes, np.arange(int(running[-1]) + 1)
    uniq, first, inverse = np.unique(codes[keep], return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)], uniq[order]


def read_continuous_file(
    path: Path,
    fmt: str = "auto",
    *,
    item_col: str | None = None,
    annotator_col: str | None = None,
    label_col: str | None = None,
    gold_col: str | None = None,
    quiz: Path | None = None,
    on_duplicate: str = "error",
    classes: list[Any] | None = None,
) -> tuple[ContinuousLabels, np.ndarray | None]:
    """Read a long file of numeric readings (``item, annotator, label``, optional ``gold``).

    Returns:
        The readings and the gold value of every item (``NaN``: unknown), or ``None`` without
        a gold column.

    Raises:
        ValueError: For a wide layout, ``classes`` or ``quiz`` (nominal and ordinal labels
            only), a missing column, a non-numeric reading or repeated pairs with
            ``on_duplicate="error"``.
    """
    layout = check_option(fmt, InputFormat, "--format")
    duplicates = check_option(on_duplicate, OnDuplicate, "--on-duplicate").value
    for option, given in (
        ("--format wide", layout is InputFormat.WIDE),
        ("--classes", classes is not None),
        ("--quiz", quiz is not None),
    ):
        if given:
            raise ValueError(
                f"`{option}` does not apply to --label-type continuous; pass a long file of "
                "item, annotator and numeric label columns."
            )
    import pandas as pd

    df = read_table(path, all_text=True)
    cols = resolve_columns(
        df.columns,
        {"item": item_col, "annotator": annotator_col, "label": label_col},
        required=("item", "annotator", "label"),
    )
    values = pd.to_numeric(df[cols["label"]].str.strip(), errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
    if bad.any():
        rows = np.flatnonzero(bad)[:3] + LINE_OFFSET
        raise ValueError(
            f"Column {cols['label']!r} of '{path}' must hold finite numbers for --label-type "
            f"continuous; got {df[cols['label']].iloc[np.flatnonzero(bad)[:3]].tolist()} "
            f"(lines {', '.join(map(str, rows))}). Drop missing readings."
        )
    frame = pd.DataFrame(
        {"item": df[cols["item"]], "annotator": df[cols["annotator"]], "label": values}
    )
    gold_name = gold_col or "gold"
    if gold_col is not None and gold_col not in df.columns:
        raise ValueError(
            f"Column {gold_col!r} (the gold column) is not in the table; columns are "
            f"{list(df.columns)}."
        )
    if gold_name in df.columns:
        frame["gold"] = pd.to_numeric(df[gold_name].str.strip(), errors="coerce")
    if duplicates != "error":
        pair = frame.duplicated(["item", "annotator"], keep=False)
        if duplicates == "drop":
            spread = frame[pair].groupby(["item", "annotator"])["label"].transform("nunique")
            frame = frame.drop(index=spread.index[spread.to_numpy() > 1])
        keep = "last" if duplicates == "last" else "first"
        frame = frame.drop_duplicates(["item", "annotator"], keep=keep)
    cl = check_continuous(frame[["item", "annotator", "label"]])
    gold = None
    if "gold" in frame:
        per_item = frame.dropna(subset=["gold"]).groupby("item")["gold"].first()
        gold = per_item.reindex(cl.item_ids).to_numpy(dtype=np.float64)
    return cl, gold


def write_consensus(
    df: pd.DataFrame | Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    like: str | os.PathLike[str] | None = None,
) -> None:
    """Write a consensus table (CSV or TSV, gzipped when ``.gz``; Parquet by suffix).

    CSV and TSV go through pyarrow's CSV writer when pyarrow is installed: text cells are
    quoted, floats are written with the shortest digits that read back to the same double
    (read them with ``float_precision="round_trip"`` in pandas to get every bit), missing
    values are empty. Without pyarrow, or for Parquet, :func:`~crowdmed.data.io.write_table`.

    Args:
        df: The table, or its columns (:meth:`AggregateResult.consensus_columns`).
        path: Where to write (not atomically: the command line writes to a staged file).
        like: The final path whose suffixes give the format (``path`` when omitted).
    """
    target = Path(like if like is not None else path)
    fmt = table_suffix(target)
    gz = target.suffix.lower() == ".gz"
    try:
        import pyarrow as pa
        import pyarrow.csv as pcsv
    except ImportError:
        pa = None
    if fmt in (".parquet", ".pq") or pa is None or not hasattr(pcsv, "WriteOptions"):
        if isinstance(df, Mapping):
            import pandas as pd

            df = pd.DataFrame(df)
        write_table(df, path)
        return
    if isinstance(df, Mapping):  # as from_pandas has them: NaN is a missing value
        table = pa.table({k: _arrow_column(v) for k, v in df.items()})
    else:
        table = pa.Table.from_pandas(df, preserve_index=False)
    options = pcsv.WriteOptions(
        delimiter="\t" if fmt in (".tsv", ".tab") else ",", quoting_style="needed"
    )
    if gz:
        with pa.CompressedOutputStream(str(path), "gzip") as stream:
            _write_csv_blocks(table, stream, options)
    else:
        with pa.OSFile(str(path), "wb") as stream:
            _write_csv_blocks(table, stream, options)


#: Rows below which a table is formatted in one piece (threads would not pay for themselves).
_PARALLEL_ROWS = 50_000


def _write_csv_blocks(table: Any, stream: Any, options: Any) -> None:
    """Write ``table`` as CSV to ``stream``, its row blocks formatted on several cores.

    As many blocks as pyarrow's thread pool has threads (at most 4). pyarrow's CSV writer
    formats on one thread (most of it printing floats with their
    shortest round-trip digits) and releases the GIL while it does: each block is formatted
    to memory in its own thread and the blocks are written in order, so the bytes are those
    of one ``write_csv`` call.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    # As many threads as pyarrow's own pool (its reader's): the cores, or OMP_NUM_THREADS.
    n_blocks = min(pa.cpu_count(), 4, max(1, table.num_rows // _PARALLEL_ROWS))
    if n_blocks == 1:
        pcsv.write_csv(table, stream, write_options=options)
        return
    from concurrent.futures import ThreadPoolExecutor

    size = -(-table.num_rows // n_blocks)
    blocks = [table.slice(start, size) for start in range(0, table.num_rows, size)]

    def fmt(i: int) -> Any:
        sink = pa.BufferOutputStream()
        opts = pcsv.WriteOptions(
            include_header=i == 0,
            delimiter=options.delimiter,
            quoting_style=options.quoting_style,
        )
        pcsv.write_csv(blocks[i], sink, write_options=opts)
        return sink.getvalue()

    with ThreadPoolExecutor(len(blocks)) as pool:
        for buf in pool.map(fmt, range(len(blocks))):
            stream.write(buf)


def _consensus_columns(cl: CrowdLabels, agg: BaseAggregator) -> dict[str, np.ndarray]:
    """item, label, confidence and p_<class>... of a fitted aggregator, as arrays."""
    post = np.asarray(agg.posteriors_, dtype=np.float64)
    frame: dict[str, Any] = {
        "item": cl.item_ids,
        "label": cl.classes[agg.labels_],
        "confidence": post.max(axis=1),
    }
    for k, value in enumerate(cl.classes):
        frame[f"p_{value}"] = post[:, k]
    return frame


def consensus_frame(cl: CrowdLabels, agg: BaseAggregator) -> pd.DataFrame:
    """item, label, confidence, p_<class>... and gold (when known) of a fitted aggregator."""
    import pandas as pd

    df = pd.DataFrame(_consensus_columns(cl, agg))
    if cl.gold is not None:
        known = cl.gold >= 0
        gold = pd.Series(cl.classes[np.maximum(cl.gold, 0)])
        if np.issubdtype(cl.classes.dtype, np.integer):
            gold = gold.astype("Int64")
        df["gold"] = gold.mask(~known)
    return df


def continuous_consensus_frame(
    cl: ContinuousLabels, agg: Any, gold: np.ndarray | None
) -> pd.DataFrame:
    """The consensus of continuous readings: item, value, sd, n_labels and gold.

    ``sd`` is the posterior standard deviation (models that have one); gold when known.
    """
    import pandas as pd

    frame: dict[str, Any] = {"item": cl.item_ids, "value": np.asarray(agg.labels_, float)}
    variances = getattr(agg, "posterior_variances_", None)
    if variances is not None:
        frame["sd"] = np.sqrt(np.asarray(variances, float))
    frame["n_labels"] = cl.per_item().astype(np.int64)
    if gold is not None:
        frame["gold"] = gold
    return pd.DataFrame(frame)


def _model_columns(agg: Any, n_annotators: int) -> dict[str, np.ndarray]:
    columns = {}
    for attr, column in _ANNOTATOR_ATTRIBUTES.items():
        value = getattr(agg, attr, None)
        if isinstance(value, np.ndarray) and value.shape == (n_annotators,):
            columns[column] = value
    return columns


def operating_points(cl: CrowdLabels, agg: BaseAggregator) -> pd.DataFrame | None:
    """Per-annotator sensitivity and specificity with 95 % intervals under the posteriors.

    Binary labels only (class index 1 is positive); ``None`` otherwise.
    """
    if cl.n_classes != 2:
        return None
    from crowdmed.quality.reliability import reader_operating_points

    return reader_operating_points(cl, agg.posteriors_, positive=1)


def annotator_frame(cl: CrowdLabels, agg: BaseAggregator) -> pd.DataFrame:
    """One row of reliability figures per annotator.

    The aggregator's own per-annotator parameters (sensitivity, specificity, skill, weight,
    alpha; offset and noise of an ordinal model) are added when it has them. With binary
    labels, ``n_positive``, ``n_negative`` and the 95 % intervals ``sensitivity_low``,
    ``sensitivity_high``, ``specificity_low`` and ``specificity_high`` (Beta posterior, Jeffreys
    prior; :func:`~crowdmed.quality.reader_operating_points`) come with the sensitivity and
    specificity against the posteriors (class index 1 is positive).
    """
    from crowdmed.quality import annotator_table

    table = annotator_table(cl, agg.posteriors_)
    points = operating_points(cl, agg)
    if points is not None:
        at = list(table.columns).index("sensitivity")
        table.insert(at, "n_positive", points["n_positive"].to_numpy())
        table.insert(at + 1, "n_negative", points["n_negative"].to_numpy())
        for name in ("sensitivity", "specificity"):
            at = list(table.columns).index(name) + 1
            for j, end in enumerate(("low", "high")):
                table.insert(at + j, f"{name}_{end}", points[f"{name}_{end}"].to_numpy())
    for column, value in _model_columns(agg, cl.n_annotators).items():
        table[column] = value
    return table.reset_index()


def continuous_annotator_frame(cl: ContinuousLabels, agg: Any) -> pd.DataFrame:
    """One row per annotator of continuous readings.

    n_labels, mean_deviation and rmse_to_consensus against the consensus, and the model's
    bias, precision and scale when it has them.
    """
    n = cl.per_annotator()
    residual = cl.values - np.asarray(agg.labels_, float)[cl.items]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_dev = cl.per_annotator(residual) / n
        rmse = np.sqrt(cl.per_annotator(residual**2) / n)
    import pandas as pd

    table = pd.DataFrame(
        {
            "annotator": cl.annotator_ids,
            "n_labels": n.astype(np.int64),
            "mean_deviation": mean_dev,
            "rmse_to_consensus": rmse,
        }
    )
    for column, value in _model_columns(agg, cl.n_annotators).items():
        table[column] = value
    return table


@dataclasses.dataclass
class AggregateResult:
    """What :func:`aggregate_file` found.

    Attributes:
        labels: The labels read (:class:`~crowdmed.aggregation.continuous.ContinuousLabels`
            for continuous labels).
        aggregator: The fitted aggregator.
        method: The method.
        consensus: item, label, confidence, p_<class>..., gold (continuous: item, value, sd,
            n_labels, gold).
        accuracy: Accuracy against the gold labels (``None`` without gold, when gold was used
            in the fit, or for continuous labels).
        n_gold: Number of items with a known gold label.
        fit: n_iter, converged, log_likelihood, used_gold, seconds, warnings (and chosen,
            scores for ``auto``).
        label_type: nominal, ordinal or continuous.
        evaluation: Figures against gold: ``mae`` and ``rmse`` for continuous labels.
        gold_values: Continuous gold value of every item (``NaN`` unknown), or ``None``.
    """

    labels: Any
    aggregator: Any
    method: str
    consensus: pd.DataFrame
    accuracy: float | None
    n_gold: int
    fit: dict[str, Any]
    label_type: str = LabelType.NOMINAL.value
    evaluation: dict[str, float] = dataclasses.field(default_factory=dict)
    gold_values: np.ndarray | None = None

    def consensus_columns(self) -> pd.DataFrame | dict[str, np.ndarray]:
        """The consensus as its columns when the table was not built yet, else the table.

        :func:`write_consensus` writes either; without pandas for the columns.
        """
        value = self.__dict__["_consensus"]
        return dict(value) if isinstance(value, dict) else value

    def annotators(self) -> pd.DataFrame:
        """One row per annotator (:func:`annotator_frame`)."""
        if self.label_type == LabelType.CONTINUOUS.value:
            return continuous_annotator_frame(self.labels, self.aggregator)
        return annotator_frame(self.labels, self.aggregator)

    def annotator_records(self) -> list[dict[str, Any]]:
        """Per-annotator model parameters for the run record (no full annotator table).

        Binary labels: n_positive, n_negative and sensitivity/specificity with their 95 %
        intervals; ordinal: offset and noise; continuous: bias, precision and scale; and the
        parameters of the other models (skill, weight, alpha ...). Empty when the method has
        none of these (e.g. Dawid–Skene on more than two classes: see the annotator table).
        """
        cl, agg = self.labels, self.aggregator
        columns: dict[str, Any] = {}
        if not isinstance(cl, ContinuousLabels):
            points = operating_points(cl, agg)
            if points is not None:
                for name in _RECORD_COLUMNS[2:10]:
                    columns[name] = points[name].to_numpy()
        columns.update(_model_columns(agg, cl.n_annotators))
        if not columns:
            return []
        columns["annotator"] = cl.annotator_ids
        columns["n_labels"] = (
            cl.per_annotator().astype(np.int64)
            if isinstance(cl, ContinuousLabels)
            else cl.labels_per_annotator()
        )
        import pandas as pd

        frame = pd.DataFrame(columns)
        frame = frame[[c for c in _RECORD_COLUMNS if c in frame.columns]]
        return [
            {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
            for r in frame.to_dict(orient="records")
        ]

    def data(self) -> dict[str, Any]:
        """Counts of items, annotators, classes, labels and gold items."""
        cl = self.labels
        if isinstance(cl, ContinuousLabels):
            return {
                "n_items": cl.n_items,
                "n_annotators": cl.n_annotators,
                "n_classes": None,
                "n_labels": cl.n_labels,
                "classes": None,
                "n_gold": self.n_gold,
                "label_type": self.label_type,
            }
        return {
            "n_items": cl.n_items,
            "n_annotators": cl.n_annotators,
            "n_classes": cl.n_classes,
            "n_labels": cl.n_labels,
            "classes": cl.classes,
            "n_gold": self.n_gold,
        }


def _get_consensus(self: AggregateResult) -> pd.DataFrame:
    value = self.__dict__["_consensus"]
    if isinstance(value, dict):  # built from its columns on first access
        import pandas as pd

        value = self.__dict__["_consensus"] = pd.DataFrame(value)
    return value


def _set_consensus(self: AggregateResult, value: Any) -> None:
    self.__dict__["_consensus"] = value


# The consensus is held as its columns until it is read: the command line writes the columns
# and need not import pandas.
AggregateResult.consensus = property(  # type: ignore[assignment]
    _get_consensus, _set_consensus, doc="The consensus table (see the class attributes)."
)


def make_method(
    method: str | None,
    *,
    seed: int,
    max_iter: int | None,
    tol: float | None,
    label_type: str = LabelType.NOMINAL.value,
) -> Any:
    """The aggregator of ``method`` with EM settings (refused for methods without EM).

    Args:
        method: A method of the label type (``None``: its default); ``auto`` chooses among
            the classification methods (:class:`~crowdmed.aggregation.AutoAggregator`).
        seed: Random state of the methods that take one.
        max_iter: Maximum EM iterations.
        tol: EM tolerance.
        label_type: nominal, ordinal or continuous.

    Raises:
        ValueError: A method of another label type, or EM settings for a method without EM.
    """
    t, name = resolve_method(method, label_type)
    if t is LabelType.CONTINUOUS:
        agg = CONTINUOUS_METHODS[ContinuousMethod(name)]()
    elif t is LabelType.ORDINAL:
        agg = ORDINAL_METHODS[OrdinalMethod(name)]()
    else:
        agg = make_aggregator(name)
    params = agg.get_params()
    if "random_state" in params:
        agg.set_params(random_state=seed)
    for option, key, value in (("--max-iter", "max_iter", max_iter), ("--tol", "tol", tol)):
        if value is None:
            continue
        if key not in params:
            raise ValueError(
                f"`{option}` does not apply to --method {name}; it is not fitted by EM."
            )
        agg.set_params(**{key: value})
    return agg


def _fit_record(agg: Any, use_gold: bool, seconds: float, caught: list[Any]) -> dict[str, Any]:
    history = list(getattr(agg, "log_likelihoods_", []) or [])
    fit = {
        "n_iter": getattr(agg, "n_iter_", None),
        "converged": getattr(agg, "converged_", None),
        "log_likelihood": history[-1] if history else None,
        "used_gold": use_gold,
        "seconds": seconds,
        "warnings": [" ".join(str(w.message).split()) for w in caught],
    }
    if hasattr(agg, "chosen_"):
        fit["chosen"] = agg.chosen_
        fit["criterion"] = getattr(agg, "criterion", "likelihood")
        fit["scores"] = {k: (v if np.isfinite(v) else None) for k, v in agg.scores_.items()}
        fit["n_folds"] = agg.n_folds
        if agg.errors_:
            fit["errors"] = dict(agg.errors_)
    return fit


def _aggregate_continuous(
    path: Path, agg: Any, name: str, use_gold: bool, read: dict[str, Any]
) -> AggregateResult:
    if use_gold:
        raise ValueError(
            "`--use-gold` does not apply to --label-type continuous; gold values are used to "
            "report the error only."
        )
    cl, gold = read_continuous_file(path, **read)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        agg.fit(cl)
        seconds = time.perf_counter() - start
    evaluation: dict[str, float] = {}
    n_gold = 0
    if gold is not None:
        known = np.isfinite(gold)
        n_gold = int(known.sum())
        if n_gold:
            err = np.asarray(agg.labels_, float)[known] - gold[known]
            evaluation = {
                "mae": float(np.mean(np.abs(err))),
                "rmse": float(np.sqrt(np.mean(err**2))),
            }
    return AggregateResult(
        cl,
        agg,
        name,
        continuous_consensus_frame(cl, agg, gold),
        None,
        n_gold,
        _fit_record(agg, False, seconds, caught),
        LabelType.CONTINUOUS.value,
        evaluation,
        gold,
    )


def aggregate_file(
    path: Path,
    method: str | None = "dawid-skene",
    *,
    seed: int = 0,
    max_iter: int | None = None,
    tol: float | None = None,
    use_gold: bool = False,
    read: dict[str, Any] | None = None,
    callback: Callable[[int, float], None] | None = None,
    label_type: str = LabelType.NOMINAL.value,
) -> AggregateResult:
    """Read a label file and fit an aggregator on it.

    Args:
        path: Label file (see :func:`read_label_file`).
        method: A method of the label type (:func:`method_names`); ``None`` for the default
            of the label type (dawid-skene, graded-response, raykar).
        seed: Random state (tie-breaking, random initialisation, the folds of ``auto``).
        max_iter: Maximum EM iterations (the method's default when ``None``).
        tol: EM tolerance (the method's default when ``None``).
        use_gold: Use the gold labels in the fit: gold items are clamped to their gold label
            (``gold-majority-vote`` learns each annotator's weight from them instead).
        read: Keyword arguments of :func:`read_label_file` (fmt, columns, quiz, classes ...).
        callback: Called after each EM iteration with the iteration and log-likelihood.
        label_type: nominal, ordinal (grades in the order of ``read["classes"]``, else the
            sorted labels) or continuous (numeric readings; :func:`read_continuous_file`).

    Returns:
        The result; warnings of the fit are recorded in ``fit["warnings"]``.

    Raises:
        ValueError: For bad options or data.
    """
    t, name = resolve_method(method, label_type)
    agg = make_method(name, seed=seed, max_iter=max_iter, tol=tol, label_type=t.value)
    if t is LabelType.CONTINUOUS:
        return _aggregate_continuous(path, agg, name, use_gold, read or {})
    # The EM methods' sparse products need SciPy's sparse matrices: import them while the
    # file is parsed (pyarrow releases the GIL).
    preload("scipy.sparse")
    cl = read_label_file(path, **(read or {}))
    has_gold = cl.gold is not None and bool((cl.gold >= 0).any())
    if use_gold and not has_gold:
        raise ValueError(
            "`--use-gold` needs gold labels; the file has no known gold values (add a "
            "'gold' column, -1 or empty for unknown)."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        agg.fit(cl, gold=cl.gold if use_gold else None, callback=callback)
        seconds = time.perf_counter() - start
    accuracy: float | None = None
    n_gold = int((cl.gold >= 0).sum()) if cl.gold is not None else 0
    if cl.gold is not None and n_gold and not use_gold:
        known = cl.gold >= 0
        accuracy = float(np.mean(agg.labels_[known] == cl.gold[known]))
    fit = _fit_record(agg, use_gold, seconds, caught)
    # Without gold the table is kept as its columns: the DataFrame is built on first access.
    consensus = consensus_frame(cl, agg) if cl.gold is not None else _consensus_columns(cl, agg)
    return AggregateResult(cl, agg, name, consensus, accuracy, n_gold, fit, t.value)
