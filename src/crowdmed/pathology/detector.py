"""Dense multi-scale mitosis detection with test-time augmentation (AggNet).

A :class:`MultiScaleDetector` holds one :class:`~crowdmed.nn.aggnet.AggNetCNN` per image scale
(trained by :func:`crowdmed.training.patch_detector.train_detector`). Detection runs each
scale's network densely over the whole field (:func:`~crowdmed.nn.aggnet.dense_logits`),
averages the mitosis probability over the eight rotations/mirrors of the field (test-time
augmentation; the map of a rotated field is the rotated map), resizes every scale's map back
to the field and combines the scales by their geometric mean. Candidates are the local maxima
of that map above the operating point, suppressed within the matching radius.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from crowdmed.metrics.points import choose_threshold
from crowdmed.nn.aggnet import PATCH_SIZE, AggNetCNN, dense_logits
from crowdmed.pathology.candidates import find_candidates
from crowdmed.pathology.patches import (
    DIHEDRAL,
    apply_dihedral,
    invert_dihedral,
    rescale_image,
    to_float,
)
from crowdmed.pathology.stain import StainNormalizer

__all__ = ["MultiScaleDetector", "detect", "geometric_mean", "load_detector"]

_FORMAT = "crowdmed-mitosis-detector"
_FORMAT_VERSION = 1
_HALF = PATCH_SIZE // 2
_EPS = 1e-7

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


class MultiScaleDetector:
    """Mitosis detector: one :class:`AggNetCNN` per image scale, fused by geometric mean.

    Built by :func:`crowdmed.training.patch_detector.train_detector` or :func:`load_detector`.

    Attributes:
        scales: The image scales, one network each.
        models: The trained networks, in the order of ``scales``.
        radius: Matching/suppression radius in pixels of the full-scale field.
        threshold: Operating point on the fused map (set by :meth:`calibrate`; 0.5 before).
        stain: Fitted :class:`StainNormalizer` applied to every field first, or ``None``.
        history: Per scale, one ``{"epoch", "loss", "accuracy", "n_positive", "n_negative"}``
            dict per epoch (training patches of the epoch).
        settings: Training settings (for run records).
    """

    def __init__(
        self,
        scales: Sequence[float],
        models: Sequence[AggNetCNN],
        *,
        radius: float = 30.0,
        threshold: float = 0.5,
        stain: StainNormalizer | None = None,
        history: dict[float, list[dict[str, float]]] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        if len(scales) != len(models) or not scales:
            raise ValueError("`scales` and `models` must be non-empty and of equal length.")
        self.scales = [float(s) for s in scales]
        self.models = list(models)
        self.radius = float(radius)
        self.threshold = float(threshold)
        self.stain = stain
        self.history = history or {}
        self.settings = settings or {}
        for m in self.models:
            m.eval()

    # ------------------------------------------------------------------ maps
    def prepare(self, image: np.ndarray) -> np.ndarray:
        """A field as the networks see it before rescaling.

        Stain-normalised when the detector has a normaliser, then ``float32`` in [0, 1] of
        shape ``(H, W, 3)``.
        """
        arr = np.asarray(image)
        if self.stain is not None:
            if arr.dtype != np.uint8:
                arr = np.clip(np.rint(to_float(arr) * 255.0), 0, 255).astype(np.uint8)
            arr = self.stain.transform(arr)
        return to_float(arr)

    def scale_map(
        self, image: np.ndarray, scale_index: int, *, tta: bool = True, tile: int = 256
    ) -> np.ndarray:
        """Mitosis probability of one scale's network at every pixel of the rescaled field.

        Args:
            image: RGB field ``(H, W, 3)`` (``uint8`` or float in [0, 1]), before stain
                normalisation (applied here when the detector has one).
            scale_index: Index into ``scales``.
            tta: Average over the eight rotations/mirrors of the field.
            tile: Output tile side for the dense pass (bounds memory; the result is the same).

        Returns:
            ``float64`` map of shape ``scaled_shape((H, W), scale)``.
        """
        return self._scale_map(self.prepare(image), scale_index, tta=tta, tile=tile)

    def _scale_map(self, x: np.ndarray, i: int, *, tta: bool, tile: int) -> np.ndarray:
        scaled = rescale_image(x, self.scales[i])
        padded = np.pad(scaled, ((_HALF, _HALF), (_HALF, _HALF), (0, 0)), mode="reflect")
        views = DIHEDRAL if tta else DIHEDRAL[:1]
        acc = np.zeros(scaled.shape[:2], dtype=np.float64)
        model = self.models[i]
        with torch.no_grad():
            for k, flip in views:
                v = np.ascontiguousarray(apply_dihedral(padded, k, flip))
                prob = _dense_probability(model, v, tile)
                acc += invert_dihedral(prob, k, flip)
        return acc / len(views)

    def detection_map(self, image: np.ndarray, *, tta: bool = True, tile: int = 256) -> np.ndarray:
        """The fused mitosis probability map of a field.

        Each scale's map (averaged over the eight rotations/mirrors when ``tta``) is resized
        back to the field, and the maps are combined by their geometric mean
        ``exp(mean_s log p_s)`` (probabilities clipped at 1e-7).

        Args:
            image: RGB field ``(H, W, 3)``, ``uint8`` or float in [0, 1].
            tta: Test-time augmentation over the eight rotations/mirrors.
            tile: Output tile side of the dense pass.

        Returns:
            ``float64`` array of shape ``(H, W)`` in [0, 1].
        """
        x = self.prepare(image)
        h, w = x.shape[:2]
        maps = [
            rescale_image(self._scale_map(x, i, tta=tta, tile=tile), shape=(h, w))
            for i in range(len(self.scales))
        ]
        return geometric_mean(maps)

    # ------------------------------------------------------------------ operating point
    def calibrate(
        self,
        images: Images,
        points: pd.DataFrame,
        *,
        scale: float = 1.0,
        duplicates: str = "fp",
        tta: bool = True,
    ) -> tuple[float, float]:
        """Choose the operating point that maximises F1 on validation fields; sets ``threshold``.

        Args:
            images: Validation fields keyed by name (or a list indexed by ``points.image``).
            points: Their reference points ``image, x, y``.
            scale: Scale of the coordinates for the matching radius (see
                :func:`~crowdmed.metrics.match_points`).
            duplicates: ``"fp"`` or ``"ignore"``.
            tta: Test-time augmentation.

        Returns:
            ``(threshold, f1)`` on the validation fields.
        """
        cands = detect(self, images, threshold=0.0, radius=self.radius * scale, tta=tta)
        thr, f1 = choose_threshold(
            cands, points, radius=self.radius, scale=scale, duplicates=duplicates
        )
        if math.isfinite(thr):
            self.threshold = thr
        return thr, f1

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the detector to ``path`` (a torch file of tensors and plain values; atomic)."""
        from crowdmed._io import atomic_path

        m0 = self.models[0]
        payload = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "scales": self.scales,
            "network": {
                "channels": list(m0.channels),
                "hidden": m0.hidden,
                "n_classes": m0.n_classes,
            },
            "state_dicts": [
                {k: v.detach().cpu() for k, v in m.state_dict().items()} for m in self.models
            ],
            "radius": self.radius,
            "threshold": self.threshold,
            "stain": None
            if self.stain is None
            else {
                "stain_matrix": torch.as_tensor(self.stain.stain_matrix_),
                "max_concentrations": torch.as_tensor(self.stain.max_concentrations_),
                "params": self.stain.get_params(),
            },
            "history": {str(k): v for k, v in self.history.items()},
            "settings": self.settings,
        }
        target = Path(path)
        with atomic_path(target) as tmp:
            torch.save(payload, tmp)
        return target


