"""Fit loop for segmentation networks trained on the masks of several raters.

:class:`CrowdSegmenter` trains any segmentation network (e.g. MONAI ``UNet`` or
``BasicUNet``; MONAI has no HRNet, the backbone of the paper) with one of these targets:

=================  ========================================================================
``method``         what the network is trained on
=================  ========================================================================
``single``         the masks of one rater (``rater``), cross-entropy
``consensus``      the consensus mask (majority vote, or any mask given as ``consensus``,
                   e.g. STAPLE), cross-entropy
``gaf``            the consensus mask with the Gaussian attention focal loss
``reweight``       all raters through the label re-weighting framework, cross-entropy
``reweight-gaf``   the framework with the Gaussian attention focal loss in both terms
=================  ========================================================================

The last three follow Xiao et al. (2021), see :mod:`crowdmed.nn.segmentation`.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crowdmed._validation import check_option
from crowdmed.nn.segmentation import (
    LabelReweightingLoss,
    WeightingNetwork,
    pixel_loss,
    reweight_lambdas,
)
from crowdmed.training._checkpoint import data_digest, load_checkpoint, save_checkpoint

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
    spatial size. Training runs with Adam, a seeded data order (the global torch and NumPy
    RNGs are restored afterwards), validation Dice each epoch, early stopping, the weights of
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
        k_every: The schedule step ``k`` of the re-weighting framework grows by one every
            ``k_every`` optimiser steps (``k = step // k_every``).
        gamma: Focal-loss focusing parameter (GAF methods).
        radius: Gaussian radius of the attention heat map.
        sigma: Gaussian standard deviation of the heat map.
        lambda_a: Roughness scale of the heat map (images should be scaled to [0, 1]).
        lambda_b: Constant of the heat map.
        patience: Stop after this many epochs without a better validation score; ``None``
            trains all epochs and keeps the last weights.
        augment: Callable ``(images, masks) -> (images, masks)`` applied to each training batch
            (``masks`` is ``(B, A + 1, *spatial)``: the raters then the consensus); it must move
            masks with the images (flips, 90° rotations).
        device: Torch device.
        random_state: Seed of the data order, the weighting network's initialisation and any
            randomness in ``augment`` from the global torch or NumPy RNG (build ``network``
            under ``torch.manual_seed`` for a fully seeded run).
        checkpoint_dir: Folder for ``checkpoint.pt``, written atomically after every epoch
            (both networks, optimiser, RNG states, history, best weights, schedule step and a
            fingerprint of the settings and data). A fit with the same folder, settings and
            data resumes from it, a larger ``epochs`` trains a finished run longer, and a run
            that stopped early stays stopped; other settings or data raise ``ValueError``.
        resume: ``False`` deletes an existing checkpoint in ``checkpoint_dir`` and starts over.
        progress: ``True`` for a rich progress bar, ``False`` for none, or a callable
            ``progress(epoch, epochs, metrics)`` called after every epoch.

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
        k_every: int = 100,
        gamma: float = 2.0,
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

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> SegmentationMethod:
        m = check_option(self.method, SegmentationMethod, "method")
        for name in ("epochs", "batch_size", "k_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {v!r}.")
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
        for attr in ("history_", "best_epoch_", "stopped_early_", "weighting_network_"):
            self.__dict__.pop(attr, None)
        x = self._images(images, "images")
        n, spatial = x.shape[0], tuple(x.shape[2:])
        raw = np.asarray(
            rater_masks.cpu().numpy() if isinstance(rater_masks, torch.Tensor) else rater_masks
        )
        if raw.ndim != x.ndim:
            raise ValueError(
                f"`rater_masks` must have shape (N, A, *spatial) = ({n}, A, "
                f"{', '.join(map(str, spatial))}); got {raw.shape}."
            )
        a = raw.shape[1]
        masks = self._labels(raw, "rater_masks", (n, a, *spatial))
        if n_classes is None:
            _check_not_0_255(masks, "rater_masks")
        k = int(n_classes) if n_classes is not None else max(2, int(masks.max()) + 1)
        if masks.max() >= k:
            raise ValueError(
                f"`rater_masks` hold class {int(masks.max())} but n_classes={k}; raise n_classes."
            )
        absent = ~np.any((masks >= 0).reshape(n, a, -1), axis=-1)
        no_rater = np.all(absent, axis=1)
        if no_rater.any():
            bad = np.flatnonzero(no_rater)[:5].tolist()
            raise ValueError(f"Images {bad} have no rater mask at all; drop them before fit.")
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
        else:
            vote = _vote(masks, k)
        if vote.max() >= k:
            raise ValueError(
                f"`consensus` holds class {int(vote.max())} but n_classes={k}; give classes "
                "0..K-1 or a larger n_classes."
            )
        xv = yv = None
        if X_val is not None:
            if y_val is None:
                raise ValueError("`y_val` must be given with `X_val` (reference masks).")
            xv = self._images(X_val, "X_val")
            yv = self._labels(y_val, "y_val", (xv.shape[0], *xv.shape[2:]))
            if yv.max() >= k:
                raise ValueError(
                    f"`y_val` holds class {int(yv.max())} but the network has {k} classes; "
                    "give reference masks with classes 0..K-1 (0/255 masks: use y_val != 0)."
                )
        device = torch.device(self.device)
        self.network.to(device)
        self._check_output(x[:2].to(device), k)

        # the legacy global NumPy RNG is what an `augment` callable draws from: seed it too
        np_state = np.random.get_state()  # noqa: NPY002
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.random_state)
                np.random.seed(self.random_state)  # noqa: NPY002
                wnet = self._fit_seeded(method, x, masks, vote, k, a, xv, yv, device)
        finally:
            np.random.set_state(np_state)  # noqa: NPY002
        self.n_classes_ = k
        self.n_raters_ = a
        self.method_ = method
        self.weighting_network_ = wnet
        return self

    def _fit_seeded(
        self,
        method: SegmentationMethod,
        x: torch.Tensor,
        masks: np.ndarray,
        vote: np.ndarray,
        k: int,
        a: int,
        xv: torch.Tensor | None,
        yv: np.ndarray | None,
        device: torch.device,
    ) -> WeightingNetwork | None:
        """Build the weighting network and train; the caller seeds and restores the RNGs."""
        spatial = tuple(x.shape[2:])
        wnet: WeightingNetwork | None = None
        if method in (SegmentationMethod.REWEIGHT, SegmentationMethod.REWEIGHT_GAF):
            given = self.weighting_network
            if isinstance(given, WeightingNetwork):
                wnet = given
            else:
                wnet = WeightingNetwork(x.shape[1], a, spatial_dims=len(spatial), backbone=given)
            wnet.to(device)
        self._fit_loop(
            method, x, torch.as_tensor(masks), torch.as_tensor(vote), k, wnet, xv, yv, device
        )
        return wnet

    def _batch_loss(
        self,
        method: SegmentationMethod,
        crit: LabelReweightingLoss,
        wnet: WeightingNetwork | None,
        xb: torch.Tensor,
        mb: torch.Tensor,
        vb: torch.Tensor,
        step: int,
    ) -> torch.Tensor:
        logits = self.network(xb)
        if method in (SegmentationMethod.SINGLE, SegmentationMethod.CONSENSUS):
            loss, valid = pixel_loss(logits, vb, kind="ce")
            return loss.sum() / valid.sum().clamp_min(1)
        if method is SegmentationMethod.GAF:
            loss, valid = pixel_loss(
                logits, vb, kind="focal", gamma=self.gamma, weight_map=crit.gaf.heat(xb)
            )
            return loss.sum() / valid.sum().clamp_min(1)
        k_now = step // self.k_every
        weights = None
        if k_now > 0 and wnet is not None:
            weights = wnet(xb, size=tuple(logits.shape[2:]), available=mb >= 0)
        return crit(logits, mb, vb, weights, k=k_now, image=xb)

    def _fit_loop(
        self,
        method: SegmentationMethod,
        x: torch.Tensor,
        masks: torch.Tensor,
        vote: torch.Tensor,
        k: int,
        wnet: WeightingNetwork | None,
        xv: torch.Tensor | None,
        yv: np.ndarray | None,
        device: torch.device,
    ) -> None:
        net = self.network
        params = list(net.parameters()) + ([] if wnet is None else list(wnet.parameters()))
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        crit = LabelReweightingLoss(
            kind="focal" if method is SegmentationMethod.REWEIGHT_GAF else "ce",
            attention=method is SegmentationMethod.REWEIGHT_GAF,
            gamma=self.gamma,
            radius=self.radius,
            sigma=self.sigma,
            lambda_a=self.lambda_a,
            lambda_b=self.lambda_b,
        )
        gen = torch.Generator().manual_seed(self.random_state)
        n = len(x)
        history: list[dict[str, float]] = []
        best: dict[str, Any] = {"score": -math.inf, "epoch": 0, "state": None}
        stopped = False
        step = start_epoch = 0
        ckpt = Path(self.checkpoint_dir) / "checkpoint.pt" if self.checkpoint_dir else None
        config = self._run_config(method, x, masks, vote, k, wnet, xv, yv)
        if ckpt is not None and not self.resume:
            ckpt.unlink(missing_ok=True)
        state = load_checkpoint(
            ckpt,
            config,
            device,
            fix="delete the folder, pass resume=False or use another checkpoint_dir. Only "
            "`epochs` may change on resume.",
        )
        if state is not None:
            net.load_state_dict(state["network"])
            if wnet is not None and state.get("weighting_network") is not None:
                wnet.load_state_dict(state["weighting_network"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            np.random.set_state(state["numpy_rng"])  # noqa: NPY002
            start_epoch, step = int(state["epoch"]), int(state["step"])
            history, best = state["history"], state["best"]
            stopped = bool(state["stopped"])
        bar = self._progress_bar()
        try:
            for epoch in range(start_epoch, start_epoch if stopped else self.epochs):
                t0 = time.perf_counter()
                net.train()
                if wnet is not None:
                    wnet.train()
                perm = torch.randperm(n, generator=gen)
                total, seen = 0.0, 0
                for idx in self._batches(perm):
                    xb = x[idx].to(device)
                    mb = masks[idx].to(device)
                    vb = vote[idx].to(device)
                    if self.augment is not None:
                        xb, both = self.augment(xb, torch.cat([mb, vb.unsqueeze(1)], 1))
                        mb, vb = both[:, :-1], both[:, -1]
                    loss = self._batch_loss(method, crit, wnet, xb, mb, vb, step)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    step += 1
                    total += float(loss.detach()) * len(idx)
                    seen += len(idx)
                k_now = step // self.k_every
                record: dict[str, float] = {
                    "epoch": epoch + 1,
                    "loss": total / max(seen, 1),
                    "k": float(k_now),
                    "lambda1": reweight_lambdas(k_now)[0],
                }
                score = -record["loss"]
                if xv is not None and yv is not None:
                    pred = self._predict_tensor(xv, device).argmax(1)
                    record["val_dice"] = _foreground_dice(pred, yv, k)
                    if not math.isnan(record["val_dice"]):
                        score = record["val_dice"]
                record["seconds"] = time.perf_counter() - t0
                history.append(record)
                if score > best["score"] or self.patience is None:
                    best = {
                        "score": score,
                        "epoch": epoch + 1,
                        "state": (
                            copy.deepcopy(net.state_dict()),
                            None if wnet is None else copy.deepcopy(wnet.state_dict()),
                        ),
                    }
                stopped = self.patience is not None and epoch + 1 - best["epoch"] >= self.patience
                if ckpt is not None:
                    save_checkpoint(
                        ckpt,
                        {
                            "config": config,
                            "epoch": epoch + 1,
                            "step": step,
                            "stopped": stopped,
                            "network": net.state_dict(),
                            "weighting_network": None if wnet is None else wnet.state_dict(),
                            "optimizer": opt.state_dict(),
                            "generator": gen.get_state(),
                            "torch_rng": torch.get_rng_state(),
                            "numpy_rng": np.random.get_state(),  # noqa: NPY002
                            "history": history,
                            "best": best,
                        },
                    )
                self._report(bar, epoch + 1, record)
                if stopped:
                    break
        finally:
            if bar is not None:
                bar.stop()
        if best["state"] is not None:
            net.load_state_dict(best["state"][0])
            if wnet is not None and best["state"][1] is not None:
                wnet.load_state_dict(best["state"][1])
        self.history_ = history
        self.best_epoch_ = int(best["epoch"])
        self.stopped_early_ = stopped

    def _run_config(
        self,
        method: SegmentationMethod,
        x: torch.Tensor,
        masks: torch.Tensor,
        vote: torch.Tensor,
        k: int,
        wnet: WeightingNetwork | None,
        xv: torch.Tensor | None,
        yv: np.ndarray | None,
    ) -> dict[str, Any]:
        """Everything but ``epochs`` that must match for a checkpoint to be resumed."""

        def shapes(module: nn.Module | None) -> str | None:
            if module is None:
                return None
            sizes = [f"{name}:{tuple(t.shape)}" for name, t in module.state_dict().items()]
            return data_digest(np.frombuffer(";".join(sizes).encode(), dtype=np.uint8))

        return {
            "method": method.value,
            "n": len(x),
            "input_shape": list(x.shape[1:]),
            "n_raters": int(masks.shape[1]),
            "n_classes": k,
            "data_sha256": data_digest(x, masks, vote),
            "val_sha256": data_digest(xv, yv),
            "network": f"{type(self.network).__name__}/{shapes(self.network)}",
            "weighting_network": None if wnet is None else shapes(wnet),
            "rater": self.rater if method is SegmentationMethod.SINGLE else None,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "k_every": self.k_every,
            "gamma": self.gamma,
            "radius": self.radius,
            "sigma": self.sigma,
            "lambda_a": self.lambda_a,
            "lambda_b": self.lambda_b,
            "patience": self.patience,
            "augment": None
            if self.augment is None
            else getattr(self.augment, "__qualname__", type(self.augment).__qualname__),
            "random_state": self.random_state,
        }

    def _batches(self, perm: torch.Tensor) -> Iterator[torch.Tensor]:
        """Mini-batches; a last batch of one item joins the previous one (batch norm)."""
        n, b = len(perm), self.batch_size
        starts = list(range(0, n, b))
        if len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()
        for i, s in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else n
            yield perm[s:end]

    # ------------------------------------------------------------------ progress
    def _progress_bar(self) -> Any:
        if self.progress is not True:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} epochs"),
            TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        bar.start()
        self._task = bar.add_task(str(self.method), total=self.epochs, metrics="")
        return bar

    def _report(self, bar: Any, epoch: int, record: dict[str, float]) -> None:
        if callable(self.progress) and self.progress is not True:
            self.progress(epoch, self.epochs, record)
        elif bar is not None:
            shown = " ".join(
                f"{k}={v:.3f}" for k, v in record.items() if k not in ("epoch", "seconds")
            )
            bar.update(self._task, completed=epoch, metrics=shown)

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
        return self._predict_tensor(x, torch.device(self.device))

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
        device = torch.device(self.device)
        out = []
        wnet.eval()
        with torch.no_grad():
            for s in range(0, len(x), self.batch_size):
                xb = x[s : s + self.batch_size].to(device)
                av = None if avail is None else avail[s : s + self.batch_size].to(device)
                out.append(wnet(xb, available=av).cpu())
        return torch.cat(out).numpy()
