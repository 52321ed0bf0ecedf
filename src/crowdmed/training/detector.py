"""Seeded training of torchvision detectors on boxes from several readers, with EARL weights.

:class:`DetectorTrainer` fits any detector with torchvision's interface (a loss dict in
training mode), such as the EARL-weighted CenterNet of
:func:`crowdmed.nn.centernet.centernet_detector` (with AdamW) or the EARL-weighted FCOS of
:func:`crowdmed.nn.detection.fcos_detector` (with SGD: FCOS trained from scratch with AdamW
was seen to collapse to empty predictions), with a linear learning-rate warm-up and a cosine
decay.

:func:`variant_targets` turns reader boxes into training boxes for the variants of Le et al.
(2023): every reader's boxes (``all-readers``), fused boxes (``fused``), and fused boxes
weighted by their fused confidence (``earl``: eq. 2, ``L = c·L_cls + c·β·I·L_loc`` with ``c``
the number of boxes in the fused cluster, Algorithm 1 step 6; background keeps weight 1).
The readers' proficiencies ``p_r`` are an input, as in the paper (equal when not given).
The fourth variant of the paper, the reader ensemble, trains one detector on each reader's
boxes and fuses their predictions with weighted box fusion: :func:`fuse_model_predictions`
(see ``benchmarks/detection_earl.py``).

References:
    Le, Tran, Pham, Nguyen, Le, Nguyen, Nguyen (2023). Learning from multiple expert
    annotators for enhancing anomaly detection in medical image analysis. IEEE Access 11.
    https://doi.org/10.1109/ACCESS.2023.3270451; preprint https://arxiv.org/abs/2203.10611
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from crowdmed._validation import check_option, check_random_state
from crowdmed.exceptions import NotFittedError
from crowdmed.training.engine import (
    CHECKPOINT_NAME,
    Engine,
    ProgressHook,
    TrainTask,
    data_digest,
    resolve_device,
)
from crowdmed.training.persistence import register_loader

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

__all__ = [
    "TASK",
    "CrowdDetector",
    "DetectionVariant",
    "DetectorTrainer",
    "fuse_model_predictions",
    "make_targets",
    "predict_boxes",
    "variant_targets",
]

#: Task of the model folders written by :meth:`CrowdDetector.save`.
TASK = "detect"
_BOX = ["xmin", "ymin", "xmax", "ymax"]
#: Optimisers of :class:`CrowdDetector`.
_OPTIMIZERS = ("sgd", "adamw")
#: Predicted boxes narrower than this (pixels) are dropped (torchvision's ``min_size``).
_MIN_SIDE = 1e-2


class DetectionVariant(str, Enum):
    """Which boxes a detector learns from (see :func:`variant_targets`)."""

    ALL_READERS = "all-readers"
    FUSED = "fused"
    EARL = "earl"


def variant_targets(
    readers: pd.DataFrame,
    variant: str | DetectionVariant,
    *,
    iou_thr: float = 0.4,
    proficiency: Any = None,
    readings: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Training boxes of one variant, with a ``weight`` column.

    Args:
        readers: Frame with columns ``image, reader, class, xmin, ymin, xmax, ymax``
            (absolute pixels); rows with empty class and coordinates record readings without
            boxes (they lower the fused confidence and are never targets).
        variant: ``"all-readers"`` (every reader box, weight 1), ``"fused"`` (boxes fused
            with :func:`crowdmed.aggregation.fuse_boxes`, weight 1) or ``"earl"`` (fused boxes
            weighted by their fused confidence ``c``, the count of boxes in the cluster:
            Le et al. 2023, eq. 2 and Algorithm 1 step 6).
        iou_thr: IoU at which reader boxes are fused.
        proficiency: Per-reader proficiencies ``p_r`` passed to ``fuse_boxes`` (equal
            weights when ``None``; the paper gives them as an input).
        readings: Optional frame ``image, reader`` of who read each image, passed to
            ``fuse_boxes`` so that a reader who marked nothing lowers the confidence.

    Returns:
        Frame with columns ``image, class, xmin, ymin, xmax, ymax, weight``.
    """
    v = check_option(variant, DetectionVariant, "variant")
    if v is DetectionVariant.ALL_READERS:
        has_box = readers[_BOX].notna().all(axis=1) & readers["class"].notna()
        out = readers.loc[has_box, ["image", "class", *_BOX]].copy()
        out["weight"] = 1.0
        return out.reset_index(drop=True)
    from crowdmed.aggregation.detection.box_fusion import fuse_boxes

    fused = fuse_boxes(readers, iou_thr=iou_thr, proficiency=proficiency, readers=readings)
    out = fused[["image", "class", *_BOX]].copy()
    out["weight"] = fused["confidence"].to_numpy(np.float64) if v is DetectionVariant.EARL else 1.0
    return out.reset_index(drop=True)


