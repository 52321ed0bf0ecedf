"""Train a segmentation network on the masks of several raters from folders; predict with it.

:func:`train_segmentation` is what ``crowdmed train segment`` runs: it reads the images (2-D
images or 3-D volumes) and the raters' masks (:func:`crowdmed.data.cases.read_segmentation_cases`),
trains a MONAI U-Net (or another backbone of :func:`crowdmed.nn.segmentation_network`) with
:class:`crowdmed.training.CrowdSegmenter` and returns a :class:`SegmentationRun`, whose
:meth:`SegmentationRun.save` writes the model folder: ``config.json`` and
``model.safetensors`` (the segmenter, :meth:`crowdmed.training.CrowdSegmenter.save`),
``data.json`` (raters, classes, channels, image size; read back with the segmenter by
:func:`load_segmentation_model`), ``history.csv``, ``raters.csv`` and, when images to segment
were given, ``predictions/`` and ``predictions.csv``.

A checkpoint is written after every epoch to ``MODEL_DIR/checkpoint/checkpoint.pt``: rerunning
with the same settings continues an interrupted run exactly, a larger ``epochs`` trains a
finished run longer, and a run that stopped early stays stopped. Other settings or inputs are
refused while the checkpoint holds work not yet saved as a model (``resume=False`` starts
over); a finished model folder is simply trained anew.

:func:`segment_folder` segments every image of a folder with a loaded model and
:func:`write_segmentations` writes the label maps (``<case>.png``, or ``<case>.nii.gz`` with the
geometry of the input volume) and the table of class fractions.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdmed._validation import check_option
from crowdmed.data.cases import (
    SegmentationCases,
    case_paths,
    list_cases,
    list_raters,
    read_case,
    read_reference_cases,
    read_segmentation_cases,
)
from crowdmed.pipelines.model_folder import (
    DATA_NAME,
    check_data,
    fit_device,
    read_data,
    save_model,
    write_json,
)
from crowdmed.pipelines.records import files_record, sha256_file, tree_sha256

__all__ = [
    "SegmentationModel",
    "SegmentationRun",
    "load_segmentation_model",
    "predict_segmentation",
    "segment_folder",
    "segment_images",
    "train_segmentation",
    "write_segmentations",
]

_REWEIGHT = ("reweight", "reweight-gaf")
_NETWORK_NAMES = {
    "unet": "monai.networks.nets.UNet",
    "basic-unet": "monai.networks.nets.BasicUNet",
    "deeplabv3-mobilenet": "torchvision.models.segmentation.deeplabv3_mobilenet_v3_large",
    "deeplabv3-resnet50": "torchvision.models.segmentation.deeplabv3_resnet50",
}


def _no_progress(**_: Any) -> None:
    return None


def _import_torch() -> Any:
    try:
        import monai  # noqa: F401
        import torch
    except ImportError as exc:
        raise ImportError(
            f"Segmentation needs the torch extra ({exc}): pip install 'crowdmed[torch]'."
        ) from exc
    return torch


def parse_channels(text: str) -> tuple[int, ...]:
    """Feature channels of the U-Net levels from comma-separated text (``"16,32,64"``)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not 2 <= len(values) <= 8 or any(not 1 <= v <= 4096 for v in values):
        raise ValueError(
            f"`--unet-channels` must be two to eight integers from 1 to 4096 separated by "
            f"commas (e.g. 8,16,32); got {text!r}."
        )
    return values


#: Largest ``k_every`` in optimiser steps.
MAX_K_EVERY_STEPS = 10_000_000


