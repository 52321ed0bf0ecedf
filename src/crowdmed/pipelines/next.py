"""Which items to label next: what ``crowdmed next`` runs.

:func:`next_items` reads a long label file and a table of a classifier's predicted
probabilities (``item`` plus one ``p_<class>`` column per class, as written by ``crowdmed
predict`` and ``crowdmed aggregate``), scores every item of the probability table with
:func:`crowdmed.quality.relabel_scores` (items without labels included) and returns the
``budget`` items to label next, best first.

Examples:
    >>> plan = next_items(Path("labels.csv"), Path("probs.csv"), budget=50)  # doctest: +SKIP
    >>> plan.table.head()  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdmed._tables import read_table
from crowdmed._text import short_list
from crowdmed._validation import check_option
from crowdmed.data.io import read_labels
from crowdmed.data.labels import CrowdLabels
from crowdmed.quality.relabel import RelabelMethod, relabel_scores

__all__ = ["NextPlan", "next_items", "plan_next", "read_probs"]

#: Tolerance on "each row of the probability table sums to 1" (CSV files round the values).
PROB_SUM_ATOL = 1e-3
_PREFIX = "p_"


@dataclass
class NextPlan:
    """The items to label next.

    Attributes:
        table: One row per chosen item, best first: ``rank``, ``item``, ``score``,
            ``n_labels``, ``consensus`` (current best guess), ``confidence`` (its
            probability) and, with ``assign``, ``annotator``.
        method: The scoring method.
        data: Counts: items, labelled items, annotators, labels, classes, eligible items.
        warnings: Warnings raised while scoring, as text.
    """

    table: pd.DataFrame
    method: str
    data: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def read_probs(path: Path) -> pd.DataFrame:
    """Read a probability table: an ``item`` column and one ``p_<class>`` column per class.

    Returns:
        Float frame indexed by the item ids (as text), one column per class (prefix removed).

    Raises:
        ValueError: A missing item or probability column, a repeated item, a value that is not
            a number in [0, 1], or a row that does not sum to 1.
    """
    df = read_table(path, text_columns=["item"], what="Probability file")
    cols = {str(c).strip().lower(): c for c in df.columns}
    if "item" not in cols:
        raise ValueError(
            f"`--probs` must have an 'item' column; got columns {short_list(list(df.columns))}. "
            "Write it with one row per item: item,p_<class>,..."
        )
    pcols = [c for c in df.columns if str(c).startswith(_PREFIX)]
    if not pcols:
        raise ValueError(
            f"`--probs` must have one p_<class> column per class; got columns "
            f"{short_list(list(df.columns))}."
        )
    items = df[cols["item"]].astype(str).str.strip()
    dup = items[items.duplicated()].unique()
    if len(dup):
        raise ValueError(
            f"`--probs` must have one row per item; got repeated items {short_list(dup)}."
        )
    values = df[pcols].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise ValueError(
            f"`--probs` must hold probabilities in [0, 1]; got {df[pcols].iloc[row].tolist()} "
            f"for item {items.iloc[row]!r}."
        )
    sums = values.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > PROB_SUM_ATOL)
    if off.size:
        raise ValueError(
            f"`--probs` rows must sum to 1; got {sums[off[0]]:.6g} for item "
            f"{items.iloc[off[0]]!r} ({off.size} rows off). Normalise each row."
        )
    classes = [str(c)[len(_PREFIX) :] for c in pcols]
    return pd.DataFrame(values / sums[:, None], index=pd.Index(items, name="item"), columns=classes)


def _align(cl: CrowdLabels, probs: pd.DataFrame) -> tuple[CrowdLabels, np.ndarray]:
    """Labels re-indexed on the probability table's items and classes."""
    label_items = pd.Index(cl.item_ids.astype(str))
    missing = label_items.difference(probs.index)
    if len(missing):
        raise ValueError(
            f"`--probs` must have a row for every labelled item; got none for items "
            f"{short_list(list(missing))} ({len(missing)} of {len(label_items)}). Predict "
            "every item of LABELS."
        )
    label_classes = [str(c) for c in cl.classes]
    columns = [f"{_PREFIX}{c}" for c in probs.columns]
    absent = [c for c in label_classes if c not in probs.columns]
    if absent:
        raise ValueError(
            f"`--probs` must have a p_<class> column for every class of LABELS; got none for "
            f"{short_list(absent)} (columns {short_list(columns)})."
        )
    extra = [c for c in probs.columns if c not in label_classes]
    if extra:
        every = ",".join(label_classes + extra)
        raise ValueError(
            f"`--probs` has columns for classes that LABELS neither uses nor declares: "
            f"{short_list([f'{_PREFIX}{c}' for c in extra])}; declare every class with "
            f"--classes {every}, or drop those columns."
        )
    class_order = label_classes
    item_pos = probs.index.get_indexer(label_items)
    aligned = CrowdLabels.from_triplets(
        item_pos[cl.items],
        cl.annotators,
        cl.labels,
        n_items=len(probs),
        n_annotators=cl.n_annotators,
        n_classes=len(class_order),
        item_ids=probs.index.to_numpy(),
        annotator_ids=cl.annotator_ids,
        classes=np.array(class_order, dtype=object),
    )
    return aligned, probs[class_order].to_numpy()


