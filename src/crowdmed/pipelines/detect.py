"""Train a detector on the boxes of several readers from files; find boxes with it.

:func:`train_detection` is what ``crowdmed train detect`` runs: it reads the box table and the
images, builds the training boxes of the chosen variant (every reader's boxes, their
consensus, or the consensus with each box's loss weighted by the readers' agreement, EARL),
trains a detector (by default crowdmed's small CenterNet with AdamW,
:func:`crowdmed.nn.centernet.centernet_detector`; or torchvision's FCOS with SGD) and returns
a :class:`DetectionRun`, whose :meth:`DetectionRun.save` writes the model folder:

- ``config.json`` and ``model.safetensors``: the detector, saved by
  :meth:`crowdmed.training.CrowdDetector.save` (weights only: loading runs no code);
- ``data.json``: the settings, classes, image size and input checksums (read back with the
  detector by :func:`load_detection_model`);
- ``history.csv``: one row per epoch (losses, learning rate, seconds);
- ``targets.csv``: the boxes the detector learnt from, with their weights;
- ``predictions.csv`` when images to detect on were given.

:func:`detect_images` finds the boxes on every image of a folder.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from crowdmed._validation import check_option
from crowdmed.pipelines.model_folder import (
    DATA_NAME,
    MODEL_FILES,
    check_data,
    fit_device,
    read_data,
    save_model,
    write_json,
)
from crowdmed.pipelines.records import file_record, files_record

__all__ = [
    "DetectionModel",
    "DetectionRun",
    "detect_images",
    "load_detection_model",
    "train_detection",
]

_BOX = ["xmin", "ymin", "xmax", "ymax"]
#: Per detector: the optimiser and the default peak learning rate it learns with.
_SCHEDULES = {"centernet": ("adamw", 0.002), "fcos": ("sgd", 0.03)}


def _no_progress(**_: Any) -> None:
    return None


def _import_torch() -> Any:
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"Detection needs torch and torchvision ({exc}): pip install 'crowdmed[torch]'."
        ) from exc
    return torch


def _box_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows that hold a box (drop readings without boxes)."""
    return frame[frame[_BOX].notna().all(axis=1) & frame["class"].notna()]


@dataclasses.dataclass
class DetectionModel:
    """A detector read back by :func:`load_detection_model`.

    Attributes:
        detector: The fitted :class:`crowdmed.training.CrowdDetector`.
        data: The content of ``data.json`` (``classes``, ``variant``, ``image_size`` ...).
        path: The weights file.
    """

    detector: Any
    data: dict[str, Any]
    path: Path

    @property
    def network(self) -> Any:
        """The detector network (eval mode)."""
        return self.detector.network.eval()


def load_detection_model(model_dir: Path) -> DetectionModel:
    """Read back a model folder written by :meth:`DetectionRun.save` (no code is unpickled).

    Args:
        model_dir: The model folder.

    Returns:
        The detector with its classes and image size.

    Raises:
        ValueError: When the folder holds no readable detection model.
    """
    data = read_data(Path(model_dir))
    if data["task"] != "detection":
        raise ValueError(f"'{model_dir}' holds a {data['task']} model, not a detector.")
    check_data(Path(model_dir), data, task="detection")
    _import_torch()
    from crowdmed.training import load_model

    detector = load_model(model_dir, device="cpu")
    arch = getattr(detector.network, "architecture", None) or {}
    n_classes = arch.get("n_classes")
    check_data(Path(model_dir), data, task="detection", n_classes=n_classes)
    return DetectionModel(detector, data, Path(model_dir) / "model.safetensors")


def _load_same_size(folder: Path, names: list[Any], channels: int) -> Any:
    """Load images; images of several sizes get a fix that applies to detection."""
    from crowdmed.data.images import load_images

    try:
        return load_images(folder, names, channels=channels)
    except ValueError as exc:
        message = str(exc)
        if "same size" not in message:
            raise
        raise ValueError(
            message.split(" Pass ")[0] + " Detection needs images of one size (boxes are pixel "
            "coordinates): resize or pad the images and scale their boxes to match."
        ) from exc


