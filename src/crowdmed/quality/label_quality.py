"""Model-informed consensus and label quality from many annotators (CROWDLAB).

CROWDLAB combines a classifier's out-of-sample predicted probabilities with the labels of many
annotators. Each item gets a consensus label and a consensus quality score, each individual
label a quality score, and each annotator a quality score and the class they are worst at.

The definitions are those of Goh, Tkachenko & Mueller (2022) as implemented in cleanlab 2.9's
``cleanlab.multiannotator.get_label_quality_multiannotator`` (the test reference): majority
vote with its tie-break order, annotator weights from the agreement between annotators
rescaled by the error of always guessing the most common consensus class, a model weight from
the model's error on items with two or more labels times ``sqrt(mean labels per item)``, and
posterior probabilities that average the model's prediction with one "vote" distribution per
annotator. Everything here runs on the COO triplets with ``np.bincount``: no loop over items
or annotators.

Differences from the reference: a final majority-vote tie (after the model, class-frequency and
annotator-agreement tie-breaks) is broken with ``random_state`` instead of the global NumPy
generator, and annotators without a label are allowed (their figures are ``NaN``; they count
for nothing, as if their column were dropped). Vote shares (the ``"agreement"`` posteriors and
the target of the temperature search) count each class in its own column; cleanlab 2.9 counts
the float labels with ``value_counts``, which shifts the counts to the left when a class is
missing from an item, so its ``calibrate_probs`` and ``quality_method="agreement"`` results
differ from these (they agree once that helper counts by class index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from crowdmed._validation import check_labels, check_option, check_random_state
from crowdmed.data.labels import CrowdLabels
from crowdmed.quality._common import with_n_classes
from crowdmed.quality._crowdlab import (
    ConsensusMethod,
    Coo,
    QualityMethod,
    ScoreMethod,
    best_temperature,
    check_pred_probs,
    crowdlab,
    score_labels,
    temperature_scale,
    worst_class,
)
from crowdmed.typing import LabelsLike, RandomState

__all__ = ["ConsensusMethod", "LabelQuality", "QualityMethod", "ScoreMethod", "label_quality"]


@dataclass(frozen=True)
class LabelQuality:
    """Result of :func:`label_quality`.

    Attributes:
        labels: The labels as COO triplets; ``label_scores`` follows their order.
        consensus: Integer array of shape ``(n_items,)``: consensus class index.
        consensus_quality: Float array of shape ``(n_items,)`` in [0, 1]; low means the
            consensus is likely wrong.
        agreement: Float array of shape ``(n_items,)``: fraction of the item's annotators who
            gave the consensus label.
        n_annotations: Integer array of shape ``(n_items,)``.
        label_scores: Float array of shape ``(n_labels,)``: quality of each individual label.
        annotator_quality: Float array of shape ``(n_annotators,)``; ``NaN`` for an annotator
            who never labelled an item that someone else labelled too.
        annotator_agreement: Float array of shape ``(n_annotators,)``: fraction of the
            annotator's labels equal to the consensus.
        worst_class: Integer array of shape ``(n_annotators,)``: among the classes the
            annotator chose, the one whose labels agree least with the consensus; ``-1`` for
            an annotator without labels.
        n_labelled: Integer array of shape ``(n_annotators,)``.
        posteriors: Float array of shape ``(n_items, K)``, rows sum to 1: the CROWDLAB
            posterior (the vote shares for ``quality_method="agreement"``).
        model_weight: Weight of the classifier relative to one annotator (``NaN`` for
            ``quality_method="agreement"``).
        annotator_weight: Float array of shape ``(n_annotators,)`` (``NaN`` for an annotator
            without labels, and for ``quality_method="agreement"``).
        temperature: Temperature applied to ``pred_probs`` (1 unless ``calibrate=True``).
    """

    labels: CrowdLabels
    consensus: np.ndarray
    consensus_quality: np.ndarray
    agreement: np.ndarray
    n_annotations: np.ndarray
    label_scores: np.ndarray
    annotator_quality: np.ndarray
    annotator_agreement: np.ndarray
    worst_class: np.ndarray
    n_labelled: np.ndarray
    posteriors: np.ndarray
    model_weight: float
    annotator_weight: np.ndarray
    temperature: float

    def label_score_matrix(self) -> np.ndarray:
        """Label scores in the dense view, shape ``(n_items, n_annotators)``; ``NaN`` = none."""
        cl = self.labels
        out = np.full((cl.n_items, cl.n_annotators), np.nan)
        out[cl.items, cl.annotators] = self.label_scores
        return out

    def items_frame(self) -> pd.DataFrame:
        """One row per item (index ``item``): consensus (a class value) and its figures."""
        cl = self.labels
        return pd.DataFrame(
            {
                "consensus": cl.classes[self.consensus],
                "consensus_quality": self.consensus_quality,
                "agreement": self.agreement,
                "n_annotations": self.n_annotations,
            },
            index=pd.Index(cl.item_ids, name="item"),
        )

    def annotators_frame(self) -> pd.DataFrame:
        """One row per annotator (index ``annotator``), in the annotators' order."""
        cl = self.labels
        worst = np.array(
            [cl.classes[k] if k >= 0 else None for k in self.worst_class], dtype=object
        )
        return pd.DataFrame(
            {
                "annotator_quality": self.annotator_quality,
                "agreement_with_consensus": self.annotator_agreement,
                "worst_class": worst,
                "n_labels": self.n_labelled,
                "weight": self.annotator_weight,
            },
            index=pd.Index(cl.annotator_ids, name="annotator"),
        )


