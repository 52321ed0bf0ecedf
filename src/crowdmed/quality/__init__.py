"""Annotator quality: reliability against a reference, agreement, spammers and gold filtering.

* Against a reference (gold labels, a consensus or posteriors): :func:`confusion_matrices`,
  :func:`sensitivity_specificity`, :func:`reader_operating_points` (with Jeffreys intervals),
  :func:`annotator_accuracy` and :func:`spammer_score`.
* Between annotators, without a reference: :func:`cohen_kappa_matrix`, :func:`fleiss_kappa` and
  :func:`krippendorff_alpha`.
* Gold (honeypot) questions: :func:`gold_accuracy` and :func:`filter_annotators`.
* Everything per annotator in one table: :func:`annotator_table`.
* Per-item features from many annotators' scores, with their disagreement:
  :func:`crowd_features`.
* Model-informed consensus and the quality of items, labels and annotators (CROWDLAB):
  :func:`label_quality`.
* Which item to label next, and by whom: :func:`relabel_scores`; the annotators' confusion
  matrices with a classifier as each item's prior: :func:`annotator_confusions`.
"""

from crowdmed.quality.agreement import cohen_kappa_matrix, fleiss_kappa, krippendorff_alpha
from crowdmed.quality.box_agreement import match_boxes, pairwise_reader_f1, reader_agreement
from crowdmed.quality.features import CrowdStat, crowd_features
from crowdmed.quality.gold import filter_annotators, gold_accuracy
from crowdmed.quality.label_quality import LabelQuality, label_quality
from crowdmed.quality.relabel import (
    AnnotatorConfusions,
    RelabelScores,
    annotator_confusions,
    relabel_scores,
)
from crowdmed.quality.reliability import (
    annotator_accuracy,
    confusion_matrices,
    reader_operating_points,
    sensitivity_specificity,
    spammer_score,
)
from crowdmed.quality.table import annotator_table

__all__ = [
    "AnnotatorConfusions",
    "CrowdStat",
    "LabelQuality",
    "RelabelScores",
    "annotator_accuracy",
    "annotator_confusions",
    "annotator_table",
    "cohen_kappa_matrix",
    "confusion_matrices",
    "crowd_features",
    "filter_annotators",
    "fleiss_kappa",
    "gold_accuracy",
    "krippendorff_alpha",
    "label_quality",
    "match_boxes",
    "pairwise_reader_f1",
    "reader_agreement",
    "reader_operating_points",
    "relabel_scores",
    "sensitivity_specificity",
    "spammer_score",
]
