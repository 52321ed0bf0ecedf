"""Continuous labels (measurements, scores) and the base class of their aggregators."""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from crowdmed._params import ParamsMixin
from crowdmed._validation import check_params, is_frame
from crowdmed.exceptions import NotFittedError

if TYPE_CHECKING:
    import pandas as pd

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

__all__ = ["BaseContinuousAggregator", "ContinuousLabels", "check_continuous"]

#: Column names accepted for the value in a long table, in order of preference.
_VALUE_COLUMNS = ("label", "value", "answer")


def _few(values: Any, limit: int = 5) -> str:
    items = [str(v) for v in list(values)[:limit]]
    more = len(values) - limit
    return "[" + ", ".join(items) + (f", … +{more}" if more > 0 else "") + "]"


@dataclass(frozen=True)
class ContinuousLabels:
    """Continuous readings of many items by many annotators, as COO triplets.

    Attributes:
        items: Integer array of shape ``(n_labels,)``: item index in ``0..n_items-1``.
        annotators: Integer array of shape ``(n_labels,)``: annotator index.
        values: Float array of shape ``(n_labels,)``: the readings (finite).
        item_ids: Ids of the items, shape ``(n_items,)``.
        annotator_ids: Ids of the annotators, shape ``(n_annotators,)``.
    """

    items: np.ndarray
    annotators: np.ndarray
    values: np.ndarray
    item_ids: np.ndarray
    annotator_ids: np.ndarray

    @property
    def n_items(self) -> int:
        """Number of items."""
        return int(self.item_ids.size)

    @property
    def n_annotators(self) -> int:
        """Number of annotators."""
        return int(self.annotator_ids.size)

    @property
    def n_labels(self) -> int:
        """Number of readings."""
        return int(self.values.size)

    def to_dense(self) -> np.ndarray:
        """Float array of shape ``(n_items, n_annotators)``; ``NaN`` marks a missing reading."""
        out = np.full((self.n_items, self.n_annotators), np.nan)
        out[self.items, self.annotators] = self.values
        return out

    def per_item(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Sum of ``weights`` (one per reading; ones when omitted) per item."""
        w = np.ones(self.n_labels) if weights is None else weights
        return np.bincount(self.items, weights=w, minlength=self.n_items)

    def per_annotator(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Sum of ``weights`` (one per reading; ones when omitted) per annotator."""
        w = np.ones(self.n_labels) if weights is None else weights
        return np.bincount(self.annotators, weights=w, minlength=self.n_annotators)


def check_continuous(labels: Any, *, annotator_ids: Any = None) -> ContinuousLabels:
    """Turn any accepted continuous input into validated :class:`ContinuousLabels`.

    Args:
        labels: A :class:`ContinuousLabels`; a float array of shape ``(n_items,
            n_annotators)`` where ``NaN`` marks a missing reading; or a long ``DataFrame``
            with columns ``item``, ``annotator`` and the value in ``label``, ``value`` or
            ``answer``.
        annotator_ids: Annotator ids to index a long table by (those of a fitted model);
            the table's own sorted ids when omitted.

    Returns:
        The readings as COO triplets.

    Raises:
        ValueError: Infinite values, duplicated ``(item, annotator)`` pairs, items without a
            reading, a wrong shape or missing columns.
        TypeError: Input of an unsupported type.

    Examples:
        >>> cl = check_continuous(np.array([[1.0, np.nan], [2.0, 3.5]]))
        >>> cl.items, cl.annotators, cl.values
        (array([0, 1, 1]), array([0, 0, 1]), array([1. , 2. , 3.5]))
    """
    if isinstance(labels, ContinuousLabels):
        cl = labels
    elif is_frame(labels):
        cl = _from_frame(labels, annotator_ids)
    elif isinstance(labels, (np.ndarray, list, tuple)):
        arr = np.asarray(labels, dtype=np.float64)
        if arr.ndim != 2 or arr.size == 0:
            raise ValueError(
                "`labels` must be a non-empty float array of shape (n_items, n_annotators) with "
                f"NaN for a missing reading; got shape {arr.shape}."
            )
        if np.isinf(arr).any():
            raise ValueError("`labels` must be finite or NaN (missing); got infinite values.")
        items, annotators = np.nonzero(~np.isnan(arr))
        cl = ContinuousLabels(
            items.astype(np.int64),
            annotators.astype(np.int64),
            arr[items, annotators],
            np.arange(arr.shape[0]),
            np.arange(arr.shape[1]),
        )
    else:
        raise TypeError(
            "`labels` must be a float array of shape (n_items, n_annotators), a long DataFrame "
            f"or ContinuousLabels; got {type(labels).__name__}."
        )
    per_item = cl.per_item()
    if (per_item == 0).any():
        raise ValueError(
            f"Items {_few(cl.item_ids[per_item == 0])} have no readings; drop them before "
            "aggregating (a row of NaN in the dense view)."
        )
    return cl


def _from_frame(df: pd.DataFrame, known_annotators: Any = None) -> ContinuousLabels:
    import pandas as pd

    value_col = next((c for c in _VALUE_COLUMNS if c in df.columns), None)
    if "item" not in df.columns or "annotator" not in df.columns or value_col is None:
        raise ValueError(
            "`labels` must have the columns 'item', 'annotator' and one of "
            f"{list(_VALUE_COLUMNS)}; got {list(df.columns)}."
        )
    values = pd.to_numeric(df[value_col], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"Column {value_col!r} must hold finite numbers; rows {_few(rows)} do not. Drop "
            "missing readings from a long table."
        )
    items, item_ids = pd.factorize(df["item"], sort=True)
    annotator_ids: np.ndarray
    if known_annotators is None:
        annotators, found = pd.factorize(df["annotator"], sort=True)
        annotator_ids = np.asarray(found)
    else:
        annotator_ids = np.asarray(known_annotators)
        annotators = pd.Index(annotator_ids).get_indexer(df["annotator"])
        if (annotators < 0).any():
            unknown = pd.unique(df["annotator"].to_numpy()[annotators < 0])
            raise ValueError(
                f"`labels` must come from the annotators seen in fit; got unknown annotators "
                f"{_few(unknown)}."
            )
    pair = items.astype(np.int64) * max(len(annotator_ids), 1) + annotators
    if np.unique(pair).size != pair.size:
        dup = df.loc[pd.Series(pair).duplicated().to_numpy(), ["item", "annotator"]]
        raise ValueError(
            f"Each (item, annotator) pair must occur once; got repeats such as "
            f"{_few([tuple(r) for r in dup.itertuples(index=False)], 3)}. Keep one reading per "
            "pair (e.g. the last)."
        )
    return ContinuousLabels(
        items.astype(np.int64),
        annotators.astype(np.int64),
        values,
        np.asarray(item_ids),
        np.asarray(annotator_ids),
    )


class BaseContinuousAggregator(ParamsMixin, ABC):
    """Common API of the continuous truth-inference estimators.

    ``fit`` returns ``self`` and sets ``labels_`` (the consensus value of every item, float),
    ``n_iter_``, ``converged_`` and ``log_likelihoods_``; :meth:`predict` gives the consensus
    of new items read by the annotators seen in ``fit``.
    """

    _parameter_constraints: ClassVar[dict[str, Callable[[Any], str | None]]] = {}
    labels_: np.ndarray

    def fit(self, labels: Any) -> Self:
        """Fit the model to the annotators' readings.

        Args:
            labels: A float array of shape ``(n_items, n_annotators)`` where ``NaN`` marks a
                missing reading, a long ``DataFrame`` (``item, annotator, label``) or
                :class:`ContinuousLabels`.

        Returns:
            The fitted estimator.
        """
        check_params(self, self._parameter_constraints)
        cl = check_continuous(labels)
        self.n_items_ = cl.n_items
        self.n_annotators_ = cl.n_annotators
        self.item_ids_ = cl.item_ids
        self.annotator_ids_ = cl.annotator_ids
        self._fit(cl)
        return self

    def fit_predict(self, labels: Any) -> np.ndarray:
        """Fit and return ``labels_``, shape ``(n_items,)``.

        Args:
            labels: See :meth:`fit`.
        """
        return self.fit(labels).labels_

    @abstractmethod
    def _fit(self, cl: ContinuousLabels) -> None:
        """Set ``labels_`` and the model's fitted attributes."""

    def _check_is_fitted(self) -> None:
        if not hasattr(self, "labels_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first."
            )

    def predict(self, labels: Any) -> np.ndarray:
        """Consensus values of new items read by the annotators seen in ``fit``.

        Args:
            labels: Readings of new items, in any form accepted by :meth:`fit`, with the
                annotator columns of the fit.

        Returns:
            Float array of shape ``(n_items,)``.
        """
        self._check_is_fitted()
        known = self.annotator_ids_ if is_frame(labels) else None
        cl = check_continuous(labels, annotator_ids=known)
        if cl.n_annotators != self.n_annotators_:
            raise ValueError(
                f"`labels` must come from the {self.n_annotators_} annotators seen in fit; got "
                f"{cl.n_annotators} annotators. Keep the annotator columns of the fit."
            )
        return self._predict(cl)

    @abstractmethod
    def _predict(self, cl: ContinuousLabels) -> np.ndarray:
        """Consensus of new items with the fitted parameters."""
