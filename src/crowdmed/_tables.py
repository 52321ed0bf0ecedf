"""The one input layer for tables: reading CSV/TSV/Parquet files and parsing their labels.

Every table reader of crowdmed goes through :func:`read_table`, so every table is read the
same way:

* **Identifiers are text.** Columns named in ``text_columns`` (item, annotator, image, reader,
  task ... ids, and label columns) are read as the exact text of the cell: ``007`` stays
  ``"007"``, ``1``, ``01`` and ``1.0`` are three different ids, and ``NA`` or ``null`` are
  ids like any other. Only an empty cell is missing. Parquet id columns become text too.
* A UTF-8 byte-order mark is stripped; the header's names are stripped of spaces.
* Every error names the file, says what is wrong (a folder where a file is expected, an empty
  file, not UTF-8, a malformed line with its number) and how to fix it.

:func:`resolve_columns` finds the column of each role and refuses a column given two roles,
and :func:`parse_labels` turns a label column into class codes with one rule everywhere:
``-1`` or an empty cell is a missing label, non-finite numbers are errors, and a value outside
the declared (or inferred) classes is an error that lists the odd values.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from crowdmed._text import short_list

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ALIASES",
    "LINE_OFFSET",
    "check_file",
    "find_column",
    "parse_class_list",
    "parse_labels",
    "read_table",
    "resolve_columns",
    "table_suffix",
]

#: Accepted header names of each column role (compared case-insensitively).
ALIASES = {
    "item": ("item", "task", "item_id", "task_id", "image", "image_id", "case"),
    "annotator": ("annotator", "worker", "annotator_id", "worker_id", "rater", "reader", "user"),
    "label": ("label", "answer", "response", "rating"),
}

#: File line of the first data row of a table with a header (line 1 is the header).
LINE_OFFSET = 2

#: Texts of non-finite numbers (compared lower-case): refused as labels.
_NON_FINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


def table_suffix(path: Path) -> str:
    """Lower-case suffix of a table file, ignoring a final ``.gz`` (``a.csv.gz`` -> ``.csv``)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gz"] and len(suffixes) > 1:
        return suffixes[-2]
    return suffixes[-1] if suffixes else ""