def parse_k_every(text: str | float) -> int | float:
    """``--k-every`` from text: a fraction of the run (``"0.1"``) or a number of steps (``"100"``).

    Integer text is a number of optimiser steps (1 to 10,000,000); other numbers are a fraction
    of the planned steps in ``(0, 1]`` (the paper's step of 1,000 of 10,000 iterations is
    ``0.1``; Xiao et al. 2021). A number passes through the same checks.

    Examples:
        >>> parse_k_every("0.1"), parse_k_every("250")
        (0.1, 250)
    """
    value: int | float | None
    if isinstance(text, bool):
        value = None
    elif isinstance(text, (int, float)):
        value = text
    else:
        try:
            value = int(text.strip())
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                value = None
    ok = (isinstance(value, int) and 1 <= value <= MAX_K_EVERY_STEPS) or (
        isinstance(value, float) and 0 < value <= 1
    )
    if value is None or not ok:
        raise ValueError(
            "`--k-every` must be a fraction of the run in (0, 1] (e.g. 0.1) or a whole number "
            f"of optimiser steps from 1 to {MAX_K_EVERY_STEPS}; got {text!r}."
        )
    return value


def _pad(arr: np.ndarray, factor: int, fill: int | None = None, dims: int = 2) -> np.ndarray:
    """Pad the last ``dims`` axes at the end to multiples of ``factor``.

    Images repeat their edge (``fill=None``); masks get ``fill`` (-1: not annotated, so the
    padding is ignored by the loss).
    """
    spatial = arr.shape[-dims:]
    extra = ((0, 0),) * (arr.ndim - dims) + tuple((0, -s % factor) for s in spatial)
    if not any(e[1] for e in extra):
        return arr
    if fill is None:
        return np.pad(arr, extra, mode="edge")
    return np.pad(arr, extra, mode="constant", constant_values=fill)


def _build_network(
    backbone: str, kwargs: dict[str, Any], seed: int | None = None, spatial_dims: int = 2
) -> Any:
    """The network of ``backbone`` (model folders without one hold a U-Net)."""
    from crowdmed.nn.backbones import segmentation_network

    channels = kwargs.get("channels")
    return segmentation_network(
        backbone,
        in_channels=kwargs["in_channels"],
        n_classes=kwargs["out_channels"],
        spatial_dims=spatial_dims,
        channels=None if channels is None else tuple(channels),
        random_state=seed,
    )


@dataclasses.dataclass
class SegmentationModel:
    """A segmentation model read back by :func:`load_segmentation_model`.

    Attributes:
        segmenter: The fitted :class:`crowdmed.training.CrowdSegmenter`.
        data: The content of ``data.json`` (``channels``, ``n_classes``, ``raters``,
            ``method`` ...).
        path: The weights file.
    """

    segmenter: Any
    data: dict[str, Any]
    path: Path

    @property
    def network(self) -> Any:
        """The segmentation network (eval mode)."""
        return self.segmenter.network.eval()

    @property
    def channels(self) -> int:
        """Input channels of the network."""
        return int(self.data["channels"])

    @property
    def n_classes(self) -> int:
        """Number of classes ``K``."""
        return int(self.data["n_classes"])


def load_segmentation_model(model_dir: Path) -> SegmentationModel:
    """Read back a model folder written by :meth:`SegmentationRun.save` (no code is unpickled).

    Args:
        model_dir: The model folder.

    Returns:
        The segmenter with the meaning of its inputs and outputs.

    Raises:
        ValueError: When the folder holds no readable segmentation model.
    """
    data = read_data(Path(model_dir))
    if data["task"] != "segmentation":
        raise ValueError(f"'{model_dir}' holds a {data['task']} model, not a segmentation model.")
    check_data(Path(model_dir), data, task="segmentation")
    _import_torch()
    from crowdmed.training import load_model

    seg = load_model(model_dir, device="cpu")
    n_classes = getattr(seg, "n_classes_", None)
    check_data(Path(model_dir), data, task="segmentation", n_classes=n_classes)
    return SegmentationModel(seg, data, Path(model_dir) / "model.safetensors")