def _dense_probability(model: AggNetCNN, padded: np.ndarray, tile: int) -> np.ndarray:
    """Softmax mitosis probability at every window centre of a padded ``(Hp, Wp, 3)`` image."""
    hp, wp = padded.shape[:2]
    h, w = hp - 2 * _HALF, wp - 2 * _HALF
    x = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None].float()
    out = np.empty((h, w), dtype=np.float64)
    for r0 in range(0, h, tile):
        for c0 in range(0, w, tile):
            r1, c1 = min(r0 + tile, h), min(c0 + tile, w)
            logits = dense_logits(model, x[:, :, r0 : r1 + 2 * _HALF, c0 : c1 + 2 * _HALF])
            out[r0:r1, c0:c1] = torch.softmax(logits.double(), dim=1)[0, 1].numpy()
    return out


def geometric_mean(maps: Sequence[np.ndarray], eps: float = _EPS) -> np.ndarray:
    """Pixel-wise geometric mean ``exp(mean log max(p, eps))`` of equally shaped maps.

    Examples:
        >>> geometric_mean([np.array([0.25]), np.array([1.0])])
        array([0.5])
    """
    stack = np.stack([np.asarray(m, dtype=np.float64) for m in maps])
    return np.exp(np.log(np.clip(stack, eps, None)).mean(axis=0))


