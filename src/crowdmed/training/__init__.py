"""Fit loops for networks trained on the labels of many annotators (needs PyTorch)."""

from crowdmed.training.detection import (
    DetectionVariant,
    DetectorTrainer,
    fuse_model_predictions,
    make_targets,
    predict_boxes,
    variant_targets,
)
from crowdmed.training.segmentation import CrowdSegmenter, SegmentationMethod
from crowdmed.training.trainer import CrowdClassifier, TrainMethod, tta_views

__all__ = [
    "CrowdClassifier",
    "CrowdSegmenter",
    "DetectionVariant",
    "DetectorTrainer",
    "SegmentationMethod",
    "TrainMethod",
    "fuse_model_predictions",
    "make_targets",
    "predict_boxes",
    "tta_views",
    "variant_targets",
]
