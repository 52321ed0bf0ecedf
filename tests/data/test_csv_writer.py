"""The fast CSV writer writes exactly the text of ``DataFrame.to_csv(index=False)``."""

from __future__ import annotations

import gzip
import sys

import numpy as np
import pandas as pd
import pytest

from crowdmed.data import _csv
from crowdmed.data._csv import write_csv
from crowdmed.data.io import write_table

pytest.importorskip("pyarrow")


def _edge_floats(rng: np.random.Generator) -> np.ndarray:
    special = [
        0.0,
        -0.0,
        1.0,
        3.0,
        0.1,
        1e-4,
        np.nextafter(1e-4, 0),
        1e-5,
        -3e-6,
        1e-6,
        1e-7,
        1e-9,
        np.nextafter(1e-9, 0),
        123456789.0,
        1e15,
        1.5e15,
        np.nextafter(1e16, 0),
        1e16,
        1e22,
        5e-324,
        2.2250738585072014e-308,
        1.7976931348623157e308,
        np.inf,
        -np.inf,
        np.nan,
    ]
    random = [
        rng.random(2000),
        rng.random(2000) ** 30,
        np.exp(rng.uniform(-745, 709, 2000)),
        np.round(rng.normal(size=500) * 1e6),
        rng.normal(size=500) * 1e13,
    ]
    x = np.concatenate([special, *random])
    return np.concatenate([x, -x])


@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = _edge_floats(rng)
    n = len(x)
    ids = np.array([f"img{i:05d}" for i in range(n)], dtype=object)
    tricky = ["a,b", 'q"x', "line\nbreak", "cr\rx", "", None, "tab\tx", "ünïcode", " pad ", "007"]
    ids[: len(tricky)] = tricky
    return pd.DataFrame(
        {
            "item": ids,
            "label": rng.integers(-3, 5, n),
            "confidence": x,
            "p,1": x[::-1].copy(),
            "flag": rng.random(n) > 0.5,
            "gold": pd.array(np.where(rng.random(n) > 0.5, 1, None), dtype="Int64"),
            "name": pd.array(ids, dtype="string"),
            "count": rng.integers(0, 2**40, n, dtype=np.uint64),
        }
    )


@pytest.mark.parametrize(
    ("name", "sep"),
    [("t.csv", ","), ("t.tsv", "\t"), ("t.csv.gz", ",")],  # one file per separator / gzip
)
def test_same_bytes_as_pandas(tmp_path, table, name, sep):
    compress = name.endswith(".gz")
    ours, ref = tmp_path / f"ours_{name}", tmp_path / f"ref_{name}"
    assert _csv._fast_columns(table, sep) is not None  # the fast path is the one tested
    write_csv(table, ours, sep=sep, compress=compress)
    table.to_csv(ref, index=False, sep=sep, compression="gzip" if compress else None)
    read = gzip.open if compress else open
    with read(ours, "rb") as a, read(ref, "rb") as b:
        assert a.read() == b.read()


def test_blocks_join_seamlessly(tmp_path, table, monkeypatch):
    monkeypatch.setattr(_csv, "_BLOCK_ROWS", 7)
    write_csv(table, tmp_path / "ours.csv")
    table.to_csv(tmp_path / "ref.csv", index=False)
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame({"only": ["", "x"]}),  # one column: pandas quotes the empty field
        pd.DataFrame({"a": [], "b": []}),  # empty table
        pd.DataFrame({"a": np.array([0.1, 0.25], dtype=np.float32), "b": [1, 2]}),  # float32
        pd.DataFrame({"a": [1, "x"], "b": [1, 2]}),  # mixed object column
        pd.DataFrame({"a": pd.to_datetime(["2020-01-01", "2021-02-03"]), "b": [1, 2]}),
    ],
)
def test_other_tables_fall_back_to_pandas(tmp_path, frame):
    assert _csv._fast_columns(frame, ",") is None
    write_csv(frame, tmp_path / "ours.csv")
    frame.to_csv(tmp_path / "ref.csv", index=False)
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()


def test_write_table_uses_it_and_round_trips(tmp_path, table):
    table.loc[3, ["item", "name"]] = "cr x"  # pandas reads a bare carriage return as a row end
    path = tmp_path / "out.csv"
    write_table(table, path)
    table.to_csv(tmp_path / "ref.csv", index=False)
    assert path.read_bytes() == (tmp_path / "ref.csv").read_bytes()
    back = pd.read_csv(
        path, keep_default_na=False, dtype={"item": str}, float_precision="round_trip"
    )
    confidence = back["confidence"].replace("", np.nan).astype(float)
    np.testing.assert_array_equal(confidence, table["confidence"])
    assert list(back["item"][:5]) == ["a,b", 'q"x', "line\nbreak", "cr x", ""]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "ref.csv"]


def test_without_pyarrow_pandas_writes(tmp_path, table, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert _csv._fast_columns(table, ",") is None
    write_csv(table, tmp_path / "ours.csv")
    table.to_csv(tmp_path / "ref.csv", index=False)
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()
