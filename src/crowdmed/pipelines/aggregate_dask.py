"""``crowdmed aggregate --scheduler``: truth inference on a partitioned Parquet table with Dask.

:func:`aggregate_dask` connects to a Dask scheduler (``"local"`` starts a ``LocalCluster`` on
this machine), fits majority vote, Dawid–Skene or one-coin with
:class:`~crowdmed.aggregation.distributed.DaskAggregator` and returns a
:class:`DaskAggregateResult`; :func:`write_consensus` writes the consensus table, as one file
gathered on this machine (CSV, TSV) or as a Parquet folder written by the workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from crowdmed._validation import check_option
from crowdmed.aggregation import Method

__all__ = [
    "DASK_METHODS",
    "DaskAggregateResult",
    "aggregate_dask",
    "connect",
    "write_consensus",
]

#: Methods with a partitioned fit.
DASK_METHODS = (Method.MAJORITY_VOTE, Method.DAWID_SKENE, Method.ONE_COIN)
DASK_HINT = "pip install 'crowdmed[dask]'"


@contextlib.contextmanager
def connect(scheduler: str) -> Iterator[Any]:
    """A ``distributed.Client`` for ``scheduler``, closed on exit.

    Args:
        scheduler: ``"local"`` (a ``LocalCluster`` with one single-threaded worker process
            per core) or the address of a running scheduler (``tcp://host:8786``).

    Raises:
        ImportError: Dask is not installed.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError(f"`--scheduler` needs Dask: {DASK_HINT}.") from exc
    # The scheduler of a local cluster logs each shuffle (items spread over partitions) as a
    # warning; they are routine here.
    shuffle_log = logging.getLogger("distributed.shuffle")
    level = shuffle_log.level
    shuffle_log.setLevel(logging.ERROR)
    try:
        if scheduler == "local":
            with (
                LocalCluster(
                    threads_per_worker=1, processes=True, dashboard_address=None
                ) as cluster,
                Client(cluster) as client,
            ):
                yield client
        else:
            with Client(scheduler) as client:
                yield client
    finally:
        shuffle_log.setLevel(level)


@dataclasses.dataclass
class _Sizes:
    n_items: int
    n_annotators: int
    n_classes: int
    n_labels: int


@dataclasses.dataclass
class DaskAggregateResult:
    """What :func:`aggregate_dask` found.

    Attributes:
        aggregator: The fitted :class:`~crowdmed.aggregation.distributed.DaskAggregator`.
        method: The method.
        consensus: Lazy Dask DataFrame item, label, confidence, p_<class>...
        fit: n_iter, converged, log_likelihood, used_gold, seconds, warnings, n_partitions.
        accuracy: Always ``None`` (gold labels are not read on this path).
        n_gold: Always 0.
    """

    aggregator: Any
    method: str
    consensus: Any
    fit: dict[str, Any]
    accuracy: float | None = None
    n_gold: int = 0

    @property
    def labels(self) -> _Sizes:
        """Sizes of the label table (the labels themselves stay on the workers)."""
        a = self.aggregator
        return _Sizes(a.n_items_, a.n_annotators_, a.n_classes_, a.n_labels_)

    def annotators(self) -> pd.DataFrame:
        """One row per annotator (``DaskAggregator.annotator_frame``)."""
        return self.aggregator.annotator_frame()

    def data(self) -> dict[str, Any]:
        """Counts of items, annotators, classes, labels and gold items."""
        a = self.aggregator
        return {
            "n_items": a.n_items_,
            "n_annotators": a.n_annotators_,
            "n_classes": a.n_classes_,
            "n_labels": a.n_labels_,
            "classes": a.classes_,
            "n_gold": 0,
            "n_partitions": a.n_partitions_,
            "shuffled": a.shuffled_,
        }


def aggregate_dask(
    path: Path,
    method: str = "dawid-skene",
    *,
    seed: int = 0,
    max_iter: int | None = None,
    tol: float | None = None,
    item_col: str | None = None,
    annotator_col: str | None = None,
    label_col: str | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> DaskAggregateResult:
    """Fit an aggregator on a (partitioned) Parquet label table on the current Dask client.

    Args:
        path: A Parquet file or folder; it must be readable by every worker.
        method: majority-vote, dawid-skene or one-coin.
        seed: Random state (tie-breaking, per partition).
        max_iter: Maximum EM iterations (the method's default when ``None``).
        tol: EM tolerance (the method's default when ``None``).
        item_col: Item column (detected when omitted).
        annotator_col: Annotator column (detected when omitted).
        label_col: Label column (detected when omitted).
        callback: Called after each EM iteration with the iteration and log-likelihood.

    Returns:
        The result; the consensus is computed when written.

    Raises:
        ImportError: Dask is not installed.
        ValueError: Another method, or bad data.
    """
    from crowdmed.aggregation.distributed import DaskAggregator, read_parquet_labels
    from crowdmed.pipelines.aggregate import make_method

    m = check_option(method, Method, "--method")
    if m not in DASK_METHODS:
        names = ", ".join(x.value for x in DASK_METHODS)
        raise ValueError(
            f"`--method` must be one of {names} with --scheduler; got {m.value}. Fit other "
            "methods in memory (without --scheduler)."
        )
    agg = make_method(m.value, seed=seed, max_iter=max_iter, tol=tol)
    dask_agg = DaskAggregator(agg, item=item_col, annotator=annotator_col, label=label_col)
    table = read_parquet_labels(path)
    notes = []
    if any(str(c).lower() in ("gold", "quiz_accuracy") for c in table.columns):
        notes.append(
            "The gold and quiz_accuracy columns are not read with --scheduler; the consensus "
            "is not scored against gold."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        dask_agg.fit(table, callback=callback)
        seconds = time.perf_counter() - start
    history = list(dask_agg.log_likelihoods_)
    fit = {
        "n_iter": dask_agg.n_iter_,
        "converged": dask_agg.converged_,
        "log_likelihood": history[-1] if history else None,
        "used_gold": False,
        "seconds": seconds,
        "warnings": notes + [" ".join(str(w.message).split()) for w in caught],
        "n_partitions": dask_agg.n_partitions_,
    }
    return DaskAggregateResult(dask_agg, m.value, dask_agg.consensus_, fit)


def write_consensus(consensus: Any, path: Path) -> None:
    """Write the lazy consensus table, atomically.

    ``.csv``/``.tsv`` (optionally ``.gz``) gather the table on this machine (one row per item)
    and write one file; any other name becomes a Parquet folder written by the workers, one
    file per partition (into a temporary folder next to ``path``, renamed when complete).

    Args:
        consensus: Dask DataFrame from :func:`aggregate_dask`.
        path: Destination; must not exist as a folder.
    """
    from crowdmed._tables import table_suffix
    from crowdmed.data.io import write_table

    if table_suffix(path) in (".csv", ".tsv", ".tab"):
        frame = consensus.compute()
        write_table(frame.reset_index(drop=True), path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        consensus.to_parquet(os.fspath(tmp), write_index=False)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes an owner-only folder
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
