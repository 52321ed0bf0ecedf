"""Training networks on the labels of many annotators (needs PyTorch).

Every trainer runs on :class:`~crowdmed.training.engine.Engine` (the one epoch loop:
seeding, checkpoints and exact resume, early stopping, ``torchrun``) and saves itself as a
model folder (``config.json`` + ``model.safetensors``) that :func:`load_model` reads back.
"""

from crowdmed.training._checkpoint import (
    CheckpointEpochsError,
    CheckpointMismatchError,
    NonFiniteLossError,
)
from crowdmed.training.augment import flip_rotate
from crowdmed.training.classifier import CrowdClassifier, TrainMethod, tta_views
from crowdmed.training.detector import (
    CrowdDetector,
    DetectionVariant,
    DetectorTrainer,
    fuse_model_predictions,
    make_targets,
    predict_boxes,
    variant_targets,
)
from crowdmed.training.engine import Engine, FitResult, TrainTask
from crowdmed.training.multitask import MultiTaskClassifier, multitask_loss
from crowdmed.training.persistence import load_model, read_folder, register_loader, save_folder
from crowdmed.training.regression import CrowdRegressor, RegressionMethod
from crowdmed.training.segmenter import CrowdSegmenter, SegmentationMethod

__all__ = [
    "CheckpointEpochsError",
    "CheckpointMismatchError",
    "CrowdClassifier",
    "CrowdDetector",
    "CrowdRegressor",
    "CrowdSegmenter",
    "DetectionVariant",
    "DetectorTrainer",
    "Engine",
    "FitResult",
    "MultiTaskClassifier",
    "NonFiniteLossError",
    "RegressionMethod",
    "SegmentationMethod",
    "TrainMethod",
    "TrainTask",
    "flip_rotate",
    "fuse_model_predictions",
    "load_model",
    "make_targets",
    "multitask_loss",
    "predict_boxes",
    "read_folder",
    "register_loader",
    "save_folder",
    "tta_views",
    "variant_targets",
]