def check_file(path: str | os.PathLike[str], what: str = "File", *, folder: bool = False) -> Path:
    """``path`` as a ``Path`` when it is a readable file (or a folder when ``folder``).

    Raises:
        ValueError: The path does not exist, or is a folder where a file is expected (the
            message says which).
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{what} '{p}' does not exist; check the path.")
    if p.is_dir() and not folder:
        raise ValueError(f"{what} '{p}' is a folder, not a file; pass the table file inside it.")
    return p


def _is_parquet(p: Path) -> bool:
    return p.is_dir() or table_suffix(p) in (".parquet", ".pq")


def _wrap(exc: Exception, p: Path, what: str) -> ValueError:
    """A one-line ``ValueError`` naming the file for a codec, parser or OS error."""
    import pandas as pd

    if isinstance(exc, pd.errors.EmptyDataError):
        return ValueError(f"{what} '{p}' is empty; it needs a header row and one row per entry.")
    if isinstance(exc, UnicodeDecodeError):
        return ValueError(
            f"{what} '{p}' is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8 (CSV UTF-8 in a spreadsheet program)."
        )
    if isinstance(exc, pd.errors.ParserError):
        text = " ".join(str(exc).split())
        return ValueError(
            f"{what} '{p}' is not a valid table: {text}. Check the separator and the quoting "
            "of that line."
        )
    if isinstance(exc, PermissionError):
        return ValueError(f"{what} '{p}' cannot be read (permission denied); check its mode.")
    text = " ".join(str(exc).split())[:200]
    return ValueError(f"{what} '{p}' cannot be read as a table: {text}.")


def _read_parquet(p: Path, what: str, text_columns: Iterable[Any]) -> pd.DataFrame:
    import pandas as pd

    if p.is_dir() and not any(
        f.suffix.lower() in (".parquet", ".pq") for f in p.rglob("*") if f.is_file()
    ):
        raise ValueError(
            f"{what} '{p}' is a folder with no Parquet files; pass a table file (CSV, TSV or "
            "Parquet) or a folder of Parquet files."
        )
    try:
        df = pd.read_parquet(p)
    except ImportError as exc:
        raise ImportError(
            "Reading Parquet needs pyarrow: pip install 'crowdmed[parquet]'."
        ) from exc
    except (OSError, ValueError, TypeError) as exc:
        raise _wrap(exc, p, what) from exc
    df.columns = [str(c).strip() for c in df.columns]
    for col in df.columns:
        if str(col).lower() in text_columns:
            df[col] = _as_text(df[col])
    return df


def _as_text(values: pd.Series) -> pd.Series:
    """Values as their text (missing stays missing): ids stored as numbers in Parquet."""
    missing = values.isna().to_numpy()
    if values.dtype.kind in "iub":
        text = values.astype(str)
    else:
        text = values.map(lambda v: v if isinstance(v, str) else str(v))
    return text.astype(object).where(~missing, np.nan)


def read_table(
    path: str | os.PathLike[str],
    header: bool = True,
    *,
    text_columns: Iterable[Any] | None = None,
    all_text: bool = False,
    what: str = "File",
    folder: bool = True,
    sep: str | None = None,
) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet table (a folder: partitioned Parquet).

    Args:
        path: The file; ``.tsv``/``.tab`` are tab-separated, ``.parquet``/``.pq`` Parquet,
            anything else comma-separated (``.gz`` compressed files too).
        header: Whether the first line is a header; without one columns are ``0, 1, ...``.
        text_columns: Columns read as the exact text of each cell (ids and labels): no number
            parsing, only an empty cell is missing (``NaN``). Names after stripping spaces, or
            positions without a header.
        all_text: Read every column as text.
        what: How messages name the file (``"Box file"``, ``"Vote file"``).
        folder: Accept a folder (read as partitioned Parquet).
        sep: Field separator; by suffix when ``None``; ``"sniff"`` guesses it from the
            first lines (comma, semicolon, tab).

    Returns:
        The table; its header names are stripped of spaces and of a byte-order mark.

    Raises:
        ValueError: A missing path, a folder where a file is expected, an empty, undecodable
            or malformed file; the message names the file.
    """
    import pandas as pd

    p = check_file(path, what, folder=folder)
    text = {c.lower() if isinstance(c, str) else c for c in (text_columns or ())}
    if _is_parquet(p):
        df = _read_parquet(p, what, text)
        if all_text:
            for col in df.columns:
                df[col] = _as_text(df[col])
        return df
    if p.stat().st_size == 0:
        raise _wrap(pd.errors.EmptyDataError(), p, what)
    if sep is None:
        sep = "\t" if table_suffix(p) in (".tsv", ".tab") else ","
    engine: dict[str, Any] = {"low_memory": False}
    if sep == "sniff":
        sep, engine = None, {"engine": "python"}  # type: ignore[assignment]  # pandas sniffs
    try:
        first = pd.read_csv(
            p, sep=sep, header=0 if header else None, nrows=0 if header else 1, dtype=str,
            encoding="utf-8-sig", keep_default_na=False, **({} if sep else engine),
        )  # fmt: skip
        raw_names = list(first.columns)
        names = [str(c).strip() for c in raw_names] if header else raw_names
        na: dict[Any, list[str]] = {}
        dtype: dict[Any, Any] = {}
        for raw, name in zip(raw_names, names, strict=True):
            if all_text or (name.lower() if isinstance(name, str) else name) in text:
                na[raw], dtype[raw] = [""], str
            else:
                na[raw] = _default_na()
        df = pd.read_csv(
            p, sep=sep, header=0 if header else None, dtype=dtype or None, encoding="utf-8-sig",
            keep_default_na=False, na_values=na, **engine,
        )  # fmt: skip
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise _wrap(exc, p, what) from exc
    except (ValueError, csv.Error) as exc:
        raise _wrap(exc, p, what) from exc
    if header:
        df.columns = [str(c).strip() for c in df.columns]
    return df


# ---------------------------------------------------------------------- column roles
def _default_na() -> list[str]:
    """Cell texts pandas reads as missing in the columns that are not text columns."""
    import pandas as pd

    return sorted(pd._libs.parsers.STR_NA_VALUES)  # type: ignore[attr-defined]  # public list


def find_column(df: pd.DataFrame, role: str, given: str | None) -> str:
    """The column of ``df`` for ``role`` (``given`` if passed, else the first alias present)."""
    if given is not None:
        if given not in df.columns:
            raise ValueError(
                f"Column {given!r} (the {role} column) is not in the table; columns are "
                f"{list(df.columns)}."
            )
        return given
    lower = {str(c).lower(): c for c in df.columns}
    for alias in ALIASES[role]:
        if alias in lower:
            return str(lower[alias])
    raise ValueError(
        f"No {role} column found; columns are {list(df.columns)}. Name it one of "
        f"{list(ALIASES[role][:3])} or pass `{role}=` (--{role}-col in the CLI)."
    )