def make_targets(
    boxes: pd.DataFrame,
    image_ids: Sequence[Any] | np.ndarray,
    classes: Sequence[Any] | np.ndarray,
    *,
    weight_column: str | None = "weight",
) -> list[dict[str, torch.Tensor]]:
    """Targets of a torchvision detector (``boxes``, ``labels``, ``weights``), one per image.

    Args:
        boxes: Frame with columns ``image, class, xmin, ymin, xmax, ymax`` and optionally
            ``weight_column``.
        image_ids: The images, in the order of the image array given to ``fit``; an image
            without boxes gets an empty target (all its locations are background).
        classes: The class values; class ``classes[k]`` becomes label ``k``.
        weight_column: Column of per-box weights (1 when ``None`` or absent).

    Returns:
        One dict per image with float ``boxes`` ``(n, 4)``, int64 ``labels`` ``(n,)`` and
        float ``weights`` ``(n,)``.

    Raises:
        ValueError: For a class not in ``classes`` or a box of an unknown image.
    """
    index = {c: k for k, c in enumerate(pd.Index(classes).tolist())}
    unknown = sorted({str(c) for c in boxes["class"].tolist() if c not in index})
    if unknown:
        raise ValueError(f"Boxes have classes {unknown[:5]} that are not in `classes`.")
    ids = pd.Index(image_ids)
    pos = ids.get_indexer(boxes["image"])
    if (pos < 0).any():
        missing = boxes["image"][pos < 0].astype(str).unique()[:5].tolist()
        raise ValueError(f"Boxes refer to images {missing} that have no image; add them.")
    coords = boxes[_BOX].to_numpy(np.float32)
    labels = np.array([index[c] for c in boxes["class"].tolist()], dtype=np.int64)
    if weight_column is not None and weight_column in boxes.columns:
        weights = boxes[weight_column].to_numpy(np.float32)
    else:
        weights = np.ones(len(boxes), dtype=np.float32)
    order = np.argsort(pos, kind="stable")
    starts = np.searchsorted(pos[order], np.arange(len(ids) + 1))
    targets = []
    for i in range(len(ids)):
        sel = order[starts[i] : starts[i + 1]]
        targets.append(
            {
                "boxes": torch.from_numpy(coords[sel].reshape(-1, 4)),
                "labels": torch.from_numpy(labels[sel]),
                "weights": torch.from_numpy(weights[sel]),
            }
        )
    return targets


def _as_images(images: Any) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(
            "`images` must have shape (n_images, H, W) or (n_images, C, H, W); got "
            f"{tuple(x.shape)}."
        )
    return x