def label_quality(
    labels: LabelsLike,
    pred_probs: npt.ArrayLike,
    *,
    consensus_method: str | ConsensusMethod = "best_quality",
    quality_method: str | QualityMethod = "crowdlab",
    score_method: str | ScoreMethod = "self_confidence",
    calibrate: bool = False,
    random_state: RandomState = None,
) -> LabelQuality:
    """Consensus labels and quality scores of items, labels and annotators (CROWDLAB).

    Args:
        labels: A :class:`~crowdmed.data.CrowdLabels` (the COO triplets ``(item, annotator,
            label)``), an integer array of shape ``(n_items, n_annotators)`` with ``-1``
            marking a missing annotation, or a long ``DataFrame``. Every item needs a label,
            and at least one item two labels.
        pred_probs: Float array of shape ``(n_items, K)`` whose rows sum to 1: a classifier's
            out-of-sample (e.g. cross-validated) predicted probabilities.
        consensus_method: ``"best_quality"`` (argmax of the CROWDLAB posterior) or
            ``"majority_vote"``.
        quality_method: ``"crowdlab"`` or ``"agreement"`` (see :class:`QualityMethod`).
        score_method: How a label is scored against a posterior row (see
            :class:`ScoreMethod`).
        calibrate: Temperature-scale ``pred_probs`` first, to best match the vote shares.
        random_state: Seed or Generator for a majority-vote tie that survives every
            tie-break.

    Returns:
        The consensus and every quality figure, see :class:`LabelQuality`.

    Raises:
        ValueError: If ``pred_probs`` does not match the labels, an item has no label, or no
            item has two labels.

    References:
        Goh, Tkachenko & Mueller (2022), "CROWDLAB: Supervised learning to infer consensus
        labels and quality scores for data with multiple annotators".
        https://doi.org/10.48550/arXiv.2210.06812

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 0], [1, 1, -1], [0, -1, 1], [1, 1, 0], [2, 2, 2], [2, -1, 2]])
        >>> probs = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1],
        ...                   [0.5, 0.4, 0.1], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]])
        >>> lq = label_quality(labels, probs)
        >>> lq.consensus
        array([0, 1, 1, 1, 2, 2])
        >>> np.round(lq.consensus_quality, 3)
        array([0.836, 0.743, 0.533, 0.595, 0.836, 0.713])
        >>> np.round(lq.annotator_quality, 3), lq.worst_class
        (array([0.765, 0.888, 0.731]), array([0, 1, 0]))
    """
    cm = check_option(consensus_method, ConsensusMethod, "consensus_method")
    qm = check_option(quality_method, QualityMethod, "quality_method")
    sm = check_option(score_method, ScoreMethod, "score_method")
    cl = check_labels(labels, min_classes=1)
    pp = check_pred_probs(pred_probs, cl.n_items, cl.n_classes, "pred_probs")
    cl = with_n_classes(cl, pp.shape[1])
    c = Coo.build(cl, pp.shape[1])
    if not (c.n > 1).any():
        raise ValueError(
            "`labels` must give at least one item two or more labels; got one label per item. "
            "With one label per item, score labels with the model alone (pred_probs[i, label])."
        )
    temperature = 1.0
    if calibrate:
        temperature = best_temperature(c, pp)
        pp = temperature_scale(pp, temperature)
    rng = check_random_state(random_state)
    consensus, stats, _ = crowdlab(c, pp, cm, qm, sm, rng)
    label_scores = score_labels(stats.posteriors, c.it, c.lab, sm)
    labelled = c.n_per_annotator > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        lqs = np.bincount(c.an, weights=label_scores, minlength=c.n_annotators) / c.n_per_annotator
        agree_all = (
            np.bincount(c.an, weights=c.lab == consensus[c.it], minlength=c.n_annotators)
            / c.n_per_annotator
        )
        sel = (c.n != 1)[c.it]
        hit = np.bincount(
            c.an[sel], weights=c.lab[sel] == consensus[c.it[sel]], minlength=c.n_annotators
        )
        agree_multi = hit / np.bincount(c.an[sel], minlength=c.n_annotators)
    if qm is QualityMethod.CROWDLAB:
        frac = np.mean(c.n) / labelled.sum()
        w = stats.model_weight / (stats.model_weight + np.nansum(stats.annotator_weight) * frac)
        annotator_quality = w * lqs + (1.0 - w) * agree_multi
    else:
        annotator_quality = agree_multi
    worst = worst_class(c, consensus, stats.quality)
    return LabelQuality(
        labels=cl,
        consensus=consensus,
        consensus_quality=stats.quality,
        agreement=stats.agreement,
        n_annotations=c.n,
        label_scores=label_scores,
        annotator_quality=annotator_quality,
        annotator_agreement=agree_all,
        worst_class=worst,
        n_labelled=c.n_per_annotator,
        posteriors=stats.posteriors,
        model_weight=stats.model_weight,
        annotator_weight=stats.annotator_weight,
        temperature=temperature,
    )
