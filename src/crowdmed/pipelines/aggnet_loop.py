"""The whole crowd loop on synthetic fields, end to end (torch).

generate fields → train the multi-scale detector → detect candidates at a low operating point
→ export a task package (with gold questions) → simulate crowd votes → import them → refine the
0.33-scale network with AggNet's aggregation layer (and fine-tune the AM-MV, AM-GLAD and
AM-GT baselines) → evaluate every network as a second stage that re-scores the detector's
candidates on held-out test fields (F1 and AUC, as in the paper's Table IV).

Everything is synthetic and seeded: the fields (:func:`crowdmed.pathology.make_synthetic_fields`)
and the crowd (:func:`crowdmed.simulate.simulate_votes`, with spammers).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdmed.crowdsourcing.tasks import TaskPackage, export_tasks
from crowdmed.crowdsourcing.votes import read_votes
from crowdmed.simulate.votes import simulate_votes

__all__ = ["CrowdLoopResult", "run_crowd_loop"]

#: ``progress(step, done, total)``: called when each of the loop's steps starts.
LoopHook = Callable[[str, int, int], None]

_STEPS = (
    "generate fields",
    "train detector",
    "detect candidates",
    "export tasks",
    "simulate votes",
    "import votes",
    "refine (AggNet)",
    "fine-tune baselines",
    "evaluate",
)


@dataclass
class CrowdLoopResult:
    """What :func:`run_crowd_loop` measured.

    Attributes:
        metrics: One row per model: ``model, f1, precision, recall, auc`` on the test
            candidates, plus ``truth_accuracy`` of its training labels on the crowd tasks.
        annotators: One row per simulated annotator: ``annotator, kind``, the true
            ``sensitivity``/``specificity``/``spammer_score``, the estimated ones
            (``est_*``), ``quiz_accuracy`` (from the gold tasks) and ``n_votes``.
        truth: One row per crowd task: ``task, is_gold, truth``, AggNet's ``p_mitosis`` and
            the majority vote ``mv``.
        maps: Fused detection maps of the test fields (unrefined detector), keyed by name.
        test_images: The synthetic test fields (``H x W x 3`` uint8), keyed by name.
        test_points: Reference points ``image, x, y`` of the test fields.
        candidates: Test candidates ``image, x, y, score, tp`` with each model's probability
            in a ``p_<model>`` column.
        package: The task package (in ``workdir``; deleted with a temporary workdir).
        timings: Seconds per step.
        settings: The arguments of the run.
    """

    metrics: pd.DataFrame
    annotators: pd.DataFrame
    truth: pd.DataFrame
    maps: dict[str, np.ndarray]
    candidates: pd.DataFrame
    package: TaskPackage | None
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    test_images: dict[str, np.ndarray] = field(default_factory=dict)
    test_points: pd.DataFrame = field(default_factory=pd.DataFrame)


def _tp(cands: pd.DataFrame, points: pd.DataFrame, radius: float) -> np.ndarray:
    from crowdmed.metrics.points import match_points

    if len(cands) == 0:
        return np.zeros(0, dtype=np.int64)
    res = match_points(cands, points, radius=radius)
    det = res.detections
    return det["tp"].to_numpy().astype(np.int64)


def run_crowd_loop(
    *,
    n_train: int = 8,
    n_crowd: int = 12,
    n_gold_fields: int = 4,
    n_test: int = 8,
    size: tuple[int, int] = (192, 192),
    detector_epochs: int = 4,
    radius: float = 15.0,
    candidate_threshold: float = 0.05,
    gold_rate: float = 0.1,
    n_annotators: int = 20,
    votes_per_task: int = 10,
    spammer_fraction: float = 0.25,
    refine_lr: float = 1e-3,
    refine_epochs: int = 50,
    tau: float = 10.0,
    baselines: bool = True,
    tta: bool = False,
    workdir: str | os.PathLike[str] | None = None,
    random_state: int = 0,
    progress: LoopHook | None = None,
) -> CrowdLoopResult:
    """Run the synthetic crowd loop end to end.

    Args:
        n_train: Fields with reference points for training the detector.
        n_crowd: Fields whose candidates go to the crowd.
        n_gold_fields: Fields whose reference points and known false candidates form the pool
            of gold questions.
        n_test: Held-out fields for the evaluation.
        size: ``(height, width)`` of every field.
        detector_epochs: Epochs per scale of the detector.
        radius: Matching and suppression radius in pixels (15 px suits the synthetic fields).
        candidate_threshold: Lower operating point: candidates scoring at least this go to
            the crowd, and test candidates at least this are re-scored.
        gold_rate: Share of the tasks that are gold questions.
        n_annotators: Simulated workers.
        votes_per_task: Votes per task (at least 10 in the paper's setting).
        spammer_fraction: Share of spammers among the workers.
        refine_lr: Learning rate of the refinement and of the baselines.
        refine_epochs: Full-batch EM rounds / epochs of the refinement and of the baselines.
        tau: Strength of AggNet's quiz trust prior.
        baselines: Also fine-tune AM-MV, AM-GLAD and AM-GT.
        tta: Test-time augmentation in the detection maps (8× slower).
        workdir: Folder for the task package and the votes; a temporary folder (deleted at
            the end) when omitted.
        random_state: Seed of every step.
        progress: Called as ``progress(step, done, total)`` when each step starts.

    Returns:
        Metrics, annotator table, inferred truth, test maps and candidates, timings.
    """
    import torch

    from crowdmed.aggregation import MajorityVote
    from crowdmed.metrics import roc_auc
    from crowdmed.metrics.points import match_points
    from crowdmed.pathology.detector import detect
    from crowdmed.pathology.synthetic import make_synthetic_fields
    from crowdmed.pipelines.refine import (
        detector_patches,
        fine_tune,
        predict_proba,
        refine,
        scale_index,
    )
    from crowdmed.training.patch_detector import train_detector

    settings: dict[str, Any] = {
        "n_train": n_train,
        "n_crowd": n_crowd,
        "n_gold_fields": n_gold_fields,
        "n_test": n_test,
        "size": list(size),
        "detector_epochs": detector_epochs,
        "radius": radius,
        "candidate_threshold": candidate_threshold,
        "gold_rate": gold_rate,
        "n_annotators": n_annotators,
        "votes_per_task": votes_per_task,
        "spammer_fraction": spammer_fraction,
        "refine_lr": refine_lr,
        "refine_epochs": refine_epochs,
        "tau": tau,
        "baselines": baselines,
        "tta": tta,
        "random_state": random_state,
    }
    timings: dict[str, float] = {}
    started: list[float] = [time.perf_counter()]
    current: list[str] = [""]

    def step(i: int) -> None:
        now = time.perf_counter()
        if current[0]:
            timings[current[0]] = now - started[0]
        started[0], current[0] = now, _STEPS[i] if i < len(_STEPS) else ""
        if progress is not None and i < len(_STEPS):
            progress(_STEPS[i], i, len(_STEPS))

    tmp = tempfile.TemporaryDirectory(prefix="crowdmed-loop-") if workdir is None else None
    work = Path(tmp.name if tmp is not None else workdir)  # type: ignore[arg-type]
    try:
        step(0)
        n_all = n_train + n_crowd + n_gold_fields + n_test
        fields = make_synthetic_fields(n_all, size=size, random_state=random_state)
        split = np.cumsum([n_train, n_crowd, n_gold_fields])
        train = fields.subset(range(0, split[0]))
        crowd = fields.subset(range(split[0], split[1]))
        goldf = fields.subset(range(split[1], split[2]))
        test = fields.subset(range(split[2], n_all))

        step(1)
        detector = train_detector(
            train.as_dict(),
            train.points,
            epochs=detector_epochs,
            radius=radius,
            random_state=random_state,
            negatives_per_image=200,
        )

        step(2)
        cands = detect(detector, crowd.as_dict(), threshold=candidate_threshold, tta=tta)
        cands_truth = _tp(cands, crowd.points, radius)
        gold_cands = detect(detector, goldf.as_dict(), threshold=candidate_threshold, tta=tta)
        gold_tp = _tp(gold_cands, goldf.points, radius).astype(bool)
        pool = pd.concat(
            [
                goldf.points.assign(label=1),
                gold_cands.loc[~gold_tp, ["image", "x", "y"]].assign(label=0),
            ],
            ignore_index=True,
        )
        maps: dict[Any, np.ndarray] = {}
        test_cands = detect(
            detector, test.as_dict(), threshold=candidate_threshold, tta=tta, maps=maps
        )
        test_truth = _tp(test_cands, test.points, radius)

        step(3)
        images = {**crowd.as_dict(), **goldf.as_dict()}
        pkg = export_tasks(
            images,
            cands,
            work / "package",
            gold=pool,
            gold_rate=gold_rate,
            patch_size=99,
            label_studio=True,
            random_state=random_state,
        )

        step(4)
        m = pkg.manifest
        key = cands.assign(t=cands_truth).set_index(["image", "x", "y"])["t"]
        key = key[~key.index.duplicated()]
        truth = pd.Series(-1, index=m.index, dtype=np.int64)
        real = ~m["is_gold"].to_numpy()
        idx = pd.MultiIndex.from_frame(m.loc[real, ["image", "x", "y"]])
        truth[real] = key.reindex(idx).to_numpy()
        gold_labels = pkg.gold_labels()
        truth[~real] = gold_labels[~real]
        sim = simulate_votes(
            pkg.tasks,
            truth.to_numpy(),
            n_annotators=n_annotators,
            votes_per_task=votes_per_task,
            spammer_fraction=spammer_fraction,
            random_state=random_state,
        )
        sim.votes.to_csv(work / "votes.csv", index=False)

        step(5)
        imported = read_votes(work / "votes.csv", pkg)
        cl = imported.labels
        pos = pd.Index(pkg.tasks).get_indexer(cl.item_ids)
        item_truth = truth.to_numpy()[pos]
        x = detector_patches(detector, images, m.iloc[pos][["image", "x", "y"]])
        base = detector.models[scale_index(detector, 0.33)]

        step(6)
        refined = refine(
            base,
            x,
            cl,
            lr=refine_lr,
            epochs=refine_epochs,
            tau=tau,
            random_state=random_state,
        )
        models: dict[str, Any] = {"unrefined": base, "AggNet": refined.model}
        targets: dict[str, np.ndarray] = {"AggNet": refined.truth["label"].to_numpy()}

        step(7)
        if baselines:
            for name, target in (("AM-MV", "mv"), ("AM-GLAD", "glad"), ("AM-GT", "gt")):
                r = fine_tune(
                    base,
                    x,
                    cl,
                    target=target,
                    truth=item_truth,
                    lr=refine_lr,
                    epochs=refine_epochs,
                    random_state=random_state,
                )
                models[name] = r.model
                targets[name] = r.truth["label"].to_numpy()

        step(8)
        x_test = detector_patches(detector, test.as_dict(), test_cands[["image", "x", "y"]])
        rows = []
        cand_table = test_cands.assign(tp=test_truth)
        det_res = match_points(test_cands[test_cands["score"] >= 0.5], test.points, radius=radius)
        rows.append(
            {
                "model": "detector (fused, 0.5)",
                "f1": det_res.f1,
                "precision": det_res.precision,
                "recall": det_res.recall,
                "auc": roc_auc(test_cands["score"].to_numpy(), test_truth)
                if len(np.unique(test_truth)) == 2
                else float("nan"),
                "truth_accuracy": float("nan"),
            }
        )
        order = ["unrefined", "AM-MV", "AM-GLAD", "AM-GT", "AggNet"]
        for name in [n for n in order if n in models]:
            with torch.no_grad():
                p = predict_proba(models[name], x_test)
            cand_table[f"p_{name}"] = p
            scored = test_cands.assign(score=p)
            res = match_points(scored[p >= 0.5], test.points, radius=radius)
            rows.append(
                {
                    "model": name,
                    "f1": res.f1,
                    "precision": res.precision,
                    "recall": res.recall,
                    "auc": roc_auc(p, test_truth)
                    if len(np.unique(test_truth)) == 2
                    else float("nan"),
                    "truth_accuracy": float((targets[name] == item_truth).mean())
                    if name in targets
                    else float("nan"),
                }
            )
        metrics = pd.DataFrame(rows)

        est = refined.annotators.rename(
            columns={
                "sensitivity": "est_sensitivity",
                "specificity": "est_specificity",
                "spammer_score": "est_spammer_score",
            }
        )
        annotators = sim.annotators.merge(est, on="annotator", how="left")
        mv = MajorityVote(random_state=random_state).fit(cl).labels_
        truth_table = pd.DataFrame(
            {
                "task": cl.item_ids,
                "is_gold": m["is_gold"].to_numpy()[pos],
                "truth": item_truth,
                "p_mitosis": refined.truth["p_mitosis"].to_numpy(),
                "mv": mv,
            }
        )
        step(len(_STEPS))
        return CrowdLoopResult(
            metrics=metrics,
            annotators=annotators,
            truth=truth_table,
            maps={str(k): v for k, v in maps.items()},
            candidates=cand_table,
            package=pkg if tmp is None else None,
            timings=timings,
            settings=settings,
            test_images={str(k): v for k, v in test.as_dict().items()},
            test_points=test.points.reset_index(drop=True),
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
