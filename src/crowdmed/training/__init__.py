"""Fit loops for networks trained on the labels of many annotators (needs PyTorch)."""

from crowdmed.training.trainer import CrowdClassifier, TrainMethod, tta_views

__all__ = ["CrowdClassifier", "TrainMethod", "tta_views"]