def resolve_columns(
    columns: Sequence[Any], given: Mapping[str, str | None], *, required: Iterable[str] = ()
) -> dict[str, str]:
    """The column of each role, given or found by alias; a column with two roles is refused.

    Args:
        columns: The table's column names.
        given: ``role -> column name`` (``None``: detect it among :data:`ALIASES`).
        required: Roles that must be found; the others are left out when absent.

    Returns:
        ``role -> column`` for the roles found.

    Raises:
        ValueError: A given column is not in the table, a required role has no column, or two
            roles resolve to one column.
    """
    frame = SimpleNamespace(columns=list(columns))
    need = set(required)
    out: dict[str, str] = {}
    for role, name in given.items():
        try:
            out[role] = find_column(frame, role, name)
        except ValueError:
            if name is not None or role in need:
                raise
    by_column: dict[str, str] = {}
    for role, col in out.items():
        if col in by_column:
            other = by_column[col]
            flag = role if given.get(role) is not None else other
            raise ValueError(
                f"Column {col!r} is used as both the {other} and the {role} column; each role "
                f"needs its own column (check --{flag}-col)."
            )
        by_column[col] = role
    return out


# ---------------------------------------------------------------------- labels
def _factorize(values: Any) -> tuple[np.ndarray, list[Any]]:
    """Codes in order of first appearance (``-1``: missing), as ``pd.factorize`` has them.

    A pandas Series goes through ``pd.factorize``; a plain sequence (the distinct cells of a
    column read by pyarrow) is factorized here, so that pandas need not be imported.
    """
    if not isinstance(values, np.ndarray | list | tuple):
        import pandas as pd

        codes, uniques = pd.factorize(values.reset_index(drop=True), use_na_sentinel=True)
        return codes, list(uniques)
    position: dict[Any, int] = {}
    codes = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float | np.floating) and math.isnan(v)):
            codes[i] = -1
        else:
            codes[i] = position.setdefault(v, len(position))
    return codes, list(position)


def _number(v: Any) -> float:
    """``v`` as a float (NaN when it is not a number)."""
    if isinstance(v, bool | np.bool_):
        return math.nan
    if isinstance(v, int | float | np.integer | np.floating):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return math.nan
    return math.nan


def _plain(v: Any) -> Any:
    """A value as a plain Python scalar for messages (``7``, not ``np.int64(7)``)."""
    if isinstance(v, np.generic):
        return v.item()
    return v


def parse_class_list(values: Sequence[str] | None) -> list[Any] | None:
    """Classes given as text (``--classes 0,1,2``): split on commas; whole numbers become ints."""
    if not values:
        return None
    names = [c.strip() for v in values for c in str(v).split(",") if c.strip()]
    if not names:
        return None
    numbers = [_number(c) for c in names]
    if all(math.isfinite(x) and float(x).is_integer() for x in numbers):
        return [int(x) for x in numbers]
    return names


