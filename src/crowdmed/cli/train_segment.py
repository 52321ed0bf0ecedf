"""``crowdmed train --task segmentation``: a U-Net trained on the masks of several raters.

The ``train`` command parses the options and calls :func:`train_segmentation`, which reads
the images and the raters' masks, trains a MONAI ``UNet`` (or another ``--backbone`` of
:func:`crowdmed.nn.segmentation_network`) with :class:`crowdmed.training.CrowdSegmenter` and
writes the model folder all at once (nothing is written when anything fails).

Input layout:

- ``--images DIR``: one 2-D image per case (PNG/TIFF/JPEG, grey or RGB), named after the case
  id (``case7.png``);
- ``--masks DIR``: one sub-folder per rater (the folder name is the rater's name), each with
  that rater's mask of some or all cases, named after the case id (``.png``, ``.tif``,
  ``.npy``, ``.npz``, ``.nii.gz`` ...). A case a rater did not annotate is simply absent.
  Masks are label maps: 0 background, ``1..K-1`` the classes; a mask holding only 0 and 255
  is read as binary (0/1);
- ``--val-masks DIR``: one reference mask per validation case (same names as
  ``--val-images``).

Outputs in ``MODEL_DIR``: ``model.pt`` (weights and the settings to rebuild the networks;
read back by :func:`load_segmentation_model`), ``config.json``, ``history.csv``,
``raters.csv``, ``run.json`` and, with ``--predict DIR``, ``predictions/<case>.png`` (label
maps) and ``predictions.csv``.

A checkpoint is written after every epoch to ``MODEL_DIR/checkpoint/checkpoint.pt``: rerunning
the same command continues an interrupted run exactly, a larger ``--epochs`` trains a finished
run longer, and a run that stopped early stays stopped. Other settings or inputs are refused
while the checkpoint holds work not yet saved as a model (``--no-resume`` starts over); a
finished model folder is simply trained anew.

``crowdmed predict MODEL_DIR --images DIR --out FOLDER`` calls
:func:`predict_segmentation_command`: the same label maps and table (written by the same
code as ``train --predict``) in ``FOLDER`` plus the run record ``FOLDER.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
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
    "SEGMENTATION_MODEL_FORMAT",
    "load_segmentation_model",
    "predict_segmentation",
    "predict_segmentation_command",
    "segment_images",
    "train_segmentation",
]

#: Version of the ``model.pt`` layout written by :func:`train_segmentation`.
SEGMENTATION_MODEL_FORMAT = 1

_FORMAT = "crowdmed-segmenter"
_REWEIGHT = ("reweight", "reweight-gaf")
_COLOUR_MODES = ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV")
_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".json")


def _import_segmentation(command: str = "train --task segmentation") -> Any:
    torch = _import_torch(command, images=True)
    return torch


def _case_id(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def _parse_unet_channels(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) < 2 or any(v < 1 for v in values):
        raise ValueError(
            f"`--unet-channels` must be at least two positive integers separated by commas "
            f"(e.g. 8,16,32); got {text!r}."
        )
    return values


def _mask_files(folder: Path, what: str) -> dict[str, Path]:
    """Mask files of a folder by case id."""
    from crowdmed.data.masks import SUFFIXES, _suffix

    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if _suffix(p) not in SUFFIXES:
            raise ValueError(
                f"{what} file '{p}' has an unsupported suffix {_suffix(p)!r}; use one of "
                f"{', '.join(SUFFIXES)}."
            )
        case = _case_id(p)
        if case in found:
            raise ValueError(
                f"{what} has two masks for case {case!r}: '{found[case].name}' and '{p.name}'; "
                "keep one."
            )
        found[case] = p
    return found


def _read_label_map(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    """One mask as an int64 ``(H, W)`` label map; 0/255 masks become 0/1."""
    from crowdmed.data.masks import read_mask

    arr = read_mask(path).array
    while arr.ndim > 2 and arr.shape[0] == 1:  # 2-D NIfTI slices read as (1, H, W)
        arr = arr[0]
    if arr.shape != shape:
        raise ValueError(
            f"{what} is {'x'.join(map(str, arr.shape))} but its image is "
            f"{shape[0]}x{shape[1]} (HxW); masks must have the size of their image."
        )
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{what} holds non-integer values; a mask must be a label map.")
    elif arr.dtype.kind not in "biu":
        raise ValueError(f"{what} has dtype {arr.dtype}; a mask must be a label map.")
    out = arr.astype(np.int64)
    if out.size and out.min() < 0:
        raise ValueError(
            f"{what} holds the negative value {int(out.min())}; classes must be 0..K-1."
        )
    values = np.unique(out)
    if values.size and values.max() == 255 and np.isin(values, (0, 255)).all():
        out = (out == 255).astype(np.int64)
    return out


def _check_classes(values: set[int]) -> int:
    """Number of classes of the training masks; classes must be 0..K-1 without gaps."""
    k = max(2, max(values) + 1)
    if k > 256:
        raise ValueError(
            f"`--masks` hold class {k - 1}; at most 256 classes (0..255) are supported."
        )
    missing = sorted(set(range(1, k)) - values)
    if missing:
        shown = sorted(values)[:8]
        raise ValueError(
            f"`--masks` hold the values {shown}: classes must be numbered 0..K-1 without gaps "
            f"(class {missing[0]} is never used); renumber the label maps."
        )
    return k


def _image_channels(folder: Path, names: list[str]) -> int:
    """3 when any image is a colour image, else 1."""
    from PIL import Image

    from crowdmed.data.images import image_paths

    for p in image_paths(folder, names):
        try:
            with Image.open(p) as im:
                mode = im.mode
                if mode in _COLOUR_MODES:
                    return 3
                if mode in ("P", "PA"):
                    rgb = np.asarray(im.convert("RGB"))
                    if (
                        not (rgb[..., 0] == rgb[..., 1]).all()
                        or not (rgb[..., 1] == rgb[..., 2]).all()
                    ):
                        return 3
        except OSError as exc:
            raise ValueError(f"Cannot read image '{p}': {exc}") from exc
    return 1


def _tree_sha(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.name.encode("utf-8") + b"\0" + _sha256(p).encode("ascii") + b"\n")
    return digest.hexdigest()


def _is_model_dir(out: Path) -> bool:
    try:
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("task") == "segmentation"


def _checkpoint_is_saved(out: Path, checkpoint_file: Path) -> bool:
    """Whether the model in ``out`` was saved from exactly this checkpoint (no unsaved work)."""
    try:
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(config, dict)
        and (out / "model.pt").is_file()
        and config.get("checkpoint_sha256") == _sha256(checkpoint_file)
    )


def _remove_stale_predictions(out: Path, written: set[str], keep_table: bool) -> None:
    """Drop predictions of an earlier run in the same model folder (after the new outputs)."""
    if not keep_table:
        (out / "predictions.csv").unlink(missing_ok=True)
    _remove_stale_label_maps(out / "predictions", written)


def _remove_stale_label_maps(folder: Path, written: set[str]) -> None:
    """Drop the label maps of an earlier run from ``folder`` (after the new outputs)."""
    if folder.is_dir():
        for p in folder.glob("*.png"):
            if p.name not in written:
                p.unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()


def _write_segmentations(
    stage: Callable[[Path], Path],
    folder: Path,
    table: Path,
    predictions: list[tuple[str, np.ndarray]],
    n_classes: int,
) -> None:
    """Stage ``folder/<case>.png`` label maps and ``table`` (case, fraction_1..K-1)."""
    from crowdmed.data.io import write_table
    from crowdmed.data.masks import write_mask

    rows = []
    for name, label in predictions:
        write_mask(stage(folder / f"{name}.png"), label.astype(np.uint8))
        row: dict[str, Any] = {"case": name}
        for c in range(1, n_classes):
            row[f"fraction_{c}"] = float((label == c).mean())
        rows.append(row)
    write_table(pd.DataFrame(rows), stage(table))


def _pad(arr: np.ndarray, factor: int, fill: int | None = None) -> np.ndarray:
    """Pad the last two axes at the bottom/right to multiples of ``factor``.

    Images repeat their edge (``fill=None``); masks get ``fill`` (-1: not annotated, so the
    padding is ignored by the loss).
    """
    h, w = arr.shape[-2:]
    extra = ((0, 0),) * (arr.ndim - 2) + ((0, -h % factor), (0, -w % factor))
    if not any(e[1] for e in extra):
        return arr
    if fill is None:
        return np.pad(arr, extra, mode="edge")
    return np.pad(arr, extra, mode="constant", constant_values=fill)


_NETWORK_NAMES = {
    "unet": "monai.networks.nets.UNet",
    "basic-unet": "monai.networks.nets.BasicUNet",
    "deeplabv3-mobilenet": "torchvision.models.segmentation.deeplabv3_mobilenet_v3_large",
    "deeplabv3-resnet50": "torchvision.models.segmentation.deeplabv3_resnet50",
}


def _build_network(backbone: str, kwargs: dict[str, Any], seed: int | None = None) -> Any:
    """The network of ``--backbone`` (model folders without one hold a U-Net)."""
    from crowdmed.nn.backbones import segmentation_network

    channels = kwargs.get("channels")
    return segmentation_network(
        backbone,
        in_channels=kwargs["in_channels"],
        n_classes=kwargs["out_channels"],
        channels=None if channels is None else tuple(channels),
        random_state=seed,
    )


def load_segmentation_model(model_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild the U-Net saved by ``crowdmed train --task segmentation``.

    Args:
        model_dir: The model folder.

    Returns:
        ``(network, payload)``: the U-Net in eval mode and the saved settings (``channels``,
        ``n_classes``, ``raters``, ``method`` ...).

    Raises:
        ValueError: When the folder holds no readable segmentation model.
    """
    _import_segmentation()
    from crowdmed.training._torch_io import load_payload

    path = Path(model_dir) / "model.pt"
    payload = load_payload(path, fmt=_FORMAT, command="crowdmed train --task segmentation")
    network = _build_network(payload.get("backbone", "unet"), payload["network_kwargs"])
    network.load_state_dict(payload["state_dict"])
    network.eval()
    return network, payload