def load_detector(path: str | os.PathLike[str]) -> MultiScaleDetector:
    """Read a detector written by :meth:`MultiScaleDetector.save` (weights only; no code runs).

    Raises:
        ValueError: If the file is missing, unreadable or not a mitosis detector.
    """
    from crowdmed.training._torch_io import load_payload

    p = Path(path)
    payload = load_payload(
        p, fmt=_FORMAT, command="crowdmed mitosis train", what="mitosis detector"
    )
    if payload.get("format_version") != _FORMAT_VERSION:
        raise ValueError(
            f"'{p}' has detector format {payload.get('format_version')}; this version reads "
            f"{_FORMAT_VERSION}. Retrain the detector."
        )
    net = payload["network"]
    models = []
    for sd in payload["state_dicts"]:
        m = AggNetCNN(
            n_classes=int(net["n_classes"]),
            channels=tuple(net["channels"]),
            hidden=int(net["hidden"]),
        )
        m.load_state_dict(sd)
        models.append(m)
    stain = None
    if payload.get("stain") is not None:
        s = payload["stain"]
        stain = StainNormalizer(**s["params"])
        stain.stain_matrix_ = s["stain_matrix"].numpy()
        stain.max_concentrations_ = s["max_concentrations"].numpy()
    history = {float(k): v for k, v in payload.get("history", {}).items()}
    return MultiScaleDetector(
        payload["scales"],
        models,
        radius=float(payload["radius"]),
        threshold=float(payload["threshold"]),
        stain=stain,
        history=history,
        settings=payload.get("settings") or {},
    )


def detect(
    detector: MultiScaleDetector,
    images: Images,
    *,
    threshold: float | None = None,
    radius: float | None = None,
    tta: bool = True,
    maps: dict[Any, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Mitosis candidates of every field: local maxima of the fused map above ``threshold``.

    Args:
        detector: A trained :class:`MultiScaleDetector`.
        images: RGB fields keyed by name, or a list (names are then the indices).
        threshold: Operating point; the detector's ``threshold`` when omitted. ``0`` keeps every
            local maximum (for ROC curves and :func:`~crowdmed.metrics.choose_threshold`).
        radius: Suppression radius in pixels; the detector's ``radius`` when omitted.
        tta: Test-time augmentation over the eight rotations/mirrors.
        maps: A dict that receives the fused detection map of every field, when given.

    Returns:
        ``DataFrame`` with ``image, x, y, score`` (score-sorted within each field).
    """
    imgs = _as_dict(images)
    thr = detector.threshold if threshold is None else float(threshold)
    rad = detector.radius if radius is None else float(radius)
    frames = []
    for key, image in imgs.items():
        prob = detector.detection_map(image, tta=tta)
        if maps is not None:
            maps[key] = prob
        cands = find_candidates(prob, threshold=thr, radius=rad)
        cands.insert(0, "image", [key] * len(cands))
        frames.append(cands)
    if not frames:
        return pd.DataFrame({"image": [], "x": [], "y": [], "score": []})
    out = pd.concat(frames, ignore_index=True)
    out["x"] = out["x"].astype(np.float64)
    out["y"] = out["y"].astype(np.float64)
    return out


def __getattr__(name: str) -> Any:
    """``train_detector`` moved to :mod:`crowdmed.training.patch_detector`; still found here."""
    if name == "train_detector":
        from crowdmed.training.patch_detector import train_detector

        return train_detector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
