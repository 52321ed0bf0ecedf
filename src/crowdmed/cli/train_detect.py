"""``crowdmed train --task detection``: train an EARL-weighted FCOS on the boxes of several readers.

The ``train`` command parses the options and calls :func:`train_detection`, which reads the
box table and the images, builds the training boxes of the chosen variant, trains the detector
and writes the model folder all at once (nothing is written when anything fails):

- ``model.pt``: weights plus the settings needed to rebuild the detector (weights only; no
  code is unpickled when it is read back by :func:`load_detection_model`);
- ``config.json``: the settings, classes and input checksums;
- ``history.csv``: one row per epoch (losses, learning rate, seconds);
- ``targets.csv``: the boxes the detector learnt from, with their weights;
- ``run.json``: version, arguments, seed, timing;
- ``predictions.csv`` when ``--predict DIR`` is given: the boxes found on those images.

``crowdmed predict MODEL_DIR --images DIR --out boxes.csv`` calls
:func:`predict_detection_command`, which finds the boxes with the same code
(:func:`detect_images`) and writes the table plus its run record ``boxes.csv.json``.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape

from crowdmed._io import to_jsonable
from crowdmed._validation import check_option
from crowdmed._version import __version__
from crowdmed.cli._common import (
    _check_outputs,
    _environment,
    _import_torch,
    _progress,
    _sha256,
    _staged_outputs,
    _step,
)

__all__ = [
    "DETECTION_MODEL_FORMAT",
    "detect_images",
    "load_detection_model",
    "predict_detection_command",
    "train_detection",
]

#: Version of the ``model.pt`` layout written by :func:`train_detection`.
DETECTION_MODEL_FORMAT = 1

_BOX = ["xmin", "ymin", "xmax", "ymax"]


def _import_detection(command: str = "train --task detection") -> Any:
    torch = _import_torch(command, images=False)
    try:
        import torchvision  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"`crowdmed {command}` needs torchvision: pip install 'crowdmed[torch]'."
        ) from exc
    return torch


def _box_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows that hold a box (drop readings without boxes)."""
    return frame[frame[_BOX].notna().all(axis=1) & frame["class"].notna()]


