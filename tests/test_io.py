import enum
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crowdmed._io import atomic_write, to_jsonable


class Color(enum.Enum):
    RED = "red"


def test_to_jsonable_makes_strict_json():
    record = {
        "nan": np.float32("nan"),
        "inf": float("inf"),
        "na": pd.NA,
        "int": np.int64(3),
        "bool": np.bool_(True),
        "enum": Color.RED,
        "path": Path("a/b"),
        "array": np.array([1.5, np.nan]),
        "table": pd.DataFrame({"x": [1, 2]}, index=pd.Index(["p", "q"], name="id")),
        1: ("t", None),
    }
    out = json.loads(json.dumps(to_jsonable(record), allow_nan=False))
    assert out == {
        "nan": None,
        "inf": None,
        "na": None,
        "int": 3,
        "bool": True,
        "enum": "red",
        "path": "a/b",
        "array": [1.5, None],
        "table": [{"id": "p", "x": 1}, {"id": "q", "x": 2}],
        "1": ["t", None],
    }


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def write_then_fail() -> None:
        with atomic_write(target) as fh:
            fh.write("new")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
