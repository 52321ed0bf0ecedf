"""Demo part: the AggNet crowd loop on synthetic high-power fields (needs PyTorch).

Everything in this part is synthetic: the fields come from
:func:`crowdmed.pathology.make_synthetic_fields` (an optical model, not tissue) and the votes
from simulated workers, a quarter of them spammers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from crowdmed.report.html import Image

__all__ = ["MitosisPart", "run_mitosis_part"]

NOTE = (
    "Synthetic data: the high-power fields are generated (stain-like background, round nuclei, "
    "irregular dark mitotic figures), and the crowd is simulated (10 votes per task, a quarter "
    "of the workers spammers, quiz accuracy from gold questions). The same commands run on a "
    "folder of real fields with a CSV of reference points (see the README)."
)


@dataclass
class MitosisPart:
    """What the mitosis part computed.

    Attributes:
        metrics: One row per model: F1, precision, recall and AUC on the test candidates,
            and the accuracy of its training labels on the crowd tasks (Table IV analogue).
        annotators: One row per simulated worker: kind, true and estimated sensitivity,
            specificity and spammer score, quiz accuracy, number of votes.
        summary: Headline numbers.
        maps: Detection maps of the test fields.
        images: Figures for the report (empty without matplotlib).
        timings: Seconds per step of the loop.
    """

    metrics: pd.DataFrame
    annotators: pd.DataFrame
    summary: dict[str, Any]
    maps: dict[str, np.ndarray]
    images: list[Image] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def torch_available() -> bool:
    """Whether the mitosis part can run (PyTorch importable)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _figures(result: Any, n_maps: int = 2) -> list[Image]:
    from crowdmed.report.crowd import plot_spammer_scores
    from crowdmed.report.figures import figure_to_png, plot_detection_map

    images = []
    cands = result.candidates
    for name in sorted(result.maps)[:n_maps]:
        fig, ax = plot_detection_map(
            result.test_images[name],
            result.maps[name],
            candidates=cands[cands["image"].astype(str) == name],
            points=result.test_points[result.test_points["image"].astype(str) == name],
            threshold=0.5,
        )
        ax.set_title(f"{name} (synthetic)")
        images.append(
            Image(
                figure_to_png(fig),
                alt=f"Detection map of synthetic field {name} with detections and reference",
                caption=(
                    f"Synthetic field {name}: fused three-scale detection map (colour), "
                    "detections scoring at least 0.5 (crosses) and reference mitoses (circles)."
                ),
            )
        )
    fig, _ = plot_spammer_scores(result.annotators, score="est_spammer_score")
    images.append(
        Image(
            figure_to_png(fig),
            alt="Scatter plot of each simulated worker's spammer score against quiz accuracy",
            caption=(
                "Simulated workers: spammer score estimated by AggNet's aggregation layer "
                "(0 = votes independent of the truth) against their accuracy on the gold "
                "questions, as in Albarqouni et al.'s Fig. 8."
            ),
        )
    )
    return images


def run_mitosis_part(
    *,
    random_state: int | None = 0,
    figures: bool = True,
    progress: Callable[[str], None] | None = None,
) -> MitosisPart:
    """Run the synthetic crowd loop and collect what the report shows.

    Args:
        random_state: Seed of every step (``None`` is taken as 0 so the run stays
            reproducible).
        figures: Draw the maps and the annotator plot (needs matplotlib).
        progress: Called with the name of each step of the loop.

    Returns:
        Tables, maps, figures and headline numbers.
    """
    import torch

    from crowdmed.pipelines.aggnet_loop import run_crowd_loop

    seed = 0 if random_state is None else int(random_state)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the loop's networks are tiny: one thread is fastest
    try:
        result = run_crowd_loop(
            random_state=seed,
            progress=None if progress is None else (lambda step, done, total: progress(step)),
        )
    finally:
        torch.set_num_threads(threads)
    metrics = result.metrics.set_index("model")
    ann = result.annotators
    kinds = ann.groupby("kind")
    summary: dict[str, Any] = {
        "synthetic": True,
        "note": NOTE,
        "settings": result.settings,
        "n_test_fields": len(result.maps),
        "n_tasks": len(result.truth),
        "n_gold_tasks": int(result.truth["is_gold"].sum()),
        "n_annotators": len(ann),
        "auc_unrefined": float(metrics.loc["unrefined", "auc"]),
        "auc_aggnet": float(metrics.loc["AggNet", "auc"]),
        "f1_unrefined": float(metrics.loc["unrefined", "f1"]),
        "f1_aggnet": float(metrics.loc["AggNet", "f1"]),
        "truth_accuracy_aggnet": float(metrics.loc["AggNet", "truth_accuracy"]),
        "truth_accuracy_mv": float((result.truth["mv"] == result.truth["truth"]).mean()),
        "est_spammer_score_by_kind": {
            str(k): float(v) for k, v in kinds["est_spammer_score"].mean().items()
        },
        "quiz_accuracy_by_kind": {
            str(k): float(v) for k, v in kinds["quiz_accuracy"].mean().items()
        },
        "seconds": float(sum(result.timings.values())),
    }
    images = _figures(result) if figures else []
    return MitosisPart(
        metrics=result.metrics,
        annotators=ann,
        summary=summary,
        maps=result.maps,
        images=images,
        timings=result.timings,
    )