def parse_labels(
    values: pd.Series,
    classes: Sequence[Any] | None = None,
    *,
    where: str = "the table",
    column: str = "label",
    lines: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class codes of a label column; ``-1`` or empty marks a missing label.

    Without ``classes`` they are inferred: whole numbers (``1`` and ``1.0`` are class 1),
    other numbers, or text, sorted. A column mixing numbers and text, or whole numbers and
    fractions, is an error listing the odd values, as is any non-finite number (``inf``,
    ``nan``). With ``classes`` every label must be one of them (as text or as number).

    Args:
        values: The label cells (text or numbers).
        classes: The valid classes in order.
        where: How messages name the table (``"'labels.csv'"``).
        column: The column's name for messages.
        lines: File line of each value for messages (positions + 1 when ``None``).

    Returns:
        ``(codes, classes)``: ``int64`` codes of shape ``(n,)`` (``-1`` = missing) and the
        class values.

    Raises:
        ValueError: Non-finite numbers, mixed kinds, or labels outside ``classes``.

    Examples:
        >>> import pandas as pd
        >>> codes, cls = parse_labels(pd.Series(["1", "0", "-1", "", "1.0"]))
        >>> codes.tolist(), cls.tolist()
        ([1, 0, -1, -1, 1], [0, 1])
    """
    n = len(values)
    line_no = np.arange(1, n + 1) if lines is None else np.asarray(lines)
    # Work on the distinct cells (a few classes), then map back to the rows.
    row_code, uniques = _factorize(values)
    cells = [v.strip() if isinstance(v, str) else _plain(v) for v in uniques]
    num = np.array([_number(c) for c in cells], dtype=np.float64)
    empty = np.array([isinstance(c, str) and c == "" for c in cells], dtype=bool)
    u_missing = empty | (num == -1)
    named = np.array([isinstance(c, str) and c.lower() in _NON_FINITE for c in cells], dtype=bool)
    u_nonfinite = ~u_missing & (np.isinf(num) | named)
    known = row_code >= 0
    safe = np.maximum(row_code, 0)

    def rows_of(mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(known & mask[safe]) if len(mask) else np.array([], dtype=np.int64)

    def shown(u_mask: np.ndarray) -> str:
        return short_list(sorted({str(c) for c, m in zip(cells, u_mask, strict=True) if m}))

    def at(rows: np.ndarray) -> str:
        more = f" and {rows.size - 1} more" if rows.size > 1 else ""
        return f"line {int(line_no[rows[0]])}{more}"

    if u_nonfinite.any():
        raise ValueError(
            f"Column {column!r} of {where} has non-finite labels {shown(u_nonfinite)} "
            f"({at(rows_of(u_nonfinite))}); labels must be classes; use -1 or an empty cell "
            "for a missing label."
        )
    u_present = ~u_missing
    u_code = np.full(len(cells), -1, dtype=np.int64)

    def to_rows(u_codes: np.ndarray) -> np.ndarray:
        if not len(u_codes):
            return np.full(n, -1, dtype=np.int64)
        return np.where(known, u_codes[safe], -1).astype(np.int64)

    if classes is not None:
        cls = [_plain(c) for c in classes]
        if len({str(c) for c in cls}) != len(cls):
            raise ValueError(f"`classes` must be unique; got {short_list(cls)}.")
        by_text = {str(c): k for k, c in enumerate(cls)}
        by_number: dict[float, int] = {}
        for k, c in enumerate(cls):
            x = _number(c)
            if math.isfinite(x):
                by_number.setdefault(x, k)
        for j in np.flatnonzero(u_present):
            k = by_text.get(str(cells[j]))
            if k is None and math.isfinite(num[j]):
                k = by_number.get(float(num[j]))
            u_code[j] = -1 if k is None else k
        odd = u_present & (u_code < 0)
        if odd.any():
            raise ValueError(
                f"Column {column!r} of {where} has labels {shown(odd)} outside the classes "
                f"{short_list(cls, 20)} ({at(rows_of(odd))}); fix the labels or add them to "
                "the classes (--classes)."
            )
        return to_rows(u_code), np.asarray(cls) if cls else np.array([], dtype=np.int64)
    if not u_present.any():
        return np.full(n, -1, dtype=np.int64), np.array([], dtype=np.int64)
    is_num = u_present & np.isfinite(num)
    is_text = u_present & ~is_num
    if is_num.any() and is_text.any():
        n_text, n_num = rows_of(is_text).size, rows_of(is_num).size
        minority = is_text if n_text <= n_num else is_num
        kind, others = ("text", "numbers") if minority is is_text else ("numbers", "text")
        raise ValueError(
            f"Column {column!r} of {where} has labels {shown(minority)} that are {kind} among "
            f"{others} ({at(rows_of(minority))}); fix them, or declare every class with "
            "--classes."
        )
    if is_num.any():
        x = num[u_present]
        whole = x == np.round(x)
        if not whole.all() and whole.any():
            odd = u_present.copy()
            odd[u_present] = ~whole
            raise ValueError(
                f"Column {column!r} of {where} has labels {shown(odd)} that are not whole "
                f"numbers like the other labels ({at(rows_of(odd))}); fix them, or declare "
                "every class with --classes."
            )
        values_u = x.astype(np.int64) if whole.all() else x
        uniq = np.unique(values_u)
        u_code[u_present] = np.searchsorted(uniq, values_u)
        return to_rows(u_code), uniq
    texts = [str(cells[j]) for j in np.flatnonzero(u_present)]
    uniq_t = np.asarray(sorted(set(texts)), dtype=object)
    position = {t: k for k, t in enumerate(uniq_t.tolist())}
    u_code[u_present] = [position[t] for t in texts]
    return to_rows(u_code), uniq_t
