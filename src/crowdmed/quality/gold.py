"""Gold (honeypot) questions: per-annotator gold accuracy and filtering of unreliable annotators."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import numpy.typing as npt

from crowdmed._text import short_list
from crowdmed._validation import check_labels
from crowdmed.data.labels import CrowdLabels
from crowdmed.quality._common import gold_counts, hard_reference, ratio
from crowdmed.typing import LabelsLike

__all__ = ["filter_annotators", "gold_accuracy"]


def _gold_of(cl: CrowdLabels, gold: npt.ArrayLike | None) -> np.ndarray | None:
    """The gold labels from the argument, else ``cl.gold``; ``None`` if none is known."""
    if gold is not None:
        g = hard_reference(gold, cl, "gold")
    elif cl.gold is not None:
        g = cl.gold
    else:
        return None
    return g if (g >= 0).any() else None


def _required_gold(cl: CrowdLabels, gold: npt.ArrayLike | None) -> np.ndarray:
    g = _gold_of(cl, gold)
    if g is None:
        if gold is None and cl.gold is None:
            raise ValueError(
                "`gold` must be given when the labels carry no gold; got None. Pass "
                "gold=array of shape (n_items,) with -1 for non-gold items, or build the "
                "labels with `gold`."
            )
        raise ValueError(
            f"`gold` must give the true class of at least one item; got -1 for all "
            f"{cl.n_items} items."
        )
    return g


def gold_accuracy(labels: LabelsLike, gold: npt.ArrayLike | None = None) -> npt.NDArray[np.float64]:
    """Accuracy of every annotator on the gold (honeypot) items.

    Args:
        labels: A :class:`~crowdmed.data.CrowdLabels`, an integer array of shape
            ``(n_items, n_annotators)`` with ``-1`` marking a missing annotation, or a long
            ``DataFrame``.
        gold: Integer array of shape ``(n_items,)`` with the true class of the gold items and
            ``-1`` elsewhere; ``labels.gold`` when omitted.

    Returns:
        Float array of shape ``(n_annotators,)``; ``NaN`` for an annotator who answered no gold
        item.

    Raises:
        ValueError: If there is no gold (neither ``gold`` nor ``labels.gold``, or all ``-1``),
            or ``gold`` has the wrong shape or values.

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 1, -1], [1, 1, 0], [1, 0, 0]])  # 3 items x 3 annotators
        >>> gold_accuracy(labels, gold=np.array([0, 1, -1]))
        array([1. , 0.5, 0. ])

    References:
        Albarqouni, S. et al. (2016). AggNet: Deep learning from crowds for mitosis detection
        in breast cancer histology images. IEEE TMI 35(5), 1313-1321.
        https://doi.org/10.1109/TMI.2016.2528120
    """
    cl = check_labels(labels, min_classes=1)
    return ratio(*gold_counts(cl, _required_gold(cl, gold)))


def filter_annotators(
    labels: LabelsLike,
    *,
    min_gold_accuracy: float = 0.7,
    gold: npt.ArrayLike | None = None,
    min_gold_items: int = 1,
) -> CrowdLabels:
    """Drop the annotators who fail the gold (honeypot) questions.

    This is the quality control of AggNet (Albarqouni et al. 2016): each annotator also labels
    items whose answer is known, and those below an accuracy threshold are removed. The rule,
    annotator by annotator:

    1. With at least ``min_gold_items`` gold answers: kept if the gold accuracy is at least
       ``min_gold_accuracy``.
    2. Otherwise, if ``labels.quiz_accuracy`` is known for the annotator (not ``NaN``): kept if
       it is at least ``min_gold_accuracy``.
    3. Otherwise kept: there is no evidence against them.

    Items keep their order and ids even when all their annotators are removed (a warning
    names them); drop such items before aggregating, since aggregators reject unlabelled items.

    Args:
        labels: A :class:`~crowdmed.data.CrowdLabels`, an integer array of shape
            ``(n_items, n_annotators)`` with ``-1`` marking a missing annotation, or a long
            ``DataFrame``.
        min_gold_accuracy: Accuracy threshold in ``[0, 1]``.
        gold: Integer array of shape ``(n_items,)`` with the true class of the gold items and
            ``-1`` elsewhere; ``labels.gold`` when omitted. The result keeps ``labels.gold``.
        min_gold_items: Gold answers an annotator needs before their gold accuracy is judged.

    Returns:
        The labels of the kept annotators (:meth:`CrowdLabels.select_annotators`).

    Raises:
        ValueError: If there is neither gold nor quiz accuracy, an argument is out of range, or
            no annotator (with labels) is left.

    Examples:
        >>> import numpy as np
        >>> labels = np.array([  # 4 items x 3 annotators; items 0 and 1 are gold
        ...     [0, 0, 1],
        ...     [1, 1, 0],
        ...     [1, 0, 0],
        ...     [0, 0, 1],
        ... ])
        >>> kept = filter_annotators(labels, gold=np.array([0, 1, -1, -1]))
        >>> kept.annotator_ids
        array([0, 1])

    References:
        Albarqouni, S. et al. (2016). AggNet: Deep learning from crowds for mitosis detection
        in breast cancer histology images. IEEE TMI 35(5), 1313-1321.
        https://doi.org/10.1109/TMI.2016.2528120
    """
    if (
        isinstance(min_gold_accuracy, bool)
        or not isinstance(min_gold_accuracy, numbers.Real)
        or not 0.0 <= float(min_gold_accuracy) <= 1.0
    ):
        raise ValueError(
            f"`min_gold_accuracy` must be a number in [0, 1]; got {min_gold_accuracy!r}."
        )
    if (
        isinstance(min_gold_items, bool)
        or not isinstance(min_gold_items, numbers.Integral)
        or min_gold_items < 1
    ):
        raise ValueError(f"`min_gold_items` must be an integer >= 1; got {min_gold_items!r}.")
    cl = check_labels(labels, min_classes=1)
    g = _gold_of(cl, gold) if cl.quiz_accuracy is not None else _required_gold(cl, gold)
    if g is None:
        correct = n_gold = np.zeros(cl.n_annotators)
    else:
        correct, n_gold = gold_counts(cl, g)
    judged = n_gold >= min_gold_items
    acc = np.where(judged, ratio(correct, n_gold), np.nan)
    quiz = np.full(cl.n_annotators, np.nan) if cl.quiz_accuracy is None else cl.quiz_accuracy
    by_quiz = ~judged & ~np.isnan(quiz)
    keep = np.ones(cl.n_annotators, dtype=bool)
    keep[judged] = acc[judged] >= min_gold_accuracy
    keep[by_quiz] = quiz[by_quiz] >= min_gold_accuracy
    if not (keep & (cl.labels_per_annotator() > 0)).any():
        score = np.where(judged, acc, quiz)
        best = f"{np.nanmax(score):.3g}" if not np.isnan(score).all() else "unknown"
        raise ValueError(
            f"`min_gold_accuracy` must leave at least one annotator with labels; got "
            f"{min_gold_accuracy!r}, which removes all {cl.n_annotators} annotators (best "
            f"accuracy {best}). Lower the threshold or check the gold labels."
        )
    kept = cl.select_annotators(keep)
    lost = kept.labels_per_item() == 0
    if lost.any():
        warnings.warn(
            f"Items {short_list(kept.item_ids[lost])} lost all their labels with the removed "
            "annotators; drop them before aggregating.",
            UserWarning,
            stacklevel=2,
        )
    return kept