def detect_images(
    network: Any,
    folder: Path,
    *,
    classes: list[Any],
    channels: int,
    image_size: tuple[int, int],
    option: str = "--images",
) -> tuple[list[str], pd.DataFrame]:
    """Boxes found by a detector on every image of a folder.

    Args:
        network: The detector rebuilt by :func:`load_detection_model` (or just trained).
        folder: Folder of images, all of the training size.
        classes: Class value of each label of the detector.
        channels: Input channels of the detector, 1 or 3 (colour images become grey for a
            grey detector, as in :func:`crowdmed.data.images.load_images`).
        image_size: ``(height, width)`` of the training images.
        option: The option naming ``folder`` in error messages.

    Returns:
        ``(image ids, boxes)``: the file stems and a frame with columns
        ``image, class, xmin, ymin, xmax, ymax, score``.

    Raises:
        ValueError: When the folder holds no images or images of another size.
    """
    from crowdmed.data.images import list_images
    from crowdmed.training.detector import predict_boxes

    try:
        names = list_images(folder)
    except ValueError as exc:
        raise ValueError(f"`{option}`: {exc}") from exc
    x = _load_same_size(folder, names, channels)
    height, width = image_size
    if tuple(x.shape[2:]) != (height, width):
        raise ValueError(
            f"`{option}` images are {x.shape[3]}x{x.shape[2]} pixels; the model was trained on "
            f"{width}x{height}. Use images of the training size."
        )
    return names, predict_boxes(network, x, image_ids=names, classes=classes)


def detect_folder(model: DetectionModel, folder: Path) -> tuple[list[str], pd.DataFrame]:
    """Boxes found by a loaded detector on every image of a folder (see :func:`detect_images`).

    Raises:
        ValueError: When the model folder has no image size or the images another size.
    """
    try:
        size = (int(model.data["image_size"][0]), int(model.data["image_size"][1]))
    except (KeyError, TypeError, ValueError, IndexError):
        raise ValueError(
            f"'{model.path.parent / DATA_NAME}' has no readable image_size; retrain the "
            "model with `crowdmed train detect`."
        ) from None
    return detect_images(
        model.network,
        folder,
        classes=list(model.data["classes"]),
        channels=int(model.data["channels"]),
        image_size=size,
    )


def _check_inside(
    present: pd.DataFrame,
    boxes: Path,
    images: Path,
    image_ids: list[Any],
    width: int,
    height: int,
) -> None:
    """Fail when a box reaches outside its image (boxes drawn at another resolution)."""
    coords = present[_BOX].to_numpy(dtype=float)
    if not len(coords):
        return
    if (
        (coords >= 0).all()
        and (coords[:, [0, 2]] <= width).all()
        and (coords[:, [1, 3]] <= height).all()
    ):
        return
    from crowdmed.data.boxes import read_boxes

    sizes = pd.DataFrame({"image": image_ids, "width": width, "height": height})
    read_boxes(boxes, images=images, image_sizes=sizes)  # raises, naming the line and box
    raise ValueError(
        f"`--boxes` file '{boxes}' has boxes outside the {width}x{height} images; coordinates "
        "must be absolute pixels of the images in `--images`."
    )


def _check(
    boxes: Path,
    images: Path,
    predict: Path | None,
    checkpoint: Path | None,
    out: Path,
    numbers: dict[str, Any],
) -> None:
    for option in ("--epochs", "--batch-size"):
        if numbers[option] < 1:
            raise ValueError(f"`{option}` must be a positive integer; got {numbers[option]}.")
    lr, iou_thr, channels = numbers["--lr"], numbers["--iou-thr"], numbers["--channels"]
    if numbers["--detector"] not in _SCHEDULES:
        raise ValueError(
            f"`--detector` must be one of {list(_SCHEDULES)}; got {numbers['--detector']!r}."
        )
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"`--lr` must be a positive number; got {lr}.")
    if not (0 < iou_thr < 1):
        raise ValueError(f"`--iou-thr` must lie in (0, 1); got {iou_thr}.")
    if channels not in (1, 3):
        raise ValueError(f"`--channels` must be 1 (grey) or 3 (RGB); got {channels}.")
    if not boxes.is_file():
        raise ValueError(f"`--boxes` file '{boxes}' does not exist; check the path.")
    for option, folder in (("--images", images), ("--predict", predict)):
        if folder is not None and not folder.is_dir():
            raise ValueError(f"`{option}` must be a folder of images; '{folder}' is not one.")
    if checkpoint is not None and not checkpoint.exists():
        raise ValueError(f"`--checkpoint` '{checkpoint}' does not exist; check the path.")
    if out.exists() and not out.is_dir():
        raise ValueError(f"`--out` must be a folder for the model; '{out}' is a file.")


