"""Truth inference on a label file: what ``crowdmed aggregate`` runs.

:func:`aggregate_file` reads a long or wide label file, fits an aggregator and returns an
:class:`AggregateResult` with the consensus table (item, label, confidence, p_<class>...,
gold), the annotator table and the fit figures.

Examples:
    >>> result = aggregate_file(Path("labels.csv"), method="dawid-skene")  # doctest: +SKIP
    >>> result.consensus.head()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdmed._validation import check_option
from crowdmed.aggregation import Method, make_aggregator
from crowdmed.aggregation.base import BaseAggregator
from crowdmed.data.io import read_labels, read_quiz, read_wide
from crowdmed.data.labels import CrowdLabels
from crowdmed.quality import annotator_table

__all__ = [
    "AggregateResult",
    "InputFormat",
    "OnDuplicate",
    "aggregate_file",
    "annotator_frame",
    "consensus_frame",
    "read_label_file",
]


class InputFormat(str, Enum):
    """Layout of the label file."""

    AUTO = "auto"
    LONG = "long"
    WIDE = "wide"


class OnDuplicate(str, Enum):
    """What to do with repeated (item, annotator) pairs (see ``read_labels``)."""

    ERROR = "error"
    FIRST = "first"
    LAST = "last"
    DROP = "drop"


#: Fitted per-annotator attributes added to the annotator table, and their column names.
#: Model sensitivity/specificity get a prefix because ``annotator_table`` already has
#: ``sensitivity``/``specificity`` columns (from the soft confusion matrices).
_ANNOTATOR_ATTRIBUTES = {
    "sensitivity_": "model_sensitivity",
    "specificity_": "model_specificity",
    "skills_": "skill",
    "weights_": "weight",
    "alphas_": "alpha",
}


def read_label_file(
    path: Path,
    fmt: str = "auto",
    *,
    item_col: str | None = None,
    annotator_col: str | None = None,
    label_col: str | None = None,
    gold_col: str | None = None,
    quiz: Path | None = None,
    on_duplicate: str = "error",
) -> CrowdLabels:
    """Read a long or wide label file (``fmt`` long, wide or auto; see ``crowdmed aggregate``).

    Raises:
        ValueError: For options that do not apply to the layout, or an unreadable file; with
            ``fmt="auto"`` a long file without long columns suggests ``--format wide``.
    """
    layout = check_option(fmt, InputFormat, "--format")
    duplicates = check_option(on_duplicate, OnDuplicate, "--on-duplicate").value
    if layout is InputFormat.WIDE:
        for option, value in (("--annotator-col", annotator_col), ("--label-col", label_col)):
            if value is not None:
                raise ValueError(
                    f"`{option}` applies to long files only; a wide file has one column per "
                    "annotator. Drop it or pass --format long."
                )
        if duplicates != "error":
            raise ValueError(
                "`--on-duplicate` applies to long files only; a wide file has one cell per "
                "(item, annotator) pair."
            )
        cl = read_wide(path, item=item_col, gold=gold_col or "gold")
        if quiz is not None:
            cl = cl.with_quiz_accuracy(read_quiz(quiz, cl.annotator_ids))
        return cl
    if gold_col is not None and gold_col != "gold":
        raise ValueError(
            "`--gold-col` applies to wide files only; in a long file name the gold column "
            f"'gold' (got {gold_col!r})."
        )
    try:
        return read_labels(
            path,
            item=item_col,
            annotator=annotator_col,
            label=label_col,
            quiz=quiz,
            on_duplicate=duplicates,
        )
    except ValueError as exc:
        msg = str(exc)
        if layout is InputFormat.AUTO and ("column found" in msg or "no recognised header" in msg):
            raise ValueError(
                f"{msg} If this is a wide file (one row per item, one column per annotator), "
                "pass --format wide."
            ) from exc
        raise


def consensus_frame(cl: CrowdLabels, agg: BaseAggregator) -> pd.DataFrame:
    """item, label, confidence, p_<class>... and gold (when known) of a fitted aggregator."""
    post = np.asarray(agg.posteriors_, dtype=np.float64)
    frame: dict[str, Any] = {
        "item": cl.item_ids,
        "label": cl.classes[agg.labels_],
        "confidence": post.max(axis=1),
    }
    for k, value in enumerate(cl.classes):
        frame[f"p_{value}"] = post[:, k]
    df = pd.DataFrame(frame)
    if cl.gold is not None:
        known = cl.gold >= 0
        gold = pd.Series(cl.classes[np.maximum(cl.gold, 0)])
        if np.issubdtype(cl.classes.dtype, np.integer):
            gold = gold.astype("Int64")
        df["gold"] = gold.mask(~known)
    return df


def annotator_frame(cl: CrowdLabels, agg: BaseAggregator) -> pd.DataFrame:
    """One row of reliability figures per annotator.

    The aggregator's own per-annotator parameters (sensitivity, specificity, skill, weight,
    alpha) are added when it has them.
    """
    table = annotator_table(cl, agg.posteriors_)
    for attr, column in _ANNOTATOR_ATTRIBUTES.items():
        value = getattr(agg, attr, None)
        if isinstance(value, np.ndarray) and value.shape == (cl.n_annotators,):
            table[column] = value
    return table.reset_index()


@dataclasses.dataclass
class AggregateResult:
    """What :func:`aggregate_file` found.

    Attributes:
        labels: The labels read.
        aggregator: The fitted aggregator.
        method: The method.
        consensus: item, label, confidence, p_<class>..., gold.
        accuracy: Accuracy against the gold labels (``None`` without gold or when clamped).
        n_gold: Number of items with a known gold label.
        fit: n_iter, converged, log_likelihood, used_gold, seconds, warnings.
    """

    labels: CrowdLabels
    aggregator: BaseAggregator
    method: str
    consensus: pd.DataFrame
    accuracy: float | None
    n_gold: int
    fit: dict[str, Any]

    def annotators(self) -> pd.DataFrame:
        """One row per annotator (:func:`annotator_frame`)."""
        return annotator_frame(self.labels, self.aggregator)

    def data(self) -> dict[str, Any]:
        """Counts of items, annotators, classes, labels and gold items."""
        cl = self.labels
        return {
            "n_items": cl.n_items,
            "n_annotators": cl.n_annotators,
            "n_classes": cl.n_classes,
            "n_labels": cl.n_labels,
            "classes": cl.classes,
            "n_gold": self.n_gold,
        }


def make_method(method: str, *, seed: int, max_iter: int | None, tol: float | None) -> Any:
    """The aggregator of ``method`` with EM settings (refused for methods without EM)."""
    m = check_option(method, Method, "--method")
    agg = make_aggregator(m, random_state=seed)
    params = agg.get_params()
    for option, name, value in (("--max-iter", "max_iter", max_iter), ("--tol", "tol", tol)):
        if value is None:
            continue
        if name not in params:
            raise ValueError(
                f"`{option}` does not apply to --method {m.value}; it is not fitted by EM."
            )
        agg.set_params(**{name: value})
    return agg


def aggregate_file(
    path: Path,
    method: str = "dawid-skene",
    *,
    seed: int = 0,
    max_iter: int | None = None,
    tol: float | None = None,
    use_gold: bool = False,
    read: dict[str, Any] | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> AggregateResult:
    """Read a label file and fit an aggregator on it.

    Args:
        path: Label file (see :func:`read_label_file`).
        method: majority-vote, wawa, dawid-skene, one-coin, glad or sens-spec.
        seed: Random state (tie-breaking, random initialisation).
        max_iter: Maximum EM iterations (the method's default when ``None``).
        tol: EM tolerance (the method's default when ``None``).
        use_gold: Clamp gold items to their gold label during the fit.
        read: Keyword arguments of :func:`read_label_file` (fmt, columns, quiz ...).
        callback: Called after each EM iteration with the iteration and log-likelihood.

    Returns:
        The result; warnings of the fit are recorded in ``fit["warnings"]``.

    Raises:
        ValueError: For bad options or data.
    """
    agg = make_method(method, seed=seed, max_iter=max_iter, tol=tol)
    cl = read_label_file(path, **(read or {}))
    has_gold = cl.gold is not None and bool((cl.gold >= 0).any())
    if use_gold and not has_gold:
        raise ValueError(
            "`--use-gold` needs gold labels; the file has no known gold values (add a "
            "'gold' column, -1 or empty for unknown)."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        agg.fit(cl, gold=cl.gold if use_gold else None, callback=callback)
        seconds = time.perf_counter() - start
    accuracy: float | None = None
    n_gold = int((cl.gold >= 0).sum()) if cl.gold is not None else 0
    if cl.gold is not None and n_gold and not use_gold:
        known = cl.gold >= 0
        accuracy = float(np.mean(agg.labels_[known] == cl.gold[known]))
    history = list(getattr(agg, "log_likelihoods_", []) or [])
    fit = {
        "n_iter": getattr(agg, "n_iter_", None),
        "converged": getattr(agg, "converged_", None),
        "log_likelihood": history[-1] if history else None,
        "used_gold": use_gold,
        "seconds": seconds,
        "warnings": [" ".join(str(w.message).split()) for w in caught],
    }
    m = check_option(method, Method, "--method").value
    return AggregateResult(cl, agg, m, consensus_frame(cl, agg), accuracy, n_gold, fit)