class CrowdDetector:
    """Seeded SGD training, prediction and persistence of a torchvision detector.

    The fit runs on :class:`crowdmed.training.engine.Engine` (checkpoints, exact resume,
    progress, ``torchrun``).

    Args:
        network: A detector with torchvision's interface (only a network built by
            :func:`crowdmed.nn.detection.build_detector`, ``centernet_detector`` or
            ``fcos_detector`` can be saved).
        classes: Class value of each label ``0..n_classes-1`` (used by :meth:`predict` and
            stored by :meth:`save`); ``None`` keeps the integer labels.
        epochs: Passes over the training images.
        batch_size: Images per step.
        lr: Peak learning rate.
        momentum: SGD momentum (``beta1`` of AdamW).
        weight_decay: L2 penalty (decoupled for AdamW).
        warmup: Steps of linear warm-up from ``lr / 10`` to ``lr``; a cosine decay to 0
            follows.
        clip_grad: Largest gradient norm (steadies the first steps from scratch).
        optimizer: ``"sgd"`` (with momentum; what the FCOS needs from scratch) or
            ``"adamw"`` (what the CenterNet of :func:`crowdmed.nn.centernet.centernet_detector`
            learns fastest with).
        device: Torch device of the fit (see :func:`crowdmed.training.engine.resolve_device`).
        checkpoint_dir: Folder for ``checkpoint.safetensors``, written atomically after every
            epoch; a fit with the same folder, data, settings and integer ``random_state``
            resumes from it (only ``epochs`` may change).
        resume: ``False`` deletes an existing checkpoint and starts over.
        random_state: Seed of the data order and of torch during ``fit``; the global torch
            RNG is left as it was.
        progress: ``True`` for a progress bar, or ``progress(epoch, epochs, record)`` called
            after every epoch with the epoch's :attr:`history_` record.

    Attributes:
        history_ (list[dict[str, float]]): One record per epoch: ``epoch``, ``loss`` and its
            parts (means over the epoch's steps), ``lr`` (of the epoch's last step),
            ``seconds``.
        n_steps_ (int): Optimiser steps taken.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        classes: Sequence[Any] | None = None,
        epochs: int = 10,
        batch_size: int = 16,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup: int = 50,
        clip_grad: float = 10.0,
        optimizer: str = "sgd",
        device: str | torch.device | None = "cpu",
        checkpoint_dir: str | os.PathLike[str] | None = None,
        resume: bool = True,
        random_state: int | None = None,
        progress: bool | ProgressHook | None = None,
    ) -> None:
        self.network = network
        self.classes = classes
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.warmup = warmup
        self.clip_grad = clip_grad
        self.optimizer = optimizer
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.random_state = random_state
        self.progress = progress

    def _check(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"`lr` must be a positive number; got {self.lr!r}.")
        if self.warmup < 0:
            raise ValueError(f"`warmup` must be >= 0; got {self.warmup!r}.")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(
                f"`optimizer` must be one of {list(_OPTIMIZERS)}; got {self.optimizer!r}."
            )

    def fit(self, images: Any, targets: list[dict[str, torch.Tensor]]) -> Self:
        """Train the network.

        Args:
            images: Float array ``(n_images, H, W)`` or ``(n_images, C, H, W)``.
            targets: One dict per image (see :func:`make_targets`).

        Returns:
            ``self``.

        Raises:
            ValueError: For bad hyperparameters, a number of targets different from the
                number of images, or a checkpoint of another run.
            FloatingPointError: When the loss becomes infinite or NaN.
        """
        self._check()
        x = _as_images(images)
        if len(targets) != len(x):
            raise ValueError(
                f"`targets` must have one entry per image; got {len(targets)} for {len(x)} images."
            )
        rng = check_random_state(self.random_state)
        seed = int(rng.integers(2**31 - 1))
        engine = Engine(
            epochs=int(self.epochs),
            batch_size=int(self.batch_size),
            seed=seed,
            numpy_rng=rng,
            shuffle="numpy",
            join_single=False,
            loss_average="batches",
            keep_best=False,
            clip_grad_norm=self.clip_grad,
            device=self.device,
            checkpoint=None
            if self.checkpoint_dir is None
            else Path(self.checkpoint_dir) / CHECKPOINT_NAME,
            resume=self.resume,
            mismatch_hint="use another checkpoint_dir, delete it or pass resume=False. Only "
            "`epochs` may change on resume.",
            progress=False if self.progress is None else self.progress,
        )
        result = engine.fit(_DetectionTask(self, x, targets))
        self.network.eval()
        self.history_: list[dict[str, float]] = result.history
        self.n_steps_ = result.step
        return self

    def predict(
        self,
        images: Any,
        *,
        image_ids: Sequence[Any] | np.ndarray | None = None,
        classes: Sequence[Any] | np.ndarray | None = None,
        batch_size: int = 64,
    ) -> pd.DataFrame:
        """Predicted boxes of every image.

        Args:
            images: Float array ``(n_images, H, W)`` or ``(n_images, C, H, W)``.
            image_ids: Id of each image (``0..n-1`` when ``None``).
            classes: Class value of each label; the detector's ``classes`` when ``None``
                (the label itself when both are ``None``).
            batch_size: Images per forward pass.

        Returns:
            Frame with columns ``image, class, xmin, ymin, xmax, ymax, score``.

        Raises:
            NotFittedError: Before ``fit``.
        """
        if not hasattr(self, "history_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first."
            )
        return predict_boxes(
            self.network,
            images,
            image_ids=image_ids,
            classes=self.classes if classes is None else classes,
            batch_size=batch_size,
        )

    # ------------------------------------------------------------------ persistence
    def _settings(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "warmup": self.warmup,
            "clip_grad": self.clip_grad,
            "optimizer": self.optimizer,
            "random_state": self.random_state,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted detector as a model folder (task ``"detect"``).

        ``config.json`` holds ``classes``, ``architecture`` (the arguments of
        :func:`~crowdmed.nn.detection.build_detector`), ``settings`` (the training
        hyperparameters), ``history`` and ``n_steps``; ``model.safetensors`` the network's
        state dict. :meth:`load` and :func:`crowdmed.training.load_model` read it back.

        Args:
            path: The model folder (created when missing; other files in it are kept).

        Returns:
            The folder.

        Raises:
            NotFittedError: Before ``fit``.
            ValueError: When the network was not built by ``build_detector``.
        """
        if not hasattr(self, "history_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first."
            )
        arch = getattr(self.network, "architecture", None)
        if not isinstance(arch, dict):
            raise ValueError(
                "`network` must be built by crowdmed.nn.detection.build_detector to be saved; got "
                f"a {type(self.network).__name__} without its `architecture`. Save its "
                "state_dict yourself."
            )
        from crowdmed.training.persistence import save_folder

        config = {
            "classes": None if self.classes is None else list(self.classes),
            "architecture": dict(arch),
            "settings": self._settings(),
            "history": self.history_,
            "n_steps": self.n_steps_,
        }
        return save_folder(path, task=TASK, config=config, tensors=self.network.state_dict())

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        network: nn.Module | None = None,
    ) -> Self:
        """Read a detector folder written by :meth:`save`, ready to predict.

        Args:
            path: The model folder.
            device: Torch device of the network; the CPU when ``None``.
            network: A network to load the weights into instead of rebuilding it from the
                folder's ``architecture``.

        Returns:
            The fitted detector (``history_`` and ``n_steps_`` as saved).

        Raises:
            ValueError: One line naming the file when it is missing, changed or corrupt.
        """
        from crowdmed.nn.detection import build_detector
        from crowdmed.training.persistence import CONFIG_NAME, WEIGHTS_NAME, read_folder

        folder = Path(path)
        config, tensors = read_folder(folder, task=TASK)
        try:
            if network is None:
                arch = dict(config["architecture"])
                network = build_detector(arch.pop("network", None), **arch)
            model = cls(network, classes=config["classes"], **config["settings"])
            history = [dict(r) for r in config["history"]]
            n_steps = int(config["n_steps"])
        except (KeyError, TypeError, ValueError) as exc:
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise ValueError(
                f"'{folder / CONFIG_NAME}' is not a valid detector config ({first}); save the "
                "detector again."
            ) from None
        try:
            network.load_state_dict(tensors)
        except RuntimeError as exc:
            raise ValueError(
                f"'{folder / WEIGHTS_NAME}' does not fit the detector "
                f"({str(exc).splitlines()[0]}); the folder was changed, save it again."
            ) from None
        network.to(resolve_device("cpu" if device is None else device)).eval()
        model.history_ = history
        model.n_steps_ = n_steps
        return model