def plan_next(
    labels: CrowdLabels,
    probs: pd.DataFrame,
    *,
    budget: int,
    method: str = "crowdmed",
    assign: bool = False,
) -> NextPlan:
    """Choose the ``budget`` items to label next (see :func:`next_items`).

    Args:
        labels: The labels given so far.
        probs: Output of :func:`read_probs`: one row per item to consider.
        budget: Number of items to return (fewer when fewer are eligible).
        method: ``"crowdmed"`` or ``"activelab"``.
        assign: Also choose the annotator of each item.

    Returns:
        The plan.

    Raises:
        ValueError: A budget below 1, or a probability table that does not match the labels.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"`--budget` must be an integer >= 1; got {budget!r}.")
    m = check_option(method, RelabelMethod, "--method")
    cl, pp = _align(labels, probs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = relabel_scores(cl, pp, method=m, assign=assign)
    chosen = scores.select(int(budget))
    n_labels = cl.labels_per_item()
    best = scores.posteriors.argmax(axis=1)
    table = pd.DataFrame(
        {
            "rank": np.arange(1, len(chosen) + 1),
            "item": cl.item_ids[chosen],
            "score": scores.scores[chosen],
            "n_labels": n_labels[chosen],
            "consensus": cl.classes[best[chosen]],
            "confidence": scores.posteriors[chosen, best[chosen]],
        }
    )
    if assign:
        table["annotator"] = cl.annotator_ids[scores.annotator[chosen]]
    data = {
        "n_items": cl.n_items,
        "n_labelled_items": int((n_labels > 0).sum()),
        "n_annotators": cl.n_annotators,
        "n_labels": cl.n_labels,
        "n_classes": cl.n_classes,
        "n_eligible": int(scores.eligible.sum()),
        "temperature": scores.temperature,
    }
    return NextPlan(table, m.value, data, [str(w.message) for w in caught])


def next_items(
    labels_path: Path,
    probs_path: Path,
    *,
    budget: int,
    method: str = "crowdmed",
    assign: bool = False,
    read: Mapping[str, Any] | None = None,
) -> NextPlan:
    """Read a label file and a probability table and choose the items to label next.

    Args:
        labels_path: Long label file (``item, annotator, label``; CSV, TSV or Parquet).
        probs_path: Probability table: ``item`` and one ``p_<class>`` column per class; its
            items are the candidates (items without any label included). Every class of the
            labels (declared with ``read["classes"]`` or used) needs a column, and every
            column a class.
        budget: Number of items to return.
        method: ``"crowdmed"`` or ``"activelab"``.
        assign: Also choose the annotator: the most reliable one who has not labelled the item.
        read: Options of :func:`crowdmed.data.io.read_labels` for the label file (``item``,
            ``annotator``, ``label``, ``classes``, ``on_duplicate``).

    Returns:
        The plan; see :class:`NextPlan`.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"`--budget` must be an integer >= 1; got {budget!r}.")
    return plan_next(
        read_labels(labels_path, **dict(read or {})), read_probs(probs_path), budget=budget,
        method=method, assign=assign,
    )  # fmt: skip
