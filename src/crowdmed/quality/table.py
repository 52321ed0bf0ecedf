"""One table with every per-annotator quality figure (what the CLI writes to ``annotators.csv``)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from crowdmed._validation import check_labels
from crowdmed.quality._common import (
    accuracy_counts,
    confusion_counts,
    gold_counts,
    hard_reference,
    normalise_rows,
    ratio,
    reference_weights,
    soft_reference,
)
from crowdmed.quality.reliability import spammer_score
from crowdmed.typing import LabelsLike

__all__ = ["annotator_table"]


def annotator_table(
    labels: LabelsLike, posteriors: npt.ArrayLike, *, gold: npt.ArrayLike | None = None
) -> pd.DataFrame:
    """Quality figures of every annotator, one row each, in the annotators' order.

    Columns (``NaN`` marks an unknown value):

    * ``n_labels``: number of labels given.
    * ``consensus_agreement``: accuracy against the consensus ``argmax(posteriors)`` (ties go to
      the lowest class index).
    * ``soft_accuracy``: expected accuracy under the posteriors, ``mean(posteriors[i, label])``.
    * ``sensitivity``, ``specificity`` (only when ``K = 2``; class 1 is positive): from the
      soft confusion matrices.
    * ``spammer_score``: :func:`spammer_score` of the soft confusion matrices
      (:func:`confusion_matrices` with the posteriors as reference).
    * ``n_gold``, ``gold_accuracy`` (only when ``gold`` or ``labels.gold`` is given): gold
      answers and accuracy on them.
    * ``quiz_accuracy`` (only when ``labels.quiz_accuracy`` is set).

    Args:
        labels: A :class:`~crowdmed.data.CrowdLabels`, an integer array of shape
            ``(n_items, n_annotators)`` with ``-1`` marking a missing annotation, or a long
            ``DataFrame``.
        posteriors: Float array of shape ``(n_items, K)`` whose rows sum to 1, e.g. an
            aggregator's ``posteriors_``.
        gold: Integer array of shape ``(n_items,)`` with the true class of gold items and ``-1``
            elsewhere; ``labels.gold`` when omitted.

    Returns:
        DataFrame indexed by the annotator ids (index name ``annotator``).

    Raises:
        ValueError: If ``posteriors`` or ``gold`` have the wrong shape or values.

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 1], [1, 1, 1], [0, 0, 0], [1, -1, 0]])  # 4 x 3
        >>> posteriors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
        >>> table = annotator_table(labels, posteriors, gold=np.array([0, -1, -1, -1]))
        >>> list(table.columns)  # doctest: +NORMALIZE_WHITESPACE
        ['n_labels', 'consensus_agreement', 'soft_accuracy', 'sensitivity', 'specificity',
         'spammer_score', 'n_gold', 'gold_accuracy']
        >>> table[["n_labels", "consensus_agreement", "spammer_score", "gold_accuracy"]]
        ... # doctest: +NORMALIZE_WHITESPACE
                   n_labels  consensus_agreement  spammer_score  gold_accuracy
        annotator
        0                 4                  1.0            1.0            1.0
        1                 3                  1.0            1.0            1.0
        2                 4                  0.5            0.0            0.0
    """
    cl = check_labels(labels, min_classes=1)
    soft = soft_reference(posteriors, cl.n_items, "posteriors")  # hard labels are not enough
    cl, weights, _ = reference_weights(cl, soft, "posteriors")
    n_classes = weights.shape[1]
    consensus = np.zeros_like(weights)
    consensus[np.arange(cl.n_items), np.argmax(weights, axis=1)] = 1.0
    columns: dict[str, np.ndarray] = {"n_labels": cl.labels_per_annotator()}
    columns["consensus_agreement"] = ratio(*accuracy_counts(cl, consensus))
    columns["soft_accuracy"] = ratio(*accuracy_counts(cl, weights))
    confusion = normalise_rows(confusion_counts(cl, weights), 0.0)
    if n_classes == 2:
        columns["sensitivity"] = confusion[:, 1, 1]
        columns["specificity"] = confusion[:, 0, 0]
    columns["spammer_score"] = (
        spammer_score(confusion) if n_classes >= 2 else np.full(cl.n_annotators, np.nan)
    )
    g = cl.gold if gold is None else hard_reference(gold, cl, "gold")
    if g is not None:
        correct, n_gold = gold_counts(cl, g)
        columns["n_gold"] = n_gold.astype(np.int64)
        columns["gold_accuracy"] = ratio(correct, n_gold)
    if cl.quiz_accuracy is not None:
        columns["quiz_accuracy"] = cl.quiz_accuracy
    index = pd.Index(cl.annotator_ids, name="annotator")
    return pd.DataFrame(columns, index=index)
