"""Training the multi-scale AggNet mitosis detector on point annotations.

One :class:`~crowdmed.nn.aggnet.AggNetCNN` is trained per image scale (0.33, 0.66 and 1.0
in the paper) on 33 × 33 patches of the rescaled fields: positives at the annotated mitoses
(plus the pixels within ``jitter`` of them), each in all eight rotations/mirrors, and negatives
drawn away from mitoses — half uniformly, half among the darkest pixels (nuclei, the hard
negatives) — so that an epoch holds about 3 positives to 7 negatives.

The trained networks form a :class:`~crowdmed.pathology.detector.MultiScaleDetector`, which
runs the dense detection (see :mod:`crowdmed.pathology.detector`).

The optimiser settings come from a preset (:data:`DETECTOR_PRESETS`). ``"paper"``, the
default, is the paper's (section III-2): SGD with learning rate 1e-3, momentum 0.9, weight
decay 5e-4 and batches of 200 patches; the paper gives no number of epochs (``epochs`` is
ours). ``"fast"`` (Adam at 1e-3, batches of 64) reaches a usable detector in a few CPU
epochs on small synthetic sets, where the paper's SGD needs many more steps.

References:
    Albarqouni et al. (2016). AggNet: Deep learning from crowds for mitosis detection in
    breast cancer histology images. IEEE TMI 35(5). https://doi.org/10.1109/TMI.2016.2528120
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view
from scipy.spatial import cKDTree
from torch import nn

from crowdmed._validation import check_random_state
from crowdmed.data.points import check_points
from crowdmed.nn.aggnet import PATCH_SIZE, AggNetCNN
from crowdmed.pathology.detector import MultiScaleDetector
from crowdmed.pathology.patches import DIHEDRAL, rescale_image, scale_points, to_float
from crowdmed.pathology.stain import StainNormalizer
from crowdmed.training.engine import Engine, TrainTask, data_digest

__all__ = ["DETECTOR_PRESETS", "train_detector"]

#: Optimiser settings of the patch networks (see the module documentation).
DETECTOR_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "optimizer": "sgd",
        "lr": 1e-3,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 200,
    },
    "fast": {
        "optimizer": "adam",
        "lr": 1e-3,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "batch_size": 64,
    },
}

_HALF = PATCH_SIZE // 2

Images = Mapping[Any, np.ndarray] | Sequence[np.ndarray]


def _as_dict(images: Images) -> dict[Any, np.ndarray]:
    if isinstance(images, Mapping):
        return dict(images)
    if isinstance(images, (list, tuple)):
        return dict(enumerate(images))
    raise TypeError(
        "`images` must be a dict name -> (H, W, 3) array or a list of them; got "
        f"{type(images).__name__}."
    )


def _lookup_points(points: pd.DataFrame, images: dict[Any, np.ndarray]) -> pd.DataFrame:
    pts = check_points(points)
    keys = {str(k): k for k in images}
    unknown = sorted({str(v) for v in pts["image"]} - set(keys))
    if unknown:
        raise ValueError(
            f"`points` name {len(unknown)} images that are not in `images`: {unknown[:5]}."
        )
    pts["image"] = [keys[str(v)] for v in pts["image"]]
    return pts


def _to_tensor_view(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    out = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if flip else out


def _jitter_offsets(jitter: float, scale: float) -> list[tuple[int, int]]:
    """Integer offsets within ``max(jitter · scale, 1)`` pixels (the positive sites of a point)."""
    r_jit = max(jitter * scale, 1.0)
    n = math.floor(r_jit)
    return [
        (dy, dx)
        for dy in range(-n, n + 1)
        for dx in range(-n, n + 1)
        if dy * dy + dx * dx <= r_jit * r_jit
    ]


def _sample_sites(
    x: np.ndarray,
    pts_xy: np.ndarray,
    scale: float,
    *,
    jitter: float,
    negative_distance: float,
    n_negatives: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative ``(row, col)`` sites on the rescaled field."""
    scaled = rescale_image(x, scale)
    sh, sw = scaled.shape[:2]
    xy = scale_points(pts_xy, x.shape, (sh, sw)) if len(pts_xy) else np.zeros((0, 2))
    offs = _jitter_offsets(jitter, scale)
    pos = []
    for px, py in xy:
        r, c = round(py), round(px)
        for dy, dx in offs:
            if 0 <= r + dy < sh and 0 <= c + dx < sw:
                pos.append((r + dy, c + dx))
    pos_arr = np.asarray(pos, dtype=np.int64).reshape(-1, 2)
    # negatives: half uniform, half among the darkest pixels (nuclei), away from mitoses
    darkness = -scaled.mean(axis=2)
    dark_cut = np.quantile(darkness, 0.85)
    dark = np.argwhere(darkness >= dark_cut)
    n_uniform = n_negatives - n_negatives // 2
    uni = np.column_stack([rng.integers(0, sh, 4 * n_uniform), rng.integers(0, sw, 4 * n_uniform)])
    hard = dark[rng.integers(0, len(dark), 4 * (n_negatives // 2))] if len(dark) else uni[:0]
    cand = [uni, hard]
    keep_n = [n_uniform, n_negatives // 2]
    neg = []
    tree = cKDTree(xy[:, ::-1]) if len(xy) else None
    for c_arr, n in zip(cand, keep_n, strict=True):
        if tree is not None and len(c_arr):
            d, _ = tree.query(c_arr.astype(np.float64))
            c_arr = c_arr[d > negative_distance * scale]
        neg.append(c_arr[:n])
    return pos_arr, np.concatenate(neg).astype(np.int64).reshape(-1, 2)


def train_detector(
    images: Images,
    points: pd.DataFrame,
    *,
    scales: Sequence[float] = (0.33, 0.66, 1.0),
    epochs: int = 10,
    preset: str = "paper",
    batch_size: int | None = None,
    lr: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    jitter: float = 2.0,
    negative_distance: float = 10.0,
    negatives_per_image: int | None = None,
    positive_fraction: float = 0.3,
    radius: float = 30.0,
    stain_reference: np.ndarray | None = None,
    channels: tuple[int, int, int] = (16, 32, 32),
    hidden: int = 64,
    random_state: int | None = None,
    callback: Callable[[float, int, int, dict[str, float]], None] | None = None,
    device: str | torch.device | None = "cpu",
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
) -> MultiScaleDetector:
    """Train one AggNet network per image scale on point annotations of mitoses.

    Args:
        images: RGB fields ``(H, W, 3)`` (``uint8`` or float in [0, 1]) keyed by name, or a
            list indexed by the integer ``points.image``.
        points: ``DataFrame`` ``image, x, y`` with one row per mitosis (full-scale pixels).
        scales: Image scales, one network each.
        epochs: Epochs per scale (the paper does not state it).
        preset: ``"paper"`` (SGD, learning rate 1e-3, momentum 0.9, weight decay 5e-4,
            batches of 200: Albarqouni et al. 2016, III-2) or ``"fast"`` (Adam at 1e-3,
            batches of 64); :data:`DETECTOR_PRESETS`. The four arguments below override it.
        batch_size: Mini-batch size.
        lr: Learning rate.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: Weight decay.
        jitter: Pixels (full scale) around each point that are also positives; at least the
            4-neighbourhood at every scale.
        negative_distance: Negatives lie farther than this (full-scale pixels) from any point.
        negatives_per_image: Size of the negative pool drawn per field and scale; by default
            twice what an epoch needs, spread over the fields. A smaller pool caps the
            negatives (and raises the share of positives).
        positive_fraction: Share of positives per epoch (0.3: the paper's 3:7). Every
            positive appears in all eight rotations/mirrors; negatives are drawn from the pool
            to match this share, each in a random rotation/mirror.
        radius: Matching radius in full-scale pixels, stored for
            :meth:`~MultiScaleDetector.calibrate` and :func:`detect`.
        stain_reference: A ``uint8`` RGB field: when given, every field is Macenko-normalised
            to its staining (training and detection).
        channels: Filters of the three convolution blocks.
        hidden: Units of the first fully connected layer.
        random_state: Seed of weight initialisation, sampling and batch order.
        callback: Called as ``callback(scale, epoch, epochs, record)`` after every epoch, with
            ``record`` the epoch's entry of :attr:`MultiScaleDetector.history`.
        device: Torch device of the fit; the networks are returned on the CPU.
        checkpoint_dir: Folder for one checkpoint per scale (``checkpoint_scale{i}.safetensors``),
            written atomically after every epoch; a call with the same folder, data, settings
            and integer ``random_state`` resumes where the interrupted one stopped and
            returns the same detector (only ``epochs`` may change).
        resume: ``False`` deletes existing checkpoints and starts over.

    Returns:
        The trained :class:`MultiScaleDetector` (threshold 0.5 until calibrated). Its
        ``history`` holds, per scale and epoch: ``epoch``, ``loss``, ``accuracy`` (of the
        epoch's training patches), ``n_positive``, ``n_negative`` and ``seconds``.

    Raises:
        ValueError: Bad hyperparameters, no points, points naming unknown images, or a
            checkpoint of another run.
    """
    imgs = _as_dict(images)
    pts = _check_points(imgs, points)
    if preset not in DETECTOR_PRESETS:
        raise ValueError(f"`preset` must be one of {list(DETECTOR_PRESETS)}; got {preset!r}.")
    given = {"batch_size": batch_size, "lr": lr, "momentum": momentum, "weight_decay": weight_decay}
    opt = {**DETECTOR_PRESETS[preset], **{k: v for k, v in given.items() if v is not None}}
    batch_size, lr = opt["batch_size"], opt["lr"]
    _check_counts(scales, epochs, batch_size, negatives_per_image)
    _check_rates(positive_fraction, lr, radius, jitter, negative_distance)
    if not (opt["momentum"] >= 0 and opt["weight_decay"] >= 0):
        raise ValueError(
            f"`momentum` and `weight_decay` must be >= 0; got {opt['momentum']!r}, "
            f"{opt['weight_decay']!r}."
        )
    rng = check_random_state(random_state)
    seed = int(rng.integers(2**31))
    stain = None if stain_reference is None else StainNormalizer().fit(np.asarray(stain_reference))
    fields = _prepare_fields(imgs, pts, stain)
    sampling = _Sampling(jitter, negative_distance, negatives_per_image, positive_fraction)
    fit = _ScaleFit(
        epochs=int(epochs),
        batch_size=int(batch_size),
        lr=lr,
        optimizer=opt["optimizer"],
        momentum=float(opt["momentum"]),
        weight_decay=float(opt["weight_decay"]),
        channels=channels,
        hidden=hidden,
        device=device,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        callback=callback,
    )
    models: list[AggNetCNN] = []
    history: dict[float, list[dict[str, float]]] = {}
    for si, scale in enumerate(scales):
        scale = float(scale)
        sites = _scale_sites(fields, scale, sampling, rng)
        model, history[scale] = fit.run(si, scale, sites, seed=seed + si, rng=rng)
        models.append(model)
    settings = _settings_record(scales, epochs, batch_size, sampling, fit, stain, random_state)
    settings.update(preset=preset)
    settings.update(n_images=len(imgs), n_points=len(pts))
    return MultiScaleDetector(
        scales, models, radius=radius, stain=stain, history=history, settings=settings
    )


def _check_points(imgs: dict[Any, np.ndarray], points: pd.DataFrame) -> pd.DataFrame:
    """The points keyed like ``imgs``; at least one field and one point."""
    if not imgs:
        raise ValueError("`images` is empty; pass at least one field.")
    pts = _lookup_points(points, imgs)
    if len(pts) == 0:
        raise ValueError("`points` holds no mitoses; the detector needs positive examples.")
    return pts


def _check_counts(
    scales: Sequence[float], epochs: int, batch_size: int, negatives_per_image: int | None
) -> None:
    if not scales or not all(0 < float(s) <= 4 for s in scales):
        raise ValueError(f"`scales` must be positive numbers (at most 4); got {scales!r}.")
    for name, value in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("negatives_per_image", 1 if negatives_per_image is None else negatives_per_image),
    ):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")


def _check_rates(
    positive_fraction: float, lr: float, radius: float, jitter: float, negative_distance: float
) -> None:
    if not 0 < positive_fraction < 1:
        raise ValueError(f"`positive_fraction` must be in (0, 1); got {positive_fraction!r}.")
    if not (lr > 0 and radius > 0 and jitter >= 0 and negative_distance >= 0):
        raise ValueError("`lr` and `radius` must be positive; `jitter`, `negative_distance` >= 0.")


@dataclass
class _Fields:
    """The training fields (float in [0, 1]) and the mitoses on each."""

    images: dict[Any, np.ndarray]
    groups: dict[Any, Any]
    xy: np.ndarray
    n_points: int


def _prepare_fields(
    imgs: dict[Any, np.ndarray], pts: pd.DataFrame, stain: StainNormalizer | None
) -> _Fields:
    """Every field as float in [0, 1] (Macenko-normalised first when ``stain`` is given)."""
    prepared = {}
    for k, v in imgs.items():
        arr = np.asarray(v)
        if stain is not None:
            arr = stain.transform(
                arr
                if arr.dtype == np.uint8
                else np.clip(np.rint(to_float(arr) * 255), 0, 255).astype(np.uint8)
            )
        prepared[k] = to_float(arr)
    groups = pts.groupby("image", sort=False).indices
    xy_all = pts[["x", "y"]].to_numpy(dtype=np.float64)
    return _Fields(prepared, groups, xy_all, len(pts))


@dataclass(frozen=True)
class _Sampling:
    """How positive and negative sites are drawn (see :func:`train_detector`)."""

    jitter: float
    negative_distance: float
    negatives_per_image: int | None
    positive_fraction: float

    def pool_per_image(self, scale: float, n_points: int, n_images: int) -> int:
        """Negatives to draw per field: by default twice what an epoch needs (at least 100)."""
        if self.negatives_per_image is not None:
            return self.negatives_per_image
        expected = 8 * len(_jitter_offsets(self.jitter, scale)) * n_points
        wanted = round(expected * (1 - self.positive_fraction) / self.positive_fraction)
        return max(100, math.ceil(2 * wanted / n_images))

    def epoch_negatives(self, n_positive_sites: int, n_pool: int) -> int:
        """Negatives per epoch: the share ``positive_fraction`` of positives, pool permitting."""
        n_pos = 8 * n_positive_sites
        return min(n_pool, round(n_pos * (1 - self.positive_fraction) / self.positive_fraction))


@dataclass
class _Sites:
    """One scale's padded fields and its ``(field, row, col)`` sites."""

    padded: list[np.ndarray]
    positives: np.ndarray
    negatives: np.ndarray
    n_negative: int


def _scale_sites(
    fields: _Fields, scale: float, sampling: _Sampling, rng: np.random.Generator
) -> _Sites:
    """Rescale and pad every field; draw its positive sites and its pool of negatives."""
    per_image = sampling.pool_per_image(scale, fields.n_points, len(fields.images))
    padded: list[np.ndarray] = []
    pos_sites: list[np.ndarray] = []
    neg_sites: list[np.ndarray] = []
    for ii, (key, x) in enumerate(fields.images.items()):
        pxy = fields.xy[fields.groups[key]] if key in fields.groups else np.zeros((0, 2))
        pos, neg = _sample_sites(
            x,
            pxy,
            scale,
            jitter=sampling.jitter,
            negative_distance=sampling.negative_distance,
            n_negatives=per_image,
            rng=rng,
        )
        scaled = rescale_image(x, scale)
        padded.append(np.pad(scaled, ((_HALF, _HALF), (_HALF, _HALF), (0, 0)), mode="reflect"))
        pos_sites.append(np.column_stack([np.full(len(pos), ii), pos]))
        neg_sites.append(np.column_stack([np.full(len(neg), ii), neg]))
    pos_all = np.concatenate(pos_sites).astype(np.int64)
    neg_all = np.concatenate(neg_sites).astype(np.int64)
    if len(pos_all) == 0 or len(neg_all) == 0:
        raise ValueError(f"No positive or negative training sites at scale {scale}.")
    n_neg = sampling.epoch_negatives(len(pos_all), len(neg_all))
    return _Sites(padded, pos_all, neg_all, n_neg)


@dataclass(frozen=True)
class _ScaleFit:
    """The training settings shared by every scale's network."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    channels: tuple[int, int, int]
    hidden: int
    device: str | torch.device | None
    checkpoint_dir: str | os.PathLike[str] | None
    resume: bool
    callback: Callable[[float, int, int, dict[str, float]], None] | None

    def run(
        self, si: int, scale: float, sites: _Sites, *, seed: int, rng: np.random.Generator
    ) -> tuple[AggNetCNN, list[dict[str, float]]]:
        """Train scale ``si``'s network on the engine; return it (on the CPU) and its history."""
        engine = Engine(
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=seed,
            numpy_rng=rng,
            shuffle="numpy",
            join_single=False,
            keep_best=False,
            device=self.device,
            checkpoint=None
            if self.checkpoint_dir is None
            else Path(self.checkpoint_dir) / f"checkpoint_scale{si}.safetensors",
            resume=self.resume,
            mismatch_hint="use another checkpoint_dir, delete it or pass resume=False. Only "
            "`epochs` may change on resume.",
            progress=False
            if self.callback is None
            else functools.partial(_scale_callback, self.callback, scale),
        )
        task = _PatchTask(
            scale,
            sites.padded,
            sites.positives,
            sites.negatives,
            n_neg=sites.n_negative,
            lr=self.lr,
            optim=(self.optimizer, self.momentum, self.weight_decay),
            channels=self.channels,
            hidden=self.hidden,
        )
        result = engine.fit(task)
        return task.network.cpu().eval(), result.history


def _settings_record(
    scales: Sequence[float],
    epochs: int,
    batch_size: int,
    sampling: _Sampling,
    fit: _ScaleFit,
    stain: StainNormalizer | None,
    random_state: int | None,
) -> dict[str, Any]:
    """The settings a :class:`MultiScaleDetector` keeps (the arguments as given)."""
    return {
        "scales": [float(s) for s in scales],
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": fit.lr,
        "optimizer": fit.optimizer,
        "momentum": fit.momentum,
        "weight_decay": fit.weight_decay,
        "jitter": sampling.jitter,
        "negative_distance": sampling.negative_distance,
        "negatives_per_image": sampling.negatives_per_image,
        "positive_fraction": sampling.positive_fraction,
        "channels": list(fit.channels),
        "hidden": fit.hidden,
        "stain_normalisation": stain is not None,
        "seed": random_state if isinstance(random_state, (int, np.integer)) else None,
    }


def _scale_callback(
    callback: Callable[[float, int, int, dict[str, float]], None],
    scale: float,
    epoch: int,
    epochs: int,
    record: dict[str, float],
) -> None:
    callback(scale, epoch, epochs, record)


class _PatchTask(TrainTask):
    """SGD (or Adam) steps of one scale's AggNet network on patches drawn anew every epoch.

    Every epoch holds all positive sites in the eight rotations/mirrors and ``n_neg``
    negatives drawn from the pool, each in a random rotation/mirror (``engine.rng``).
    """

    def __init__(
        self,
        scale: float,
        padded: list[np.ndarray],
        pos_all: np.ndarray,
        neg_all: np.ndarray,
        *,
        n_neg: int,
        lr: float,
        optim: tuple[str, float, float] = ("adam", 0.0, 0.0),
        channels: tuple[int, int, int],
        hidden: int,
    ) -> None:
        self.name = f"scale {scale:g}"
        self.scale = scale
        self.padded = padded
        self.windows = [
            sliding_window_view(p, (PATCH_SIZE, PATCH_SIZE), axis=(0, 1)) for p in padded
        ]
        self.pos_all = pos_all
        self.neg_all = neg_all
        self.n_pos = 8 * len(pos_all)
        self.n_neg = n_neg
        self.lr = lr
        self.optim = optim
        self.channels = channels
        self.hidden = hidden

    def setup(self, engine: Engine) -> None:
        # the engine has seeded (a fork of) the global torch RNG: the initial weights
        self.network = AggNetCNN(channels=self.channels, hidden=self.hidden).to(engine.device)
        self.model = engine.wrap(self.network)
        kind, momentum, decay = self.optim
        params = self.network.parameters()
        if kind == "sgd":  # the paper's optimiser
            self.opt: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=self.lr, momentum=momentum, weight_decay=decay
            )
        else:
            self.opt = torch.optim.Adam(params, lr=self.lr, weight_decay=decay)

    def modules(self) -> dict[str, nn.Module]:
        return {"network": self.network}

    def optimizer(self) -> torch.optim.Optimizer:
        return self.opt

    def config(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "lr": self.lr,
            **({} if self.optim == ("adam", 0.0, 0.0) else {"optimizer": list(self.optim)}),
            "channels": list(self.channels),
            "hidden": self.hidden,
            "n_negative": self.n_neg,
            "data": data_digest(*self.padded, self.pos_all, self.neg_all),
        }

    def epoch_items(self, epoch: int, engine: Engine) -> int:
        rng = engine.rng
        negs = self.neg_all[rng.choice(len(self.neg_all), self.n_neg, replace=False)]
        self.sites = np.concatenate([np.repeat(self.pos_all, 8, axis=0), negs])
        self.views = np.concatenate(
            [np.tile(np.arange(8), len(self.pos_all)), rng.integers(0, 8, self.n_neg)]
        )
        self.labels = np.concatenate(
            [np.ones(self.n_pos, np.int64), np.zeros(self.n_neg, np.int64)]
        )
        self.correct = self.seen = 0
        return len(self.sites)

    def train_batch(self, idx: torch.Tensor, engine: Engine) -> torch.Tensor:
        ids = idx.numpy()
        batch = np.stack([self.windows[i][r, c] for i, r, c in self.sites[ids]])
        xb = torch.from_numpy(batch)
        vb = self.views[ids]
        for v in np.unique(vb):
            sel = torch.from_numpy(np.nonzero(vb == v)[0])
            k, flip = DIHEDRAL[int(v)]
            xb[sel] = _to_tensor_view(xb[sel], k, flip)
        xb = xb.to(engine.device)
        yb = torch.from_numpy(self.labels[ids]).to(engine.device)
        logits = self.model(xb)
        self.correct += int((logits.argmax(1) == yb).sum())
        self.seen += len(ids)
        return F.cross_entropy(logits, yb)

    def end_epoch(self, epoch: int, engine: Engine) -> dict[str, float]:
        correct, seen = engine.all_reduce_sum([float(self.correct), float(self.seen)])
        return {
            "accuracy": correct / max(seen, 1.0),
            "n_positive": float(self.n_pos),
            "n_negative": float(self.n_neg),
        }