def predict_segmentation(network: Any, images: np.ndarray) -> np.ndarray:
    """Label maps of a network rebuilt by :func:`load_segmentation_model`.

    Args:
        network: The segmentation network.
        images: Float images ``(N, C, *spatial)`` scaled to [0, 1] like the training images
            (2-D ``(N, C, H, W)`` or 3-D ``(N, C, D, H, W)``); any size: they are padded for
            the network and the output is cropped back.

    Returns:
        int64 label maps ``(N, *spatial)``.
    """
    import torch

    from crowdmed.nn.backbones import size_multiple

    dims = images.ndim - 2
    spatial = images.shape[2:]
    x = _pad(np.asarray(images, dtype=np.float32), size_multiple(network), dims=dims)
    network.eval()
    with torch.no_grad():
        logits = network(torch.as_tensor(x))
    labels = logits.argmax(1).cpu().numpy().astype(np.int64)
    crop = tuple([slice(None)] + [slice(0, s) for s in spatial])
    return labels[crop]


def segment_images(
    network: Any, folder: Path, names: list[str], channels: int
) -> list[tuple[str, np.ndarray]]:
    """Label maps of the images of a folder, one image at a time (sizes may differ).

    Colour images become grey for a grey model and grey images are repeated for an RGB one,
    as in :func:`crowdmed.data.images.load_images`; volumes are read with SimpleITK.

    Args:
        network: The segmentation network.
        folder: Folder of images or volumes.
        names: Case ids of the images to segment (:func:`crowdmed.data.cases.list_cases`).
        channels: Input channels of the network, 1 or 3.

    Returns:
        ``(case, label map)`` pairs; int64 maps of the size of each image.
    """
    return [(name, labels) for name, labels, _ in _segment(network, folder, names, channels)]


def _segment(
    network: Any, folder: Path, names: list[str], channels: int
) -> list[tuple[str, np.ndarray, Any]]:
    out = []
    for name in names:
        x, geometry = read_case(folder, name, channels)
        out.append((name, predict_segmentation(network, x)[0], geometry))
    return out


@dataclasses.dataclass
class Segmentations:
    """Label maps of the cases of a folder (:func:`segment_folder`).

    Attributes:
        cases: ``(case id, int64 label map, SimpleITK geometry or None)`` per case.
        n_classes: Number of classes ``K``.
        inputs: Path, file count and checksum of the images.
    """

    cases: list[tuple[str, np.ndarray, Any]]
    n_classes: int
    inputs: dict[str, Any]

    def file_names(self) -> set[str]:
        """Names of the label-map files :func:`write_segmentations` writes."""
        return {_map_name(name, geometry) for name, _, geometry in self.cases}


def _map_name(case: str, geometry: Any) -> str:
    return f"{case}.nii.gz" if geometry is not None else f"{case}.png"


def segment_folder(
    model: SegmentationModel, folder: Path, *, progress: Callable[..., None] | None = None
) -> Segmentations:
    """Segment every image (or volume) of a folder with a loaded model.

    Args:
        model: From :func:`load_segmentation_model`.
        folder: Folder of images or volumes, any sizes.
        progress: Called with a ``description`` keyword.

    Returns:
        The label maps, one per case.

    Raises:
        ValueError: For an empty or missing folder.
    """
    names = list_cases(folder)
    (progress or _no_progress)(description=f"Predicting {len(names):,} images")
    cases = _segment(model.network, folder, names, model.channels)
    record = files_record(folder, case_paths(folder, names))
    return Segmentations(cases, model.n_classes, {"images": record})


