"""Evaluation metrics as pure functions (NumPy/SciPy)."""

from crowdmed.metrics.classification import roc_auc
from crowdmed.metrics.detection import COCO_IOU_THRESHOLDS, mean_average_precision
from crowdmed.metrics.multirater import (
    expected_calibration_error,
    hungarian_matched_iou,
    qubiq_dice,
)
from crowdmed.metrics.points import DuplicatePolicy, MatchResult, choose_threshold, match_points
from crowdmed.metrics.segmentation import (
    dice,
    dice_per_class,
    generalized_energy_distance,
    hausdorff_distance,
    iou,
    mean_pairwise_dice,
)
from crowdmed.metrics.stats import PairedDifference, format_difference, paired_difference

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "DuplicatePolicy",
    "MatchResult",
    "PairedDifference",
    "choose_threshold",
    "dice",
    "dice_per_class",
    "expected_calibration_error",
    "format_difference",
    "generalized_energy_distance",
    "hausdorff_distance",
    "hungarian_matched_iou",
    "iou",
    "match_points",
    "mean_average_precision",
    "mean_pairwise_dice",
    "paired_difference",
    "qubiq_dice",
    "roc_auc",
]
