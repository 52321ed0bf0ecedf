"""Demo part: the AggNet crowd loop on synthetic high-power fields (needs PyTorch).

Everything in this part is synthetic: the fields come from
:func:`crowdmed.pathology.make_synthetic_fields` (an optical model, not tissue) and the votes
from simulated workers, a quarter of them spammers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdmed.data.io import from_long_frame
from crowdmed.quality import reader_operating_points
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
            specificity and spammer score, quiz accuracy, number of votes, and the
            sensitivity and specificity of their votes against the reference labels of the
            crowd tasks (``measured_*``, with exact 95 % Jeffreys intervals ``*_low``/``*_high``).
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


def _measured_points(votes_csv: Path, truth: pd.DataFrame) -> pd.DataFrame:
    """Each worker's sensitivity/specificity against the reference labels of the tasks."""
    votes = pd.read_csv(votes_csv, dtype={"task": str, "annotator": str, "label": str})
    votes["label"] = (votes["label"] == "mitosis").astype(np.int64)
    cl = from_long_frame(votes, item="task", annotator="annotator", label="label", classes=[0, 1])
    reference = truth.set_index(truth["task"].astype(str))["truth"]
    reference = reference.reindex(cl.item_ids).fillna(-1).to_numpy(np.int64)
    points = reader_operating_points(cl, reference).set_index("annotator")
    return points.rename(columns=lambda c: f"measured_{c}").reset_index()


def _consensus_points(truth: pd.DataFrame) -> pd.DataFrame:
    """Sensitivity and specificity of the majority vote and of AggNet's inferred truth."""
    ref = truth["truth"].to_numpy().astype(bool)
    rows = {}
    for name, said in (
        ("majority vote", truth["mv"].to_numpy().astype(bool)),
        ("AggNet consensus", truth["p_mitosis"].to_numpy() >= 0.5),
    ):
        rows[name] = {
            "sensitivity": float((said & ref).sum() / max(ref.sum(), 1)),
            "specificity": float((~said & ~ref).sum() / max((~ref).sum(), 1)),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "consensus"
    return table


def roc_figure(annotators: pd.DataFrame, consensus: pd.DataFrame) -> Image:
    """Workers in ROC space (measured on the crowd tasks) next to the two consensus labels."""
    from crowdmed.report.figures import figure_to_png
    from crowdmed.report.readers import plot_operating_points

    points = annotators.set_index("annotator")
    points = points[[c for c in points.columns if c.startswith("measured_")]]
    points.columns = [c.removeprefix("measured_") for c in points.columns]
    fig, _ = plot_operating_points(
        points, consensus=consensus, title="Crowd workers vs reference (synthetic)"
    )
    return Image(
        figure_to_png(fig),
        alt="ROC space: each simulated worker's sensitivity and false positive rate with 95 % "
        "intervals, and the majority-vote and AggNet consensus",
        caption=(
            "Simulated workers (dots, 95 % intervals) against the reference labels of the "
            "crowd tasks, with the majority vote and AggNet's inferred truth: the closer to "
            "the top left, the better."
        ),
    )


def _figures(result: Any, consensus: pd.DataFrame, n_maps: int = 2) -> list[Image]:
    from crowdmed.report.crowd import plot_spammer_scores
    from crowdmed.report.figures import figure_to_png, plot_detection_map

    images = [roc_figure(result.annotators, consensus)]
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
        with tempfile.TemporaryDirectory(prefix="crowdmed-demo-loop-") as work:
            result = run_crowd_loop(
                random_state=seed,
                workdir=work,
                progress=None if progress is None else (lambda step, done, total: progress(step)),
            )
            measured = _measured_points(Path(work) / "votes.csv", result.truth)
    finally:
        torch.set_num_threads(threads)
    metrics = result.metrics.set_index("model")
    ann = result.annotators.merge(measured, on="annotator", how="left")
    result.annotators = ann
    consensus = _consensus_points(result.truth)
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
        "consensus_operating_points": {
            str(k): {c: float(v) for c, v in row.items()} for k, row in consensus.iterrows()
        },
        "seconds": float(sum(result.timings.values())),
    }
    images = _figures(result, consensus) if figures else []
    return MitosisPart(
        metrics=result.metrics,
        annotators=ann,
        summary=summary,
        maps=result.maps,
        images=images,
        timings=result.timings,
    )
