"""Chance-corrected agreement: Cohen's kappa, Fleiss' kappa and Krippendorff's alpha.

All three work on sparse labels: an annotator who did not label an item simply does not count
for that item. None of them needs a reference label.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from crowdmed._validation import check_labels, check_option
from crowdmed.data.labels import CrowdLabels
from crowdmed.typing import LabelsLike

__all__ = ["cohen_kappa_matrix", "fleiss_kappa", "krippendorff_alpha"]


class _KappaWeights(str, Enum):
    LINEAR = "linear"
    QUADRATIC = "quadratic"


class _Level(str, Enum):
    NOMINAL = "nominal"
    ORDINAL = "ordinal"
    INTERVAL = "interval"
    RATIO = "ratio"


def _indicator(cl: CrowdLabels, mask: np.ndarray | None = None) -> sp.csr_matrix:
    """Sparse ``(n_items, n_annotators)`` indicator of the labels selected by ``mask``."""
    items = cl.items if mask is None else cl.items[mask]
    annotators = cl.annotators if mask is None else cl.annotators[mask]
    return sp.csr_matrix(
        (np.ones(len(items)), (items, annotators)), shape=(cl.n_items, cl.n_annotators)
    )


def cohen_kappa_matrix(
    labels: LabelsLike, *, weights: str | None = None
) -> npt.NDArray[np.float64]:
    """Cohen's kappa between every pair of annotators, on the items both labelled.

    For annotators ``a`` and ``b`` with ``n`` shared items, let ``O[k, l]`` count the shared
    items that ``a`` labelled ``k`` and ``b`` labelled ``l`` and ``E = outer(O.sum(1),
    O.sum(0)) / n``. Then ``kappa = 1 - sum(w * O) / sum(w * E)`` with disagreement weights
    ``w[k, l]`` equal to ``k != l`` (unweighted), ``|k - l|`` (linear) or ``(k - l)^2``
    (quadratic), as in :func:`sklearn.metrics.cohen_kappa_score`. Weights use the class indices
    ``0..K-1`` of all classes, so pass ``labels=np.arange(K)`` to sklearn to compare.

    The computation is a few sparse products, so memory is ``O(K * n_annotators^2)``.

    Args:
        labels: A :class:`~crowdmed.data.CrowdLabels`, an integer array of shape
            ``(n_items, n_annotators)`` with ``-1`` marking a missing annotation, or a long
            ``DataFrame``.
        weights: ``None`` (unweighted), ``"linear"`` or ``"quadratic"``; the weighted forms
            treat the classes as ordered.

    Returns:
        Symmetric float array of shape ``(n_annotators, n_annotators)``. Off the diagonal it is
        ``NaN`` where two annotators share fewer than 2 items or kappa is undefined (both gave
        one and the same class to every shared item). The diagonal is 1 for annotators with at
        least 2 labels and ``NaN`` otherwise.

    Raises:
        ValueError: If ``weights`` is not one of the options.

    Examples:
        >>> import numpy as np
        >>> labels = np.array([  # 4 items x 3 annotators
        ...     [0, 0, 1],
        ...     [1, 1, -1],
        ...     [0, 1, 0],
        ...     [1, 1, 1],
        ... ])
        >>> cohen_kappa_matrix(labels)  # a & b: p_o = 3/4, p_e = 1/2
        array([[ 1. ,  0.5,  0.4],
               [ 0.5,  1. , -0.5],
               [ 0.4, -0.5,  1. ]])

    References:
        Cohen, J. (1960). A coefficient of agreement for nominal scales. Educational and
        Psychological Measurement 20(1), 37-46. https://doi.org/10.1177/001316446002000104

        Cohen, J. (1968). Weighted kappa. Psychological Bulletin 70(4), 213-220.
        https://doi.org/10.1037/h0026256
    """
    w_opt = None if weights is None else check_option(weights, _KappaWeights, "weights")
    cl = check_labels(labels, min_classes=1)
    n_classes = cl.n_classes
    idx = np.arange(n_classes, dtype=np.float64)
    if w_opt is None:
        w = 1.0 - np.eye(n_classes)
    elif w_opt is _KappaWeights.LINEAR:
        w = np.abs(idx[:, None] - idx[None, :])
    else:
        w = (idx[:, None] - idx[None, :]) ** 2

    present = _indicator(cl)
    by_class = [_indicator(cl, cl.labels == k) for k in range(n_classes)]
    shared = (present.T @ present).toarray()  # n[a, b]: items labelled by both
    # marg[k][a, b]: shared items of a and b that a labelled k (b's marginal is marg[l].T)
    marg = np.stack([(x.T @ present).toarray() for x in by_class])
    observed = np.zeros((cl.n_annotators, cl.n_annotators))
    expected = np.zeros_like(observed)  # n * sum(w * E), kept as integer-valued floats
    for k in range(n_classes):
        # weighted[i, b] = w[k, label of b on i]: the disagreement weight against class k
        weighted = sp.csr_matrix(
            (w[k, cl.labels], (cl.items, cl.annotators)), shape=(cl.n_items, cl.n_annotators)
        )
        observed += (by_class[k].T @ weighted).toarray()
        expected += marg[k] * np.tensordot(w[k], marg, axes=1).T
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = 1.0 - observed * shared / expected
    kappa[(shared < 2) | (expected <= 0)] = np.nan
    np.fill_diagonal(kappa, np.where(cl.labels_per_annotator() >= 2, 1.0, np.nan))
    return kappa


def _item_counts(cl: CrowdLabels) -> np.ndarray:
    """Vote counts of the items with at least two labels, shape ``(n_kept, K)``."""
    counts = cl.vote_counts()
    counts = counts[counts.sum(axis=1) >= 2]
    if counts.shape[0] == 0:
        raise ValueError(
            "`labels` must have at least one item labelled by two or more annotators; got "
            "none. Agreement cannot be measured without overlapping labels."
        )
    return counts


def fleiss_kappa(labels: LabelsLike) -> float:
    """Fleiss' kappa for many annotators, allowing a different number of labels per item.

    With ``n_ij`` the number of labels of class ``j`` on item ``i`` and ``m_i = sum_j n_ij``,
    over the ``N`` items with ``m_i >= 2`` (items with fewer labels are ignored):

    * observed agreement ``P_o = mean_i sum_j n_ij (n_ij - 1) / (m_i (m_i - 1))``,
    * class proportions ``p_j = mean_i n_ij / m_i``,
    * chance agreement ``P_e = sum_j p_j^2``,
    * ``kappa = (P_o - P_e) / (1 - P_e)``.

    This is the generalisation to missing ratings of Gwet (2014), as in ``irrCAC``'s
    ``fleiss.kappa.raw``, except that items with a single label are left out of ``p_j`` too.
    When every item has the same number of labels it is exactly Fleiss' (1971) formula.

    Args:
        labels: A :class:`~crowdmed.data.CrowdLabels`, an integer array of shape
            ``(n_items, n_annotators)`` with ``-1`` marking a missing annotation, or a long
            ``DataFrame``. Which annotator gave a label does not matter.

    Returns:
        Kappa, at most 1; ``NaN`` when every label is the same class (``P_e = 1``).

    Raises:
        ValueError: If no item has two or more labels.

    Examples:
        >>> import numpy as np
        >>> labels = np.array([  # 4 items x 3 annotators
        ...     [0, 0, 0],
        ...     [1, 1, 1],
        ...     [0, 1, -1],
        ...     [1, 1, 0],
        ... ])
        >>> round(fleiss_kappa(labels), 4)  # P_o = 7/12, p = (11/24, 13/24)
        0.1608

    References:
        Fleiss, J. L. (1971). Measuring nominal scale agreement among many raters.
        Psychological Bulletin 76(5), 378-382. https://doi.org/10.1037/h0031619

        Gwet, K. L. (2014). Handbook of Inter-Rater Reliability, 4th ed., Chapter 5.
        Advanced Analytics. ISBN 978-0970806284.
    """
    cl = check_labels(labels, min_classes=1)
    counts = _item_counts(cl)
    m = counts.sum(axis=1)
    p_o = np.mean((np.sum(counts**2, axis=1) - m) / (m * (m - 1)))
    p_j = np.mean(counts / m[:, None], axis=0)
    p_e = float(np.sum(p_j**2))
    if 1.0 - p_e <= 1e-12:
        return float("nan")
    return float((p_o - p_e) / (1.0 - p_e))


def _class_values(cl: CrowdLabels) -> np.ndarray:
    classes = np.asarray(cl.classes)
    if np.issubdtype(classes.dtype, np.number) and classes.dtype != bool:
        return classes.astype(np.float64)
    return np.arange(cl.n_classes, dtype=np.float64)


def krippendorff_alpha(labels: LabelsLike, *, level: str = "nominal") -> float:
    """Krippendorff's alpha from the coincidence matrix; missing labels are allowed.

    Items labelled by fewer than two annotators are not pairable and are ignored. The
    coincidence matrix is ``o[c, k] = sum_i n_ic (n_ik - [c = k]) / (m_i - 1)`` with ``n_ic``
    the labels of class ``c`` on item ``i`` and ``m_i`` its number of labels; with the margins
    ``n_c = sum_k o[c, k]`` and ``n = sum_c n_c``,

    ``alpha = 1 - (n - 1) * sum(o * delta^2) / sum(outer(n_c, n_c) * delta^2)``.

    The squared distance ``delta^2[c, k]`` depends on ``level``:

    * ``"nominal"``: ``1`` if ``c != k`` else ``0``.
    * ``"ordinal"``: classes ordered ``0..K-1``;
      ``(sum_{g=c}^{k} n_g - (n_c + n_k) / 2)^2``.
    * ``"interval"``: ``(v_c - v_k)^2`` with ``v`` the class values when ``classes`` are
      numbers (e.g. a 1-5 score) and the class indices ``0..K-1`` otherwise.
    * ``"ratio"``: ``((v_c - v_k) / (v_c + v_k))^2``; class values must be non-negative.

    Args:
        labels: A :class:`~crowdmed.data.CrowdLabels`, an integer array of shape
            ``(n_items, n_annotators)`` with ``-1`` marking a missing annotation, or a long
            ``DataFrame``.
        level: Level of measurement: ``"nominal"``, ``"ordinal"``, ``"interval"`` or
            ``"ratio"``.

    Returns:
        Alpha, at most 1 (1 is perfect agreement, 0 chance agreement); ``NaN`` when all
        pairable labels are the same class (no expected disagreement).

    Raises:
        ValueError: If ``level`` is not one of the options, no item has two or more labels,
            or ``level="ratio"`` with negative class values.

    Examples:
        Krippendorff's (2011) example, 4 coders x 12 units with missing values (stored
        transposed here: one row per unit):

        >>> import numpy as np
        >>> coders = np.array([
        ...     [1, 2, 3, 3, 2, 1, 4, 1, 2, -1, -1, -1],
        ...     [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, -1, 3],
        ...     [-1, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, -1],
        ...     [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, -1],
        ... ])
        >>> round(krippendorff_alpha(coders.T), 3)
        0.743
        >>> round(krippendorff_alpha(coders.T, level="ordinal"), 3)
        0.815
        >>> round(krippendorff_alpha(coders.T, level="interval"), 3)
        0.849

    References:
        Krippendorff, K. (2011). Computing Krippendorff's alpha-reliability. Annenberg School
        for Communication, University of Pennsylvania.
        https://repository.upenn.edu/asc_papers/43

        Hayes, A. F. & Krippendorff, K. (2007). Answering the call for a standard reliability
        measure for coding data. Communication Methods and Measures 1(1), 77-89.
        https://doi.org/10.1080/19312450709336664
    """
    lvl = check_option(level, _Level, "level")
    cl = check_labels(labels, min_classes=1)
    counts = _item_counts(cl)
    m = counts.sum(axis=1)
    scaled = counts / (m - 1.0)[:, None]
    coincidence = scaled.T @ counts - np.diag(scaled.sum(axis=0))  # (K, K)
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    n_classes = cl.n_classes
    if lvl is _Level.NOMINAL:
        delta2 = 1.0 - np.eye(n_classes)
    elif lvl is _Level.ORDINAL:
        # sum_{g=c}^{k} n_g - (n_c + n_k)/2 = mid_k - mid_c with mid_g = cumsum(n)_g - n_g / 2
        mid = np.cumsum(n_c) - n_c / 2.0
        delta2 = (mid[:, None] - mid[None, :]) ** 2
    else:
        v = _class_values(cl)
        if lvl is _Level.INTERVAL:
            delta2 = (v[:, None] - v[None, :]) ** 2
        else:
            if (v < 0).any():
                raise ValueError(
                    f"`level` 'ratio' must have non-negative class values; got "
                    f"{v[v < 0].tolist()[:5]}. Use level='interval'."
                )
            total = v[:, None] + v[None, :]
            with np.errstate(invalid="ignore", divide="ignore"):
                delta2 = np.where(total > 0, (v[:, None] - v[None, :]) / total, 0.0) ** 2
    expected = float(np.sum(np.outer(n_c, n_c) * delta2))
    if expected <= 0:
        return float("nan")
    return float(1.0 - (n - 1.0) * np.sum(coincidence * delta2) / expected)
