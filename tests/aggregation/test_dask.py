"""Map-reduce EM on a Dask DataFrame gives the in-memory fit (MV, Dawid–Skene, one-coin)."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from crowdmed.aggregation import (
    GLAD,
    DawidSkene,
    GradedResponse,
    MajorityVote,
    OneCoinDawidSkene,
)
from crowdmed.aggregation.distributed._mapreduce import (
    encode_local,
    encode_partition,
    fit_blocks,
    globalize,
    local_map_reduce,
    local_summary,
    partition_model,
)
from crowdmed.data import CrowdLabels
from crowdmed.exceptions import ConvergenceWarning

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from crowdmed.aggregation.distributed import DaskAggregator  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """A LocalCluster with 2 in-process workers (threads), closed after the module."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _table(n_items: int = 600, k: int = 3, seed: int = 0) -> pd.DataFrame:
    """Long table of 12 simulated annotators (string ids), each item labelled by 4 of them.

    Annotator ``a`` keeps the true class with probability ``0.35 + 0.05 a`` and otherwise
    answers uniformly; rows are sorted by item.
    """
    rng = np.random.default_rng(seed)
    n_ann, per_item = 12, 4
    truth = rng.integers(0, k, n_items)
    ann = np.argsort(rng.random((n_items, n_ann)), axis=1)[:, :per_item]  # distinct readers
    items = np.repeat(np.arange(n_items), per_item)
    annotators = ann.ravel()
    keep = rng.random(items.size) < 0.35 + 0.05 * annotators
    labels = np.where(keep, truth[items], rng.integers(0, k, items.size))
    return pd.DataFrame(
        {
            "item": [f"case{i:04d}" for i in items],
            "annotator": [f"reader{a}" for a in annotators],
            "label": labels,
        }
    )


def _compare(agg: DaskAggregator, ref, cl: CrowdLabels) -> float:
    out = agg.consensus_.compute()
    assert len(out) == cl.n_items
    assert out["item"].is_unique
    pos = pd.Index(cl.item_ids).get_indexer(out["item"])
    assert (pos >= 0).all()
    post = out[[f"p_{c}" for c in cl.classes]].to_numpy()
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(out["label"].to_numpy(), cl.classes[ref.labels_[pos]])
    np.testing.assert_allclose(out["confidence"], post.max(axis=1))
    ann = pd.Index(cl.annotator_ids).get_indexer(agg.annotator_ids_)
    np.testing.assert_allclose(agg.confusion_, ref.confusion_[ann], atol=1e-10)
    return float(np.abs(post - ref.posteriors_[pos]).max())