@dataclasses.dataclass
class DetectionRun:
    """A detector trained by :func:`train_detection`, with what is needed to save it.

    Attributes:
        trainer: The fitted :class:`crowdmed.training.CrowdDetector`.
        network: The trained FCOS.
        config: The settings written to ``data.json``.
        targets: The boxes the detector learnt from, with their weights.
        inputs: Path and checksum of every input.
        fit: Seconds and optimiser steps.
        predictions: Boxes found on the images to detect on, or ``None``.
    """

    trainer: Any
    network: Any
    config: dict[str, Any]
    targets: pd.DataFrame
    inputs: dict[str, Any]
    fit: dict[str, Any]
    predictions: pd.DataFrame | None = None

    def save(self, out: Path, stage: Callable[[Path], Path] = Path) -> list[Path]:
        """Write the detector, data.json, history.csv, targets.csv (and predictions.csv).

        Args:
            out: The model folder.
            stage: Maps each target file to the path actually written.

        Returns:
            The target files.
        """
        from crowdmed.data.io import write_table

        targets = save_model(self.trainer, out, stage)
        write_json(stage, out / DATA_NAME, self.config)
        history = pd.DataFrame(self.trainer.history_)
        history["epoch"] = history["epoch"].astype(int)
        write_table(history, stage(out / "history.csv"))
        write_table(self.targets, stage(out / "targets.csv"))
        targets += [out / DATA_NAME, out / "history.csv", out / "targets.csv"]
        if self.predictions is not None:
            write_table(self.predictions, stage(out / "predictions.csv"))
            targets.append(out / "predictions.csv")
        return targets


def train_detection(
    boxes: Path,
    images: Path,
    out: Path,
    *,
    variant: str = "earl",
    detector: str = "centernet",
    epochs: int = 20,
    batch_size: int = 16,
    lr: float | None = None,
    seed: int = 0,
    iou_thr: float = 0.4,
    channels: int = 1,
    checkpoint: Path | None = None,
    predict: Path | None = None,
    device: str = "auto",
    progress: Callable[..., None] | None = None,
) -> DetectionRun:
    """Train a detector on the boxes of several readers.

    Args:
        boxes: Box table of several readers (CSV/TSV image,reader,class,xmin,ymin,xmax,ymax
            in pixels) or COCO JSON with a reader per annotation.
        images: Folder with one image per box-table image, all of one size.
        out: The model folder (checked, not written).
        variant: all-readers, fused or earl (:class:`crowdmed.training.DetectionVariant`).
        detector: ``"centernet"`` (crowdmed's anchor-free CenterNet, one stride-4 output,
            trained with AdamW) or ``"fcos"`` (torchvision's FCOS, trained with SGD).
        epochs: Number of epochs.
        batch_size: Mini-batch size.
        lr: Peak learning rate (warm-up, then cosine decay); ``None`` takes the detector's
            (0.002 for centernet, 0.03 for fcos).
        seed: Seed of the weights and the data order.
        iou_thr: IoU at which reader boxes are fused.
        channels: Image channels, 1 or 3.
        checkpoint: Start from these detector weights (a detector model folder or a ``.pt``
            state dict).
        predict: Folder of images to find boxes on after training.
        device: Where to train: ``"auto"`` (a CUDA GPU when one is available, else the
            CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        progress: Called with ``description``, ``completed``, ``total`` keywords.

    Returns:
        The run; :meth:`DetectionRun.save` writes the model folder.

    Raises:
        ValueError: For bad values or inputs (one-line messages).
    """
    _import_torch()
    from crowdmed.training.detector import DetectionVariant

    v = check_option(variant, DetectionVariant, "--variant").value
    if lr is None and detector in _SCHEDULES:
        lr = _SCHEDULES[detector][1]
    numbers = {
        "--detector": detector,
        "--epochs": epochs,
        "--batch-size": batch_size,
        "--lr": lr,
        "--iou-thr": iou_thr,
        "--channels": channels,
    }
    _check(boxes, images, predict, checkpoint, out, numbers)
    from crowdmed.data.boxes import read_boxes
    from crowdmed.training.detector import make_targets, variant_targets

    report = progress or _no_progress
    report(description=f"Reading {boxes.name}")
    frame = read_boxes(boxes, images=images)
    if "zmin" in frame.columns:
        raise ValueError("`train detect` trains on 2-D boxes; the box file has 3-D boxes.")
    present = _box_rows(frame)
    if present.empty:
        raise ValueError(f"`--boxes` file '{boxes}' holds no boxes to learn from.")
    image_ids = list(pd.unique(frame["image"]))
    classes = sorted(pd.unique(present["class"]).tolist(), key=str)
    report(description=f"Reading {len(image_ids):,} images")
    x = _load_same_size(images, image_ids, channels)
    height, width = int(x.shape[2]), int(x.shape[3])
    _check_inside(present, boxes, images, image_ids, width, height)
    report(description=f"Building {v} targets")
    targets_frame = variant_targets(frame, v, iou_thr=iou_thr)
    targets = make_targets(targets_frame, image_ids, classes)
    config = {
        "task": "detection",
        "detector": detector,
        "variant": v,
        "network_kwargs": {
            "network": detector,
            "n_classes": len(classes),
            "image_size": max(height, width),
            "in_channels": channels,
            **({"backbone": "resnet10"} if detector == "fcos" else {}),
        },
        "optimizer": _SCHEDULES[detector][0],
        "classes": classes,
        "image_size": [height, width],
        "channels": channels,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "iou_thr": iou_thr,
        "seed": seed,
        "device": device,
        "n_images": len(image_ids),
        "n_targets": len(targets_frame),
    }
    run = _fit(x, targets, config, checkpoint, report)
    run.targets = targets_frame
    _finish(run, boxes, images, image_ids, checkpoint, predict, report)
    return run


