"""Fitting on a label table held as a Dask DataFrame (partitioned Parquet, many machines)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from crowdmed._params import ParamsMixin
from crowdmed._tables import find_column
from crowdmed.aggregation.base import BaseAggregator
from crowdmed.aggregation.distributed._mapreduce import (
    MapReduce,
    Stats,
    add_stats,
    consensus_frame,
    consensus_meta,
    encode_local,
    encode_partition,
    fit_blocks,
    globalize,
    item_hashes,
    local_summary,
    partition_model,
)
from crowdmed.exceptions import NotFittedError

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

__all__ = ["DaskAggregator", "import_dask", "read_parquet_labels"]

#: Partial results summed per task of the reduction tree.
_FAN_IN = 8
DASK_HINT = "pip install 'crowdmed[dask]'"


def import_dask() -> Any:
    """Import ``dask.dataframe``, or raise ``ImportError`` naming the extra to install."""
    try:
        import dask.dataframe as dd
    except ImportError as exc:
        raise ImportError(f"Fitting a partitioned label table needs Dask: {DASK_HINT}.") from exc
    return dd


def read_parquet_labels(path: str | os.PathLike[str]) -> Any:
    """Open a (partitioned) Parquet label table lazily as a Dask DataFrame.

    Args:
        path: A Parquet file, a folder of Parquet files (e.g. ``part.0.parquet, ...``) or a
            glob; one row per annotation.

    Returns:
        The Dask DataFrame (nothing is read yet).
    """
    dd = import_dask()
    return dd.read_parquet(os.fspath(path))


class DaskAggregator(ParamsMixin):
    """Majority vote, Dawid–Skene, one-coin or graded response fitted on Dask by map-reduce EM.

    The labels are a long table (one row per annotation) held as a Dask DataFrame, e.g.
    partitioned Parquet read by :func:`read_parquet_labels`. The data are read once: each
    partition encodes itself with codes of its own and reports its annotators, classes and
    items; the driver unites them, checks that every item's labels sit in one partition
    (shuffling by item when not) and the partitions map their codes to the table's, kept in
    the workers' memory with ``persist=True``. Every EM iteration is one map-reduce pass: each
    partition computes its
    items' E-step and its share of the M-step's sums, the scheduler adds them up and the
    driver runs the M-step (see :mod:`crowdmed.aggregation.distributed`). The fit runs on the
    current Dask scheduler: a ``distributed.Client`` when one is active.

    The result equals the in-memory fit of the same estimator (posteriors within about
    1e-12), with two differences: annotators are numbered in sorted order of their ids, and
    with a seed ties between classes are broken per partition (lowest class index with
    ``random_state=None``, as in memory). ``init="random"`` and gold labels are not available.

    Args:
        estimator: A :class:`~crowdmed.aggregation.MajorityVote`,
            :class:`~crowdmed.aggregation.DawidSkene`,
            :class:`~crowdmed.aggregation.OneCoinDawidSkene` or (ordinal)
            :class:`~crowdmed.aggregation.GradedResponse`; its hyperparameters are used, it is
            not modified.
        item: Name of the item column (detected among common aliases when omitted).
        annotator: Name of the annotator column (detected when omitted).
        label: Name of the label column (detected when omitted).
        persist: Keep the encoded partitions in the workers' memory (about 35 bytes per
            label, shared among the workers). ``False`` re-reads and re-encodes every
            partition on each pass, so a worker holds only the partitions it is working on.

    Attributes:
        consensus_ (dask.dataframe.DataFrame): Lazy table ``item, label, confidence,
            p_<class>...``, one row per item, partitioned like the input.
        confusion_ (ndarray of shape (n_annotators, n_classes, n_classes)): See conventions.
        priors_ (ndarray of shape (n_classes,)): Class prior (EM models).
        skills_ (ndarray of shape (n_annotators,)): One-coin skills (one-coin only).
        thresholds_, locations_, offsets_, noise_ (ndarray): Graded-response parameters (see
            :class:`~crowdmed.aggregation.GradedResponse`; graded response only).
        annotator_ids_ (ndarray of shape (n_annotators,)): Sorted annotator ids.
        classes_ (ndarray of shape (n_classes,)): Sorted class values.
        n_items_, n_annotators_, n_classes_, n_labels_ (int): Sizes.
        labels_per_annotator_ (ndarray of shape (n_annotators,)): Labels of each annotator.
        log_likelihoods_ (list[float]): As in the in-memory estimator.
        n_iter_ (int): Number of EM iterations run (0 for majority vote).
        converged_ (bool): Whether ``tol`` was reached.
        n_partitions_ (int): Number of partitions fitted.
        shuffled_ (bool): Whether the table was shuffled by item (an item's labels were
            spread over several partitions).

    Examples:
        >>> import dask.dataframe as dd, pandas as pd
        >>> from crowdmed.aggregation import DawidSkene
        >>> df = pd.DataFrame({"item": [1, 1, 1, 2, 2, 2, 3, 3, 3],
        ...                    "annotator": ["a", "b", "c"] * 3,
        ...                    "label": [0, 0, 1, 1, 1, 1, 0, 1, 0]})
        >>> ddf = dd.from_pandas(df, npartitions=2, sort=False)
        >>> agg = DaskAggregator(DawidSkene()).fit(ddf)
        >>> agg.shuffled_  # item 2 was split over the two partitions
        True
        >>> agg.consensus_.compute().sort_values("item")["label"].tolist()
        [0, 1, 0]
    """

    def __init__(
        self,
        estimator: BaseAggregator,
        *,
        item: str | None = None,
        annotator: str | None = None,
        label: str | None = None,
        persist: bool = True,
    ) -> None:
        self.estimator = estimator
        self.item = item
        self.annotator = annotator
        self.label = label
        self.persist = persist

    def fit(
        self,
        labels: Any,
        *,
        callback: Callable[[int, float], None] | None = None,
    ) -> Self:
        """Fit the model to a partitioned label table.

        Args:
            labels: A Dask DataFrame with one row per annotation, or the path of a
                (partitioned) Parquet table.
            callback: Called after every EM iteration as ``callback(iteration,
                log_likelihood)``.

        Returns:
            The fitted aggregator.

        Raises:
            ImportError: Dask is not installed.
            ValueError: Missing columns or values, repeated ``(item, annotator)`` pairs, an
                unsupported estimator.
        """
        dd = import_dask()  # first: names the extra when Dask is missing
        import dask

        est = type(self.estimator)(**self.estimator.get_params())
        model = partition_model(est)
        if isinstance(labels, str | os.PathLike):
            labels = read_parquet_labels(labels)
        if not isinstance(labels, dd.DataFrame):
            raise TypeError(
                f"`labels` must be a dask DataFrame or a Parquet path; got "
                f"{type(labels).__name__}. Use dask.dataframe.from_pandas for a pandas table."
            )
        # A shuffle (items spread over partitions) runs on the scheduler in use.
        with dask.config.set({"dataframe.shuffle.method": _shuffle_method()}):
            return self._fit(labels, model, est, callback)

    def _fit(
        self,
        labels: Any,
        model: Any,
        est: BaseAggregator,
        callback: Callable[[int, float], None] | None,
    ) -> Self:
        dd = import_dask()
        import dask

        c_item = find_column(labels, "item", self.item)
        c_ann = find_column(labels, "annotator", self.annotator)
        c_lab = find_column(labels, "label", self.label)
        ddf = labels[[c_item, c_ann, c_lab]]

        # One read of the data: each partition encodes itself with codes of its own and reports
        # its missing values, annotators, labels and item range.
        local = [
            dask.delayed(encode_local)(part, item=c_item, annotator=c_ann, label=c_lab, index=i)
            for i, part in enumerate(ddf.to_delayed())
        ]
        if self.persist:
            local = list(dask.persist(*local))
        summaries = dask.compute(*[dask.delayed(local_summary)(b) for b in local])
        for role, col in (("item", c_item), ("annotator", c_ann), ("label", c_lab)):
            n_missing = sum(x["missing"][col] for x in summaries)
            if n_missing:
                raise ValueError(
                    f"Column {col!r} ({role}) has {n_missing} missing values; drop those rows "
                    "or fill them."
                )
        ann_ids = _sorted_ids(_union([x["annotators"] for x in summaries]))
        classes = _sorted_classes(_union([x["labels"] for x in summaries]))
        ranges = pd.DataFrame(
            {
                "lo": [x["range"][0] for x in summaries],
                "hi": [x["range"][1] for x in summaries],
                "n": [x["n"] for x in summaries],
            },
            dtype=object,
        )
        # An item's labels must sit in one partition: sorted, non-overlapping id ranges show it
        # at once; otherwise the partitions' item hashes are compared on the driver.
        self.shuffled_ = not _disjoint(ranges) and _items_split(local)
        ann_d, cls_d = dask.delayed(ann_ids), dask.delayed(classes)
        if self.shuffled_:  # an item's labels in several partitions: shuffle, encode again
            blocks = [
                dask.delayed(encode_partition)(
                    part,
                    item=c_item,
                    annotator=c_ann,
                    label=c_lab,
                    annotator_ids=ann_d,
                    classes=cls_d,
                    index=i,
                )
                for i, part in enumerate(ddf.shuffle(on=c_item).to_delayed())
            ]
        else:  # the codes of the first read, mapped to the table's annotators and classes
            blocks = [dask.delayed(globalize)(b, ann_d, cls_d) for b in local]
        del local  # released once the blocks are built
        if self.persist:
            blocks = list(dask.persist(*blocks))

        result = fit_blocks(model, _dask_map_reduce(blocks), callback=callback)

        self.n_partitions_ = len(blocks)
        self.annotator_ids_ = ann_ids
        self.classes_ = classes
        self.n_items_ = int(result["n_items"])
        self.n_labels_ = int(result["n_labels"])
        self.n_annotators_ = len(ann_ids)
        self.n_classes_ = len(classes)
        self.labels_per_annotator_ = np.asarray(result["label_counts"]).sum(axis=1)
        self.log_likelihoods_ = result["log_likelihoods"]
        self.n_iter_ = result["n_iter"]
        self.converged_ = result["converged"]
        self._final_stats = result["final_stats"]
        for name, value in model.fitted_attributes().items():
            setattr(self, name, value)
        seed = _seed(getattr(est, "random_state", None))
        meta = consensus_meta(classes, ddf[c_item].dtype)
        snapshot = dask.delayed(model.snapshot())
        frames = [
            dask.delayed(consensus_frame)(
                block, snapshot, from_start=result["from_start"], seed=seed, meta=meta
            )
            for block in blocks
        ]
        self.consensus_ = dd.from_delayed(frames, meta=meta, verify_meta=False)
        return self

    def annotator_frame(self) -> pd.DataFrame:
        """Reliability figures of each annotator against the fitted posteriors.

        Returns:
            One row per annotator: ``annotator, n_labels, soft_accuracy`` (expected share of
            labels equal to the true class), ``sensitivity, specificity`` (``K = 2``, class 1
            positive; from the soft confusion counts), ``skill`` (one-coin), ``offset`` and
            ``noise`` (graded response).
        """
        if not hasattr(self, "consensus_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first."
            )
        counts = np.asarray(self._final_stats["counts"])
        n = self.labels_per_annotator_
        with np.errstate(invalid="ignore", divide="ignore"):
            columns: dict[str, Any] = {
                "annotator": self.annotator_ids_,
                "n_labels": n,
                "soft_accuracy": np.trace(counts, axis1=1, axis2=2) / n,
            }
            if self.n_classes_ == 2:
                rows = counts.sum(axis=2)
                columns["sensitivity"] = counts[:, 1, 1] / rows[:, 1]
                columns["specificity"] = counts[:, 0, 0] / rows[:, 0]
        for attr, column in (("skills_", "skill"), ("offsets_", "offset"), ("noise_", "noise")):
            if hasattr(self, attr):
                columns[column] = getattr(self, attr)
        return pd.DataFrame(columns)


# ---------------------------------------------------------------------- helpers
def _disjoint(ranges: pd.DataFrame) -> bool:
    """Whether the partitions' item ranges do not overlap (so no item spans two)."""
    r = ranges[ranges["n"] > 0]
    if r["lo"].isna().any():
        return False
    try:
        r = r.sort_values("lo", kind="stable")
        return bool((r["hi"].to_numpy()[:-1] < r["lo"].to_numpy()[1:]).all())
    except TypeError:
        return False


