"""Fit loop for segmentation networks trained on the masks of several raters.

:class:`CrowdSegmenter` trains any segmentation network (e.g. MONAI ``UNet`` or
``BasicUNet``; MONAI has no HRNet, the backbone of the paper) with one of these targets:

====================  ========================================================================
``method``            what the network is trained on
====================  ========================================================================
``single``            the masks of one rater (``rater``), cross-entropy
``consensus``         the consensus mask (majority vote, or any mask given as ``consensus``,
                      e.g. STAPLE), cross-entropy
``gaf``               the consensus mask with the Gaussian attention focal loss
``reweight``          all raters through the label re-weighting framework, cross-entropy
``reweight-gaf``      the framework with the Gaussian attention focal loss in both terms
``confusion-pixel``   every rater's masks through a pixel-wise confusion matrix per rater,
                      with the trace regulariser (Zhang et al., 2020)
``confusion-global``  the same with one confusion matrix per rater for all pixels
====================  ========================================================================

``gaf`` and the re-weighting methods follow Xiao et al. (2021), see
:mod:`crowdmed.nn.segmentation`; the confusion methods follow Zhang et al. (2020), see
:mod:`crowdmed.nn.confusion`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crowdmed._validation import check_option
from crowdmed.nn.registry import network_spec
from crowdmed.nn.segmentation import (
    LabelReweightingLoss,
    WeightingNetwork,
    pixel_loss,
    reweight_lambdas,
)
from crowdmed.training._confusion import (
    CONFUSION_METHODS,
    build_confusion_network,
    confusion_batch_loss,
    confusion_config,
    predict_confusion,
    rebuild_confusion_network,
)
from crowdmed.training.engine import (
    CHECKPOINT_NAME,
    Engine,
    TrainTask,
    data_digest,
    is_main_process,
    resolve_device,
)
from crowdmed.training.persistence import (
    CONFIG_NAME,
    load_state,
    read_folder,
    rebuild_network,
    register_loader,
    save_folder,
)

__all__ = ["CrowdSegmenter", "SegmentationMethod"]

ProgressHook = Callable[[int, int, dict[str, float]], None]
Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class SegmentationMethod(str, Enum):
    """Training targets (see the module docstring)."""

    SINGLE = "single"
    CONSENSUS = "consensus"
    GAF = "gaf"
    REWEIGHT = "reweight"
    REWEIGHT_GAF = "reweight-gaf"
    CONFUSION_PIXEL = "confusion-pixel"
    CONFUSION_GLOBAL = "confusion-global"


def _vote(masks: np.ndarray, n_classes: int) -> np.ndarray:
    """Pixel-wise majority vote of ``(N, A, *spatial)`` masks (ties: lowest class; none: -1)."""
    from crowdmed.aggregation.segmentation.votes import majority_vote_labels

    out = np.stack([majority_vote_labels(m, n_classes=n_classes, undecided=None) for m in masks])
    # pixels nobody annotated stay -1 (ignored by the loss)
    out[~np.any(masks >= 0, axis=1)] = -1
    return out.astype(np.int64)


def _check_not_0_255(masks: np.ndarray, name: str) -> None:
    """Binary masks saved as 0/255 images would otherwise read as 256 classes."""
    if int(masks.max()) == 255 and np.isin(masks, (-1, 0, 255)).all():
        raise ValueError(
            f"`{name}` hold the values 0 and 255, i.e. 256 classes; binary masks must be 0/1: "
            f"pass `{name} // 255` (it keeps -1 for 'not annotated'), or set n_classes."
        )


def _n_classes(masks: np.ndarray, n_classes: int | None) -> int:
    """``n_classes``, or the classes the masks hold (at least 2); checked against the masks."""
    if n_classes is None:
        _check_not_0_255(masks, "rater_masks")
    k = int(n_classes) if n_classes is not None else max(2, int(masks.max()) + 1)
    if masks.max() >= k:
        raise ValueError(
            f"`rater_masks` hold class {int(masks.max())} but n_classes={k}; raise n_classes."
        )
    return k


def _check_every_image_rated(masks: np.ndarray) -> None:
    """Every image needs at least one rater mask with an annotated pixel."""
    n, a = masks.shape[:2]
    absent = ~np.any((masks >= 0).reshape(n, a, -1), axis=-1)
    no_rater = np.all(absent, axis=1)
    if no_rater.any():
        bad = np.flatnonzero(no_rater)[:5].tolist()
        raise ValueError(f"Images {bad} have no rater mask at all; drop them before fit.")


def _foreground_dice(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> float:
    """Mean over images and foreground classes of the Dice score (pairs both empty skipped)."""
    scores = []
    for c in range(1, n_classes):
        p = pred == c
        t = truth == c
        axes = tuple(range(1, pred.ndim))
        inter = (p & t).sum(axes)
        denom = p.sum(axes) + t.sum(axes)
        ok = denom > 0
        scores.extend((2 * inter[ok] / denom[ok]).tolist())
    return float(np.mean(scores)) if scores else math.nan


class CrowdSegmenter:
    """Train a segmentation network on the masks of several raters.

    The network maps images ``(B, C, *spatial)`` to logits ``(B, K, *spatial)`` of the same
    spatial size. Training runs with Adam, a seeded data order (the global torch RNG is
    forked and restored afterwards), validation Dice each epoch, early stopping, the weights of
    the best epoch kept, and optional checkpoints that let an interrupted fit resume exactly
    where it stopped.

    Args:
        network: Segmentation module, trained in place.
        method: See the module docstring.
        weighting_network: Weighting network for the re-weighting methods (any module mapping
            images to rater logits, wrapped in :class:`~crowdmed.nn.WeightingNetwork`);
            defaults to a small fully convolutional one. Trained jointly with ``network``.
        rater: Rater index for ``method="single"``.
        epochs: Maximum number of epochs.
        batch_size: Mini-batch size.
        lr: Learning rate of Adam (both networks).
        weight_decay: Weight decay of Adam.
        k_every: The schedule step ``k`` of the re-weighting framework (``λ1 = 1 / (1 + tanh
            k)``, ``λ2 = tanh k / (1 + tanh k)``, Xiao et al. 2021, eqs. 7-8) grows by one
            every ``k_every`` of the run: a fraction in ``(0, 1]`` of the planned optimiser
            steps (``epochs`` × steps per epoch), so that it scales with the run (the paper:
            every 1,000 of 10,000 iterations, ``0.1``), or an integer number of steps.
        gamma: Focal-loss focusing parameter (GAF methods).
        focal_alpha: Class-balance factor ``α_t`` of the focal loss (GAF methods; see
            :func:`crowdmed.nn.segmentation.pixel_loss`): ``None`` (``α_t = 1``; the paper
            names ``α_t`` without a value), a number or one weight per class.
        radius: Gaussian radius of the attention heat map.
        sigma: Gaussian standard deviation of the heat map.
        lambda_a: Roughness scale of the heat map (images should be scaled to [0, 1]).
        lambda_b: Constant of the heat map.
        patience: Stop after this many epochs without a better validation score; ``None``
            trains all epochs and keeps the last weights.
        augment: Callable ``(images, masks) -> (images, masks)`` applied to each training batch
            (``masks`` is ``(B, A + 1, *spatial)``: the raters then the consensus); it must move
            masks with the images (flips, 90° rotations). Draw its randomness from torch's
            global RNG, which the fit forks and seeds with ``random_state``.
        device: Torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``; ``None``: CUDA when
            available). Under ``torchrun`` ``"cuda"`` means this process's GPU.
        confusion_network: Confusion head of the confusion methods
            (:class:`~crowdmed.nn.confusion.PixelConfusion` or
            :class:`~crowdmed.nn.confusion.GlobalConfusion`); defaults to the one the method
            names. Trained jointly with ``network``.
        trace_weight: ``λ`` of the confusion methods' trace regulariser. Keep it small: a
            large ``λ`` lets a pixel-wise head explain the masks with a degenerate
            segmentation (nearly all foreground); choose it by the validation Dice.
        random_state: Seed of the data order, the weighting network's initialisation, dropout
            and ``augment``'s draws from the (forked) global torch RNG (build ``network``
            under ``torch.manual_seed`` for a fully seeded run).
        checkpoint_dir: Folder for ``checkpoint.safetensors``, written atomically after every
            epoch (both networks, optimiser, RNG states, history, best weights, schedule step
            and a fingerprint of the settings and data; no pickle). A fit with the same
            folder, settings and data resumes from it exactly, a larger ``epochs`` trains a
            finished run longer, and a run that stopped early stays stopped; other settings
            or data raise :class:`~crowdmed.training.CheckpointMismatchError`.
        resume: ``False`` deletes an existing checkpoint in ``checkpoint_dir`` and starts over.
        progress: ``True`` for a rich progress bar, ``False`` for none, or a callable
            ``progress(epoch, epochs, metrics)`` called after every epoch.
        num_threads: Torch CPU threads during ``fit`` (restored afterwards); ``None`` leaves
            the setting alone.

    The fit runs on :class:`crowdmed.training.engine.Engine`, also under
    ``torchrun --nproc_per_node N``. :meth:`save` writes a model folder that :meth:`load` and
    :func:`crowdmed.training.load_model` read back.

    Attributes:
        history_ (list[dict]): One record per epoch: ``epoch, loss, k, lambda1, seconds`` and
            ``val_dice`` (mean foreground Dice) when validation masks are given.
        best_epoch_ (int): Epoch whose weights were kept.
        stopped_early_ (bool): Whether early stopping ended the fit.
        n_classes_ (int), n_raters_ (int): Sizes seen in ``fit``.
        weighting_network_ (WeightingNetwork or None): The trained weighting network.

    References:
        Xiao et al. (2021). Pathological image segmentation with noisy labels.
        https://doi.org/10.48550/arXiv.2104.02602

        Zhang et al. (2020). Disentangling human error from the ground truth in segmentation
        of medical images. NeurIPS. https://arxiv.org/abs/2007.15963
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        method: str = "reweight-gaf",
        weighting_network: nn.Module | None = None,
        rater: int = 0,
        epochs: int = 30,
        batch_size: int = 8,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        k_every: float = 0.1,
        gamma: float = 2.0,
        focal_alpha: float | Sequence[float] | None = None,
        radius: int = 5,
        sigma: float = 3.0,
        lambda_a: float = 50.0,
        lambda_b: float = 1.0,
        patience: int | None = 10,
        augment: Augment | None = None,
        device: str | torch.device = "cpu",
        random_state: int = 0,
        progress: bool | ProgressHook = False,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        resume: bool = True,
        num_threads: int | None = None,
        confusion_network: nn.Module | None = None,
        trace_weight: float = 0.01,
    ) -> None:
        self.network = network
        self.method = method
        self.weighting_network = weighting_network
        self.rater = rater
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.k_every = k_every
        self.gamma = gamma
        self.focal_alpha = focal_alpha
        self.radius = radius
        self.sigma = sigma
        self.lambda_a = lambda_a
        self.lambda_b = lambda_b
        self.patience = patience
        self.augment = augment
        self.device = device
        self.random_state = random_state
        self.progress = progress
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.num_threads = num_threads
        self.confusion_network = confusion_network
        self.trace_weight = trace_weight

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> SegmentationMethod:
        m = check_option(self.method, SegmentationMethod, "method")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {v!r}.")
        ke = self.k_every
        if isinstance(ke, bool) or not (
            (isinstance(ke, int) and ke >= 1) or (isinstance(ke, float) and 0 < ke <= 1)
        ):
            raise ValueError(
                f"`k_every` must be a fraction of the run in (0, 1] or a positive integer "
                f"number of steps; got {ke!r}."
            )
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"`lr` must be positive; got {self.lr!r}.")
        if self.patience is not None and (
            isinstance(self.patience, bool)
            or not isinstance(self.patience, int)
            or self.patience < 1
        ):
            raise ValueError(
                f"`patience` must be a positive integer or None; got {self.patience!r}."
            )
        if not isinstance(self.resume, bool):
            raise TypeError(f"`resume` must be True or False; got {self.resume!r}.")
        tw = self.trace_weight
        if isinstance(tw, bool) or not isinstance(tw, (int, float)) or not (tw >= 0):
            raise ValueError(f"`trace_weight` must be a number >= 0; got {tw!r}.")
        if not isinstance(self.network, nn.Module):
            raise TypeError(
                f"`network` must be a torch.nn.Module; got {type(self.network).__name__}."
            )
        return m

    @staticmethod
    def _images(x: Any, name: str) -> torch.Tensor:
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        if not t.dtype.is_floating_point:
            raise TypeError(f"`{name}` must be a float array (N, C, *spatial); got {t.dtype}.")
        if t.ndim not in (4, 5):
            raise ValueError(
                f"`{name}` must have shape (N, C, H, W) or (N, C, D, H, W); got {tuple(t.shape)}."
            )
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"`{name}` contain NaN or infinite values; clean or impute them.")
        return t.float()

    @staticmethod
    def _labels(y: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
        arr = np.asarray(y.cpu().numpy() if isinstance(y, torch.Tensor) else y)
        if arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer):
            if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                raise ValueError(f"`{name}` contain NaN or infinite values.")
            raise TypeError(f"`{name}` must be bool masks or integer label maps; got {arr.dtype}.")
        if arr.shape != shape:
            raise ValueError(
                f"`{name}` must have shape {shape} to match the images; got {arr.shape}. "
                "Masks and images must share the number of cases and the spatial size."
            )
        out = arr.astype(np.int64)
        if (out < -1).any():
            raise ValueError(f"`{name}` must hold classes >= 0 or -1 (not annotated).")
        return out

    def _check_output(self, x: torch.Tensor, k: int) -> None:
        net = self.network
        was = net.training
        net.eval()
        try:
            with torch.no_grad():
                out = net(x)
        except Exception as exc:  # a shape mismatch between data and network
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(
                f"The network cannot process images of shape {tuple(x.shape[1:])}: {first}"
            ) from exc
        finally:
            net.train(was)
        want = (x.shape[0], k, *x.shape[2:])
        if tuple(out.shape) != want:
            raise ValueError(
                f"The network must output logits of shape (B, {k}, *spatial) = {want} for {k} "
                f"classes; got {tuple(out.shape)}. Fix its output channels or the image size."
            )

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        images: Any,
        rater_masks: Any,
        *,
        consensus: Any = None,
        X_val: Any = None,
        y_val: Any = None,
        n_classes: int | None = None,
    ) -> CrowdSegmenter:
        """Train the network.

        Args:
            images: Float array or tensor ``(N, C, *spatial)`` (2-D or 3-D), scaled to [0, 1]
                for the default attention scale.
            rater_masks: Bool or integer array ``(N, A, *spatial)``; classes ``0..K-1`` and
                ``-1`` for a pixel or a whole mask a rater did not annotate.
            consensus: Optional integer array ``(N, *spatial)`` used as the vote/consensus
                target (e.g. STAPLE); when omitted, the pixel-wise majority vote of the raters
                who annotated each pixel
                (:func:`crowdmed.aggregation.majority_vote_labels`, ties to the lowest class,
                so with two binary raters a disagreement is background).
            X_val: Validation images ``(M, C, *spatial)``.
            y_val: Reference validation masks ``(M, *spatial)``; drive early stopping by the
                mean foreground Dice.
            n_classes: Number of network outputs ``K``; inferred from the masks when omitted
                (at least 2).

        Returns:
            The fitted estimator.
        """
        method = self._check_params()
        for attr in (
            "history_",
            "best_epoch_",
            "stopped_early_",
            "weighting_network_",
            "confusion_network_",
            "in_channels_",
        ):
            self.__dict__.pop(attr, None)
        x = self._images(images, "images")
        masks = self._rater_masks(rater_masks, x)
        k = _n_classes(masks, n_classes)
        _check_every_image_rated(masks)
        vote = self._vote_target(method, masks, consensus, k)
        xv, yv = self._validation_set(X_val, y_val, k)
        device = resolve_device(self.device)
        self.network.to(device)
        self._check_output(x[:2].to(device), k)

        a = masks.shape[1]
        task = _SegmenterTask(self, method, x, masks, vote, k, a, xv, yv)
        result = self._engine(device).fit(task)
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.stopped_early_ = result.stopped_early
        self.n_classes_ = k
        self.n_raters_ = a
        self.method_ = method
        self.in_channels_ = int(x.shape[1])
        self.weighting_network_ = task.wnet
        self.confusion_network_ = task.cnet
        return self

    def _rater_masks(self, rater_masks: Any, x: torch.Tensor) -> np.ndarray:
        """The rater masks as ``int64`` ``(N, A, *spatial)``, checked against the images."""
        n, spatial = x.shape[0], tuple(x.shape[2:])
        raw = np.asarray(
            rater_masks.cpu().numpy() if isinstance(rater_masks, torch.Tensor) else rater_masks
        )
        if raw.ndim != x.ndim:
            raise ValueError(
                f"`rater_masks` must have shape (N, A, *spatial) = ({n}, A, "
                f"{', '.join(map(str, spatial))}); got {raw.shape}."
            )
        return self._labels(raw, "rater_masks", (n, raw.shape[1], *spatial))

    def _vote_target(
        self, method: SegmentationMethod, masks: np.ndarray, consensus: Any, k: int
    ) -> np.ndarray:
        """The single-mask target: one rater's masks, the given consensus or the vote."""
        n, a, spatial = masks.shape[0], masks.shape[1], masks.shape[2:]
        if method is SegmentationMethod.SINGLE:
            if (
                isinstance(self.rater, bool)
                or not isinstance(self.rater, int)
                or not (0 <= self.rater < a)
            ):
                raise ValueError(f"`rater` must be an index in 0..{a - 1}; got {self.rater!r}.")
            vote = masks[:, self.rater]
            if not (vote >= 0).any():
                raise ValueError(f"Rater {self.rater} annotated no image; pick another rater.")
        elif consensus is not None:
            vote = self._labels(consensus, "consensus", (n, *spatial))
        elif method.value in CONFUSION_METHODS and a == 1:
            vote = masks[:, 0]  # not a training target of these methods; one rater: no vote
        else:
            vote = _vote(masks, k)
        if vote.max() >= k:
            raise ValueError(
                f"`consensus` holds class {int(vote.max())} but n_classes={k}; give classes "
                "0..K-1 or a larger n_classes."
            )
        return vote

    def _validation_set(
        self, X_val: Any, y_val: Any, k: int
    ) -> tuple[torch.Tensor | None, np.ndarray | None]:
        """The validation images and reference masks, or ``(None, None)``."""
        if X_val is None:
            return None, None
        if y_val is None:
            raise ValueError("`y_val` must be given with `X_val` (reference masks).")
        xv = self._images(X_val, "X_val")
        yv = self._labels(y_val, "y_val", (xv.shape[0], *xv.shape[2:]))
        if yv.max() >= k:
            raise ValueError(
                f"`y_val` holds class {int(yv.max())} but the network has {k} classes; "
                "give reference masks with classes 0..K-1 (0/255 masks: use y_val != 0)."
            )
        return xv, yv

    def _engine(self, device: torch.device) -> Engine:
        ckpt = Path(self.checkpoint_dir) / CHECKPOINT_NAME if self.checkpoint_dir else None
        return Engine(
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.random_state,
            patience=self.patience,
            device=device,
            checkpoint=ckpt,
            resume=self.resume,
            mismatch_hint="delete the folder, pass resume=False or use another checkpoint_dir. "
            "Only `epochs` may change on resume.",
            progress=self.progress,
            num_threads=self.num_threads,
            setting_names={"seed": "random_state"},
        )

    def _batch_loss(
        self,
        method: SegmentationMethod,
        crit: LabelReweightingLoss,
        wnet: WeightingNetwork | None,
        xb: torch.Tensor,
        mb: torch.Tensor,
        vb: torch.Tensor,
        k_now: int,
        model: nn.Module | None = None,
        cnet: nn.Module | None = None,
    ) -> torch.Tensor:
        logits = (self.network if model is None else model)(xb)
        if cnet is not None:
            return confusion_batch_loss(logits, cnet, xb, mb, float(self.trace_weight))
        if method in (SegmentationMethod.SINGLE, SegmentationMethod.CONSENSUS):
            loss, valid = pixel_loss(logits, vb, kind="ce")
            return loss.sum() / valid.sum().clamp_min(1)
        if method is SegmentationMethod.GAF:
            loss, valid = pixel_loss(
                logits,
                vb,
                kind="focal",
                gamma=self.gamma,
                alpha=self.focal_alpha,
                weight_map=crit.gaf.heat(xb),
            )
            return loss.sum() / valid.sum().clamp_min(1)
        weights = None
        if k_now > 0 and wnet is not None:
            weights = wnet(xb, size=tuple(logits.shape[2:]), available=mb >= 0)
        return crit(logits, mb, vb, weights, k=k_now, image=xb)

    # ------------------------------------------------------------------ prediction
    def _predict_tensor(self, x: torch.Tensor, device: torch.device) -> np.ndarray:
        net = self.network
        was = net.training
        net.eval()
        out = []
        try:
            with torch.no_grad():
                for s in range(0, len(x), self.batch_size):
                    out.append(torch.softmax(net(x[s : s + self.batch_size].to(device)), 1).cpu())
        finally:
            net.train(was)
        return torch.cat(out).numpy()

    def _check_fitted(self) -> None:
        if not hasattr(self, "history_"):
            from crowdmed.exceptions import NotFittedError

            raise NotFittedError(
                "This CrowdSegmenter instance is not fitted yet. Call 'fit' first."
            )

    def predict_proba(self, images: Any) -> np.ndarray:
        """Class probabilities ``(N, K, *spatial)`` (float32) of the segmentation network."""
        self._check_fitted()
        x = self._images(images, "images")
        return self._predict_tensor(x, resolve_device(self.device))

    def predict(self, images: Any) -> np.ndarray:
        """Most probable class ``(N, *spatial)`` (int64)."""
        return self.predict_proba(images).argmax(1).astype(np.int64)

    def rater_weights(self, images: Any, rater_masks: Any = None) -> np.ndarray:
        """Weight maps ``(N, A, *spatial)`` of the trained weighting network.

        Args:
            images: Float array ``(N, C, *spatial)``.
            rater_masks: Optional masks ``(N, A, *spatial)``; raters marked ``-1`` at a pixel
                get weight 0 there.

        Returns:
            float32 weights summing to 1 over the (available) raters at every pixel.
        """
        self._check_fitted()
        wnet = getattr(self, "weighting_network_", None)
        if wnet is None:
            raise ValueError(
                f"method {self.method_.value!r} has no weighting network; use 'reweight' or "
                "'reweight-gaf'."
            )
        x = self._images(images, "images")
        avail = None
        if rater_masks is not None:
            m = self._labels(rater_masks, "rater_masks", (x.shape[0], self.n_raters_, *x.shape[2:]))
            avail = torch.as_tensor(m >= 0)
        device = resolve_device(self.device)
        out = []
        wnet.eval()
        with torch.no_grad():
            for s in range(0, len(x), self.batch_size):
                xb = x[s : s + self.batch_size].to(device)
                av = None if avail is None else avail[s : s + self.batch_size].to(device)
                out.append(wnet(xb, available=av).cpu())
        return torch.cat(out).numpy()

    def rater_confusion(self, images: Any) -> np.ndarray:
        """Confusion matrices of the raters estimated by a confusion method.

        Args:
            images: Float array ``(N, C, *spatial)``.

        Returns:
            float32 ``(N, A, K, K, *spatial)``: ``[n, a, k, l]`` is P(rater ``a`` marks
            ``l`` | true class ``k``) at each pixel (the same at every pixel for
            ``confusion-global``); rows sum to 1.
        """
        self._check_fitted()
        cnet = getattr(self, "confusion_network_", None)
        if cnet is None:
            raise ValueError(
                f"method {self.method_.value!r} has no confusion network; use "
                "'confusion-pixel' or 'confusion-global'."
            )
        x = self._images(images, "images")
        return predict_confusion(cnet, x, self.batch_size, resolve_device(self.device))

    # ------------------------------------------------------------------ persistence
    _SAVED_PARAMS = (
        "method",
        "rater",
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "k_every",
        "gamma",
        "focal_alpha",
        "radius",
        "sigma",
        "lambda_a",
        "lambda_b",
        "patience",
        "random_state",
        "trace_weight",
    )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted model as a folder: ``config.json`` + ``model.safetensors``.

        The folder holds the segmentation network's weights (and its
        :func:`~crowdmed.nn.network_spec` when it was built by
        :func:`crowdmed.nn.segmentation_network` or :func:`crowdmed.nn.build_network`), the
        weighting network, the settings and the fitted attributes. Under ``torchrun`` only
        rank 0 writes.

        Args:
            path: The model folder (created when missing; other files in it are kept).

        Returns:
            The folder.
        """
        self._check_fitted()
        tensors = {f"network/{k}": v for k, v in self.network.state_dict().items()}
        wnet = self.weighting_network_
        wconfig: dict[str, Any] | None = None
        if wnet is not None:
            tensors.update({f"weighting_network/{k}": v for k, v in wnet.state_dict().items()})
            wconfig = {
                "n_raters": wnet.n_raters,
                "spatial_dims": wnet.spatial_dims,
                "custom": self.weighting_network is not None,
            }
        cnet = getattr(self, "confusion_network_", None)
        cconfig: dict[str, Any] | None = None
        if cnet is not None:
            tensors.update({f"confusion_network/{k}": v for k, v in cnet.state_dict().items()})
            cconfig = confusion_config(cnet, self.confusion_network is not None)
        config = {
            "network": network_spec(self.network),
            "network_class": type(self.network).__qualname__,
            "params": {name: getattr(self, name) for name in self._SAVED_PARAMS},
            "augment": None if self.augment is None else _qualname(self.augment),
            "weighting_network": wconfig,
            "confusion_network": cconfig,
            "fitted": {
                "method": self.method_.value,
                "n_classes": self.n_classes_,
                "n_raters": self.n_raters_,
                "in_channels": self.in_channels_,
                "history": self.history_,
                "best_epoch": self.best_epoch_,
                "stopped_early": self.stopped_early_,
            },
        }
        if not is_main_process():
            return Path(path)
        return save_folder(path, task="segmenter", config=config, tensors=tensors)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        network: nn.Module | None = None,
        weighting_network: nn.Module | None = None,
        device: str | torch.device | None = None,
        confusion_network: nn.Module | None = None,
    ) -> CrowdSegmenter:
        """Read a folder written by :meth:`save`; the model is ready to predict.

        Args:
            path: The model folder.
            network: The segmentation network to fill with the saved weights; needed only
                when the saved network has no spec (not built by
                :func:`crowdmed.nn.segmentation_network` or :func:`crowdmed.nn.build_network`).
            weighting_network: The weighting network (or its backbone) the model was trained
                with; needed only when a custom one was passed to the constructor.
            device: Torch device of the model; CUDA when available if ``None``.
            confusion_network: The confusion head the model was trained with; needed only
                when a custom one (not a ``PixelConfusion``/``GlobalConfusion``) was used.

        Returns:
            The fitted segmenter (``augment`` is not saved: it is ``None``).

        Raises:
            ValueError: The folder is missing, corrupt, of another task, or its weights do not
                fit the networks (one line naming the file).
        """
        config, tensors = read_folder(path, task="segmenter")
        folder = Path(path)
        net = rebuild_network(config, network, folder)
        load_state(net, tensors, "network/", folder)
        fitted = config["fitted"]
        wconfig = config.get("weighting_network")
        wnet: WeightingNetwork | None = None
        if wconfig is not None:
            if wconfig.get("custom") and weighting_network is None:
                raise ValueError(
                    f"'{folder / CONFIG_NAME}' was trained with a custom weighting network; "
                    "pass load(path, weighting_network=...) with the same architecture."
                )
            if isinstance(weighting_network, WeightingNetwork):
                wnet = weighting_network
            else:
                wnet = WeightingNetwork(
                    int(fitted["in_channels"]),
                    int(wconfig["n_raters"]),
                    spatial_dims=int(wconfig["spatial_dims"]),
                    backbone=weighting_network,
                )
            load_state(wnet, tensors, "weighting_network/", folder)
        cconfig = config.get("confusion_network")
        cnet: nn.Module | None = None
        if cconfig is not None:
            cnet = rebuild_confusion_network(cconfig, confusion_network)
            load_state(cnet, tensors, "confusion_network/", folder)
        dev = resolve_device(device)
        seg = cls(
            net,
            **config["params"],
            weighting_network=weighting_network,
            device=str(dev),
            progress=False,
        )
        net.to(dev)
        if wnet is not None:
            wnet.to(dev)
        if cnet is not None:
            cnet.to(dev)
        seg.history_ = list(fitted["history"])
        seg.best_epoch_ = int(fitted["best_epoch"])
        seg.stopped_early_ = bool(fitted["stopped_early"])
        seg.n_classes_ = int(fitted["n_classes"])
        seg.n_raters_ = int(fitted["n_raters"])
        seg.in_channels_ = int(fitted["in_channels"])
        seg.method_ = SegmentationMethod(fitted["method"])
        seg.weighting_network_ = wnet
        seg.confusion_network_ = cnet
        return seg


class _SegmenterTask(TrainTask):
    """One :class:`CrowdSegmenter` fit as an engine task."""

    def __init__(
        self,
        seg: CrowdSegmenter,
        method: SegmentationMethod,
        x: torch.Tensor,
        masks: np.ndarray,
        vote: np.ndarray,
        k: int,
        a: int,
        xv: torch.Tensor | None,
        yv: np.ndarray | None,
    ) -> None:
        self.seg, self.method, self.x, self.k, self.a = seg, method, x, k, a
        self.masks, self.vote = torch.as_tensor(masks), torch.as_tensor(vote)
        self.xv, self.yv = xv, yv
        self.name = str(seg.method)
        self.wnet: WeightingNetwork | None = None
        self.cnet: nn.Module | None = None

    def setup(self, engine: Engine) -> None:
        seg, device = self.seg, engine.device
        spatial = tuple(self.x.shape[2:])
        # built with the seeded global RNG, before the data order is drawn
        if self.method in (SegmentationMethod.REWEIGHT, SegmentationMethod.REWEIGHT_GAF):
            given = seg.weighting_network
            if isinstance(given, WeightingNetwork):
                self.wnet = given
            else:
                self.wnet = WeightingNetwork(
                    self.x.shape[1], self.a, spatial_dims=len(spatial), backbone=given
                )
            self.wnet.to(device)
        if self.method.value in CONFUSION_METHODS:
            self.cnet = build_confusion_network(
                self.method.value,
                seg.confusion_network,
                in_channels=self.x.shape[1],
                n_raters=self.a,
                n_classes=self.k,
                spatial_dims=len(spatial),
            ).to(device)
        self.net = seg.network.to(device)
        params = list(self.net.parameters())
        if self.wnet is not None:
            params += list(self.wnet.parameters())
        if self.cnet is not None:
            params += list(self.cnet.parameters())
        self.opt = torch.optim.Adam(params, lr=seg.lr, weight_decay=seg.weight_decay)
        self.crit = LabelReweightingLoss(
            kind="focal" if self.method is SegmentationMethod.REWEIGHT_GAF else "ce",
            attention=self.method is SegmentationMethod.REWEIGHT_GAF,
            gamma=seg.gamma,
            alpha=seg.focal_alpha,
            radius=seg.radius,
            sigma=seg.sigma,
            lambda_a=seg.lambda_a,
            lambda_b=seg.lambda_b,
        )
        self.model = engine.wrap(self.net)

    def modules(self) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = {"network": self.net}
        if self.wnet is not None:
            out["weighting_network"] = self.wnet
        if self.cnet is not None:
            out["confusion_network"] = self.cnet
        return out

    def optimizer(self) -> torch.optim.Optimizer:
        return self.opt

    def config(self) -> dict[str, Any]:
        seg = self.seg

        def shapes(module: nn.Module | None) -> str | None:
            if module is None:
                return None
            sizes = [f"{name}:{tuple(t.shape)}" for name, t in module.state_dict().items()]
            return data_digest(np.frombuffer(";".join(sizes).encode(), dtype=np.uint8))

        return {
            "method": self.method.value,
            "n": len(self.x),
            "input_shape": list(self.x.shape[1:]),
            "n_raters": self.a,
            "n_classes": self.k,
            "data_sha256": data_digest(self.x, self.masks, self.vote),
            "val_sha256": data_digest(self.xv, self.yv),
            "network": f"{type(self.net).__name__}/{shapes(self.net)}",
            "weighting_network": shapes(self.wnet),
            "rater": seg.rater if self.method is SegmentationMethod.SINGLE else None,
            "lr": seg.lr,
            "weight_decay": seg.weight_decay,
            "k_every": seg.k_every,
            "gamma": seg.gamma,
            **({} if seg.focal_alpha is None else {"focal_alpha": seg.focal_alpha}),
            "radius": seg.radius,
            "sigma": seg.sigma,
            "lambda_a": seg.lambda_a,
            "lambda_b": seg.lambda_b,
            "augment": None if seg.augment is None else _qualname(seg.augment),
        } | (
            {}
            if self.cnet is None
            else {"confusion_network": shapes(self.cnet), "trace_weight": seg.trace_weight}
        )

    def epoch_items(self, epoch: int, engine: Engine) -> int:
        return len(self.x)

    def train_batch(self, idx: torch.Tensor, engine: Engine) -> torch.Tensor:
        seg, device = self.seg, engine.device
        xb = self.x[idx].to(device)
        mb = self.masks[idx].to(device)
        vb = self.vote[idx].to(device)
        if seg.augment is not None:
            xb, both = seg.augment(xb, torch.cat([mb, vb.unsqueeze(1)], 1))
            mb, vb = both[:, :-1], both[:, -1]
        k_now = engine.step // self._k_steps(engine)
        return seg._batch_loss(
            self.method, self.crit, self.wnet, xb, mb, vb, k_now, self.model, self.cnet
        )

    def _k_steps(self, engine: Engine) -> int:
        """Optimiser steps per schedule step ``k``: ``k_every``, or that share of the run."""
        ke = self.seg.k_every
        if isinstance(ke, int):
            return ke
        return k_every_steps(ke, self.seg.epochs, len(self.x), self.seg.batch_size, engine)

    def end_epoch(self, epoch: int, engine: Engine) -> dict[str, float]:
        k_now = engine.step // self._k_steps(engine)
        return {"k": float(k_now), "lambda1": reweight_lambdas(k_now)[0]}

    def validate(self, engine: Engine) -> dict[str, float]:
        if self.xv is None or self.yv is None:
            return {}
        pred = self.seg._predict_tensor(self.xv, engine.device).argmax(1)
        return {"val_dice": _foreground_dice(pred, self.yv, self.k)}

    def score(self, record: dict[str, float]) -> float:
        dice = record.get("val_dice", math.nan)
        return -record["loss"] if math.isnan(dice) else dice


def k_every_steps(fraction: float, epochs: int, n: int, batch_size: int, engine: Any) -> int:
    """Optimiser steps in the share ``fraction`` of a run of ``epochs`` epochs over ``n`` items.

    Counts this process's batches per epoch as the engine forms them (its share of the items
    under ``torchrun``, a last batch of one joining the previous one); at least 1.

    Examples:
        >>> from types import SimpleNamespace
        >>> k_every_steps(0.1, 10, 1000, 1, SimpleNamespace(world_size=1, join_single=True))
        1000
    """
    n_local = math.ceil(n / max(int(getattr(engine, "world_size", 1)), 1))
    per_epoch = math.ceil(n_local / batch_size)
    if getattr(engine, "join_single", True) and per_epoch > 1 and n_local % batch_size == 1:
        per_epoch -= 1
    return max(1, round(fraction * epochs * per_epoch))


def _qualname(obj: Any) -> str:
    return str(getattr(obj, "__qualname__", type(obj).__qualname__))


register_loader("segmenter", CrowdSegmenter.load)
