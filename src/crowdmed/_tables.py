"""Label tables on disk: column roles by alias, table suffixes, CSV/TSV/Parquet reading."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

#: Accepted header names of each column role (compared case-insensitively).
ALIASES = {
    "item": ("item", "task", "item_id", "task_id", "image", "image_id", "case"),
    "annotator": ("annotator", "worker", "annotator_id", "worker_id", "rater", "reader", "user"),
    "label": ("label", "answer", "response", "rating"),
}


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


def table_suffix(path: Path) -> str:
    """Lower-case suffix of a table file, ignoring a final ``.gz`` (``a.csv.gz`` -> ``.csv``)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gz"] and len(suffixes) > 1:
        return suffixes[-2]
    return suffixes[-1] if suffixes else ""


def read_table(path: Path, header: bool = True) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet table (a folder: partitioned Parquet).

    A missing, empty or malformed file is a ``ValueError``.
    """
    if not path.exists():
        raise ValueError(f"File {str(path)!r} does not exist; check the path.")
    suffix = table_suffix(path)
    if path.is_dir() or suffix in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path)
        except ImportError as exc:
            raise ImportError(
                "Reading Parquet needs pyarrow: pip install 'crowdmed[parquet]'."
            ) from exc
    sep = "\t" if suffix in (".tsv", ".tab") else ","
    try:
        return pd.read_csv(path, sep=sep, header=0 if header else None, low_memory=False)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"File {str(path)!r} is empty; it needs one row per annotation.") from exc
    except pd.errors.ParserError as exc:
        raise ValueError(f"File {str(path)!r} is not a valid CSV: {exc}".splitlines()[0]) from exc
