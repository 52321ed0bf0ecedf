"""Evaluation metrics as pure functions (NumPy/SciPy)."""

from crowdmed.metrics.classification import roc_auc
from crowdmed.metrics.segmentation import (
    dice,
    dice_per_class,
    generalized_energy_distance,
    hausdorff_distance,
    iou,
    mean_pairwise_dice,
)

__all__ = [
    "dice",
    "dice_per_class",
    "generalized_energy_distance",
    "hausdorff_distance",
    "iou",
    "mean_pairwise_dice",
    "roc_auc",
]
