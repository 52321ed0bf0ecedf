"""The consensus writer: blocks formatted on several threads give the bytes of one write."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from crowdmed.pipelines import aggregate as pipeline

pa = pytest.importorskip("pyarrow")
pcsv = pytest.importorskip("pyarrow.csv")


def _columns(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    post = rng.dirichlet(np.full(3, 0.3), size=n)
    post[::7] = [1.0, 0.0, 0.0]
    return {
        "item": np.array([f'case "{i}", left' if i % 11 == 0 else f"c{i}" for i in range(n)]),
        "label": post.argmax(axis=1),
        "confidence": post.max(axis=1),
        **{f"p_{k}": post[:, k] for k in range(3)},
    }


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".csv.gz"])
def test_blocks_equal_one_write(tmp_path: Path, suffix: str, monkeypatch) -> None:
    n = 1_003
    columns = _columns(n)
    monkeypatch.setattr(pa, "cpu_count", lambda: 4)
    monkeypatch.setattr(pipeline, "_PARALLEL_ROWS", 100)  # 4 blocks of 251, the last 250
    blocks = tmp_path / f"blocks{suffix}"
    pipeline.write_consensus(columns, blocks)
    # One pyarrow call on the whole table, for reference.
    table = pa.table(columns)
    options = pcsv.WriteOptions(delimiter="\t" if ".tsv" in suffix else ",", quoting_style="needed")
    sink = pa.BufferOutputStream()
    pcsv.write_csv(table, sink, write_options=options)
    expected = sink.getvalue().to_pybytes()
    raw = blocks.read_bytes()
    got = gzip.decompress(raw) if suffix.endswith(".gz") else raw
    assert got == expected
    assert got.count(b"\n") == n + 1
    assert got.startswith(b'"item"')
    assert got.count(b'"item"') == 1  # one header


def test_small_table_in_one_piece(tmp_path: Path, monkeypatch) -> None:
    calls = []
    real = pcsv.write_csv
    monkeypatch.setattr(pcsv, "write_csv", lambda *a, **k: calls.append(1) or real(*a, **k))
    pipeline.write_consensus(_columns(50), tmp_path / "small.csv")
    assert len(calls) == 1
