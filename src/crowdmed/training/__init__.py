"""Fit loops for networks trained on the labels of many annotators (needs PyTorch)."""

from crowdmed.training.classifier import CrowdClassifier, TrainMethod, tta_views
from crowdmed.training.detector import (
    DetectionVariant,
    DetectorTrainer,
    fuse_model_predictions,
    make_targets,
    predict_boxes,
    variant_targets,
)
from crowdmed.training.segmenter import CrowdSegmenter, SegmentationMethod

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
