"""Demo part: STAPLE consensus of four radiologists' 3-D masks of 100 LIDC-IDRI nodules."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from crowdmed.aggregation.segmentation.staple import STAPLE
from crowdmed.aggregation.segmentation.votes import majority_vote_masks
from crowdmed.data.datasets import NoduleMasks, load_lidc_masks
from crowdmed.metrics.segmentation import dice, hausdorff_distance, mean_pairwise_dice
from crowdmed.report.html import Image

__all__ = ["MasksPart", "run_masks_part"]

CAVEAT = (
    "Reader order within a nodule does not identify a radiologist (LIDC reading sessions are "
    "anonymised), so the sensitivities and specificities below are distributions over "
    "reader-nodule pairs, not profiles of four people."
)


@dataclass
class MasksPart:
    """What the masks part computed.

    Attributes:
        per_nodule: One row per nodule: voxels, consensus volumes (STAPLE, majority vote) in
            mm³, mean pairwise Dice between readers, Dice of STAPLE vs majority vote, STAPLE
            iterations.
        per_reader: One row per (nodule, reader slot): STAPLE sensitivity and specificity,
            Dice and 95th-percentile Hausdorff distance (mm) against the STAPLE consensus.
        summary: Headline numbers.
        images: Outlines of nodules at the agreement quantiles of
            :data:`FIGURE_QUANTILES` (empty without matplotlib).
        seconds: Wall time of the STAPLE batch fit.
    """

    per_nodule: pd.DataFrame
    per_reader: pd.DataFrame
    summary: dict[str, Any]
    images: list[Image] = field(default_factory=list)
    seconds: float = 0.0


def _figure(nodule: NoduleMasks, posterior: np.ndarray, agreement: float) -> Image | None:
    try:
        from crowdmed.report.figures import figure_to_png, plot_mask_raters
    except ImportError:
        return None
    k = int(np.argmax(posterior.sum(axis=(0, 1))))  # the slice with the most nodule
    fig, ax = plot_mask_raters(nodule.masks[..., k], posterior[..., k], spacing=nodule.spacing[:2])
    ax.set_title(f"mean pairwise Dice {agreement:.2f}", fontsize="medium")
    return Image(
        figure_to_png(fig),
        alt="Four radiologists' outlines of a lung nodule over the STAPLE posterior",
        caption=(
            f"Nodule {nodule.key}, slice {k} (readers' mean pairwise Dice "
            f"{agreement:.2f}): each radiologist's outline (coloured lines) over the STAPLE "
            "probability of nodule (grey scale)."
        ),
    )


#: Quantiles of reader agreement of the nodules drawn: the first is the example of the
#: summary (visible but typical disagreement), then the hardest, a median and an easy one.
FIGURE_QUANTILES = (0.25, 0.05, 0.5, 0.9)


def run_masks_part(*, figures: bool = True) -> MasksPart:
    """Fit STAPLE on the bundled LIDC nodules and compare readers with the consensus.

    Args:
        figures: Draw the example figure (needs matplotlib).

    Returns:
        The tables and headline numbers (the caller writes the files).
    """
    nodules = load_lidc_masks()
    start = time.perf_counter()
    fits = STAPLE().fit_batch([n.masks.astype(bool) for n in nodules])
    seconds = time.perf_counter() - start
    rows, reader_rows = [], []
    for nodule, fit in zip(nodules, fits, strict=True):
        masks = nodule.masks.astype(bool)
        voxel_mm3 = float(np.prod(nodule.spacing))
        mv = majority_vote_masks(masks)
        rows.append(
            {
                "nodule": nodule.key,
                "voxels": int(masks[0].size),
                "staple_mm3": float(fit.labels_.sum()) * voxel_mm3,
                "majority_mm3": float(mv.sum()) * voxel_mm3,
                "reader_mm3_min": float(masks.sum(axis=(1, 2, 3)).min()) * voxel_mm3,
                "reader_mm3_max": float(masks.sum(axis=(1, 2, 3)).max()) * voxel_mm3,
                "mean_pairwise_dice": mean_pairwise_dice(masks),
                "dice_staple_vs_majority": dice(fit.labels_, mv),
                "staple_iterations": int(fit.n_iter_),
            }
        )
        for r in range(masks.shape[0]):
            reader_rows.append(
                {
                    "nodule": nodule.key,
                    "reader_slot": f"R{r + 1}",
                    "sensitivity": float(fit.sensitivity_[r]),
                    "specificity": float(fit.specificity_[r]),
                    "dice_vs_staple": dice(masks[r], fit.labels_),
                    "hd95_mm_vs_staple": hausdorff_distance(
                        masks[r], fit.labels_, spacing=nodule.spacing
                    ),
                }
            )
    per_nodule = pd.DataFrame(rows).set_index("nodule")
    per_reader = pd.DataFrame(reader_rows)
    q = per_nodule["mean_pairwise_dice"].quantile([0.25, 0.5, 0.75])
    summary = {
        "n_nodules": len(nodules),
        "n_readers": 4,
        "mean_pairwise_dice_median": float(q[0.5]),
        "mean_pairwise_dice_iqr": [float(q[0.25]), float(q[0.75])],
        "reader_dice_vs_staple_median": float(per_reader["dice_vs_staple"].median()),
        "reader_hd95_mm_median": float(per_reader["hd95_mm_vs_staple"].median()),
        "sensitivity_median": float(per_reader["sensitivity"].median()),
        "specificity_median": float(per_reader["specificity"].median()),
        "share_staple_equals_majority": float(
            (per_nodule["dice_staple_vs_majority"] == 1.0).mean()
        ),
        "staple_seconds": seconds,
        "caveat": CAVEAT,
    }
    images: list[Image] = []
    if figures:
        agreement = per_nodule["mean_pairwise_dice"].to_numpy()
        for q in FIGURE_QUANTILES:
            pick = int(np.argmin(np.abs(agreement - np.quantile(agreement, q))))
            image = _figure(nodules[pick], fits[pick].posteriors_, float(agreement[pick]))
            if image is None:
                break
            images.append(image)
    return MasksPart(per_nodule, per_reader, summary, images, seconds)


def distribution_table(per_reader: pd.DataFrame) -> pd.DataFrame:
    """Quartiles of the per-(nodule, reader) figures, one row per figure."""
    cols = ["sensitivity", "specificity", "dice_vs_staple", "hd95_mm_vs_staple"]
    table = per_reader[cols].quantile([0.1, 0.25, 0.5, 0.75, 0.9]).T
    table.columns = ["p10", "p25", "median", "p75", "p90"]
    table.index.name = "figure"
    return table