def write_segmentations(
    stage: Callable[[Path], Path], folder: Path, table: Path, segmentations: Segmentations
) -> None:
    """Write ``folder/<case>.png`` (or ``.nii.gz``) label maps and ``table`` of fractions.

    Args:
        stage: Maps each target file to the path actually written (``Path`` writes in place).
        folder: Folder of the label maps.
        table: The table (case, fraction_1..K-1).
        segmentations: From :func:`segment_folder` or :meth:`SegmentationRun.predictions`.
    """
    from crowdmed.data.io import write_table
    from crowdmed.data.masks import write_mask

    rows = []
    for name, label, geometry in segmentations.cases:
        target = stage(folder / _map_name(name, geometry))
        target.parent.mkdir(parents=True, exist_ok=True)
        write_mask(target, label.astype(np.uint8), geometry)
        row: dict[str, Any] = {"case": name}
        for c in range(1, segmentations.n_classes):
            row[f"fraction_{c}"] = float((label == c).mean())
        rows.append(row)
    write_table(pd.DataFrame(rows), stage(table))


def remove_stale_label_maps(folder: Path, written: set[str]) -> None:
    """Drop the label maps of an earlier run from ``folder`` (after the new outputs)."""
    if folder.is_dir():
        for p in [*folder.glob("*.png"), *folder.glob("*.nii.gz")]:
            if p.name not in written:
                p.unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()


def _checkpoint_file(out: Path) -> Path:
    from crowdmed.training.engine import CHECKPOINT_NAME

    return out / "checkpoint" / CHECKPOINT_NAME


def _is_model_dir(out: Path) -> bool:
    try:
        return read_data(out)["task"] == "segmentation"
    except ValueError:
        return False


def _checkpoint_is_saved(out: Path, checkpoint_file: Path) -> bool:
    """Whether the model in ``out`` was saved from exactly this checkpoint (no unsaved work)."""
    try:
        data = read_data(out)
    except ValueError:
        return False
    return (out / "model.safetensors").is_file() and data.get("checkpoint_sha256") == sha256_file(
        checkpoint_file
    )


@dataclasses.dataclass
class _Settings:
    method: str
    rater: str | None
    epochs: int
    batch_size: int
    lr: float
    seed: int
    patience: int
    levels: tuple[int, ...]
    backbone: str
    channels_given: bool
    k_every: int | float
    channels: int | None
    resume: bool
    focal_alpha: float | None = None
    trace_weight: float = 0.01
    device: str = "auto"
    augment: bool = False


def _check_settings(s: _Settings, folders: dict[str, Path | None], out: Path) -> None:
    from crowdmed.training.segmenter import SegmentationMethod

    for option, value in (("--epochs", s.epochs), ("--batch-size", s.batch_size)):
        if value < 1:
            raise ValueError(f"`{option}` must be a positive integer; got {value}.")
    s.k_every = parse_k_every(s.k_every)
    if s.focal_alpha is not None and not 0 <= s.focal_alpha <= 1:
        raise ValueError(f"`--focal-alpha` must be a number from 0 to 1; got {s.focal_alpha}.")
    if not (0 <= s.trace_weight <= 100):
        raise ValueError(f"`--trace-weight` must be a number from 0 to 100; got {s.trace_weight}.")
    if not (s.lr > 0 and math.isfinite(s.lr)):
        raise ValueError(f"`--lr` must be a positive number; got {s.lr}.")
    if s.patience < 0:
        raise ValueError(f"`--patience` must be 0 (off) or a positive integer; got {s.patience}.")
    if s.channels is not None and s.channels not in (1, 3):
        raise ValueError(f"`--channels` must be 1 (grey) or 3 (RGB); got {s.channels}.")
    if s.backbone == "basic-unet" and s.channels_given and len(s.levels) != 6:
        raise ValueError(
            "`--unet-channels` of `--backbone basic-unet` must be six integers (five levels and "
            f"the output features, e.g. 32,32,64,128,256,32); got {','.join(map(str, s.levels))!r}."
        )
    if s.backbone.startswith("deeplabv3") and s.channels_given:
        raise ValueError(f"`--unet-channels` does not apply to `--backbone {s.backbone}`.")
    if (folders["--val-images"] is None) != (folders["--val-masks"] is None):
        raise ValueError("`--val-images` and `--val-masks` must be given together.")
    for option, folder in folders.items():
        if folder is not None and not folder.is_dir():
            raise ValueError(f"`{option}` must be a folder; '{folder}' is not one.")
    if s.rater is not None and s.method != SegmentationMethod.SINGLE.value:
        raise ValueError("`--rater` applies to `--method single` only.")
    if s.method == SegmentationMethod.SINGLE.value and s.rater is None:
        raise ValueError("`--method single` needs `--rater NAME` (a sub-folder of --masks).")
    _check_out(out, folders)


