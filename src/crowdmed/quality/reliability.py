"""Per-annotator reliability against a reference: confusion, sensitivity/specificity, accuracy.

The reference is either hard labels (an integer array of shape ``(n_items,)``, ``-1`` for
unknown) such as gold labels or a consensus, or posteriors (a float array of shape
``(n_items, K)`` whose rows sum to 1) such as the output of an aggregator, which count as soft
evidence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from crowdmed._validation import check_labels
from crowdmed.quality._common import (
    accuracy_counts,
    check_confusion,
    confusion_counts,
    labels_and_reference,
    normalise_rows,
    ratio,
    reference_weights,
    with_n_classes,
)
from crowdmed.typing import LabelsLike

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "annotator_accuracy",
    "confusion_matrices",
    "reader_operating_points",
    "sensitivity_specificity",
    "spammer_score",
]

#: Columns of :func:`reader_operating_points`, in order.
OPERATING_POINT_COLUMNS = (
    "annotator",
    "n_positive",
    "n_negative",
    "sensitivity",
    "sensitivity_low",
    "sensitivity_high",
    "specificity",
    "specificity_low",
    "specificity_high",
)


def confusion_matrices(
    labels: LabelsLike, reference: npt.ArrayLike, *, smoothing: float = 0.0
) -> npt.NDArray[np.float64]:
    """Empirical confusion matrix of every annotator against a reference.

    ``confusion[a, k, l]`` is the share of the items of reference class ``k`` that annotator
    ``a`` labelled ``l``. With posteriors as the reference each labelled item counts as
    ``posteriors[i, k]`` of an item of class ``k`` (soft counts, the M-step of Dawid & Skene).
    A row without evidence (the annotator labelled no item of that reference class) is ``NaN``
    (unknown); ``smoothing > 0`` adds that pseudo-count to every cell, so such rows become
    uniform ``1/K``.

    Args:
        labels: A :class:`~crowdmed.data.CrowdLabels`, an integer array of shape
            ``(n_items, n_annotators)`` with ``-1`` marking a missing annotation, or a long
            ``DataFrame``.
        reference: Either hard labels, an integer array of shape ``(n_items,)`` with ``-1``
            marking an item without a reference (skipped), or posteriors, a float array of shape
            ``(n_items, K)`` whose rows sum to 1. Posteriors with more columns than the labels
            have classes add the classes nobody chose.
        smoothing: Non-negative pseudo-count added to every cell before normalising.

    Returns:
        Float array of shape ``(n_annotators, K, K)``; ``confusion[a, k, l] = P(annotator a
        says l | true class k)``. Rows sum to 1, or are ``NaN`` when unknown.

    Raises:
        ValueError: If ``reference`` has the wrong shape or values, or ``smoothing`` is negative
            or not finite.
        TypeError: If ``smoothing`` is not a number or ``reference`` is not numeric.

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0], [0, 1], [1, 1], [1, -1]])  # 4 items x 2 annotators
        >>> conf = confusion_matrices(labels, np.array([0, 0, 1, 1]))
        >>> conf[1]
        array([[0.5, 0.5],
               [0. , 1. ]])
        >>> confusion_matrices(labels, np.array([0, 0, -1, -1]))[1]  # class 1 never seen
        array([[0.5, 0.5],
               [nan, nan]])
        >>> confusion_matrices(labels, np.array([0, 0, -1, -1]), smoothing=1.0)[1]
        array([[0.5, 0.5],
               [0.5, 0.5]])

    References:
        Dawid, A. P. & Skene, A. M. (1979). Maximum likelihood estimation of observer
        error-rates using the EM algorithm. Applied Statistics 28(1), 20-28.
        https://doi.org/10.2307/2346806
    """
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float, np.number)):
        raise TypeError(f"`smoothing` must be a number; got {type(smoothing).__name__}.")
    if not np.isfinite(smoothing) or smoothing < 0:
        raise ValueError(
            f"`smoothing` must be a finite number >= 0; got {smoothing!r}. Use 0 for raw "
            "frequencies."
        )
    cl, weights, _ = labels_and_reference(labels, reference)
    return normalise_rows(confusion_counts(cl, weights), float(smoothing))


def sensitivity_specificity(
    labels: LabelsLike, reference: npt.ArrayLike, *, positive: int = 1
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Sensitivity and specificity of every annotator on binary labels.

    Sensitivity is ``P(says positive | truly positive)`` and specificity is
    ``P(says negative | truly negative)``, read from :func:`confusion_matrices` (so posteriors
    give soft counts).

    Args:
        labels: Binary labels: a :class:`~crowdmed.data.CrowdLabels`, an integer array of shape
            ``(n_items, n_annotators)`` with values ``0``/``1`` and ``-1`` marking a missing
            annotation, or a long ``DataFrame``.
        reference: Hard labels, an integer array of shape ``(n_items,)`` with ``-1`` for unknown,
            or posteriors, a float array of shape ``(n_items, 2)``.
        positive: Index of the positive class, ``0`` or ``1``.

    Returns:
        ``(sensitivity, specificity)``, two float arrays of shape ``(n_annotators,)``; ``NaN``
        where the annotator labelled no item of that reference class.

    Raises:
        ValueError: If the labels have more than two classes, ``positive`` is not 0 or 1, or
            ``reference`` has the wrong shape or values.

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[1, 1], [1, 0], [0, 0], [1, -1]])  # 4 items x 2 annotators
        >>> sens, spec = sensitivity_specificity(labels, np.array([1, 1, 0, 0]))
        >>> sens
        array([1. , 0.5])
        >>> spec
        array([0.5, 1. ])

    References:
        Raykar, V. C. et al. (2010). Learning from crowds. JMLR 11, 1297-1322.
        https://jmlr.org/papers/v11/raykar10a.html
    """
    positive = _check_positive(positive)
    counts, _ = _binary_counts(labels, reference)
    conf = normalise_rows(counts, 0.0)
    negative = 1 - positive
    return conf[:, positive, positive].copy(), conf[:, negative, negative].copy()


