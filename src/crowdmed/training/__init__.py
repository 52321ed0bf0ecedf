"""Fit loops for networks trained on the labels of many annotators (needs PyTorch)."""

from crowdmed.training.segmentation import CrowdSegmenter, SegmentationMethod
from crowdmed.training.trainer import CrowdClassifier, TrainMethod, tta_views

__all__ = [
    "CrowdClassifier",
    "CrowdSegmenter",
    "SegmentationMethod",
    "TrainMethod",
    "tta_views",
]