def _check_out(out: Path, folders: dict[str, Path | None]) -> None:
    checkpoint_file = _checkpoint_file(out)
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"`--out` must be a folder for the model; '{out}' is a file.")
        if any(out.iterdir()) and not (_is_model_dir(out) or checkpoint_file.is_file()):
            raise ValueError(
                f"`--out` folder '{out}' is not empty and holds no segmentation model; choose a "
                "new or empty folder."
            )
    for option, folder in folders.items():
        if folder is not None and folder.resolve() == out.resolve():
            raise ValueError(f"`--out` must not be the `{option}` folder; choose another one.")


def _check_raters(s: _Settings, images: Path, masks: Path) -> None:
    _, by_rater = list_raters(images, masks)
    raters = list(by_rater)
    if s.rater is not None and s.rater not in raters:
        raise ValueError(
            f"`--rater` {s.rater!r} is not a sub-folder of --masks; choose one of {raters[:10]}."
        )
    if s.method in _REWEIGHT and len(raters) < 2:
        raise ValueError(
            f"`--method {s.method}` weighs several raters but --masks has only one "
            f"({raters[0]!r}); use --method consensus or single."
        )
    if s.rater is not None and not by_rater[s.rater]:
        raise ValueError(f"Rater {s.rater!r} has no masks; choose another --rater.")


@dataclasses.dataclass
class SegmentationRun:
    """A network trained by :func:`train_segmentation`, with what is needed to save it.

    Attributes:
        segmenter: The fitted :class:`crowdmed.training.CrowdSegmenter`.
        cases: The training cases.
        config: The settings written to ``data.json``.
        network_kwargs: Arguments that rebuild the network.
        raters: One row per rater: rater, n_masks, mean_weight.
        inputs: Path and checksum of every input folder.
        fit: Seconds, epochs run and the epoch a resumed run continued from.
        predictions: Label maps of the images to segment given, or ``None``.
        new_epochs: The epochs trained by this call.
    """

    segmenter: Any
    cases: SegmentationCases
    config: dict[str, Any]
    network_kwargs: dict[str, Any]
    raters: pd.DataFrame
    inputs: dict[str, Any]
    fit: dict[str, Any]
    predictions: Segmentations | None = None
    new_epochs: list[int] = dataclasses.field(default_factory=list)

    def save(self, out: Path, stage: Callable[[Path], Path] = Path) -> list[Path]:
        """Write the segmenter, data.json, history.csv, raters.csv (and the predictions).

        Args:
            out: The model folder.
            stage: Maps each target file to the path actually written.

        Returns:
            The target files (and the predictions folder).
        """
        from crowdmed.data.io import write_table

        targets = save_model(self.segmenter, out, stage)
        write_json(stage, out / DATA_NAME, self.config)
        history = pd.DataFrame(self.segmenter.history_)
        history["epoch"] = history["epoch"].astype(int)
        write_table(history, stage(out / "history.csv"))
        write_table(self.raters, stage(out / "raters.csv"))
        targets += [out / DATA_NAME, out / "history.csv", out / "raters.csv"]
        if self.predictions is not None:
            table = out / "predictions.csv"
            write_segmentations(stage, out / "predictions", table, self.predictions)
            targets += [table, out / "predictions"]
        return targets

    def remove_stale(self, out: Path) -> None:
        """Drop predictions of an earlier run in the same model folder (after saving)."""
        if self.predictions is None:
            (out / "predictions.csv").unlink(missing_ok=True)
        written = set() if self.predictions is None else self.predictions.file_names()
        remove_stale_label_maps(out / "predictions", written)