#: The former name of :class:`CrowdDetector`.
DetectorTrainer = CrowdDetector


class _DetectionTask(TrainTask):
    """One SGD step of a torchvision detector on a batch of images and their targets."""

    name = "detector"

    def __init__(
        self, owner: CrowdDetector, x: torch.Tensor, targets: list[dict[str, torch.Tensor]]
    ) -> None:
        self.owner = owner
        self.x = x
        self.targets = targets

    def setup(self, engine: Engine) -> None:
        o = self.owner
        self.device = engine.device
        o.network.to(engine.device)
        self.model = engine.wrap(o.network)
        params = [p for p in o.network.parameters() if p.requires_grad]
        if o.optimizer == "adamw":
            self.opt: torch.optim.Optimizer = torch.optim.AdamW(
                params, lr=o.lr, betas=(o.momentum, 0.999), weight_decay=o.weight_decay
            )
        else:
            self.opt = torch.optim.SGD(
                params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
            )
        # steps of the whole run: each process sees its shard of every epoch under torchrun
        per_rank = math.ceil(len(self.x) / engine.world_size)
        self.total = math.ceil(per_rank / engine.batch_size) * engine.epochs
        self.warmup = int(o.warmup)

    def modules(self) -> dict[str, nn.Module]:
        return {"network": self.owner.network}

    def optimizer(self) -> torch.optim.Optimizer:
        return self.opt

    def config(self) -> dict[str, Any]:
        o = self.owner
        t = self.targets
        empty = torch.zeros(0)
        return {
            "lr": o.lr,
            "momentum": o.momentum,
            "weight_decay": o.weight_decay,
            "warmup": o.warmup,
            "clip_grad": o.clip_grad,
            **({} if o.optimizer == "sgd" else {"optimizer": o.optimizer}),
            "data": data_digest(
                self.x,
                torch.tensor([len(d["labels"]) for d in t]),
                torch.cat([d["boxes"].reshape(-1).float() for d in t]) if t else empty,
                torch.cat([d["labels"].reshape(-1) for d in t]) if t else empty,
                torch.cat([d.get("weights", torch.ones(len(d["labels"]))).float() for d in t])
                if t
                else empty,
            ),
        }

    def lr_at(self, step: int) -> float:
        lr = float(self.owner.lr)
        if step < self.warmup:
            return lr * (0.1 + 0.9 * step / self.warmup)
        done = (step - self.warmup) / max(1, self.total - self.warmup)
        return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))

    def epoch_items(self, epoch: int, engine: Engine) -> int:
        return len(self.x)

    def train_batch(
        self, idx: torch.Tensor, engine: Engine
    ) -> tuple[torch.Tensor, dict[str, float]]:
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(engine.step)
        dev = self.device
        ids = idx.tolist()
        images = [self.x[i].to(dev) for i in ids]
        targets = [{k: v.to(dev) for k, v in self.targets[i].items()} for i in ids]
        losses = self.model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"The detector loss became {float(loss)} at step {engine.step + 1}; lower `lr`."
            )
        return loss, {k: float(v.detach()) for k, v in losses.items()}

    def end_epoch(self, epoch: int, engine: Engine) -> dict[str, float]:
        return {"lr": self.lr_at(engine.step - 1)}


