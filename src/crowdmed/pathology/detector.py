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

#: Task of the model folders written by :meth:`MultiScaleDetector.save`.
TASK = "patch-detect"
_LEGACY_FORMAT = "crowdmed-mitosis-detector"
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
        duplicates: str = "ignore",
        tta: bool = True,
    ) -> tuple[float, float]:
        """Choose the operating point that maximises F1 on validation fields; sets ``threshold``.

        Args:
            images: Validation fields keyed by name (or a list indexed by ``points.image``).
            points: Their reference points ``image, x, y``.
            scale: Scale of the coordinates for the matching radius (see
                :func:`~crowdmed.metrics.match_points`).
            duplicates: ``"ignore"`` (the paper's rule: several responses around one mitosis
                are one TP) or ``"fp"``.
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
        """Write the detector as a model folder (``config.json`` + ``model.safetensors``).

        The folder is written atomically (see :func:`crowdmed.training.persistence.save_folder`)
        with task ``"patch-detect"``; :func:`load_detector`, :meth:`load` and
        :func:`crowdmed.training.load_model` read it back.

        ``config.json`` holds the scales, the network architecture, ``radius``,
        ``threshold``, the stain normaliser's parameters, ``history`` and ``settings``;
        ``model.safetensors`` the weights of every scale's network (``scale{i}.{name}``)
        and the fitted stain vectors (``stain.*``).

        Args:
            path: The model folder (created when missing; other files in it are kept).

        Returns:
            The folder.
        """
        from crowdmed.training.persistence import save_folder

        m0 = self.models[0]
        tensors: dict[str, torch.Tensor] = {}
        for i, model in enumerate(self.models):
            for key, value in model.state_dict().items():
                tensors[f"scale{i}.{key}"] = value
        stain = None
        if self.stain is not None:
            stain = self.stain.get_params()
            tensors["stain.stain_matrix"] = torch.as_tensor(self.stain.stain_matrix_)
            tensors["stain.max_concentrations"] = torch.as_tensor(self.stain.max_concentrations_)
        config = {
            "classes": ["background", "mitosis"]
            if m0.n_classes == 2
            else list(range(m0.n_classes)),
            "architecture": {
                "network": "AggNetCNN",
                "n_classes": m0.n_classes,
                "in_channels": m0.in_channels,
                "channels": list(m0.channels),
                "hidden": m0.hidden,
            },
            "scales": self.scales,
            "radius": self.radius,
            "threshold": self.threshold,
            "stain": stain,
            "history": {repr(float(k)): v for k, v in self.history.items()},
            "settings": self.settings,
        }
        return save_folder(path, task=TASK, config=config, tensors=tensors)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, device: str | torch.device | None = None
    ) -> MultiScaleDetector:
        """Read a detector folder written by :meth:`save` (see :func:`load_detector`)."""
        return load_detector(path, device=device)


def _dense_probability(model: AggNetCNN, padded: np.ndarray, tile: int) -> np.ndarray:
    """Softmax mitosis probability at every window centre of a padded ``(Hp, Wp, 3)`` image."""
    hp, wp = padded.shape[:2]
    h, w = hp - 2 * _HALF, wp - 2 * _HALF
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None].float().to(device)
    out = np.empty((h, w), dtype=np.float64)
    for r0 in range(0, h, tile):
        for c0 in range(0, w, tile):
            r1, c1 = min(r0 + tile, h), min(c0 + tile, w)
            logits = dense_logits(model, x[:, :, r0 : r1 + 2 * _HALF, c0 : c1 + 2 * _HALF])
            out[r0:r1, c0:c1] = torch.softmax(logits.double(), dim=1)[0, 1].cpu().numpy()
    return out


def geometric_mean(maps: Sequence[np.ndarray], eps: float = _EPS) -> np.ndarray:
    """Pixel-wise geometric mean ``exp(mean log max(p, eps))`` of equally shaped maps.

    Examples:
        >>> geometric_mean([np.array([0.25]), np.array([1.0])])
        array([0.5])
    """
    stack = np.stack([np.asarray(m, dtype=np.float64) for m in maps])
    return np.exp(np.log(np.clip(stack, eps, None)).mean(axis=0))


def load_detector(
    path: str | os.PathLike[str], *, device: str | torch.device | None = None
) -> MultiScaleDetector:
    """Read a detector written by :meth:`MultiScaleDetector.save` (weights only; no code runs).

    Args:
        path: The model folder. A single ``.pt`` file of crowdmed 0.x (``torch.save`` of
            tensors and plain values) is still read, with ``weights_only=True``.
        device: Torch device of the networks; the CPU when ``None``.

    Returns:
        The detector, with its operating point, stain normaliser, history and settings.

    Raises:
        ValueError: One line naming the file when it is missing, changed or corrupt, or not a
            mitosis detector.
    """
    p = Path(path)
    if p.is_file():
        from crowdmed.training.legacy import payload_errors

        with payload_errors(p, command="crowdmed mitosis train", what="mitosis detector"):
            detector = _load_legacy(p)
    else:
        from crowdmed.training.persistence import CONFIG_NAME, WEIGHTS_NAME, read_folder

        config, tensors = read_folder(p, task=TASK)
        try:
            detector = _from_folder(config, tensors)
        except _BadWeights as exc:
            raise ValueError(
                f"'{p / WEIGHTS_NAME}' does not fit its config.json ({exc}); the folder was "
                "changed, save the detector again."
            ) from None
        except (KeyError, TypeError, ValueError) as exc:
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise ValueError(
                f"'{p / CONFIG_NAME}' is not a valid mitosis detector config ({first}); "
                "save the detector again."
            ) from None
    if device is not None:
        detector.models = [m.to(device) for m in detector.models]
    return detector


class _BadWeights(Exception):
    """The weights of a detector folder do not fit its networks."""


def _from_folder(config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> MultiScaleDetector:
    arch = config["architecture"]
    if arch.get("network") != "AggNetCNN":
        raise ValueError(f"unknown network {arch.get('network')!r}")
    scales = [float(s) for s in config["scales"]]
    models = []
    for i in range(len(scales)):
        c1, c2, c3 = (int(c) for c in arch["channels"])
        model = AggNetCNN(
            n_classes=int(arch["n_classes"]),
            in_channels=int(arch["in_channels"]),
            channels=(c1, c2, c3),
            hidden=int(arch["hidden"]),
        )
        prefix = f"scale{i}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise _BadWeights(f"scale {scales[i]}: {str(exc).splitlines()[0]}") from None
        models.append(model)
    stain = None
    if config.get("stain") is not None:
        if "stain.stain_matrix" not in tensors or "stain.max_concentrations" not in tensors:
            raise _BadWeights("no stain vectors")
        stain = StainNormalizer(**config["stain"])
        stain.stain_matrix_ = tensors["stain.stain_matrix"].numpy()
        stain.max_concentrations_ = tensors["stain.max_concentrations"].numpy()
    history = {float(k): list(v) for k, v in (config.get("history") or {}).items()}
    return MultiScaleDetector(
        scales,
        models,
        radius=float(config["radius"]),
        threshold=float(config["threshold"]),
        stain=stain,
        history=history,
        settings=dict(config.get("settings") or {}),
    )


def _load_legacy(p: Path) -> MultiScaleDetector:
    """A detector of the single-file format of crowdmed 0.x (``torch.load``, weights only)."""
    from crowdmed.training.legacy import load_payload

    payload = load_payload(
        p, fmt=_LEGACY_FORMAT, command="crowdmed mitosis train", what="mitosis detector"
    )
    if payload.get("format_version") != 1:
        raise ValueError(
            f"'{p}' has detector format {payload.get('format_version')}; this version reads "
            "1. Retrain the detector."
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
