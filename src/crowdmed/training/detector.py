"""Seeded training of torchvision detectors on boxes from several readers, with EARL weights.

:class:`DetectorTrainer` fits any torchvision detector that returns a loss dict in training
mode, such as the EARL-weighted FCOS of :func:`crowdmed.nn.detection.fcos_detector`, with SGD
(momentum 0.9), a linear learning-rate warm-up and a cosine decay (FCOS trained from scratch
with AdamW was seen to collapse to empty predictions; SGD with a warm-up does not).

:func:`variant_targets` turns reader boxes into training boxes for the variants of Le et al.
(2023): every reader's boxes (``all-readers``), fused boxes (``fused``), and fused boxes
weighted by their fused confidence (``earl``). The fourth variant of the paper, the reader
ensemble, trains one detector on each reader's boxes and fuses their predictions with weighted
box fusion: :func:`fuse_model_predictions` (see ``benchmarks/detection_earl.py``).

References:
    Le, Tran, Pham, Nguyen, Le, Nguyen, Nguyen (2023). Learning from multiple expert
    annotators for enhancing anomaly detection in medical image analysis. IEEE Access 11.
    https://doi.org/10.1109/ACCESS.2023.3270451; preprint https://arxiv.org/abs/2203.10611
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from crowdmed._io import atomic_path
from crowdmed._validation import check_option, check_random_state
from crowdmed.exceptions import NotFittedError

__all__ = [
    "DetectionVariant",
    "DetectorTrainer",
    "fuse_model_predictions",
    "make_targets",
    "predict_boxes",
    "variant_targets",
]

_BOX = ["xmin", "ymin", "xmax", "ymax"]
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
            weighted by their fused confidence).
        iou_thr: IoU at which reader boxes are fused.
        proficiency: Optional per-reader weights passed to ``fuse_boxes``.
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


class DetectorTrainer:
    """Seeded SGD training and prediction for a torchvision detector.

    Args:
        network: A torchvision detector (e.g. :func:`crowdmed.nn.detection.fcos_detector`).
        epochs: Passes over the training images.
        batch_size: Images per step.
        lr: Peak learning rate of SGD.
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        warmup: Steps of linear warm-up from ``lr / 10`` to ``lr``; a cosine decay to 0
            follows.
        clip_grad: Largest gradient norm (steadies the first steps from scratch).
        checkpoint_path: Optional ``.pt`` file written (atomically) after every epoch with
            the weights, optimiser state and history.
        random_state: Seed of the data order and of torch during ``fit``; the global torch
            RNG is left as it was.
        progress: Optional ``callback(step, total_steps, losses)`` after every step.

    Attributes:
        history_ (list[dict[str, float]]): One record per epoch: ``epoch``, ``loss`` and its
            parts (means over the epoch), ``lr``, ``seconds``.
        n_steps_ (int): Optimiser steps taken.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        epochs: int = 10,
        batch_size: int = 16,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup: int = 50,
        clip_grad: float = 10.0,
        checkpoint_path: str | os.PathLike[str] | None = None,
        random_state: int | None = None,
        progress: Callable[[int, int, dict[str, float]], None] | None = None,
    ) -> None:
        self.network = network
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.warmup = warmup
        self.clip_grad = clip_grad
        self.checkpoint_path = checkpoint_path
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

    def fit(self, images: Any, targets: list[dict[str, torch.Tensor]]) -> DetectorTrainer:
        """Train the network.

        Args:
            images: Float array ``(n_images, H, W)`` or ``(n_images, C, H, W)``.
            targets: One dict per image (see :func:`make_targets`).

        Returns:
            ``self``.

        Raises:
            ValueError: For bad hyperparameters or a number of targets different from the
                number of images.
        """
        self._check()
        x = _as_images(images)
        if len(targets) != len(x):
            raise ValueError(
                f"`targets` must have one entry per image; got {len(targets)} for {len(x)} images."
            )
        rng = check_random_state(self.random_state)
        seed = int(rng.integers(2**31 - 1))
        n = len(x)
        per_epoch = math.ceil(n / self.batch_size)
        total = per_epoch * self.epochs
        net = self.network
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

        def lr_at(step: int) -> float:
            if step < self.warmup:
                return self.lr * (0.1 + 0.9 * step / self.warmup)
            done = (step - self.warmup) / max(1, total - self.warmup)
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))

        self.history_: list[dict[str, float]] = []
        step = 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net.train()
            for epoch in range(1, self.epochs + 1):
                started = time.perf_counter()
                order = rng.permutation(n)
                sums: dict[str, float] = {}
                for b in range(per_epoch):
                    idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                    for group in opt.param_groups:
                        group["lr"] = lr_at(step)
                    losses = net([x[i] for i in idx], [targets[i] for i in idx])
                    loss = sum(losses.values())
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"The detector loss became {float(loss)} at step {step + 1}; "
                            "lower `lr`."
                        )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(params, self.clip_grad)
                    opt.step()
                    step += 1
                    record = {k: float(v.detach()) for k, v in losses.items()}
                    record["loss"] = float(loss.detach())
                    for k, v in record.items():
                        sums[k] = sums.get(k, 0.0) + v
                    if self.progress is not None:
                        self.progress(step, total, record)
                self.history_.append(
                    {
                        "epoch": float(epoch),
                        **{k: v / per_epoch for k, v in sums.items()},
                        "lr": lr_at(step - 1),
                        "seconds": time.perf_counter() - started,
                    }
                )
                if self.checkpoint_path is not None:
                    with atomic_path(self.checkpoint_path) as tmp:
                        torch.save(
                            {
                                "state_dict": net.state_dict(),
                                "optimizer": opt.state_dict(),
                                "epoch": epoch,
                                "history": self.history_,
                            },
                            tmp,
                        )
        net.eval()
        self.n_steps_ = step
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
            classes: Class value of each label (the label itself when ``None``).
            batch_size: Images per forward pass.

        Returns:
            Frame with columns ``image, class, xmin, ymin, xmax, ymax, score``.

        Raises:
            NotFittedError: Before ``fit``.
        """
        if not hasattr(self, "history_"):
            raise NotFittedError(
                "This DetectorTrainer instance is not fitted yet. Call 'fit' first."
            )
        return predict_boxes(
            self.network, images, image_ids=image_ids, classes=classes, batch_size=batch_size
        )


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
    parts: list[pd.DataFrame] = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            outputs = network(list(x[start : start + batch_size]))
            for j, out in enumerate(outputs):
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
    out = pd.concat(frames, ignore_index=True)
    if image_ids is None:
        out["image"] = out["image"].astype(np.int64)
    return out[columns]


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
