"""Mitosis detection from folders: what ``crowdmed mitosis train | detect | evaluate`` run.

:func:`train_mitosis` reads fields and point annotations and trains the multi-scale AggNet
detector (:func:`crowdmed.training.patch_detector.train_detector`); :func:`detect_folder`
finds candidates in every field of a folder with a saved detector; :func:`evaluate_files`
matches a candidates file to reference points (precision, recall, F1, candidate AUC).

Examples:
    >>> run = train_mitosis(Path("train"), Path("train/points.csv"))  # doctest: +SKIP
    >>> run.detector.save("model")  # doctest: +SKIP
    >>> found = detect_folder(Path("model"), Path("test"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdmed.data.images import IMAGE_SUFFIXES
from crowdmed.pipelines.records import file_record

__all__ = [
    "Detections",
    "MitosisRun",
    "detect_folder",
    "evaluate_files",
    "field_stem",
    "parse_scales",
    "train_mitosis",
]


def field_stem(name: Any) -> str:
    """The field id of an image name: its stem when it has an image suffix, else the text."""
    text = str(name).strip()
    return Path(text).stem if Path(text).suffix.lower() in IMAGE_SUFFIXES else text


def parse_scales(text: str) -> list[float]:
    """Image scales from comma-separated text (``"0.33,0.66,1.0"``)."""
    try:
        scales = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        scales = []
    if not scales or not all(0 < s <= 4 for s in scales):
        raise ValueError(
            f"`--scales` must be comma-separated positive numbers such as 0.33,0.66,1.0; "
            f"got {text!r}."
        )
    return scales


@dataclasses.dataclass
class MitosisRun:
    """A detector trained by :func:`train_mitosis`.

    Attributes:
        detector: The :class:`crowdmed.pathology.detector.MultiScaleDetector`.
        history: One row per scale and epoch.
        val_f1: F1 at the operating point chosen on the validation fields, or ``None``.
        inputs: Path and checksum of the inputs.
        n_fields: Number of training fields.
        n_points: Number of training mitoses.
    """

    detector: Any
    history: pd.DataFrame
    val_f1: float | None
    inputs: dict[str, Any]
    n_fields: int
    n_points: int

    def save(self, out: Path, stage: Callable[[Path], Path] = Path) -> list[Path]:
        """Write the detector (config.json, model.safetensors) and history.csv."""
        from crowdmed.pipelines.model_folder import save_model

        targets = save_model(self.detector, out, stage)
        self.history.to_csv(stage(out / "history.csv"), index=False)
        return [*targets, out / "history.csv"]


def train_mitosis(
    images: Path,
    points: Path,
    *,
    val_images: Path | None = None,
    val_points: Path | None = None,
    scales: list[float] | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    radius: float = 30.0,
    stain_reference: Path | None = None,
    seed: int = 0,
    progress: Callable[..., None] | None = None,
) -> MitosisRun:
    """Train the multi-scale AggNet mitosis detector on point annotations.

    Args:
        images: Folder of PNG/TIFF/JPEG high-power fields.
        points: CSV image,x,y of the mitoses; every image listed.
        val_images: Validation fields (the operating point maximises F1 there).
        val_points: CSV image,x,y of the validation fields.
        scales: Image scales, one network each (0.33, 0.66, 1.0 when ``None``).
        epochs: Epochs per scale.
        batch_size: Mini-batch size.
        lr: Learning rate of Adam (the ``"fast"`` preset of
            :func:`crowdmed.training.patch_detector.train_detector`; the paper trains with SGD,
            momentum 0.9, weight decay 5e-4, batches of 200).
        radius: Matching and suppression radius in pixels.
        stain_reference: A reference field for Macenko normalisation.
        seed: Seed of initialisation and sampling.
        progress: Called with ``description``, ``completed``, ``total`` keywords.

    Returns:
        The run; :meth:`MitosisRun.save` writes the model folder.

    Raises:
        ValueError: For bad values or unreadable inputs.
    """
    import torch

    from crowdmed.data.points import load_field, read_points
    from crowdmed.training.patch_detector import train_detector

    scale_list = [0.33, 0.66, 1.0] if scales is None else scales
    if (val_images is None) != (val_points is None):
        raise ValueError("`--val-images` and `--val-points` must be given together.")
    if not (radius > 0):
        raise ValueError(f"`--radius` must be a positive number of pixels; got {radius}.")
    report = progress or (lambda **_: None)
    report(description="Reading fields")
    imgs, pts = read_points(points, images)
    val = read_points(val_points, val_images) if val_points and val_images else None
    reference = load_field(stain_reference) if stain_reference is not None else None
    done = [0]

    def on_epoch(scale: float, epoch: int, total: int, record: dict[str, float]) -> None:
        done[0] += 1
        text = f"Training scale {scale:g}: epoch {epoch}/{total} loss={record['loss']:.3f}"
        report(description=text, completed=done[0], total=epochs * len(scale_list))

    with torch.random.fork_rng(devices=[]):
        detector = train_detector(
            imgs,
            pts,
            scales=scale_list,
            epochs=epochs,
            preset="fast",
            batch_size=batch_size,
            lr=lr,
            radius=radius,
            stain_reference=reference,
            random_state=seed,
            callback=on_epoch,
        )
    val_f1 = None
    if val is not None:
        report(description="Choosing the operating point on validation fields")
        _, val_f1 = detector.calibrate(*val)
    history = pd.DataFrame(
        [{"scale": s, **rec} for s, recs in detector.history.items() for rec in recs]
    )
    history["epoch"] = history["epoch"].astype(int)
    inputs = {
        "images": {"path": images.resolve(), "n_files": len(imgs)},
        "points": file_record(points),
        "val_points": file_record(val_points),
    }
    return MitosisRun(detector, history, val_f1, inputs, len(imgs), len(pts))


@dataclasses.dataclass
class Detections:
    """Mitosis candidates found by :func:`detect_folder`.

    Attributes:
        candidates: image, x, y, score.
        maps: Detection map (probability) of every field, when asked for.
        n_fields: Number of fields.
        threshold: The operating point used.
        radius: The suppression radius used.
        inputs: Path and file count of the fields.
    """

    candidates: pd.DataFrame
    maps: dict[Any, np.ndarray]
    n_fields: int
    threshold: float
    radius: float
    inputs: dict[str, Any]


def detect_folder(
    model: Path,
    images: Path,
    *,
    threshold: float | None = None,
    radius: float | None = None,
    tta: bool = True,
    maps: bool = False,
    progress: Callable[..., None] | None = None,
) -> Detections:
    """Detect mitosis candidates in every field of a folder with a saved detector.

    Args:
        model: Model folder written by :meth:`MitosisRun.save` (or ``mitosis train``).
        images: Folder of PNG/TIFF/JPEG fields.
        threshold: Operating point; the model's when ``None``. 0 keeps every local maximum.
        radius: Suppression radius in pixels; the model's when ``None``.
        tta: Average over the 8 rotations/mirrors.
        maps: Also return the detection map of every field.
        progress: Called with a ``description`` keyword.

    Returns:
        The candidates.

    Raises:
        ValueError: For a folder without a detector or bad values.
    """
    import torch

    from crowdmed.data.points import image_files, load_field
    from crowdmed.pathology.detector import detect, load_detector

    if not model.is_dir():
        what = "is a file" if model.exists() else "does not exist"
        raise ValueError(
            f"`--model` must be a folder written by `crowdmed mitosis train`; '{model}' {what}."
        )
    if threshold is not None and not (0.0 <= threshold <= 1.0):
        raise ValueError(f"`--threshold` must be in [0, 1]; got {threshold}.")
    if radius is not None and not radius > 0:
        raise ValueError(f"`--radius` must be a positive number of pixels; got {radius}.")
    detector = load_detector(model)
    files = image_files(images)
    report = progress or (lambda **_: None)
    report(description=f"Reading {len(files)} fields")
    fields = {name: load_field(p) for name, p in files.items()}
    prob_maps: dict[Any, Any] = {}
    report(description=f"Detecting in {len(files)} fields")
    with torch.no_grad():
        cands = detect(
            detector,
            fields,
            threshold=threshold,
            radius=radius,
            tta=tta,
            maps=prob_maps if maps else None,
        )
    return Detections(
        cands,
        prob_maps,
        len(fields),
        detector.threshold if threshold is None else threshold,
        detector.radius if radius is None else radius,
        {"images": {"path": images.resolve(), "n_files": len(fields)}},
    )


def _read_two(candidates: Path, points: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    frames = []
    for option, path in (("--candidates", candidates), ("--points", points)):
        if not path.is_file():
            raise FileNotFoundError(f"`{option}` file '{path}' does not exist.")
        try:
            df = pd.read_csv(path, dtype={"image": str}, skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ValueError(f"Cannot read `{option}` file '{path}': {exc}.") from exc
        if "image" in df.columns:
            df["image"] = [field_stem(v) for v in df["image"]]
        frames.append(df)
    return frames[0], frames[1]


def evaluate_files(
    candidates: Path,
    points: Path,
    *,
    radius: float = 30.0,
    scale: float = 1.0,
    threshold: float | None = None,
    duplicates: str = "ignore",
) -> tuple[Any, list[str]]:
    """Match the candidates of a file to the reference points of another.

    A detection within the radius of an unmatched reference point is a true positive (nearest
    point, highest scores first); each point is matched once.

    Args:
        candidates: CSV image,x,y[,score].
        points: Reference CSV image,x,y; every image listed.
        radius: Matching radius in pixels at full resolution.
        scale: Scale of the coordinates; the radius becomes radius x scale.
        threshold: Keep candidates with score >= this first.
        duplicates: A second detection of a matched point: ``"ignore"`` (the paper's rule)
            or ``"fp"``.

    Returns:
        ``(result, image names)``: the :func:`crowdmed.metrics.points.match_points` result.

    Raises:
        ValueError: For unreadable files, repeated points or unknown images.
    """
    from crowdmed.data.points import check_points, repeated_points
    from crowdmed.metrics.points import match_points

    det_raw, ref_raw = _read_two(candidates, points)
    names = list(dict.fromkeys(list(ref_raw.get("image", [])) + list(det_raw.get("image", []))))
    det = check_points(det_raw, f"candidates file '{candidates}'")
    ref_raw["_line"] = list(range(2, len(ref_raw) + 2))
    ref = check_points(ref_raw, f"points file '{points}'")
    repeated = repeated_points(ref, ref.pop("_line").to_numpy())
    if repeated:
        raise ValueError(
            f"Points file '{points}' repeats {len(repeated)} point(s): "
            f"{'; '.join(repeated[:3])}. Keep one row per mitosis."
        )
    if threshold is not None:
        if "score" not in det.columns:
            raise ValueError("`--threshold` needs a 'score' column in the candidates.")
        det = det[pd.to_numeric(det["score"], errors="coerce") >= threshold]
    unknown = sorted(set(det["image"]) - set(ref_raw["image"]))
    if unknown:
        raise ValueError(
            f"Candidates name {len(unknown)} images without reference rows: {unknown[:5]}. "
            "List every image in --points (empty x and y when it has no mitoses)."
        )
    result = match_points(det, ref, radius=radius, scale=scale, duplicates=duplicates, images=names)
    return result, names