def _network_kwargs(s: _Settings, n_channels: int, k: int) -> dict[str, Any]:
    if s.backbone == "unet":
        return {
            "in_channels": n_channels,
            "out_channels": k,
            "channels": list(s.levels),
            "num_res_units": 2,
        }
    given = s.backbone == "basic-unet" and s.channels_given
    return {
        "in_channels": n_channels,
        "out_channels": k,
        "channels": list(s.levels) if given else None,
    }


def _rater_weights(seg: Any, x: np.ndarray, y: np.ndarray, batch_size: int) -> list[float]:
    a = y.shape[1]
    if seg.weighting_network_ is None:
        return [math.nan] * a
    axes = (0, *range(2, y.ndim))
    sums, pixels = np.zeros(a), np.zeros(a)
    for s in range(0, len(x), batch_size):
        mb = y[s : s + batch_size]
        w = seg.rater_weights(x[s : s + batch_size], mb)
        avail = mb >= 0
        sums += np.where(avail, w, 0.0).sum(axis=axes)
        pixels += avail.sum(axis=axes)
    return [float(s / p) if p else math.nan for s, p in zip(sums, pixels, strict=True)]


def train_segmentation(
    images: Path,
    masks: Path,
    out: Path,
    *,
    method: str = "reweight-gaf",
    rater: str | None = None,
    val_images: Path | None = None,
    val_masks: Path | None = None,
    epochs: int = 30,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    patience: int = 10,
    unet_channels: tuple[int, ...] | None = None,
    backbone: str = "unet",
    k_every: int | float = 0.1,
    focal_alpha: float | None = None,
    trace_weight: float = 0.01,
    channels: int | None = None,
    predict: Path | None = None,
    resume: bool = True,
    device: str = "auto",
    augment: bool = False,
    progress: Callable[..., None] | None = None,
) -> SegmentationRun:
    """Train a segmentation network on several raters' masks; checkpoint in ``out/checkpoint/``.

    Args:
        images: Folder with one 2-D image or 3-D volume per case.
        masks: Folder with one sub-folder of masks per rater (see :mod:`crowdmed.data.cases`).
        out: The model folder.
        method: single, consensus, gaf, reweight, reweight-gaf, confusion-pixel or
            confusion-global.
        rater: The rater learnt from with ``method="single"``.
        val_images: Folder of validation images (early stopping by validation Dice).
        val_masks: One reference mask per validation image.
        epochs: Maximum number of epochs.
        batch_size: Mini-batch size.
        lr: Learning rate of Adam.
        seed: Seed of the weights and the data order.
        patience: Epochs without improvement before stopping; 0 trains every epoch.
        unet_channels: Feature channels of the levels (``None``: the backbone's default;
            16, 32, 64 for the U-Net).
        backbone: unet, basic-unet, deeplabv3-mobilenet or deeplabv3-resnet50 (2-D only).
        k_every: Reweight methods: the schedule step ``k`` (``λ1 = 1 / (1 + tanh k)``, Xiao
            et al. 2021, eqs. 7-8) grows by one every ``k_every`` of the run: a fraction in
            ``(0, 1]`` of the planned optimiser steps (the paper's 1,000 of 10,000
            iterations: ``0.1``, the default) or an integer number of steps.
        focal_alpha: GAF methods: the focal loss's class-balance factor ``α_t`` (``α`` for
            the foreground classes, ``1 - α`` for the background); ``None``: ``α_t = 1``.
        trace_weight: Confusion methods: ``λ`` of the trace regulariser (Zhang et al. 2020).
        channels: Image channels, 1 or 3; detected from the images when ``None``.
        predict: Folder of images to segment after training.
        resume: Continue an interrupted run from ``out/checkpoint/``.
        device: Where to train: ``"auto"`` (a CUDA GPU when one is available, else the
            CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        augment: Train on randomly flipped and 90°-rotated batches
            (:func:`crowdmed.training.flip_rotate`).
        progress: Called with ``description``, ``completed``, ``total`` keywords.

    Returns:
        The run; :meth:`SegmentationRun.save` writes the model folder.

    Raises:
        ValueError: For bad values or inputs (one-line messages).
    """
    _import_torch()
    from crowdmed.nn.backbones import SegmentationBackbone
    from crowdmed.training.segmenter import SegmentationMethod

    m = check_option(method, SegmentationMethod, "--method")
    net = check_option(backbone, SegmentationBackbone, "--backbone")
    s = _Settings(
        m.value,
        rater,
        epochs,
        batch_size,
        lr,
        seed,
        patience,
        unet_channels or (16, 32, 64),
        net.value,
        unet_channels is not None,
        k_every,
        channels,
        resume,
        focal_alpha,
        trace_weight,
        device,
        augment,
    )
    folders = {
        "--images": images,
        "--masks": masks,
        "--val-images": val_images,
        "--val-masks": val_masks,
        "--predict": predict,
    }
    _check_settings(s, folders, out)
    _check_raters(s, images, masks)
    report = progress or _no_progress
    cases = read_segmentation_cases(images, masks, channels=channels, progress=report)
    n_channels = int(cases.images.shape[1])
    val = None
    if val_images is not None and val_masks is not None:
        report(description="Reading the validation set")
        val = read_reference_cases(
            val_images, val_masks, channels=n_channels, n_classes=cases.n_classes
        )
    if cases.spatial_dims == 3 and net.value.startswith("deeplabv3"):
        raise ValueError(
            f"`--backbone {net.value}` is 2-D only; use unet or basic-unet for volumes."
        )
    return _train(s, cases, val, (images, masks, val_images, val_masks, predict), out, report)


