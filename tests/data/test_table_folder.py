"""A folder of Parquet files (a partitioned table) reads as one label table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crowdmed.data.io import read_labels

pytest.importorskip("pyarrow")


def test_parquet_folder_reads_as_one_table(tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    df = pd.DataFrame(
        {
            "task": ["a", "a", "b", "b", "c"],
            "worker": ["w1", "w2", "w1", "w2", "w1"],
            "label": [0, 1, 1, 1, 0],
        }
    )
    df.iloc[:3].to_parquet(folder / "part.0.parquet", index=False)
    df.iloc[3:].to_parquet(folder / "part.1.parquet", index=False)
    cl = read_labels(folder)
    assert (cl.n_items, cl.n_annotators, cl.n_labels) == (3, 2, 5)
    np.testing.assert_array_equal(cl.to_dense(), [[0, 1], [1, 1], [0, -1]])
    assert list(cl.item_ids) == ["a", "b", "c"]