def load_detection_model(model_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild the detector saved by ``crowdmed train --task detection``.

    Args:
        model_dir: The model folder.

    Returns:
        ``(network, payload)``: the FCOS in eval mode and the saved settings.

    Raises:
        ValueError: When the folder holds no readable detection model.
    """
    _import_detection()
    from crowdmed.nn.detection import fcos_detector
    from crowdmed.training._torch_io import load_payload

    path = model_dir / "model.pt"
    payload = load_payload(path, fmt="crowdmed-detector", command="crowdmed train --task detection")
    network = fcos_detector(**payload["network_kwargs"])
    network.load_state_dict(payload["state_dict"])
    network.eval()
    return network, payload


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
        option: The CLI option naming ``folder`` in error messages.

    Returns:
        ``(image ids, boxes)``: the file stems and a frame with columns
        ``image, class, xmin, ymin, xmax, ymax, score``.

    Raises:
        ValueError: When the folder holds no images or images of another size.
    """
    from crowdmed.data.images import list_images, load_images
    from crowdmed.training.detector import predict_boxes

    try:
        names = list_images(folder)
    except ValueError as exc:
        raise ValueError(f"`{option}`: {exc}") from exc
    x = _load_same_size(load_images, folder, names, channels)
    height, width = image_size
    if tuple(x.shape[2:]) != (height, width):
        raise ValueError(
            f"`{option}` images are {x.shape[3]}x{x.shape[2]} pixels; the model was trained on "
            f"{width}x{height}. Use images of the training size."
        )
    return names, predict_boxes(network, x, image_ids=names, classes=classes)


def predict_detection_command(
    ctx: typer.Context,
    *,
    model_dir: Path,
    images: Path | None,
    out: Path,
    json_path: Path | None,
    console: Console,
) -> None:
    """``crowdmed predict`` for a detection model: one table of boxes.

    Writes ``out`` (CSV, TSV or Parquet by suffix: image, class, xmin, ymin, xmax, ymax,
    score) and its run record (``out.json`` by default) all at once.

    Raises:
        ValueError: For bad options or inputs (one-line messages).
    """
    started = time.perf_counter()
    if images is None:
        raise ValueError(f"The model in '{model_dir}' is a detection model; pass `--images DIR`.")
    if not images.is_dir():
        raise ValueError(f"`--images` must be a folder of images; '{images}' is not one.")
    json_out = json_path if json_path is not None else out.with_name(out.name + ".json")
    model_file = model_dir / "model.pt"
    _check_outputs([model_file], {"--out": out, "--json": json_out})
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        image_size = (int(config["image_size"][0]), int(config["image_size"][1]))
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(
            f"'{model_dir / 'config.json'}' has no readable image_size; retrain the model with "
            "`crowdmed train --task detection`."
        ) from exc

    from crowdmed.data.images import image_paths
    from crowdmed.data.io import write_table

    torch = _import_detection("predict")
    network, payload = load_detection_model(model_dir)
    classes = list(payload["classes"])
    channels = int(payload["network_kwargs"]["in_channels"])
    with _progress(console) as progress:
        with _step(progress, "Predicting"):
            names, boxes = detect_images(
                network, images, classes=classes, channels=channels, image_size=image_size
            )
        record: dict[str, Any] = {
            "crowdmed_version": __version__,
            "command": "predict",
            "task": "detection",
            "arguments": ctx.params,
            "model": {"path": model_file.resolve(), "sha256": _sha256(model_file)},
            "variant": payload.get("variant"),
            "inputs": {
                "images": {
                    "path": images.resolve(),
                    "n_files": len(names),
                    "sha256": _tree_sha(image_paths(images, names)),
                }
            },
            "n_items": len(names),
            "n_boxes": len(boxes),
            "classes": classes,
            "outputs": {"predictions": out.resolve(), "json": json_out.resolve()},
            "environment": _environment(torch=torch.__version__),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        with _step(progress, "Writing outputs"), _staged_outputs() as stage:
            write_table(boxes, stage(out))
            record["elapsed_seconds"] = time.perf_counter() - started
            stage(json_out).write_text(
                json.dumps(to_jsonable(record), indent=2) + "\n", encoding="utf-8"
            )
    console.print(
        f"Found {len(boxes):,} boxes on {len(names):,} images with {payload.get('variant')}: "
        f"{escape(str(out))}"
    )


def train_detection(
    ctx: typer.Context,
    *,
    boxes: Path | None,
    images: Path | None,
    out: Path,
    variant: str,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    iou_thr: float,
    channels: int | None,
    checkpoint: Path | None,
    predict: Path | None,
    console: Console,
) -> None:
    """Train a detector on the boxes of several readers and write the model folder.

    Raises:
        ValueError: For bad options or inputs (one-line messages).
    """
    started = time.perf_counter()
    from crowdmed.training.detector import DetectionVariant

    v = check_option(variant, DetectionVariant, "--variant")
    if boxes is None or images is None:
        raise ValueError(
            "`--task detection` needs `--boxes READERS.csv|coco.json` and `--images DIR`."
        )
    for option, value in (("--epochs", epochs), ("--batch-size", batch_size)):
        if value < 1:
            raise ValueError(f"`{option}` must be a positive integer; got {value}.")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"`--lr` must be a positive number; got {lr}.")
    if not (0 < iou_thr < 1):
        raise ValueError(f"`--iou-thr` must lie in (0, 1); got {iou_thr}.")
    n_channels = 1 if channels is None else channels
    if n_channels not in (1, 3):
        raise ValueError(f"`--channels` must be 1 (grey) or 3 (RGB); got {n_channels}.")
    if not boxes.is_file():
        raise ValueError(f"`--boxes` file '{boxes}' does not exist; check the path.")
    for option, folder in (("--images", images), ("--predict", predict)):
        if folder is not None and not folder.is_dir():
            raise ValueError(f"`{option}` must be a folder of images; '{folder}' is not one.")
    if checkpoint is not None and not checkpoint.is_file():
        raise ValueError(f"`--checkpoint` file '{checkpoint}' does not exist; check the path.")
    if out.exists() and not out.is_dir():
        raise ValueError(f"`--out` must be a folder for the model; '{out}' is a file.")
    paths = {
        name: out / name
        for name in ("model.pt", "config.json", "history.csv", "targets.csv", "run.json")
    }
    if predict is not None:
        paths["predictions.csv"] = out / "predictions.csv"
    _check_outputs(
        [p for p in (boxes, checkpoint) if p is not None],
        {f"--out {name}": p for name, p in paths.items()},
    )

    torch = _import_detection()
    from crowdmed.data.boxes import read_boxes
    from crowdmed.data.images import image_paths, load_images
    from crowdmed.data.io import write_table
    from crowdmed.nn.detection import fcos_detector
    from crowdmed.training.detector import DetectorTrainer, make_targets, variant_targets

    with _progress(console) as progress:
        with _step(progress, f"Reading {boxes.name}"):
            frame = read_boxes(boxes, images=images)
        if "zmin" in frame.columns:
            raise ValueError("`--task detection` trains on 2-D boxes; the box file has 3-D boxes.")
        present = _box_rows(frame)
        if present.empty:
            raise ValueError(f"`--boxes` file '{boxes}' holds no boxes to learn from.")
        image_ids = list(pd.unique(frame["image"]))
        classes = sorted(pd.unique(present["class"]).tolist(), key=str)
        with _step(progress, f"Reading {len(image_ids):,} images"):
            x = _load_same_size(load_images, images, image_ids, n_channels)
        height, width = int(x.shape[2]), int(x.shape[3])
        _check_inside(present, boxes, images, image_ids, width, height)
        with _step(progress, f"Building {v.value} targets"):
            targets_frame = variant_targets(frame, v, iou_thr=iou_thr)
        targets = make_targets(targets_frame, image_ids, classes)
        net_kwargs: dict[str, Any] = {
            "n_classes": len(classes),
            "image_size": max(height, width),
            "in_channels": n_channels,
            "backbone": "resnet10",
        }
        network = fcos_detector(**net_kwargs, checkpoint=checkpoint, random_state=seed)
        task = progress.add_task(f"Training ({v.value})", total=None)

        def on_step(step: int, total: int, losses: dict[str, float]) -> None:
            progress.update(
                task,
                completed=step,
                total=total,
                description=f"Training ({v.value}) step {step}/{total} loss {losses['loss']:.3f}",
            )

        trainer = DetectorTrainer(
            network,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            random_state=seed,
            progress=on_step,
        )
        fit_start = time.perf_counter()
        trainer.fit(x, targets)
        fit_seconds = time.perf_counter() - fit_start
        progress.remove_task(task)

        predictions = None
        predict_record = None
        if predict is not None:
            with _step(progress, "Predicting"):
                names, predictions = detect_images(
                    network,
                    predict,
                    classes=classes,
                    channels=n_channels,
                    image_size=(height, width),
                    option="--predict",
                )
                predict_record = {"path": predict.resolve(), "n_files": len(names)}

        inputs = {
            "boxes": {"path": boxes.resolve(), "sha256": _sha256(boxes)},
            "images": {
                "path": images.resolve(),
                "n_files": len(image_ids),
                "sha256": _tree_sha(image_paths(images, image_ids)),
            },
            "checkpoint": None
            if checkpoint is None
            else {"path": checkpoint.resolve(), "sha256": _sha256(checkpoint)},
            "predict": predict_record,
        }
        config = {
            "task": "detection",
            "detector": "fcos",
            "variant": v.value,
            "network_kwargs": net_kwargs,
            "classes": classes,
            "image_size": [height, width],
            "channels": n_channels,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "iou_thr": iou_thr,
            "seed": seed,
            "n_images": len(image_ids),
            "n_targets": len(targets_frame),
            "inputs": {k: None if r is None else r.get("sha256") for k, r in inputs.items()},
        }
        payload = {
            "format": "crowdmed-detector",
            "format_version": DETECTION_MODEL_FORMAT,
            "crowdmed_version": __version__,
            "network_kwargs": net_kwargs,
            "classes": [str(c) if not isinstance(c, (int, float)) else c for c in classes],
            "variant": v.value,
            "state_dict": {k: t.detach().cpu() for k, t in network.state_dict().items()},
        }
        record: dict[str, Any] = {
            "crowdmed_version": __version__,
            "command": "train",
            "task": "detection",
            "arguments": ctx.params,
            "config": config,
            "inputs": inputs,
            "fit": {"seconds": fit_seconds, "steps": trainer.n_steps_},
            "outputs": {name: p.resolve() for name, p in paths.items()},
            "environment": _environment(torch=torch.__version__),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        with _step(progress, "Writing outputs"), _staged_outputs() as stage:
            torch.save(payload, stage(paths["model.pt"]))
            stage(paths["config.json"]).write_text(
                json.dumps(to_jsonable(config), indent=2) + "\n", encoding="utf-8"
            )
            history = pd.DataFrame(trainer.history_)
            history["epoch"] = history["epoch"].astype(int)
            write_table(history, stage(paths["history.csv"]))
            write_table(targets_frame, stage(paths["targets.csv"]))
            if predictions is not None:
                write_table(predictions, stage(paths["predictions.csv"]))
            record["elapsed_seconds"] = time.perf_counter() - started
            stage(paths["run.json"]).write_text(
                json.dumps(to_jsonable(record), indent=2) + "\n", encoding="utf-8"
            )
    last = trainer.history_[-1]
    console.print(
        f"Trained FCOS ({v.value}) on {len(image_ids):,} images, {len(targets_frame):,} boxes, "
        f"{len(classes)} classes: final loss {last['loss']:.3f}; model in {escape(str(out))}"
    )


def _load_same_size(load_images: Any, folder: Path, names: list[Any], channels: int) -> Any:
    """Load images; images of several sizes get a fix that applies to detection."""
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


def _tree_sha(paths: list[Path]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.name.encode("utf-8") + b"\0" + _sha256(p).encode("ascii") + b"\n")
    return digest.hexdigest()