def _train(
    s: _Settings,
    cases: SegmentationCases,
    val: Any,
    folders: tuple[Path, Path, Path | None, Path | None, Path | None],
    out: Path,
    report: Callable[..., None],
) -> SegmentationRun:
    from crowdmed.nn.backbones import size_multiple
    from crowdmed.training.augment import flip_rotate
    from crowdmed.training.segmenter import CrowdSegmenter

    pred_names = [] if folders[4] is None else list_cases(folders[4])
    n_channels, k, dims = int(cases.images.shape[1]), cases.n_classes, cases.spatial_dims
    net_kwargs = _network_kwargs(s, n_channels, k)
    network = _build_network(s.backbone, net_kwargs, s.seed, dims)
    factor = size_multiple(network)
    new_epochs: list[int] = []

    def on_epoch(epoch: int, total: int, record: dict[str, float]) -> None:
        new_epochs.append(epoch)
        text = f"Training ({s.method}) epoch {epoch}/{total} loss {record['loss']:.3f}"
        report(completed=epoch, total=total, description=text)

    report(description=f"Training ({s.method})", total=s.epochs, completed=0)
    seg = CrowdSegmenter(
        network,
        method=s.method,
        rater=cases.raters.index(s.rater) if s.rater is not None else 0,
        epochs=s.epochs,
        batch_size=s.batch_size,
        lr=s.lr,
        k_every=s.k_every,
        focal_alpha=s.focal_alpha,
        trace_weight=s.trace_weight,
        device=fit_device(s.device)[0],
        patience=None if s.patience == 0 else s.patience,
        augment=flip_rotate if s.augment else None,
        random_state=s.seed,
        progress=on_epoch,
        checkpoint_dir=out / "checkpoint",
        resume=s.resume,
    )
    fit_start = time.perf_counter()
    # sizes the network cannot halve are padded (masks with -1: ignored by the loss)
    x, y = _pad(cases.images, factor, dims=dims), _pad(cases.masks, factor, -1, dims=dims)
    xv = yv = None
    if val is not None:
        xv, yv = _pad(val[0], factor, dims=dims), _pad(val[1], factor, -1, dims=dims)
    _fit(seg, x, y, xv, yv, k, out)
    fit = {
        "seconds": time.perf_counter() - fit_start,
        "epochs_run": len(seg.history_),
        "resumed_from_epoch": len(seg.history_) - len(new_epochs) or None,
        "device": fit_device(s.device)[1],
    }
    report(description="Computing rater weights")
    weights = _rater_weights(seg, x, y, s.batch_size)
    raters = pd.DataFrame({"rater": cases.raters, "n_masks": cases.counts, "mean_weight": weights})
    predictions = None
    if folders[4] is not None:
        report(description=f"Predicting {len(pred_names):,} images")
        cases_out = _segment(network, folders[4], pred_names, n_channels)
        predictions = Segmentations(cases_out, k, {})
    inputs = _inputs(cases, val, folders, pred_names)
    config = _config(s, cases, net_kwargs, seg, out)
    return SegmentationRun(
        seg, cases, config, net_kwargs, raters, inputs, fit, predictions, new_epochs
    )


