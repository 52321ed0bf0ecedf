"""Predict with any model folder written by ``crowdmed train`` (what ``crowdmed predict`` runs).

:func:`model_task` tells the task of a model folder, :func:`load_model_folder` reads it back
and :func:`predict_folder` predicts on a folder of images (or a feature matrix):

- a classifier gives one row per item: item, label, confidence, p_<class>...;
- a detector one row per box: image, class, xmin, ymin, xmax, ymax, score;
- a segmentation model one label map per image (:class:`crowdmed.pipelines.segment.Segmentations`).

Examples:
    >>> result = predict_folder(Path("model"), images=Path("new_images"))  # doctest: +SKIP
    >>> result.table.head()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from crowdmed.pipelines.model_folder import read_data
from crowdmed.pipelines.records import file_record, files_record, sha256_file

__all__ = ["Prediction", "load_model_folder", "model_task", "predict_folder"]

_TASKS = ("classification", "segmentation", "detection")


def model_task(model_dir: Path) -> str:
    """The task of a model folder: classification, segmentation or detection.

    Raises:
        ValueError: For a folder without a readable ``data.json`` or an unknown task.
    """
    task = read_data(model_dir)["task"]
    if task not in _TASKS:
        raise ValueError(f"'{model_dir}' holds a model of unknown task {task!r}; retrain it.")
    return str(task)


def load_model_folder(model_dir: Path) -> Any:
    """Read back the model of a folder written by ``crowdmed train`` (any task).

    Returns:
        A :class:`~crowdmed.pipelines.classify.ClassifierModel`,
        :class:`~crowdmed.pipelines.segment.SegmentationModel` or
        :class:`~crowdmed.pipelines.detect.DetectionModel`.

    Raises:
        ValueError: When the folder holds no readable model.
    """
    task = model_task(model_dir)
    if task == "segmentation":
        from crowdmed.pipelines.segment import load_segmentation_model

        return load_segmentation_model(model_dir)
    if task == "detection":
        from crowdmed.pipelines.detect import load_detection_model

        return load_detection_model(model_dir)
    from crowdmed.pipelines.classify import load_classifier

    return load_classifier(model_dir)


@dataclasses.dataclass
class Prediction:
    """What :func:`predict_folder` found.

    Attributes:
        task: classification, segmentation or detection.
        model: The loaded model.
        table: Class probabilities or boxes (``None`` for segmentation).
        segmentations: Label maps of a segmentation model (else ``None``).
        inputs: Path and checksum of every input.
        n_items: Number of items or images predicted.
        details: What the run record adds for this task (tta, classes, method ...).
    """

    task: str
    model: Any
    table: pd.DataFrame | None
    segmentations: Any
    inputs: dict[str, Any]
    n_items: int
    details: dict[str, Any]

    def model_record(self) -> dict[str, Any]:
        """Path and SHA-256 of the model weights."""
        path = self.model.path
        return {"path": path.resolve(), "sha256": sha256_file(path)}


def _check_options(task: str, images: Path | None, others: dict[str, Any], model_dir: Path) -> Path:
    for option, value in others.items():
        if value is not None:
            raise ValueError(f"`{option}` does not apply to a {task} model.")
    if images is None:
        raise ValueError(f"The model in '{model_dir}' is a {task} model; pass `--images DIR`.")
    if not images.is_dir():
        raise ValueError(f"`--images` must be a folder of images; '{images}' is not one.")
    return images


def predict_folder(
    model_dir: Path,
    *,
    images: Path | None = None,
    features: Path | None = None,
    feature_ids: Path | None = None,
    tta: bool | None = None,
    progress: Callable[..., None] | None = None,
) -> Prediction:
    """Predict with the model of a folder on a folder of images or a feature matrix.

    Args:
        model_dir: Model folder written by ``crowdmed train`` (any task).
        images: Folder of images; one prediction per file (item = file name without suffix).
            A classifier resizes them to the training size; a detector needs that size; a
            segmentation model takes any size (and 3-D volumes when trained on volumes).
        features: ``.npy`` features of a classifier trained on features.
        feature_ids: Item id of each feature row.
        tta: Classifier on images: average over the 8 rotations/mirrors of each image (the
            model's setting when ``None``).
        progress: Called with a ``description`` keyword at each step.

    Returns:
        The predictions.

    Raises:
        ValueError: For a folder without a model or inputs that do not suit it.
    """
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"Prediction needs the torch extra ({exc}): pip install 'crowdmed[torch]'."
        ) from exc
    task = model_task(model_dir)
    if task == "classification":
        return _classify(model_dir, images, features, feature_ids, tta, progress)
    others = {"--features": features, "--feature-ids": feature_ids, "--tta/--no-tta": tta}
    folder = _check_options(task, images, others, model_dir)
    model = load_model_folder(model_dir)
    if task == "segmentation":
        from crowdmed.pipelines.segment import segment_folder

        seg = segment_folder(model, folder, progress=progress)
        details = {
            "method": model.data.get("method"),
            "n_classes": model.n_classes,
            "channels": model.channels,
        }
        return Prediction(task, model, None, seg, seg.inputs, len(seg.cases), details)
    from crowdmed.data.images import image_paths
    from crowdmed.pipelines.detect import detect_folder

    (progress or (lambda **_: None))(description="Predicting")
    names, boxes = detect_folder(model, folder)
    inputs = {"images": files_record(folder, image_paths(folder, names))}
    details = {
        "variant": model.data.get("variant"),
        "n_boxes": len(boxes),
        "classes": list(model.data["classes"]),
    }
    return Prediction(task, model, boxes, None, inputs, len(names), details)


def _classify(
    model_dir: Path,
    images: Path | None,
    features: Path | None,
    feature_ids: Path | None,
    tta: bool | None,
    progress: Callable[..., None] | None,
) -> Prediction:
    from crowdmed.data.features import ImageInputs, input_source
    from crowdmed.pipelines.classify import load_classifier, predict_classes

    source = input_source(features, feature_ids, images)
    if source is None:
        raise ValueError(
            "Pass the inputs to predict with `--features` (and `--feature-ids`) or `--images`."
        )
    model = load_classifier(model_dir)
    table = predict_classes(model, source, tta=tta, progress=progress)
    if isinstance(source, ImageInputs):
        from crowdmed.data.images import image_paths

        items = table["item"].tolist()
        inputs: dict[str, Any] = {
            "images": files_record(source.folder, image_paths(source.folder, items))
        }
    else:
        inputs = {
            "features": file_record(features),
            "feature_ids": file_record(feature_ids),
        }
    details = {
        "method": model.data.get("method"),
        "tta": table.attrs["tta"],
        "classes": list(model.data["classes"]),
    }
    return Prediction("classification", model, table, None, inputs, len(table), details)
