"""``crowdmed aggregate`` on a Parquet folder: in memory, and on Dask with ``--scheduler``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyarrow")


@pytest.fixture
def folder(tmp_path):
    """A label table of 200 items as two Parquet files (partitioned by item)."""
    rng = np.random.default_rng(3)
    items = np.repeat(np.arange(200), 4)
    readers = np.tile(np.arange(4), 200)
    truth = rng.integers(0, 3, 200)
    wrong = rng.random(items.size) < np.array([0.1, 0.2, 0.3, 0.6])[readers]
    df = pd.DataFrame(
        {
            "item": [f"case{i:03d}" for i in items],
            "annotator": [f"r{a}" for a in readers],
            "label": np.where(wrong, rng.integers(0, 3, items.size), truth[items]),
        }
    )
    path = tmp_path / "labels"
    path.mkdir()
    df.iloc[:400].to_parquet(path / "part.0.parquet", index=False)
    df.iloc[400:].to_parquet(path / "part.1.parquet", index=False)
    return path


@pytest.fixture(scope="module")
def scheduler():
    """Address of an in-process LocalCluster with 2 workers."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def _posteriors(path) -> pd.DataFrame:
    return pd.read_csv(path).set_index("item").sort_index()


def test_folder_in_memory_and_on_dask_agree(cli, folder, tmp_path, scheduler):
    mem = cli("aggregate", folder, "-o", tmp_path / "mem.csv")
    assert mem.exit_code == 0, mem.output
    record = json.loads((tmp_path / "mem.csv.json").read_text())
    assert record["input"]["n_files"] == 2  # the folder's files are checksummed
    out = tmp_path / "dask.csv"
    res = cli("aggregate", folder, "-o", out, "-a", tmp_path / "ann.csv", "--scheduler", scheduler)
    assert res.exit_code == 0, res.output
    a, b = _posteriors(tmp_path / "mem.csv"), _posteriors(out)
    assert list(b.columns) == ["label", "confidence", "p_0", "p_1", "p_2"]
    np.testing.assert_allclose(b.to_numpy(float), a.to_numpy(float), atol=1e-12)
    record = json.loads((tmp_path / "dask.csv.json").read_text())
    assert record["input"]["scheduler"] == scheduler
    assert record["data"]["n_partitions"] == 2
    assert record["fit"]["n_iter"] >= 1
    ann = pd.read_csv(tmp_path / "ann.csv")
    assert list(ann["annotator"]) == ["r0", "r1", "r2", "r3"]
    assert ann["soft_accuracy"].is_monotonic_decreasing  # reader 3 is the noisiest


def test_parquet_folder_output(cli, folder, tmp_path, scheduler):
    out = tmp_path / "consensus.parquet"
    res = cli("aggregate", folder, "-o", out, "-m", "one-coin", "--scheduler", scheduler)
    assert res.exit_code == 0, res.output
    assert out.is_dir()
    table = pd.read_parquet(out)
    assert len(table) == 200
    assert table["item"].is_unique


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["-m", "glad"], r"`--method` must be one of majority-vote, dawid-skene, one-coin"),
        (["--use-gold"], r"`--use-gold` does not apply with --scheduler"),
        (["--on-duplicate", "first"], r"`--on-duplicate` does not apply with --scheduler"),
    ],
)
def test_options_refused_on_dask(cli, user_error, folder, tmp_path, scheduler, extra, pattern):
    res = cli("aggregate", folder, "-o", tmp_path / "c.csv", "--scheduler", scheduler, *extra)
    user_error(res, pattern)
    assert not (tmp_path / "c.csv").exists()


def test_without_dask_names_the_extra(cli, user_error, folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    res = cli("aggregate", folder, "-o", tmp_path / "c.csv", "--scheduler", "local")
    user_error(res, r"pip install 'crowdmed\[dask\]'")


@pytest.mark.slow
def test_local_cluster_in_a_subprocess(folder, tmp_path):
    """``--scheduler local`` starts worker processes: run the real command once."""
    pytest.importorskip("distributed")
    out = tmp_path / "c.csv"
    cmd = [sys.executable, "-m", "crowdmed", "aggregate", str(folder), "-o", str(out)]
    res = subprocess.run([*cmd, "--scheduler", "local"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert len(pd.read_csv(out)) == 200