ESTIMATORS = [
    MajorityVote(),
    DawidSkene(),
    DawidSkene(smoothing=0.0, max_iter=15, tol=0.0),
    DawidSkene(max_iter=0),
    OneCoinDawidSkene(),
]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=repr)
def test_local_cluster_equals_in_memory_fit(client, estimator):
    df = _table()
    cl = CrowdLabels.from_long(df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = type(estimator)(**estimator.get_params()).fit(cl)
        agg = DaskAggregator(estimator).fit(dd.from_pandas(df, npartitions=4, sort=False))
    assert agg.n_partitions_ == 4
    assert not agg.shuffled_  # sorted by item: no item spans two partitions
    assert _compare(agg, ref, cl) < 1e-10
    assert (agg.n_items_, agg.n_labels_, agg.n_classes_) == (cl.n_items, cl.n_labels, 3)
    assert agg.n_iter_ == getattr(ref, "n_iter_", 0)
    assert agg.converged_ == ref.converged_
    np.testing.assert_allclose(agg.log_likelihoods_, ref.log_likelihoods_, rtol=1e-12)
    if hasattr(ref, "priors_"):
        np.testing.assert_allclose(agg.priors_, ref.priors_, atol=1e-12)
    if hasattr(ref, "skills_"):
        ann = pd.Index(cl.annotator_ids).get_indexer(agg.annotator_ids_)
        np.testing.assert_allclose(agg.skills_, ref.skills_[ann], atol=1e-12)
    assert list(agg.annotator_ids_) == sorted(cl.annotator_ids)


def test_graded_response_equals_in_memory_fit(client):
    """The ordinal model: its M-step optimises on the driver from the summed counts."""
    rng = np.random.default_rng(7)
    n_items, k = 300, 5
    truth = rng.integers(0, k, n_items)
    offsets = np.array([-1.0, -0.5, 0.0, 0.0, 0.5, 1.0])  # strict to lenient readers
    items = np.repeat(np.arange(n_items), 6)
    readers = np.tile(np.arange(6), n_items)
    seen = truth[items] + offsets[readers] + rng.normal(0.0, 0.6, items.size)
    df = pd.DataFrame(
        {
            "item": items,
            "annotator": [f"r{a}" for a in readers],
            "label": np.clip(np.rint(seen), 0, k - 1).astype(int),
        }
    )
    cl = CrowdLabels.from_long(df)
    est = GradedResponse(max_iter=8, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = GradedResponse(max_iter=8, tol=0.0).fit(cl)
        agg = DaskAggregator(est).fit(dd.from_pandas(df, npartitions=3, sort=False))
    assert _compare(agg, ref, cl) < 1e-8
    np.testing.assert_allclose(agg.thresholds_, ref.thresholds_, atol=1e-8)
    np.testing.assert_allclose(agg.offsets_, ref.offsets_, atol=1e-8)  # same annotator order
    np.testing.assert_allclose(agg.log_likelihoods_, ref.log_likelihoods_, rtol=1e-10)
    assert agg.offsets_[0] < agg.offsets_[2] < agg.offsets_[5]  # strict < average < lenient
    assert not hasattr(est, "_theta")  # the given estimator is not modified


def test_items_spread_over_partitions_are_shuffled(client):
    df = _table(seed=1).sample(frac=1.0, random_state=3)  # an item's labels in many partitions
    cl = CrowdLabels.from_long(df)
    ref = DawidSkene().fit(cl)
    agg = DaskAggregator(DawidSkene()).fit(dd.from_pandas(df, npartitions=5, sort=False))
    assert agg.shuffled_
    assert _compare(agg, ref, cl) < 1e-10


def test_text_classes_and_empty_partitions(client):
    df = _table(n_items=400, seed=6)
    df["label"] = np.array(["benign", "malignant", "unsure"])[df["label"]]
    ddf = dd.from_pandas(df, npartitions=4, sort=False)
    ddf = ddf[ddf["item"] < "case0150"]  # the last partitions become empty
    kept = df[df["item"] < "case0150"]
    cl = CrowdLabels.from_long(kept)
    ref = OneCoinDawidSkene().fit(cl)
    agg = DaskAggregator(OneCoinDawidSkene()).fit(ddf)
    out = agg.consensus_.compute()
    assert list(out.columns) == ["item", "label", "confidence", *(f"p_{c}" for c in cl.classes)]
    assert list(agg.classes_) == ["benign", "malignant", "unsure"]
    assert agg.n_partitions_ == 4  # two of them empty
    assert _compare(agg, ref, cl) < 1e-10


def test_overlapping_id_ranges_without_split_items_are_not_shuffled(client):
    df = _table(n_items=200, seed=8)
    df["item"] = df["item"].str.replace("case0*", "img", regex=True)  # img0 ... img199
    # img0..img99 | img100..img199: the text ranges overlap, no item is in both partitions.
    ddf = dd.from_pandas(df, npartitions=2, sort=False)
    cl = CrowdLabels.from_long(df)
    agg = DaskAggregator(DawidSkene()).fit(ddf)
    assert not agg.shuffled_
    assert _compare(agg, DawidSkene().fit(cl), cl) < 1e-10


def test_parquet_folder_without_persist(client, tmp_path):
    df = _table(seed=2)
    dd.from_pandas(df, npartitions=3, sort=False).to_parquet(tmp_path / "labels")
    cl = CrowdLabels.from_long(df)
    ref = OneCoinDawidSkene().fit(cl)
    agg = DaskAggregator(OneCoinDawidSkene(), persist=False).fit(tmp_path / "labels")
    assert agg.n_partitions_ == 3
    assert _compare(agg, ref, cl) < 1e-10
    table = agg.annotator_frame()
    assert list(table.columns) == ["annotator", "n_labels", "soft_accuracy", "skill"]
    assert table["n_labels"].sum() == cl.n_labels


def test_threaded_scheduler_and_callback():
    """Without a distributed client the default Dask scheduler runs the same passes."""
    df = _table(n_items=200, k=2, seed=4)
    cl = CrowdLabels.from_long(df)
    seen: list[tuple[int, float]] = []
    ref = DawidSkene().fit(cl)
    with dask.config.set(scheduler="threads"):  # takes precedence over an active client
        agg = DaskAggregator(DawidSkene()).fit(
            dd.from_pandas(df, npartitions=2, sort=False),
            callback=lambda i, ll: seen.append((i, ll)),
        )
    assert [i for i, _ in seen] == list(range(1, ref.n_iter_ + 1))
    np.testing.assert_allclose([ll for _, ll in seen], ref.log_likelihoods_, rtol=1e-12)
    assert _compare(agg, ref, cl) < 1e-10
    table = agg.annotator_frame()
    assert {"sensitivity", "specificity"} <= set(table.columns)


def test_map_reduce_without_dask_matches_in_memory():
    """The NumPy driver on blocks held in this process (the path every scheduler runs)."""
    df = _table(n_items=300, seed=5)
    cl = CrowdLabels.from_long(df)
    ann_ids, classes = np.sort(cl.annotator_ids), np.sort(cl.classes)
    blocks = [
        encode_partition(
            part,
            item="item",
            annotator="annotator",
            label="label",
            annotator_ids=ann_ids,
            classes=classes,
            index=i,
        )
        for i, part in enumerate([df.iloc[:400], df.iloc[400:800], df.iloc[800:]])
    ]
    # The same blocks from one read: own codes first, then mapped to the table's lists.
    parts = [df.iloc[:400], df.iloc[400:800], df.iloc[800:]]
    local = [
        encode_local(part, item="item", annotator="annotator", label="label", index=i)
        for i, part in enumerate(parts)
    ]
    assert sorted(set().union(*(local_summary(b)["annotators"] for b in local))) == list(ann_ids)
    mapped = [globalize(b, ann_ids, classes) for b in local]
    for a, b in zip(blocks, mapped, strict=True):
        np.testing.assert_array_equal(a.labels.to_dense(), b.labels.to_dense())
        np.testing.assert_array_equal(a.labels.item_ids, b.labels.item_ids)
    ref = DawidSkene().fit(cl)
    ann = pd.Index(cl.annotator_ids).get_indexer(ann_ids)
    for held in (blocks, mapped):
        est = DawidSkene()
        result = fit_blocks(partition_model(est), local_map_reduce(held))
        assert result["n_iter"] == ref.n_iter_
        np.testing.assert_allclose(est.confusion_, ref.confusion_[ann], atol=1e-12)


@pytest.mark.parametrize(
    ("estimator", "match"),
    [
        (GLAD(), r"`estimator` must be one of \['DawidSkene', 'GradedResponse', 'MajorityVote'"),
        (DawidSkene(init="random"), r"`init` must be 'majority_vote'"),
        (DawidSkene(max_iter=-1), r"max_iter"),
    ],
)
def test_unsupported_estimators(estimator, match):
    ddf = dd.from_pandas(_table(n_items=20), npartitions=2, sort=False)
    with pytest.raises(ValueError, match=match):
        DaskAggregator(estimator).fit(ddf)


def test_bad_tables():
    df = _table(n_items=20)
    dup = pd.concat([df, df.iloc[:1]]).sort_values("item", kind="stable")
    with pytest.raises(ValueError, match=r"Each \(item, annotator\) pair must occur once"):
        DaskAggregator(DawidSkene()).fit(dd.from_pandas(dup, npartitions=1, sort=False))
    nan = df.assign(label=df["label"].astype(float))
    nan.iloc[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"Column 'label' \(label\) has 1 missing values"):
        DaskAggregator(DawidSkene()).fit(dd.from_pandas(nan, npartitions=2, sort=False))
    with pytest.raises(ValueError, match=r"No annotator column found"):
        DaskAggregator(DawidSkene()).fit(
            dd.from_pandas(df.rename(columns={"annotator": "who"}), npartitions=2)
        )
    with pytest.raises(TypeError, match=r"`labels` must be a dask DataFrame"):
        DaskAggregator(DawidSkene()).fit(df)


def test_missing_dask_names_the_extra(monkeypatch):
    from crowdmed.aggregation.distributed import import_dask

    monkeypatch.setitem(sys.modules, "dask.dataframe", None)
    with pytest.raises(ImportError, match=r"pip install 'crowdmed\[dask\]'"):
        import_dask()
    with pytest.raises(ImportError, match=r"pip install 'crowdmed\[dask\]'"):
        DaskAggregator(DawidSkene()).fit("labels/")