def predict_segmentation(network: Any, images: np.ndarray) -> np.ndarray:
    """Label maps of a U-Net rebuilt by :func:`load_segmentation_model`.

    Args:
        network: The U-Net (``monai.networks.nets.UNet``).
        images: Float images ``(N, C, H, W)`` scaled to [0, 1] like the training images
            (:func:`crowdmed.data.images.load_images`); any size: they are padded for the
            network and the output is cropped back.

    Returns:
        int64 label maps ``(N, H, W)``.
    """
    import torch

    from crowdmed.nn.backbones import size_multiple

    h, w = images.shape[-2:]
    x = _pad(np.asarray(images, dtype=np.float32), size_multiple(network))
    network.eval()
    with torch.no_grad():
        logits = network(torch.as_tensor(x))
    return logits.argmax(1).cpu().numpy().astype(np.int64)[:, :h, :w]


def segment_images(
    network: Any, folder: Path, names: list[str], channels: int
) -> list[tuple[str, np.ndarray]]:
    """Label maps of the images of a folder, one image at a time (sizes may differ).

    Colour images become grey for a grey model and grey images are repeated for an RGB one,
    as in :func:`crowdmed.data.images.load_images`.

    Args:
        network: The U-Net (``monai.networks.nets.UNet``).
        folder: Folder of images.
        names: Case ids of the images to segment (:func:`crowdmed.data.images.list_images`).
        channels: Input channels of the network, 1 or 3.

    Returns:
        ``(case, label map)`` pairs; int64 ``(H, W)`` maps of the size of each image.
    """
    from crowdmed.data.images import load_images

    return [
        (name, predict_segmentation(network, load_images(folder, [name], channels=channels))[0])
        for name in names
    ]


