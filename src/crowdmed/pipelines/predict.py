"""Predict with any model folder written by ``crowdmed train`` (what ``crowdmed predict`` runs).

:func:`model_task` tells the task of a model folder, :func:`load_model_folder` reads it back
and :func:`predict_folder` predicts on a folder of images (or a feature matrix):

- a classifier gives one row per item: item, label, confidence, p_<class>...;
- a detector one row per box: image, class, xmin, ymin, xmax, ymax, score;
- a segmentation model one label map per image (:class:`crowdmed.pipelines.segment.Segmentations`);
- a :class:`~crowdmed.training.CrowdRegressor` folder one row per item: item, value;
- a :class:`~crowdmed.training.MultiTaskClassifier` folder one row per item: item, label,
  confidence, p_<class>... of the main task, then aux_<t>... (the auxiliary head's
  probabilities, or values for an ``"mse"`` auxiliary loss).

The last two are the library's own model folders (``config.json`` + ``model.safetensors``,
read with :func:`crowdmed.training.load_model`, no ``data.json``): their classes are
``0..K-1`` and their inputs a feature matrix (width checked against the network's
``in_features``) or a folder of same-sized images (channels from the network's
``in_channels``).

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

from crowdmed.pipelines.model_folder import DATA_NAME, read_data
from crowdmed.pipelines.records import file_record, files_record, sha256_file

__all__ = ["LibraryModel", "Prediction", "load_model_folder", "model_task", "predict_folder"]

_TASKS = ("classification", "segmentation", "detection")
#: Library model folders (no ``data.json``) by their ``config.json`` task.
_LIBRARY_TASKS = {"regressor": "regression", "multitask": "multitask"}


def model_task(model_dir: Path) -> str:
    """The task of a model folder.

    classification, segmentation or detection (``crowdmed train``), or regression or
    multitask (library folders of a ``CrowdRegressor`` or ``MultiTaskClassifier``).

    Raises:
        ValueError: For a folder without a readable ``data.json`` or an unknown task.
    """
    model_dir = Path(model_dir)
    if model_dir.is_dir() and not (model_dir / DATA_NAME).exists():
        library = _library_task(model_dir)
        if library is not None:
            return library
    task = read_data(model_dir)["task"]
    if task not in _TASKS:
        raise ValueError(f"'{model_dir}' holds a model of unknown task {task!r}; retrain it.")
    return str(task)


def _library_task(model_dir: Path) -> str | None:
    """``regression`` or ``multitask`` for such a library folder, else ``None``."""
    if not (model_dir / "config.json").is_file():
        return None
    from crowdmed.training.persistence import read_config

    return _LIBRARY_TASKS.get(str(read_config(model_dir)["task"]))


@dataclasses.dataclass
class LibraryModel:
    """A library model folder without ``data.json`` (:func:`crowdmed.training.load_model`).

    Attributes:
        estimator: The fitted :class:`~crowdmed.training.CrowdRegressor` or
            :class:`~crowdmed.training.MultiTaskClassifier`.
        config: Its ``config.json``.
        path: The weights file.
    """

    estimator: Any
    config: dict[str, Any]
    path: Path

    def input_spec(self) -> dict[str, Any]:
        """``in_features`` / ``in_channels`` of the saved network spec (those it names)."""
        spec = self.config.get("network") or {}
        kwargs = spec.get("kwargs") or {}
        return {k: kwargs[k] for k in ("in_features", "in_channels") if k in kwargs}


def load_model_folder(model_dir: Path) -> Any:
    """Read back the model of a folder written by ``crowdmed train`` (any task).

    Returns:
        A :class:`~crowdmed.pipelines.classify.ClassifierModel`,
        :class:`~crowdmed.pipelines.segment.SegmentationModel`,
        :class:`~crowdmed.pipelines.detect.DetectionModel` or, for a regressor or multitask
        library folder, a :class:`LibraryModel`.

    Raises:
        ValueError: When the folder holds no readable model.
    """
    task = model_task(model_dir)
    if task in _LIBRARY_TASKS.values():
        from crowdmed.training import load_model
        from crowdmed.training.persistence import read_config

        estimator = load_model(model_dir, device="cpu")
        weights = Path(model_dir) / "model.safetensors"
        return LibraryModel(estimator, read_config(model_dir), weights)
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
        task: classification, segmentation, detection, regression or multitask.
        model: The loaded model.
        table: Class probabilities, boxes or values (``None`` for segmentation).
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
        model_dir: Model folder written by ``crowdmed train`` (any task), or the folder of a
            fitted :class:`~crowdmed.training.CrowdRegressor` or
            :class:`~crowdmed.training.MultiTaskClassifier` (``save``).
        images: Folder of images; one prediction per file (item = file name without suffix).
            A classifier resizes them to the training size; a detector needs that size; a
            segmentation model takes any size (and 3-D volumes when trained on volumes); a
            regressor or multitask network takes them as they are (all of one size).
        features: ``.npy`` features of a classifier (or regressor, multitask network) trained
            on features.
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
    if task in _LIBRARY_TASKS.values():
        if tta is not None:
            raise ValueError(f"`--tta/--no-tta` does not apply to a {task} model.")
        return _predict_library(task, model_dir, images, features, feature_ids, progress)
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


def _library_inputs(
    model: LibraryModel,
    images: Path | None,
    features: Path | None,
    feature_ids: Path | None,
    report: Callable[..., None],
) -> tuple[list[Any], Any, dict[str, Any]]:
    """Items, network inputs and their record for a :class:`LibraryModel`."""
    from crowdmed.data.features import FeatureInputs, input_source

    source = input_source(features, feature_ids, images)
    if source is None:
        raise ValueError(
            "Pass the inputs to predict with `--features` (and `--feature-ids`) or `--images`."
        )
    spec = model.input_spec()
    where = model.path.parent
    if isinstance(source, FeatureInputs):
        if "in_channels" in spec:
            raise ValueError(f"The model in '{where}' is an image network; pass `--images`.")
        width = spec.get("in_features")
        if width is not None and source.matrix.shape[1] != width:
            raise ValueError(
                f"`--features` has {source.matrix.shape[1]} columns but the model was "
                f"trained on {width} features."
            )
        record = {"features": file_record(features), "feature_ids": file_record(feature_ids)}
        return list(source.ids), source.matrix, record
    if "in_features" in spec:
        raise ValueError(f"The model in '{where}' was trained on features; pass `--features`.")
    from crowdmed.data.images import image_paths, list_images

    items = list_images(source.folder)
    report(description=f"Reading {len(items):,} images")
    x = source.take(items, "images", channels=int(spec.get("in_channels", 1)))
    return items, x, {"images": files_record(source.folder, image_paths(source.folder, items))}


def _predict_library(
    task: str,
    model_dir: Path,
    images: Path | None,
    features: Path | None,
    feature_ids: Path | None,
    progress: Callable[..., None] | None,
) -> Prediction:
    report = progress or (lambda **_: None)
    model = load_model_folder(model_dir)
    items, x, inputs = _library_inputs(model, images, features, feature_ids, report)
    report(description=f"Predicting {len(items):,} items")
    est = model.estimator
    details: dict[str, Any]
    if task == "regression":
        table = pd.DataFrame({"item": items, "value": est.predict(x)})
        details = {"method": est.method_.value, "n_annotators": est.n_annotators_}
        return Prediction(task, model, table, None, inputs, len(table), details)
    proba = est.predict_proba(x)
    aux = est.predict_aux(x)
    frame: dict[str, Any] = {
        "item": items,
        "label": proba.argmax(axis=1),
        "confidence": proba.max(axis=1),
    }
    frame.update({f"p_{k}": proba[:, k] for k in range(proba.shape[1])})
    frame.update({f"aux_{t}": aux[:, t] for t in range(aux.shape[1])})
    details = {
        "method": "multitask",
        "classes": list(range(proba.shape[1])),
        "n_aux": int(aux.shape[1]),
        "aux_loss": est.aux_loss,
    }
    table = pd.DataFrame(frame)
    return Prediction(task, model, table, None, inputs, len(table), details)