def _load_detect(path: str | os.PathLike[str], **kwargs: Any) -> CrowdDetector:
    return CrowdDetector.load(path, **kwargs)


def _load_patch_detect(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    from crowdmed.pathology.detector import load_detector

    return load_detector(path, **kwargs)


register_loader(TASK, _load_detect)
register_loader("patch-detect", _load_patch_detect)


def predict_boxes(
    network: nn.Module,
    images: Any,
    *,
    image_ids: Sequence[Any] | np.ndarray | None = None,
    classes: Sequence[Any] | np.ndarray | None = None,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Run a torchvision detector in eval mode and collect its boxes in a frame.

    Args:
        network: A torchvision detector.
        images: Float array ``(n_images, H, W)`` or ``(n_images, C, H, W)``.
        image_ids: Id of each image (``0..n-1`` when ``None``).
        classes: Class value of each label (the label itself when ``None``).
        batch_size: Images per forward pass.

    Returns:
        Frame with columns ``image, class, xmin, ymin, xmax, ymax, score``. Boxes less than
        0.01 pixels wide or high (flattened by clipping to the image) are left out.
    """
    x = _as_images(images)
    ids = np.arange(len(x)) if image_ids is None else np.asarray(image_ids, dtype=object)
    if len(ids) != len(x):
        raise ValueError(f"`image_ids` has {len(ids)} entries for {len(x)} images.")
    was_training = network.training
    network.eval()
    device = next(network.parameters(), torch.empty(0)).device
    parts: list[pd.DataFrame] = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            outputs = network(list(x[start : start + batch_size].to(device)))
            for j, raw in enumerate(outputs):
                out = {k: v.cpu() for k, v in raw.items()}
                b = out["boxes"].numpy().astype(np.float64)
                # Boxes clipped to the border can end (nearly) flat; like torchvision's
                # remove_small_boxes they are dropped: they match nothing.
                keep = ((b[:, 2] - b[:, 0]) >= _MIN_SIDE) & ((b[:, 3] - b[:, 1]) >= _MIN_SIDE)
                b = b[keep]
                lab = out["labels"].numpy()[keep]
                parts.append(
                    pd.DataFrame(
                        {
                            "image": [ids[start + j]] * len(b),
                            "class": lab if classes is None else np.asarray(classes)[lab],
                            **{c: b[:, k] for k, c in enumerate(_BOX)},
                            "score": out["scores"].numpy().astype(np.float64)[keep],
                        }
                    )
                )
    network.train(was_training)
    columns = ["image", "class", *_BOX, "score"]
    frames = [p for p in parts if len(p)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
    table = pd.concat(frames, ignore_index=True)
    if image_ids is None:
        table["image"] = table["image"].astype(np.int64)
    return table[columns]


def fuse_model_predictions(
    predictions_by_model: Mapping[Any, pd.DataFrame],
    *,
    image_ids: Sequence[Any] | np.ndarray | None = None,
    weights: Mapping[Any, float] | None = None,
    iou_thr: float = 0.55,
    skip_box_thr: float = 0.0,
) -> pd.DataFrame:
    """Fuse the predicted boxes of several detectors with weighted boxes fusion.

    The reader ensemble of Le et al. (2023) trains one detector per reader and fuses their
    predictions with WBF (Solovyev et al. 2021, ``conf_type="avg"``); this calls
    :func:`crowdmed.aggregation.fuse_boxes` with the models as sources, so every model counts
    as a source of every image, also where it predicted nothing.

    Args:
        predictions_by_model: Model id -> its predictions, a frame with columns
            ``image, class, xmin, ymin, xmax, ymax, score`` (as :func:`predict_boxes`
            returns).
        image_ids: The images every model predicted on; defaults to the images that have a
            prediction. Images without any prediction have no fused box.
        weights: Weight of each model (positive); equal weights when ``None``.
        iou_thr: A box joins a cluster when its IoU with the fused box exceeds this (WBF's
            default 0.55).
        skip_box_thr: Predictions scored below this are ignored.

    Returns:
        Frame with columns ``image, class, xmin, ymin, xmax, ymax, score, n_models``: one
        row per fused box, ``score`` being WBF's fused score (mean of score x model weight
        over the cluster's boxes, times ``min(n_boxes, n_models) / total model weight``) and
        ``n_models`` the number of models with a box in the cluster.

    Raises:
        ValueError: No models, a frame without the needed columns, a model without a weight,
            or invalid boxes or scores.
    """
    from crowdmed.aggregation.detection.box_fusion import fuse_boxes

    if not isinstance(predictions_by_model, Mapping) or not predictions_by_model:
        raise ValueError(
            "`predictions_by_model` must be a non-empty mapping model id -> predictions frame."
        )
    need = ["image", "class", *_BOX, "score"]
    parts = []
    for model, pred in predictions_by_model.items():
        if not isinstance(pred, pd.DataFrame):
            raise TypeError(
                f"The predictions of model {model!r} must be a DataFrame; got "
                f"{type(pred).__name__}."
            )
        missing = [c for c in need if c not in pred.columns]
        if missing:
            raise ValueError(
                f"The predictions of model {model!r} lack columns {missing}; they need {need} "
                "(as predict_boxes returns)."
            )
        parts.append(pred[need].assign(reader=[model] * len(pred)))
    models = list(predictions_by_model)
    boxes = pd.concat(parts, ignore_index=True)
    columns = ["image", "class", *_BOX, "score", "n_models"]
    if image_ids is None:
        images = pd.unique(boxes["image"])
    else:
        images = np.asarray(image_ids, dtype=object)
        unknown = ~boxes["image"].isin(images)
        if unknown.any():
            raise ValueError(
                f"Model {boxes['reader'][unknown].iloc[0]!r} predicted on image "
                f"{boxes['image'][unknown].iloc[0]!r}, which is not in `image_ids`; add it."
            )
    if not len(boxes):
        return pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
    readings = pd.DataFrame(
        {"image": np.repeat(images, len(models)), "reader": models * len(images)}
    )
    fused = fuse_boxes(
        boxes[["image", "reader", "class", *_BOX, "score"]],
        iou_thr=iou_thr,
        proficiency=None if weights is None else dict(weights),
        readers=readings,
        estimate_proficiency=False,
        skip_box_thr=skip_box_thr,
    )
    out = fused[["image", "class", *_BOX, "score", "n_readers"]]
    return out.rename(columns={"n_readers": "n_models"}).reset_index(drop=True)
