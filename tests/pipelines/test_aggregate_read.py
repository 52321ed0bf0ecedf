"""``aggregate_file`` reads plain long CSVs with pyarrow: the same labels as ``read_labels``.

Every other file (and every error) goes through ``read_labels``: the messages are the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crowdmed.data.io import read_labels
from crowdmed.pipelines.aggregate import _read_plain_long, read_label_file

pytest.importorskip("pyarrow")

PLAIN = {
    # BOM, spaced header names, an alias, ids as written, -1/empty missing, a quoted comma,
    # an item whose only label is missing, a blank line, labels "1.0" and " 2".
    "mixed.csv": "\ufeff item , worker ,label\n007,NA,1\nx,r1,-1\n007,r1,\n1.0,r1,2\n"
    '1,NA,1.0\nonly_missing,r2,-1\n"q,1",r2," 2"\n\n1,r3,0\n',
    "text.tsv": "task\tannotator\tlabel\nA\tw\tcat\nB\tw\tdog\nA\tv\tdog\n",
    "extra.csv": "item,annotator,label,note\na,r,1,z\nb,r,0,\n",
}
OTHER = {
    "repeated.csv": "item,annotator,label\na,r,1\na,r,2\n",
    "no_id.csv": "item,annotator,label\na,,1\n",
    "mixed_kinds.csv": "item,annotator,label\na,r,1\nb,r,x\n",
    "all_missing.csv": "item,annotator,label\na,r,-1\n",
    "header_only.csv": "item,annotator,label\n",
    "short_row.csv": "item,annotator,label\na,r,1\nb,r\n",
    "headerless.csv": "w1,t1,1,-1\nw2,t1,0,1\n",
    "gold.csv": "item,annotator,label,gold\na,r,1,1\nb,r,0,\n",
    "repeated_header.csv": "item,item,annotator,label\na,b,r,1\n",
}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def _same(a, b) -> None:
    for field in ("items", "annotators", "labels", "item_ids", "annotator_ids", "classes"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype, field
        assert np.array_equal(x, y), field
    assert (a.n_items, a.n_annotators, a.n_classes) == (b.n_items, b.n_annotators, b.n_classes)
    assert a.gold is None
    assert b.gold is None


def _message(call, *args, **kwargs) -> str | None:
    """The message of the ``ValueError`` of a call (``None`` when it succeeds)."""
    try:
        call(*args, **kwargs)
    except ValueError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("classes", [None, [0, 1, 2]])
@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_files_read_the_same(tmp_path: Path, name: str, classes) -> None:
    path = _write(tmp_path, name, PLAIN[name])
    error = _message(read_labels, path, classes=classes)
    if error is not None:  # text labels outside [0, 1, 2]
        assert _read_plain_long(path, item_col=None, annotator_col=None, label_col=None,
                                classes=classes) is None  # fmt: skip
        assert _message(read_label_file, path, classes=classes) == error
        return
    expected = read_labels(path, classes=classes)
    fast = _read_plain_long(
        path, item_col=None, annotator_col=None, label_col=None, classes=classes
    )
    assert fast is not None
    _same(fast, expected)
    _same(read_label_file(path, classes=classes), expected)


def test_mixed_file_values(tmp_path: Path) -> None:
    cl = read_label_file(_write(tmp_path, "mixed.csv", PLAIN["mixed.csv"]))
    assert cl.item_ids.tolist() == ["007", "1.0", "1", "q,1"]
    assert cl.annotator_ids.tolist() == ["NA", "r1", "r2", "r3"]
    assert cl.classes.tolist() == [0, 1, 2]
    assert cl.n_labels == 5


@pytest.mark.parametrize("name", sorted(OTHER))
def test_other_files_go_through_read_labels(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, name, OTHER[name])
    assert _read_plain_long(path, item_col=None, annotator_col=None, label_col=None,
                            classes=None) is None  # fmt: skip
    error = _message(read_labels, path)
    if error is not None:  # the auto layout may add a hint about --format wide
        assert (_message(read_label_file, path) or "").startswith(error)
        return
    expected = read_labels(path)
    got_cl = read_label_file(path)
    assert np.array_equal(got_cl.labels, expected.labels)
    assert np.array_equal(got_cl.item_ids, expected.item_ids)


def test_named_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "named.csv", "case,reader,grade,item\na,r,1,x\nb,r,0,y\n")
    kw = {"item_col": "case", "annotator_col": "reader", "label_col": "grade"}
    fast = _read_plain_long(path, classes=None, **kw)
    assert fast is not None
    expected = read_labels(path, item="case", annotator="reader", label="grade")
    _same(fast, expected)