def _is_prediction_folder(out: Path) -> bool:
    """True for a folder written by an earlier ``crowdmed predict`` of a segmentation model."""
    return (out / "predictions.csv").is_file() and all(
        p.suffix.lower() == ".png" or p.name == "predictions.csv" or p.name.startswith(".")
        for p in out.iterdir()
    )


def predict_segmentation_command(
    ctx: typer.Context,
    *,
    model_dir: Path,
    images: Path | None,
    out: Path,
    json_path: Path | None,
    console: Console,
) -> None:
    """``crowdmed predict`` for a segmentation model: label maps and a table in a folder.

    Writes ``out/<case>.png`` (uint8 label maps of the size of each image),
    ``out/predictions.csv`` (case, fraction_<class>...) and the run record (``out.json`` by
    default) all at once; label maps of an earlier prediction in ``out`` are replaced.

    Raises:
        ValueError: For bad options or inputs (one-line messages).
    """
    started = time.perf_counter()
    if images is None:
        raise ValueError(
            f"The model in '{model_dir}' is a segmentation model; pass `--images DIR`."
        )
    if not images.is_dir():
        raise ValueError(f"`--images` must be a folder of images; '{images}' is not one.")
    if out.suffix.lower() in _TABLE_SUFFIXES or (out.exists() and not out.is_dir()):
        raise ValueError(
            f"`--out` of a segmentation model is a folder (label maps plus predictions.csv); "
            f"'{out}' is a file name. Pass a folder such as `--out predictions/`."
        )
    if out.is_dir() and any(out.iterdir()) and not _is_prediction_folder(out):
        raise ValueError(
            f"`--out` folder '{out}' is not empty and holds no earlier predictions; choose a "
            "new or empty folder."
        )
    for option, folder in (("--images", images), ("MODEL_DIR", model_dir)):
        if folder.resolve() == out.resolve():
            raise ValueError(f"`--out` must not be the {option} folder; choose another one.")
    json_out = json_path if json_path is not None else out.with_name(out.name + ".json")
    table = out / "predictions.csv"
    model_file = model_dir / "model.pt"
    _check_outputs([model_file], {"--out predictions.csv": table, "--json": json_out})
    if json_out.resolve().parent == out.resolve():
        raise ValueError(f"`--json` must not be inside the `--out` folder '{out}'.")

    from crowdmed.data.images import image_paths, list_images

    torch = _import_segmentation("predict")
    network, payload = load_segmentation_model(model_dir)
    names = list_images(images)
    channels = int(payload["channels"])
    k = int(payload["n_classes"])
    with _progress(console) as progress:
        with _step(progress, f"Predicting {len(names):,} images"):
            predictions = segment_images(network, images, names, channels)
        record: dict[str, Any] = {
            "crowdmed_version": __version__,
            "command": "predict",
            "task": "segmentation",
            "arguments": ctx.params,
            "model": {"path": model_file.resolve(), "sha256": _sha256(model_file)},
            "method": payload.get("method"),
            "inputs": {
                "images": {
                    "path": images.resolve(),
                    "n_files": len(names),
                    "sha256": _tree_sha(image_paths(images, names)),
                }
            },
            "n_items": len(names),
            "n_classes": k,
            "channels": channels,
            "outputs": {
                "predictions": out.resolve(),
                "table": table.resolve(),
                "json": json_out.resolve(),
            },
            "environment": _environment(torch=torch.__version__),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        with _step(progress, "Writing outputs"), _staged_outputs() as stage:
            _write_segmentations(stage, out, table, predictions, k)
            record["elapsed_seconds"] = time.perf_counter() - started
            stage(json_out).write_text(
                json.dumps(to_jsonable(record), indent=2) + "\n", encoding="utf-8"
            )
    _remove_stale_label_maps(out, {f"{name}.png" for name, _ in predictions})
    console.print(
        f"Segmented {len(names):,} images into {k} classes with {payload.get('method')}: "
        f"{escape(str(out))}"
    )


def train_segmentation(
    ctx: typer.Context,
    *,
    images: Path | None,
    masks: Path | None,
    out: Path,
    method: str,
    rater: str | None,
    val_images: Path | None,
    val_masks: Path | None,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    patience: int,
    unet_channels: str,
    k_every: int,
    channels: int | None,
    predict: Path | None,
    console: Console,
    resume: bool = True,
    backbone: str = "unet",
) -> None:
    """Train a segmentation network (``--backbone``) on several raters' masks; write the model.

    With ``resume`` (the default), an interrupted run in ``out`` continues from
    ``out/checkpoint/``; ``resume=False`` starts over.

    Raises:
        ValueError: For bad options or inputs (one-line messages).
    """
    started = time.perf_counter()
    from crowdmed.training.segmenter import SegmentationMethod

    m = check_option(method, SegmentationMethod, "--method")
    if images is None or masks is None:
        raise ValueError(
            "`--task segmentation` needs `--images DIR` (one image per case) and `--masks DIR` "
            "(one sub-folder of masks per rater)."
        )
    for option, value in (
        ("--epochs", epochs),
        ("--batch-size", batch_size),
        ("--k-every", k_every),
    ):
        if value < 1:
            raise ValueError(f"`{option}` must be a positive integer; got {value}.")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"`--lr` must be a positive number; got {lr}.")
    if patience < 0:
        raise ValueError(f"`--patience` must be 0 (off) or a positive integer; got {patience}.")
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"`--channels` must be 1 (grey) or 3 (RGB); got {channels}.")
    levels = _parse_unet_channels(unet_channels)
    from crowdmed.nn.backbones import SegmentationBackbone

    net = check_option(backbone, SegmentationBackbone, "--backbone")
    source = ctx.get_parameter_source("unet_channels") if ctx is not None else None
    channels_given = getattr(source, "name", "DEFAULT") != "DEFAULT"
    if net is SegmentationBackbone.BASIC_UNET and channels_given and len(levels) != 6:
        raise ValueError(
            "`--unet-channels` of `--backbone basic-unet` must be six integers (five levels and "
            f"the output features, e.g. 32,32,64,128,256,32); got {unet_channels!r}."
        )
    if net.value.startswith("deeplabv3") and channels_given:
        raise ValueError(f"`--unet-channels` does not apply to `--backbone {net.value}`.")
    if (val_images is None) != (val_masks is None):
        raise ValueError("`--val-images` and `--val-masks` must be given together.")
    for option, folder in (
        ("--images", images),
        ("--masks", masks),
        ("--val-images", val_images),
        ("--val-masks", val_masks),
        ("--predict", predict),
    ):
        if folder is not None and not folder.is_dir():
            raise ValueError(f"`{option}` must be a folder; '{folder}' is not one.")
    if rater is not None and m is not SegmentationMethod.SINGLE:
        raise ValueError("`--rater` applies to `--method single` only.")
    if m is SegmentationMethod.SINGLE and rater is None:
        raise ValueError("`--method single` needs `--rater NAME` (a sub-folder of --masks).")
    checkpoint_file = out / "checkpoint" / "checkpoint.pt"
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"`--out` must be a folder for the model; '{out}' is a file.")
        if any(out.iterdir()) and not (_is_model_dir(out) or checkpoint_file.is_file()):
            raise ValueError(
                f"`--out` folder '{out}' is not empty and holds no segmentation model; choose a "
                "new or empty folder."
            )
    for option, folder in (
        ("--images", images),
        ("--masks", masks),
        ("--val-images", val_images),
        ("--val-masks", val_masks),
        ("--predict", predict),
    ):
        if folder is not None and folder.resolve() == out.resolve():
            raise ValueError(f"`--out` must not be the `{option}` folder; choose another one.")

    from crowdmed.data.images import image_paths, list_images, load_images

    case_ids = list_images(images)
    rater_dirs = sorted(p for p in masks.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not rater_dirs:
        raise ValueError(
            f"`--masks` folder '{masks}' has no rater sub-folders; put each rater's masks in "
            "their own sub-folder (masks/<rater>/<case>.png)."
        )
    raters = [p.name for p in rater_dirs]
    if rater is not None and rater not in raters:
        raise ValueError(
            f"`--rater` {rater!r} is not a sub-folder of --masks; choose one of {raters[:10]}."
        )
    if m.value in _REWEIGHT and len(raters) < 2:
        raise ValueError(
            f"`--method {m.value}` weighs several raters but --masks has only one "
            f"({raters[0]!r}); use --method consensus or single."
        )
    known = set(case_ids)
    files: list[dict[str, Path]] = []
    for d in rater_dirs:
        found = _mask_files(d, f"Rater {d.name!r}")
        unknown = sorted(set(found) - known)
        if unknown:
            raise ValueError(
                f"Rater {d.name!r} has a mask for case {unknown[0]!r} ('{found[unknown[0]].name}') "
                f"but --images has no image of that case; add the image or remove the mask."
            )
        files.append(found)
    bare = [c for c in case_ids if not any(c in f for f in files)]
    if bare:
        raise ValueError(
            f"{len(bare)} image(s) have no rater mask, e.g. case {bare[0]!r}; add a mask in a "
            "rater sub-folder of --masks or remove the image."
        )
    if val_images is not None and val_masks is not None:
        val_ids = list_images(val_images)
        val_files = _mask_files(val_masks, "`--val-masks`")
        missing = [c for c in val_ids if c not in val_files]
        if missing:
            raise ValueError(
                f"`--val-masks` has no mask for validation case {missing[0]!r}; give one "
                "reference mask per --val-images image."
            )
        extra = sorted(set(val_files) - set(val_ids))
        if extra:
            raise ValueError(
                f"`--val-masks` has a mask for case {extra[0]!r} but --val-images has no image "
                "of that case."
            )

    torch = _import_segmentation()
    from crowdmed.nn.backbones import size_multiple
    from crowdmed.training._checkpoint import CheckpointMismatchError
    from crowdmed.training.segmenter import CrowdSegmenter

    with _progress(console) as progress:
        with _step(progress, f"Reading {len(case_ids):,} images"):
            n_channels = channels if channels is not None else _image_channels(images, case_ids)
            x = load_images(images, case_ids, channels=n_channels)
        shape = (int(x.shape[2]), int(x.shape[3]))
        n, a = len(case_ids), len(raters)
        with _step(progress, f"Reading the masks of {a} rater(s)"):
            y = np.full((n, a, *shape), -1, dtype=np.int64)
            counts = [0] * a
            values: set[int] = set()
            for j, found in enumerate(files):
                for i, case in enumerate(case_ids):
                    if case in found:
                        what = f"Rater {raters[j]!r} mask of case {case!r} ('{found[case]}')"
                        y[i, j] = _read_label_map(found[case], shape, what)
                        values.update(int(v) for v in np.unique(y[i, j]))
                        counts[j] += 1
            k = _check_classes(values)
        if (
            m is SegmentationMethod.SINGLE
            and rater is not None
            and counts[raters.index(rater)] == 0
        ):
            raise ValueError(f"Rater {rater!r} has no masks; choose another --rater.")
        xv = yv = None
        if val_images is not None and val_masks is not None:
            with _step(progress, "Reading the validation set"):
                xv = load_images(val_images, val_ids, channels=n_channels)
                vshape = (int(xv.shape[2]), int(xv.shape[3]))
                yv = np.stack(
                    [
                        _read_label_map(
                            val_files[c],
                            vshape,
                            f"Validation mask of case {c!r} ('{val_files[c]}')",
                        )
                        for c in val_ids
                    ]
                )
                if yv.max() >= k:
                    raise ValueError(
                        f"`--val-masks` hold class {int(yv.max())} but the training masks have "
                        f"classes 0..{k - 1}; use the same label numbering."
                    )
        pred_names: list[str] = []
        if predict is not None:
            pred_names = list_images(predict)

        net_kwargs: dict[str, Any] = {
            "in_channels": n_channels,
            "out_channels": k,
            "channels": list(levels),
            "num_res_units": 2,
        }
        if net is not SegmentationBackbone.UNET:
            net_kwargs = {
                "in_channels": n_channels,
                "out_channels": k,
                "channels": list(levels)
                if net is SegmentationBackbone.BASIC_UNET and channels_given
                else None,
            }
        network = _build_network(net.value, net_kwargs, seed)
        factor = size_multiple(network)
        task = progress.add_task(f"Training ({m.value})", total=epochs)

        new_epochs: list[int] = []

        def on_epoch(epoch: int, total: int, record: dict[str, float]) -> None:
            new_epochs.append(epoch)
            progress.update(
                task,
                completed=epoch,
                description=f"Training ({m.value}) epoch {epoch}/{total} loss {record['loss']:.3f}",
            )

        seg = CrowdSegmenter(
            network,
            method=m.value,
            rater=raters.index(rater) if rater is not None else 0,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            k_every=k_every,
            patience=None if patience == 0 else patience,
            random_state=seed,
            progress=on_epoch,
            checkpoint_dir=checkpoint_file.parent,
            resume=resume,
        )
        fit_start = time.perf_counter()
        # sizes the network cannot halve are padded (masks with -1: ignored by the loss)
        x, y = _pad(x, factor), _pad(y, factor, -1)
        if xv is not None and yv is not None:
            xv, yv = _pad(xv, factor), _pad(yv, factor, -1)
        try:
            seg.fit(x, y, X_val=xv, y_val=yv, n_classes=k)
        except CheckpointMismatchError as exc:
            if not _checkpoint_is_saved(out, checkpoint_file):
                raise ValueError(
                    f"The checkpoint in '{checkpoint_file.parent}' is an unfinished run with "
                    f"other settings or inputs (changed: {', '.join(exc.changed)}); rerun its "
                    "command to finish it, pass --no-resume to start over or use another --out "
                    "folder."
                ) from None
            # its work is already saved as the model in `out`: train anew, as without it
            seg.resume = False
            seg.fit(x, y, X_val=xv, y_val=yv, n_classes=k)
        resumed_from = len(seg.history_) - len(new_epochs) or None
        fit_seconds = time.perf_counter() - fit_start
        progress.remove_task(task)

        weights = [math.nan] * a
        if seg.weighting_network_ is not None:
            with _step(progress, "Computing rater weights"):
                sums = np.zeros(a)
                pixels = np.zeros(a)
                for s in range(0, n, batch_size):
                    mb = y[s : s + batch_size]
                    w = seg.rater_weights(x[s : s + batch_size], mb)
                    avail = mb >= 0
                    sums += np.where(avail, w, 0.0).sum(axis=(0, 2, 3))
                    pixels += avail.sum(axis=(0, 2, 3))
                weights = [
                    float(s / p) if p else math.nan for s, p in zip(sums, pixels, strict=True)
                ]
        raters_frame = pd.DataFrame({"rater": raters, "n_masks": counts, "mean_weight": weights})

        predictions: list[tuple[str, np.ndarray]] = []
        if predict is not None:
            with _step(progress, f"Predicting {len(pred_names):,} images"):
                predictions = segment_images(network, predict, pred_names, n_channels)

        inputs: dict[str, Any] = {
            "images": {
                "path": images.resolve(),
                "n_files": n,
                "sha256": _tree_sha(image_paths(images, case_ids)),
            },
            "masks": {
                "path": masks.resolve(),
                "raters": {
                    r: {"n_files": len(f), "sha256": _tree_sha(list(f.values()))}
                    for r, f in zip(raters, files, strict=True)
                },
            },
            "val_images": None
            if val_images is None
            else {
                "path": val_images.resolve(),
                "n_files": len(val_ids),
                "sha256": _tree_sha(image_paths(val_images, val_ids)),
            },
            "val_masks": None
            if val_masks is None
            else {
                "path": val_masks.resolve(),
                "sha256": _tree_sha([val_files[c] for c in val_ids]),
            },
            "predict": None
            if predict is None
            else {
                "path": predict.resolve(),
                "n_files": len(pred_names),
                "sha256": _tree_sha(image_paths(predict, pred_names)),
            },
        }
        config: dict[str, Any] = {
            "task": "segmentation",
            "network": _NETWORK_NAMES[net.value],
            "backbone": net.value,
            "network_kwargs": net_kwargs,
            "method": m.value,
            "rater": rater,
            "raters": raters,
            "n_classes": k,
            "channels": n_channels,
            "image_size": list(shape),
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "k_every": k_every,
            "patience": patience,
            "seed": seed,
            "n_images": n,
            "n_masks": int(sum(counts)),
            "best_epoch": seg.best_epoch_,
            "stopped_early": seg.stopped_early_,
            "checkpoint_sha256": _sha256(checkpoint_file),
        }
        payload: dict[str, Any] = {
            "format": _FORMAT,
            "format_version": SEGMENTATION_MODEL_FORMAT,
            "crowdmed_version": __version__,
            "backbone": net.value,
            "network_kwargs": net_kwargs,
            "method": m.value,
            "raters": raters,
            "n_classes": k,
            "channels": n_channels,
            "state_dict": {key: t.detach().cpu() for key, t in network.state_dict().items()},
            "weighting_network": None
            if seg.weighting_network_ is None
            else {
                "in_channels": n_channels,
                "n_raters": a,
                "state_dict": {
                    key: t.detach().cpu() for key, t in seg.weighting_network_.state_dict().items()
                },
            },
        }
        paths = {
            name: out / name
            for name in ("model.pt", "config.json", "history.csv", "raters.csv", "run.json")
        }
        pred_dir = out / "predictions"
        if predict is not None:
            paths["predictions.csv"] = out / "predictions.csv"
        record: dict[str, Any] = {
            "crowdmed_version": __version__,
            "command": "train",
            "task": "segmentation",
            "arguments": {
                **ctx.params,
                "method": m.value,
                "epochs": epochs,
                "batch_size": batch_size,
                "lr": lr,
            },
            "config": config,
            "inputs": inputs,
            "fit": {
                "seconds": fit_seconds,
                "epochs_run": len(seg.history_),
                "resumed_from_epoch": resumed_from,
            },
            "outputs": {
                **{name: p.resolve() for name, p in paths.items()},
                **({"predictions": pred_dir.resolve()} if predict is not None else {}),
            },
            "environment": _environment(torch=torch.__version__),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        from crowdmed.data.io import write_table

        with _step(progress, "Writing outputs"), _staged_outputs() as stage:
            torch.save(payload, stage(paths["model.pt"]))
            stage(paths["config.json"]).write_text(
                json.dumps(to_jsonable(config), indent=2) + "\n", encoding="utf-8"
            )
            history = pd.DataFrame(seg.history_)
            history["epoch"] = history["epoch"].astype(int)
            write_table(history, stage(paths["history.csv"]))
            write_table(raters_frame, stage(paths["raters.csv"]))
            if predict is not None:
                _write_segmentations(stage, pred_dir, paths["predictions.csv"], predictions, k)
            record["elapsed_seconds"] = time.perf_counter() - started
            stage(paths["run.json"]).write_text(
                json.dumps(to_jsonable(record), indent=2) + "\n", encoding="utf-8"
            )
    _remove_stale_predictions(out, {f"{name}.png" for name, _ in predictions}, predict is not None)
    last = seg.history_[-1]
    dice_text = f", validation Dice {last['val_dice']:.3f}" if "val_dice" in last else ""
    resumed_text = ""
    if resumed_from is not None:
        resumed_text = f" (resumed after epoch {resumed_from}"
        if not new_epochs:
            resumed_text += ", which had stopped early" if seg.stopped_early_ else ", finished"
        resumed_text += ")"
    console.print(
        f"Trained a U-Net ({m.value}) on {n:,} images with {int(sum(counts)):,} masks of "
        f"{a} rater(s), {k} classes{resumed_text}: final loss {last['loss']:.3f}{dice_text}; "
        f"model in {escape(str(out))}"
    )