def _check_positive(positive: object) -> int:
    if (
        isinstance(positive, bool)
        or not isinstance(positive, (int, np.integer))
        or positive not in (0, 1)
    ):
        raise ValueError(
            f"`positive` must be the index of the positive class, 0 or 1; got {positive!r}."
        )
    return int(positive)


def _binary_counts(labels: LabelsLike, reference: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Soft confusion counts ``(n_annotators, 2, 2)`` of binary labels, and the annotator ids."""
    cl = check_labels(labels, min_classes=1)
    if cl.n_classes > 2:
        raise ValueError(
            f"`labels` must be binary (K = 2) for sensitivity and specificity; got K = "
            f"{cl.n_classes} classes {list(cl.classes)[:5]}. Use confusion_matrices for "
            "multi-class labels."
        )
    # binary is implied: if everybody chose one class, the other one still exists
    cl, weights, _ = reference_weights(with_n_classes(cl, 2), reference)
    if weights.shape[1] != 2:
        raise ValueError(
            f"`reference` must have two columns for binary labels; got shape {weights.shape}."
        )
    return confusion_counts(cl, weights), cl.annotator_ids


def reader_operating_points(
    labels: LabelsLike,
    reference: npt.ArrayLike,
    *,
    positive: int = 1,
    level: float = 0.95,
) -> pd.DataFrame:
    """Every reader's sensitivity and specificity with Bayesian intervals (a reader study).

    Each reader is one point in ROC space: sensitivity ``P(says positive | truly positive)``
    against ``1 - specificity``. With ``x`` of the reader's ``n`` truly positive items called
    positive, the sensitivity is ``x / n`` and its interval is the equal-tailed ``level``
    interval of the Beta posterior under the Jeffreys prior, ``Beta(x + 1/2, n - x + 1/2)``
    (Brown, Cai & DasGupta 2001), the same for specificity on the truly negative items. A
    reference given as posteriors counts each labelled item as ``posteriors[i, positive]`` of a
    positive item and ``posteriors[i, negative]`` of a negative one (soft counts, so ``x`` and
    ``n`` may be fractional).

    Args:
        labels: Binary labels: a :class:`~crowdmed.data.CrowdLabels`, an integer array of shape
            ``(n_items, n_annotators)`` with values ``0``/``1`` and ``-1`` marking a missing
            annotation, or a long ``DataFrame``.
        reference: Hard labels, an integer array of shape ``(n_items,)`` with ``-1`` for unknown
            (skipped), or posteriors, a float array of shape ``(n_items, 2)``.
        positive: Index of the positive class, ``0`` or ``1``.
        level: Probability mass of each interval, in ``(0, 1)``.

    Returns:
        A ``DataFrame`` with one row per annotator and the columns ``annotator`` (the id),
        ``n_positive`` and ``n_negative`` (the reader's items of each reference class, soft
        counts for posteriors), ``sensitivity``, ``sensitivity_low``, ``sensitivity_high``,
        ``specificity``, ``specificity_low`` and ``specificity_high``. A rate and its interval
        are ``NaN`` where the reader labelled no item of that reference class.

    Raises:
        ValueError: If the labels have more than two classes, ``positive`` is not 0 or 1,
            ``level`` is not in ``(0, 1)`` or ``reference`` has the wrong shape or values.

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[1, 1], [1, 0], [0, 0], [1, -1]])  # 4 items x 2 annotators
        >>> table = reader_operating_points(labels, np.array([1, 1, 0, 0]))
        >>> table[["annotator", "n_positive", "n_negative", "sensitivity", "specificity"]]
           annotator  n_positive  n_negative  sensitivity  specificity
        0          0         2.0         2.0          1.0          0.5
        1          1         2.0         1.0          0.5          1.0
        >>> round(float(table.loc[0, "sensitivity_low"]), 4)  # Beta(2.5, 0.5) 2.5 % quantile
        0.3332

    References:
        Brown, L. D., Cai, T. T. & DasGupta, A. (2001). Interval estimation for a binomial
        proportion. Statistical Science 16(2), 101-133. https://doi.org/10.1214/ss/1009213286
    """
    pos = _check_positive(positive)
    if (
        isinstance(level, bool)
        or not isinstance(level, (int, float, np.number))
        or not 0.0 < float(level) < 1.0
    ):
        raise ValueError(f"`level` must be a probability in (0, 1), e.g. 0.95; got {level!r}.")
    import pandas as pd
    from scipy.special import betaincinv

    counts, annotator_ids = _binary_counts(labels, reference)
    neg = 1 - pos
    tail = (1.0 - float(level)) / 2.0
    columns: dict[str, object] = {"annotator": annotator_ids}
    n_of = {"positive": counts[:, pos, :].sum(axis=1), "negative": counts[:, neg, :].sum(axis=1)}
    columns["n_positive"] = n_of["positive"]
    columns["n_negative"] = n_of["negative"]
    for name, true_class, hits in (
        ("sensitivity", "positive", counts[:, pos, pos]),
        ("specificity", "negative", counts[:, neg, neg]),
    ):
        n = n_of[true_class]
        known = n > 0
        a, b = hits + 0.5, n - hits + 0.5  # Jeffreys prior Beta(1/2, 1/2)
        with np.errstate(invalid="ignore", divide="ignore"):
            point = np.where(known, hits / np.where(known, n, 1.0), np.nan)
        columns[name] = point
        columns[f"{name}_low"] = np.where(known, betaincinv(a, b, tail), np.nan)
        columns[f"{name}_high"] = np.where(known, betaincinv(a, b, 1.0 - tail), np.nan)
    return pd.DataFrame(columns, columns=list(OPERATING_POINT_COLUMNS))


def annotator_accuracy(labels: LabelsLike, reference: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Accuracy of every annotator against reference labels (gold or consensus).

    With hard labels this is the share of the annotator's labels, on items with a known
    reference, that equal the reference. With posteriors it is the expected accuracy
    ``mean(posteriors[i, label])`` over the annotator's labels.

    Args:
        labels: A :class:`~crowdmed.data.CrowdLabels`, an integer array of shape
            ``(n_items, n_annotators)`` with ``-1`` marking a missing annotation, or a long
            ``DataFrame``.
        reference: Hard labels, an integer array of shape ``(n_items,)`` with ``-1`` for unknown
            (skipped), or posteriors, a float array of shape ``(n_items, K)``.

    Returns:
        Float array of shape ``(n_annotators,)`` in ``[0, 1]``; ``NaN`` for an annotator who
        labelled no item with a known reference.

    Raises:
        ValueError: If ``reference`` has the wrong shape or values.

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, -1], [1, 0, -1], [1, 1, 2]])  # 3 items x 3 annotators
        >>> annotator_accuracy(labels, np.array([0, 1, -1]))
        array([1. , 0.5, nan])
        >>> posteriors = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        >>> annotator_accuracy(labels, posteriors)  # first: (0.5 + 1 + 0) / 3
        array([0.5       , 0.16666667, 1.        ])
    """
    cl, weights, _ = labels_and_reference(labels, reference)
    correct, n = accuracy_counts(cl, weights)
    return ratio(correct, n)