def _fit(seg: Any, x: Any, y: Any, xv: Any, yv: Any, k: int, out: Path) -> None:
    from crowdmed.training import CheckpointEpochsError, CheckpointMismatchError

    checkpoint_file = _checkpoint_file(out)
    try:
        seg.fit(x, y, X_val=xv, y_val=yv, n_classes=k)
    except CheckpointMismatchError as exc:
        if isinstance(exc, CheckpointEpochsError):
            raise  # a longer run than --epochs asks for is never replaced by a shorter one
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


def _inputs(
    cases: SegmentationCases,
    val: Any,
    folders: tuple[Path, Path, Path | None, Path | None, Path | None],
    pred_names: list[str],
) -> dict[str, Any]:
    images, masks, val_images, val_masks, predict = folders
    return {
        "images": files_record(images, cases.image_files),
        "masks": {
            "path": masks.resolve(),
            "raters": {
                r: {"n_files": len(f), "sha256": tree_sha256(list(f.values()))}
                for r, f in zip(cases.raters, cases.files, strict=True)
            },
        },
        "val_images": None
        if val_images is None
        else files_record(val_images, case_paths(val_images, val[2])),
        "val_masks": None
        if val_masks is None
        else {"path": val_masks.resolve(), "sha256": tree_sha256(val[3])},
        "predict": None
        if predict is None
        else files_record(predict, case_paths(predict, pred_names)),
    }


def _config(
    s: _Settings, cases: SegmentationCases, net_kwargs: dict[str, Any], seg: Any, out: Path
) -> dict[str, Any]:
    return {
        "task": "segmentation",
        "network": _NETWORK_NAMES[s.backbone],
        "backbone": s.backbone,
        "network_kwargs": net_kwargs,
        "spatial_dims": cases.spatial_dims,
        "method": s.method,
        "rater": s.rater,
        "raters": cases.raters,
        "n_classes": cases.n_classes,
        "channels": int(cases.images.shape[1]),
        "image_size": list(cases.images.shape[2:]),
        "epochs": s.epochs,
        "batch_size": s.batch_size,
        "lr": s.lr,
        "k_every": s.k_every,
        "focal_alpha": s.focal_alpha,
        "trace_weight": s.trace_weight,
        "device": s.device,
        "augment": s.augment,
        "patience": s.patience,
        "seed": s.seed,
        "n_images": len(cases.case_ids),
        "n_masks": int(sum(cases.counts)),
        "best_epoch": seg.best_epoch_,
        "stopped_early": seg.stopped_early_,
        "checkpoint_sha256": sha256_file(_checkpoint_file(out)),
    }
