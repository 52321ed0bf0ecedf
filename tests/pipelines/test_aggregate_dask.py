"""``aggregate_dask``: a Parquet folder fitted on a Dask client gives the in-memory consensus."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from crowdmed.aggregation import DawidSkene
from crowdmed.data import CrowdLabels

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from crowdmed.pipelines.aggregate_dask import (  # noqa: E402
    aggregate_dask,
    connect,
    write_consensus,
)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as c:
        yield c


@pytest.fixture
def parquet(tmp_path):
    rng = np.random.default_rng(0)
    items = np.repeat(np.arange(300), 3)
    truth = rng.integers(0, 2, 300)
    annotators = np.tile([0, 1, 2], 300)
    flip = rng.random(items.size) < np.array([0.1, 0.2, 0.4])[annotators]
    df = pd.DataFrame(
        {
            "task": items,
            "worker": np.array(["w0", "w1", "w2"])[annotators],
            "label": np.where(flip, 1 - truth[items], truth[items]),
            "gold": truth[items],
        }
    )
    dd.from_pandas(df, npartitions=3, sort=False).to_parquet(tmp_path / "labels")
    return tmp_path / "labels", df


def test_parquet_folder_on_a_client(cluster, parquet, tmp_path):
    path, df = parquet
    with connect(cluster.scheduler_address):
        result = aggregate_dask(path, "dawid-skene", seed=0)
        write_consensus(result.consensus, tmp_path / "consensus.csv")
        write_consensus(result.consensus, tmp_path / "consensus")
    assert result.fit["n_partitions"] == 3
    assert result.fit["warnings"] == [
        "The gold and quiz_accuracy columns are not read with --scheduler; the consensus is "
        "not scored against gold."
    ]
    assert result.data()["n_labels"] == 900
    assert result.labels.n_items == 300
    ref = DawidSkene(random_state=0).fit(CrowdLabels.from_long(df, item="task", annotator="worker"))
    out = pd.read_csv(tmp_path / "consensus.csv")
    assert list(out.columns) == ["item", "label", "confidence", "p_0", "p_1"]
    np.testing.assert_allclose(out[["p_0", "p_1"]], ref.posteriors_[out["item"]], atol=1e-12)
    folder = pd.read_parquet(tmp_path / "consensus").sort_values("item")
    np.testing.assert_array_equal(folder["label"], ref.labels_)
    assert len(list((tmp_path / "consensus").glob("*.parquet"))) == 3
    assert (tmp_path / "consensus").stat().st_mode & 0o755 == 0o755  # not owner-only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["consensus", "consensus.csv", "labels"]
    table = result.annotators()
    assert list(table["annotator"]) == ["w0", "w1", "w2"]
    assert table["soft_accuracy"].is_monotonic_decreasing


def test_methods_without_a_partitioned_fit(cluster, parquet):
    with (
        connect(cluster.scheduler_address),
        pytest.raises(ValueError, match=r"`--method` must be one of majority-vote, dawid"),
    ):
        aggregate_dask(parquet[0], "glad")


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"pip install 'crowdmed\[dask\]'"), connect("local"):
        pass
