"""The :class:`CrowdLabels` container: classification labels from many annotators.

Labels are stored as COO triplets ``(item, annotator, label)`` of equal-length ``int64`` arrays,
together with the ids of items and annotators and the list of classes. The dense view is an
``int64`` array of shape ``(n_items, n_annotators)`` with ``-1`` for a missing annotation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from crowdmed._text import short_list

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse as sp

__all__ = ["MISSING", "CrowdLabels"]

#: Marker of a missing annotation in the dense view.
MISSING = -1


def _ids(values: Sequence[Any] | npt.ArrayLike | None, n: int, name: str) -> np.ndarray:
    if values is None:
        return np.arange(n)
    arr = np.asarray(values)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"`{name}` must have length {n}; got shape {arr.shape}.")
    if _n_distinct(arr) != n:
        import pandas as pd

        dup = pd.Series(arr)[pd.Series(arr).duplicated()].unique()[:5].tolist()
        raise ValueError(f"`{name}` must be unique; got repeated ids {dup}.")
    return arr


def _n_distinct(arr: np.ndarray) -> int:
    """Number of distinct values (as ``pd.unique`` counts them; NumPy or a set when it can)."""
    if arr.dtype.kind in "biuf":
        return len(np.unique(arr))
    if arr.dtype.kind in "USO":
        return len(set(arr.tolist()))
    import pandas as pd

    return len(pd.unique(arr))


def _int_array(value: npt.ArrayLike, name: str) -> np.ndarray:
    """A 1-D int64 copy of ``value`` (whole floats accepted; NaN and fractions refused)."""
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be one-dimensional; got shape {arr.shape}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
            raise ValueError(
                f"`{name}` must not contain NaN; got {int(np.isnan(arr).sum())} NaN "
                "values. Drop the rows without a label before building CrowdLabels."
            )
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
            raise TypeError(
                f"`{name}` must be an integer array; got dtype {arr.dtype}. Encode "
                "ids with crowdmed.data.to_matrix or CrowdLabels.from_long."
            )
    return arr.astype(np.int64, copy=True)


def _check_unique_pairs(
    it: np.ndarray,
    an: np.ndarray,
    n_items: int,
    n_annotators: int,
    item_ids: npt.ArrayLike | None,
    annotator_ids: npt.ArrayLike | None,
) -> None:
    """Refuse a repeated (item, annotator) pair, naming up to five by their ids."""
    key = it * n_annotators + an
    sorted_key = np.sort(key)  # a sort is much faster than np.unique's hashing here
    if (sorted_key[1:] == sorted_key[:-1]).any():
        import pandas as pd

        s = pd.Series(key)
        dup = s[s.duplicated()].unique()[:5]
        item_ids_arr = _ids(item_ids, n_items, "item_ids")
        ann_ids_arr = _ids(annotator_ids, n_annotators, "annotator_ids")
        pairs = [(item_ids_arr[k // n_annotators], ann_ids_arr[k % n_annotators]) for k in dup]
        pairs = [tuple(v.item() if isinstance(v, np.generic) else v for v in p) for p in pairs]
        raise ValueError(
            f"Each (item, annotator) pair must occur once; got duplicates {pairs}. "
            "Keep one label per annotator and item (e.g. the latest) before aggregating."
        )


def _check_gold(gold: npt.ArrayLike | None, n_items: int, n_classes: int) -> np.ndarray | None:
    gold_arr = None
    if gold is not None:
        gold_arr = np.asarray(gold)
        if gold_arr.shape != (n_items,):
            raise ValueError(
                f"`gold` must have shape ({n_items},); got {gold_arr.shape}. Use -1 for "
                "items without a gold label."
            )
        gold_arr = gold_arr.astype(np.int64)
        bad = (gold_arr < -1) | (gold_arr >= n_classes)
        if bad.any():
            bad_vals = short_list(np.unique(gold_arr[bad]))
            raise ValueError(f"`gold` must lie in -1..{n_classes - 1}; got {bad_vals}.")
    return gold_arr


def _check_quiz(quiz_accuracy: npt.ArrayLike | None, n_annotators: int) -> np.ndarray | None:
    quiz_arr = None
    if quiz_accuracy is not None:
        quiz_arr = np.asarray(quiz_accuracy, dtype=np.float64).copy()
        if quiz_arr.shape != (n_annotators,):
            raise ValueError(
                f"`quiz_accuracy` must have shape ({n_annotators},); got {quiz_arr.shape}. "
                "Use NaN for annotators without a quiz."
            )
        bad = ~np.isnan(quiz_arr) & ((quiz_arr < 0) | (quiz_arr > 1))
        if bad.any():
            raise ValueError(
                f"`quiz_accuracy` must lie in [0, 1]; got {short_list(quiz_arr[bad])}."
            )
    return quiz_arr


@dataclass(frozen=True, eq=False)
class CrowdLabels:
    """Classification labels given by many annotators to many items.

    The core representation is three equal-length ``int64`` arrays of COO triplets. Classes are
    ``0..K-1``; :attr:`classes` keeps the original class values (strings or numbers) so results
    can be written back in the user's vocabulary.

    Args:
        items: Integer array of shape ``(n_labels,)``: index of the labelled item, in
            ``0..n_items-1``.
        annotators: Integer array of shape ``(n_labels,)``: index of the annotator, in
            ``0..n_annotators-1``.
        labels: Integer array of shape ``(n_labels,)``: class index in ``0..n_classes-1``.
        item_ids: Ids of the items, shape ``(n_items,)``; ``0..n_items-1`` when omitted.
        annotator_ids: Ids of the annotators, shape ``(n_annotators,)``.
        classes: Original class values, shape ``(n_classes,)``.
        gold: Integer array of shape ``(n_items,)`` with the known true class of gold (honeypot)
            items; ``-1`` marks an item without a gold label. ``None`` when no gold is known.
        quiz_accuracy: Float array of shape ``(n_annotators,)`` with each annotator's accuracy
            on a qualification quiz; ``NaN`` marks an annotator without one. ``None`` when no
            quiz was run.

    Raises:
        ValueError: If the arrays differ in length, an index is out of range, or an
            ``(item, annotator)`` pair occurs twice.

    Examples:
        >>> import numpy as np
        >>> cl = CrowdLabels.from_dense(np.array([[0, 0, 1], [1, 1, -1]]))
        >>> cl.n_items, cl.n_annotators, cl.n_classes, cl.n_labels
        (2, 3, 2, 5)
        >>> cl.to_dense()
        array([[ 0,  0,  1],
               [ 1,  1, -1]])
    """

    items: np.ndarray
    annotators: np.ndarray
    labels: np.ndarray
    item_ids: np.ndarray
    annotator_ids: np.ndarray
    classes: np.ndarray
    gold: np.ndarray | None = None
    quiz_accuracy: np.ndarray | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_triplets(
        cls,
        items: npt.ArrayLike,
        annotators: npt.ArrayLike,
        labels: npt.ArrayLike,
        *,
        n_items: int | None = None,
        n_annotators: int | None = None,
        n_classes: int | None = None,
        item_ids: npt.ArrayLike | None = None,
        annotator_ids: npt.ArrayLike | None = None,
        classes: npt.ArrayLike | None = None,
        gold: npt.ArrayLike | None = None,
        quiz_accuracy: npt.ArrayLike | None = None,
    ) -> CrowdLabels:
        """Build from integer COO triplets ``(item, annotator, label)``.

        Args:
            items: Integer array of shape ``(n_labels,)``; item index of each label.
            annotators: Integer array of shape ``(n_labels,)``; annotator index of each label.
            labels: Integer array of shape ``(n_labels,)``; class index of each label.
            n_items: Number of items; ``max(items) + 1`` when omitted.
            n_annotators: Number of annotators; ``max(annotators) + 1`` when omitted.
            n_classes: Number of classes; ``max(labels) + 1`` when omitted.
            item_ids: Ids of the items, shape ``(n_items,)``.
            annotator_ids: Ids of the annotators, shape ``(n_annotators,)``.
            classes: Original class values, shape ``(n_classes,)``.
            gold: Integer array of shape ``(n_items,)``; ``-1`` marks no gold label.
            quiz_accuracy: Float array of shape ``(n_annotators,)``; ``NaN`` marks no quiz.

        Returns:
            The validated container.
        """
        it, an, lab = (
            _int_array(value, name)
            for name, value in (("items", items), ("annotators", annotators), ("labels", labels))
        )
        if not (len(it) == len(an) == len(lab)):
            raise ValueError(
                "`items`, `annotators` and `labels` must have equal lengths; got "
                f"{len(it)}, {len(an)} and {len(lab)}."
            )
        if len(it) == 0:
            raise ValueError("`labels` must contain at least one annotation; got none.")
        n_items = int(it.max()) + 1 if n_items is None else int(n_items)
        n_annotators = int(an.max()) + 1 if n_annotators is None else int(n_annotators)
        if n_classes is None:
            n_classes = len(np.asarray(classes)) if classes is not None else int(lab.max()) + 1
        n_classes = int(n_classes)
        for name, arr, n in (
            ("items", it, n_items),
            ("annotators", an, n_annotators),
            ("labels", lab, n_classes),
        ):
            bad = (arr < 0) | (arr >= n)
            if bad.any():
                raise ValueError(
                    f"`{name}` must lie in 0..{n - 1}; got {short_list(np.unique(arr[bad]))}. "
                    + (
                        "Use -1 only in the dense view to mark a missing label."
                        if name == "labels"
                        else "Encode ids with crowdmed.data.to_matrix."
                    )
                )
        _check_unique_pairs(it, an, n_items, n_annotators, item_ids, annotator_ids)
        classes_arr = np.arange(n_classes) if classes is None else np.asarray(classes)
        if len(classes_arr) != n_classes:
            raise ValueError(
                f"`classes` must have length n_classes={n_classes}; got {len(classes_arr)}."
            )
        gold_arr = _check_gold(gold, n_items, n_classes)
        quiz_arr = _check_quiz(quiz_accuracy, n_annotators)
        return cls(
            items=it,
            annotators=an,
            labels=lab,
            item_ids=_ids(item_ids, n_items, "item_ids"),
            annotator_ids=_ids(annotator_ids, n_annotators, "annotator_ids"),
            classes=classes_arr,
            gold=gold_arr,
            quiz_accuracy=quiz_arr,
        )

    @classmethod
    def from_dense(
        cls,
        matrix: npt.ArrayLike,
        *,
        n_classes: int | None = None,
        item_ids: npt.ArrayLike | None = None,
        annotator_ids: npt.ArrayLike | None = None,
        classes: npt.ArrayLike | None = None,
        gold: npt.ArrayLike | None = None,
        quiz_accuracy: npt.ArrayLike | None = None,
    ) -> CrowdLabels:
        """Build from the dense view.

        Args:
            matrix: Integer array of shape ``(n_items, n_annotators)``; ``-1`` marks a missing
                annotation.
            n_classes: Number of classes; ``max(matrix) + 1`` when omitted.
            item_ids: Ids of the items, shape ``(n_items,)``.
            annotator_ids: Ids of the annotators, shape ``(n_annotators,)``.
            classes: Original class values, shape ``(n_classes,)``.
            gold: Integer array of shape ``(n_items,)``; ``-1`` marks no gold label.
            quiz_accuracy: Float array of shape ``(n_annotators,)``; ``NaN`` marks no quiz.

        Returns:
            The validated container.
        """
        m = np.asarray(matrix)
        if m.ndim != 2:
            raise ValueError(
                f"`labels` must be a 2-D array of shape (n_items, n_annotators); got shape "
                f"{m.shape}."
            )
        if m.size == 0:
            raise ValueError("`labels` must contain at least one annotation; got an empty array.")
        if np.issubdtype(m.dtype, np.floating):
            if np.isnan(m).any():
                raise ValueError(
                    "`labels` must not contain NaN; mark missing annotations with -1 "
                    f"({int(np.isnan(m).sum())} NaN found)."
                )
            if not np.all(m == np.round(m)):
                raise TypeError("`labels` must hold integer class indices; got non-integer floats.")
        elif not np.issubdtype(m.dtype, np.integer) and m.dtype != bool:
            raise TypeError(
                f"`labels` must be an integer array; got dtype {m.dtype}. Encode class names "
                "with crowdmed.data.to_matrix."
            )
        m = m.astype(np.int64)
        bad = m < MISSING
        if bad.any():
            bad_vals = short_list(np.unique(m[bad]))
            raise ValueError(
                f"`labels` must hold classes 0..K-1 or -1 for missing; got {bad_vals}."
            )
        it, an = np.nonzero(m != MISSING)
        if len(it) == 0:
            raise ValueError("`labels` must contain at least one annotation; all entries are -1.")
        return cls.from_triplets(
            it,
            an,
            m[it, an],
            n_items=m.shape[0],
            n_annotators=m.shape[1],
            n_classes=n_classes,
            item_ids=item_ids,
            annotator_ids=annotator_ids,
            classes=classes,
            gold=gold,
            quiz_accuracy=quiz_accuracy,
        )

    @classmethod
    def from_long(
        cls,
        df: pd.DataFrame,
        *,
        item: str = "item",
        annotator: str = "annotator",
        label: str = "label",
        classes: Sequence[Any] | None = None,
    ) -> CrowdLabels:
        """Build from a long table with one row per annotation.

        Args:
            df: Table with at least the ``item``, ``annotator`` and ``label`` columns.
            item: Name of the item column.
            annotator: Name of the annotator column.
            label: Name of the label column.
            classes: All class values in order; the sorted observed labels when omitted.

        Returns:
            The container; ids keep their order of first appearance.
        """
        from crowdmed.data.io import from_long_frame

        return from_long_frame(df, item=item, annotator=annotator, label=label, classes=classes)

    # ------------------------------------------------------------------ views
    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self.item_ids)

    @property
    def n_annotators(self) -> int:
        """Number of annotators."""
        return len(self.annotator_ids)

    @property
    def n_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.classes)

    @property
    def n_labels(self) -> int:
        """Number of annotations (triplets)."""
        return len(self.labels)

    def to_dense(self) -> np.ndarray:
        """Return the dense view.

        Returns:
            Integer array of shape ``(n_items, n_annotators)``; ``-1`` marks a missing
            annotation.
        """
        out = np.full((self.n_items, self.n_annotators), MISSING, dtype=np.int64)
        out[self.items, self.annotators] = self.labels
        return out

    def to_long(self, *, decode: bool = True) -> pd.DataFrame:
        """Return the long table ``item, annotator, label``.

        Args:
            decode: Write the original ids and class values instead of indices.

        Returns:
            One row per annotation.
        """
        import pandas as pd

        if decode:
            return pd.DataFrame(
                {
                    "item": self.item_ids[self.items],
                    "annotator": self.annotator_ids[self.annotators],
                    "label": self.classes[self.labels],
                }
            )
        return pd.DataFrame(
            {"item": self.items, "annotator": self.annotators, "label": self.labels}
        )

    def incidence(self) -> sp.csr_matrix:
        """Sparse incidence matrix used by the EM code.

        Returns:
            CSR matrix of shape ``(n_items, n_annotators * n_classes)`` with a one at
            ``(item, annotator * n_classes + label)`` for every annotation.
        """
        key = "incidence"
        if key not in self._cache:
            import scipy.sparse as sp  # only the EM code needs it: imported on first use

            # Built from its rows directly (the labels grouped by item): a COO detour sorts
            # and sums duplicates, several times slower at a million labels.
            n_cols = self.n_annotators * self.n_classes
            index = np.int32 if max(n_cols, self.n_labels) < 2**31 else np.int64
            cols = (self.annotators * self.n_classes + self.labels).astype(index, copy=False)
            if self.n_labels > 1 and not bool(np.all(self.items[1:] >= self.items[:-1])):
                cols = cols[np.argsort(self.items, kind="stable")]
            indptr = np.zeros(self.n_items + 1, dtype=index)
            np.cumsum(np.bincount(self.items, minlength=self.n_items), out=indptr[1:])
            self._cache[key] = sp.csr_matrix(
                (np.ones(self.n_labels), cols, indptr), shape=(self.n_items, n_cols)
            )
        return self._cache[key]

    def incidence_t(self) -> sp.csc_matrix:
        """Transpose of :meth:`incidence` (a CSC view of the same arrays, no copy).

        Its product with an ``(n_items, n)`` array streams the items in order and adds into
        the small ``(n_annotators * n_classes, n)`` result, faster than a transposed CSR
        that gathers the items' rows at random.
        """
        return self.incidence().T

    def vote_counts(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Count the votes each item received for each class.

        Args:
            weights: Float array of shape ``(n_annotators,)``: weight of each annotator's vote.

        Returns:
            Float array of shape ``(n_items, n_classes)``.
        """
        w = None if weights is None else np.asarray(weights, dtype=np.float64)[self.annotators]
        counts = np.bincount(
            self.items * self.n_classes + self.labels,
            weights=w,
            minlength=self.n_items * self.n_classes,
        )
        return counts.reshape(self.n_items, self.n_classes).astype(np.float64, copy=False)

    def labels_per_item(self) -> np.ndarray:
        """Number of annotations of each item, shape ``(n_items,)``."""
        if "per_item" not in self._cache:
            self._cache["per_item"] = np.bincount(self.items, minlength=self.n_items)
        return self._cache["per_item"].copy()

    def labels_per_annotator(self) -> np.ndarray:
        """Number of annotations of each annotator, shape ``(n_annotators,)``."""
        if "per_annotator" not in self._cache:
            self._cache["per_annotator"] = np.bincount(self.annotators, minlength=self.n_annotators)
        return self._cache["per_annotator"].copy()

    def label_counts(self) -> np.ndarray:
        """How often each annotator gave each class, shape ``(n_annotators, n_classes)``."""
        if "label_counts" not in self._cache:
            k = self.n_classes
            counts = np.bincount(self.annotators * k + self.labels, minlength=self.n_annotators * k)
            self._cache["label_counts"] = counts.reshape(self.n_annotators, k)
        return self._cache["label_counts"].copy()

    def select_annotators(self, keep: npt.ArrayLike) -> CrowdLabels:
        """Keep only some annotators (their labels and quiz figures).

        Args:
            keep: Boolean array of shape ``(n_annotators,)``.

        Returns:
            A new container; items are kept even if they lose all their labels.
        """
        keep_arr = np.asarray(keep, dtype=bool)
        if keep_arr.shape != (self.n_annotators,):
            raise ValueError(
                f"`keep` must have shape ({self.n_annotators},); got {keep_arr.shape}."
            )
        new_index = np.cumsum(keep_arr) - 1
        rows = keep_arr[self.annotators]
        if not rows.any():
            raise ValueError("No labels are left after removing the annotators; keep some.")
        return CrowdLabels(
            items=self.items[rows],
            annotators=new_index[self.annotators[rows]],
            labels=self.labels[rows],
            item_ids=self.item_ids,
            annotator_ids=self.annotator_ids[keep_arr],
            classes=self.classes,
            gold=self.gold,
            quiz_accuracy=None if self.quiz_accuracy is None else self.quiz_accuracy[keep_arr],
        )

    def with_gold(self, gold: npt.ArrayLike | None) -> CrowdLabels:
        """Return a copy with ``gold`` replaced (``-1`` marks no gold label)."""
        return CrowdLabels.from_triplets(
            self.items,
            self.annotators,
            self.labels,
            n_items=self.n_items,
            n_annotators=self.n_annotators,
            n_classes=self.n_classes,
            item_ids=self.item_ids,
            annotator_ids=self.annotator_ids,
            classes=self.classes,
            gold=gold,
            quiz_accuracy=self.quiz_accuracy,
        )

    def with_quiz_accuracy(self, quiz_accuracy: npt.ArrayLike | None) -> CrowdLabels:
        """Return a copy with ``quiz_accuracy`` replaced (``NaN`` marks no quiz)."""
        return CrowdLabels.from_triplets(
            self.items,
            self.annotators,
            self.labels,
            n_items=self.n_items,
            n_annotators=self.n_annotators,
            n_classes=self.n_classes,
            item_ids=self.item_ids,
            annotator_ids=self.annotator_ids,
            classes=self.classes,
            gold=self.gold,
            quiz_accuracy=quiz_accuracy,
        )

    def __repr__(self) -> str:
        extra = ""
        if self.gold is not None:
            extra += f", n_gold={int((self.gold >= 0).sum())}"
        if self.quiz_accuracy is not None:
            extra += f", n_quiz={int((~np.isnan(self.quiz_accuracy)).sum())}"
        return (
            f"CrowdLabels(n_items={self.n_items}, n_annotators={self.n_annotators}, "
            f"n_classes={self.n_classes}, n_labels={self.n_labels}{extra})"
        )