def spammer_score(confusion: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Raykar & Yu spammer score of every annotator's confusion matrix.

    A spammer answers independently of the true class, so all rows of their confusion matrix
    are equal. The score measures how far apart the rows are,

    ``S_a = 1 / (K (K - 1)) * sum_{c < c'} sum_l (A[c, l] - A[c', l])^2``,

    which equals ``||A - 1 m^T||_F^2 / (K - 1)``, the squared Frobenius distance to the nearest
    matrix with identical rows (``m`` the mean row) divided by ``K - 1`` (Raykar & Yu 2012).
    It is 0 for a spammer and 1 for a perfect annotator or any permutation of the classes (a
    perfectly adversarial one). For ``K = 2`` it equals ``(alpha + beta - 1)^2``
    with sensitivity ``alpha = A[1, 1]`` and specificity ``beta = A[0, 0]`` (the constant
    ``1 / (K (K - 1)) = 1/2`` makes the two definitions coincide exactly).

    Args:
        confusion: Float array of shape ``(n_annotators, K, K)`` with
            ``confusion[a, k, l] = P(annotator a says l | true class k)``; rows sum to 1 or are
            ``NaN`` (unknown).

    Returns:
        Float array of shape ``(n_annotators,)`` in ``[0, 1]``; ``NaN`` where the annotator's
        matrix has a ``NaN`` row.

    Raises:
        ValueError: If ``confusion`` has the wrong shape, ``K < 2``, values outside ``[0, 1]`` or
            rows that do not sum to 1.

    Examples:
        >>> import numpy as np
        >>> conf = np.array([
        ...     [[0.9, 0.1], [0.2, 0.8]],  # good: (0.8 + 0.9 - 1)^2 = 0.49
        ...     [[0.7, 0.3], [0.7, 0.3]],  # spammer: identical rows
        ...     [[0.0, 1.0], [1.0, 0.0]],  # adversarial: always the other class
        ... ])
        >>> spammer_score(conf)
        array([0.49, 0.  , 1.  ])

    References:
        Raykar, V. C. & Yu, S. (2012). Eliminating spammers and ranking annotators for
        crowdsourced labeling tasks. JMLR 13, 491-518.
        https://jmlr.org/papers/v13/raykar12a.html
    """
    conf = check_confusion(confusion)
    k_classes = conf.shape[1]
    # sum_{c < c'} ||A_c - A_c'||^2 = K sum_c ||A_c - m||^2 with m the mean row, so the
    # pairwise form is computed in O(K^2) per annotator; a NaN row makes the mean NaN.
    centred = conf - conf.mean(axis=1, keepdims=True)
    score = np.sum(centred**2, axis=(1, 2)) / (k_classes - 1)
    return np.clip(score, 0.0, 1.0)