def _union(arrays: list[np.ndarray]) -> np.ndarray:
    """Distinct values of several arrays (first appearance order)."""
    arrays = [a for a in arrays if len(a)]
    if not arrays:
        return np.array([])
    return np.asarray(pd.unique(pd.Series(np.concatenate(arrays))))


def _items_split(local: list[Any]) -> bool:
    """Whether some item has labels in more than one partition (hashes of the item ids)."""
    import dask

    hashes = dask.compute(*[dask.delayed(item_hashes)(b) for b in local])
    every = np.concatenate([np.asarray(h, dtype=np.uint64) for h in hashes])
    srt = np.sort(every)
    # A hash collision between two items only costs an unneeded shuffle.
    return bool((srt[1:] == srt[:-1]).any())


def _sorted_ids(ids: np.ndarray) -> np.ndarray:
    try:
        return np.sort(ids)
    except TypeError:
        return ids[np.argsort(ids.astype(str), kind="stable")]


def _sorted_classes(values: np.ndarray) -> np.ndarray:
    try:
        return np.sort(values)
    except TypeError as exc:
        raise ValueError(
            "Labels mix types that cannot be ordered (e.g. numbers and text); got "
            f"{values[:5].tolist()}. Make them one type."
        ) from exc


def _shuffle_method() -> str:
    """``"p2p"`` on a distributed client, ``"tasks"`` on the local schedulers."""
    import dask

    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):  # not installed, or no client
        return "tasks"
    return "p2p" if dask.base.get_scheduler() == client.get else "tasks"


def _seed(random_state: Any) -> int | None:
    if random_state is None:
        return None
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    return int(random_state)


def _dask_map_reduce(blocks: list[Any]) -> MapReduce:
    """A ``map_reduce`` over Dask-held blocks: a tree of sums, computed on the scheduler."""
    import dask

    def run(function: Callable[..., Stats], *args: Any) -> Stats:
        shared = [dask.delayed(a) for a in args]  # one key each: sent once per worker
        parts = [dask.delayed(function)(block, *shared) for block in blocks]
        while len(parts) > 1:
            parts = [
                dask.delayed(add_stats)(*parts[i : i + _FAN_IN])
                for i in range(0, len(parts), _FAN_IN)
            ]
        (total,) = dask.compute(parts[0])
        return total

    return run