def _fit(
    x: Any,
    targets: Any,
    config: dict[str, Any],
    checkpoint: Path | None,
    report: Callable[..., None],
) -> DetectionRun:
    from crowdmed.nn.detection import build_detector
    from crowdmed.training.detector import CrowdDetector

    v = config["variant"]
    network = build_detector(
        **config["network_kwargs"], checkpoint=checkpoint, random_state=config["seed"]
    )

    def on_epoch(epoch: int, total: int, losses: dict[str, float]) -> None:
        text = f"Training ({v}) epoch {epoch}/{total} loss {losses['loss']:.3f}"
        report(completed=epoch, total=total, description=text)

    report(description=f"Training ({v})")
    trainer = CrowdDetector(
        network,
        classes=config["classes"],
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        lr=config["lr"],
        optimizer=config["optimizer"],
        device=fit_device(config["device"])[0],
        random_state=config["seed"],
        progress=on_epoch,
    )
    fit_start = time.perf_counter()
    trainer.fit(x, targets)
    fit = {
        "seconds": time.perf_counter() - fit_start,
        "steps": trainer.n_steps_,
        "device": fit_device(config["device"])[1],
    }
    return DetectionRun(trainer, network, config, pd.DataFrame(), {}, fit)


def _weights_record(path: Path | None) -> dict[str, Any] | None:
    """Checksum of start weights: a ``.pt`` file or the model files of a folder."""
    if path is None or path.is_file():
        return file_record(path)
    return files_record(path, [path / name for name in MODEL_FILES])


def _finish(
    run: DetectionRun,
    boxes: Path,
    images: Path,
    image_ids: list[Any],
    checkpoint: Path | None,
    predict: Path | None,
    report: Callable[..., None],
) -> None:
    from crowdmed.data.images import image_paths

    predict_record = None
    if predict is not None:
        report(description="Predicting")
        names, run.predictions = detect_images(
            run.network,
            predict,
            classes=run.config["classes"],
            channels=run.config["channels"],
            image_size=tuple(run.config["image_size"]),
            option="--predict",
        )
        predict_record = {"path": predict.resolve(), "n_files": len(names)}
    run.inputs = {
        "boxes": file_record(boxes),
        "images": files_record(images, image_paths(images, image_ids)),
        "checkpoint": _weights_record(checkpoint),
        "predict": predict_record,
    }
    run.config["inputs"] = {
        k: None if r is None else r.get("sha256") for k, r in run.inputs.items()
    }
