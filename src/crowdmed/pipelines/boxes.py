"""Consensus of several readers' box tables: what ``crowdmed boxes fuse`` runs.

:func:`fuse_box_file` reads a box table (CSV/TSV or COCO JSON with a reader per annotation),
fuses the readers' boxes (proficiency given, estimated from the agreement, or equal) and
returns a :class:`BoxConsensus` with the consensus boxes and, on request, each reader's
agreement with it and the pairwise reader F1.

Examples:
    >>> result = fuse_box_file(Path("readers.csv"), iou_thr=0.4)  # doctest: +SKIP
    >>> result.fused.head()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["BoxConsensus", "fuse_box_file", "read_proficiency"]


def read_proficiency(path: Path) -> dict[Any, float]:
    """Each reader's weight from a CSV/TSV with columns reader, proficiency.

    Raises:
        FileNotFoundError: For a missing file.
        ValueError: For other columns, a repeated reader or a non-numeric proficiency.
    """
    from crowdmed._tables import check_file, read_table

    if not path.exists():
        raise FileNotFoundError(f"Proficiency file '{path}' does not exist; check the path.")
    check_file(path, "Proficiency file")
    table = read_table(path, text_columns=("reader",), what="Proficiency file", folder=False)
    if not {"reader", "proficiency"} <= set(table.columns):
        raise ValueError(
            f"Proficiency file '{path}' must have columns reader, proficiency; got "
            f"{list(table.columns)}."
        )
    if table["reader"].duplicated().any():
        dup = table.loc[table["reader"].duplicated(), "reader"].iloc[0]
        raise ValueError(f"Proficiency file '{path}' lists reader {dup!r} twice; keep one row.")
    values = pd.to_numeric(table["proficiency"], errors="coerce")
    if table["reader"].isna().any():
        line = int(np.flatnonzero(table["reader"].isna().to_numpy())[0]) + 2
        raise ValueError(f"Proficiency file '{path}' has an empty reader on line {line}; fill it.")
    values = values.where(np.isfinite(values) & (values > 0))
    if values.isna().any():
        bad = table.loc[values.isna(), "reader"].iloc[0]
        raise ValueError(
            f"Proficiency file '{path}': reader {bad!r} has no positive finite proficiency "
            f"({table.loc[values.isna(), 'proficiency'].iloc[0]}); give a positive number."
        )
    return dict(zip(table["reader"], values.astype(float), strict=True))


@dataclasses.dataclass
class BoxConsensus:
    """Consensus boxes of several readers.

    Attributes:
        fused: image, class, coordinates, confidence, n_readers, n_boxes, readers.
        readers: Each reader's sensitivity, precision and false positives per image against
            the consensus, and proficiency (``None`` unless asked for).
        pairwise: Matched-box F1 between reader pairs (``None`` unless asked for).
        params: iou_thr, proficiency (given, equal or estimated), max_iter, min_confidence.
        data: Counts of images, readers, boxes and readings; 2 or 3 dimensions.
        fit: Iterations, convergence, proficiency and seconds of the fusion.
        summary: Number of fused boxes, mean confidence, histogram of readers per box.
    """

    fused: pd.DataFrame
    readers: pd.DataFrame | None
    pairwise: pd.DataFrame | None
    params: dict[str, Any]
    data: dict[str, Any]
    fit: dict[str, Any]
    summary: dict[str, Any]


def _data(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "n_images": int(frame["image"].nunique()),
        "n_readers": int(frame["reader"].nunique()),
        "n_boxes": int(frame["xmin"].notna().sum()),
        "n_readings": len(frame.drop_duplicates(["image", "reader"])),
        "dimensions": 3 if "zmin" in frame.columns else 2,
    }


def _summary(fused: pd.DataFrame) -> dict[str, Any]:
    histogram = fused["n_readers"].value_counts().sort_index()
    return {
        "n_fused": len(fused),
        "mean_confidence": float(fused["confidence"].mean()) if len(fused) else None,
        "mean_agreement": float(fused["agreement"].mean()) if len(fused) else None,
        "n_readers_histogram": {str(k): int(v) for k, v in histogram.items()},
    }


def fuse_box_file(
    boxes: Path,
    *,
    iou_thr: float = 0.4,
    proficiency: Path | None = None,
    equal_weights: bool = False,
    images: Path | None = None,
    classes: list[str] | None = None,
    no_finding: str | None = None,
    max_iter: int = 10,
    min_confidence: float = 0.5,
    readers: bool = False,
    pairwise: bool = False,
) -> BoxConsensus:
    """Read a box table of several readers and fuse their boxes.

    Args:
        boxes: Box table (see :func:`crowdmed.data.boxes.read_boxes`).
        iou_thr: A box joins a cluster above this IoU.
        proficiency: CSV reader, proficiency with each reader's weight.
        equal_weights: Weigh all readers equally instead of estimating their proficiency.
        images: Folder of the images: a box on an image that is not there, or outside the
            image (its size read from the file), is an error.
        classes: Valid classes; other classes are an error.
        no_finding: Class meaning "nothing found": its rows are readings without boxes.
        max_iter: Rounds of proficiency re-estimation.
        min_confidence: Consensus boxes scored against the readers have a confidence above
            this.
        readers: Also score each reader against the consensus.
        pairwise: Also compute the matched-box F1 between reader pairs.

    Returns:
        The consensus.

    Raises:
        ValueError: For bad options or an invalid table.
    """
    from crowdmed.aggregation.detection.box_fusion import fuse_boxes
    from crowdmed.data.boxes import read_boxes
    from crowdmed.quality.box_agreement import pairwise_reader_f1, reader_agreement

    if proficiency is not None and equal_weights:
        raise ValueError("Use either `--proficiency` or `--equal-weights`, not both.")
    if images is not None and not images.is_dir():
        raise ValueError(f"`--images` must be a folder of images; '{images}' is not a folder.")
    frame = read_boxes(
        boxes,
        images=images,
        classes=classes,
        no_finding=no_finding,
        image_sizes="images" if images is not None else None,
    )
    weights = None if proficiency is None else read_proficiency(proficiency)
    start = time.perf_counter()
    fused = fuse_boxes(
        frame,
        iou_thr=iou_thr,
        proficiency=weights,
        estimate_proficiency=not equal_weights,
        max_iter=max_iter,
    )
    fit = {
        "n_iter": fused.attrs.get("n_iter"),
        "converged": fused.attrs.get("converged"),
        "proficiency": fused.attrs.get("proficiency"),
        "seconds": time.perf_counter() - start,
    }
    how = "given" if weights is not None else ("equal" if equal_weights else "estimated")
    params = {
        "iou_thr": iou_thr,
        "proficiency": how,
        "max_iter": max_iter,
        "min_confidence": min_confidence,
    }
    table = (
        reader_agreement(frame, fused, iou_thr=iou_thr, min_confidence=min_confidence)
        if readers
        else None
    )
    pairs = pairwise_reader_f1(frame, iou_thr=iou_thr) if pairwise else None
    return BoxConsensus(fused, table, pairs, params, _data(frame), fit, _summary(fused))
