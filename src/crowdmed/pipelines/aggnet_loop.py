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

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from crowdmed.crowdsourcing.tasks import TaskPackage, export_tasks
from crowdmed.crowdsourcing.votes import read_votes
from crowdmed.simulate.votes import SimulatedVotes, simulate_votes

if TYPE_CHECKING:
    from crowdmed.data.labels import CrowdLabels
    from crowdmed.pathology.detector import MultiScaleDetector
    from crowdmed.pathology.synthetic import SyntheticFields
    from crowdmed.pipelines.refine import RefineResult

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
            the majority vote ``mv`` (eq. 2 of the paper: ties positive).
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
    detector_preset: str = "fast",
    radius: float = 15.0,
    candidate_threshold: float = 0.05,
    gold_rate: float = 0.1,
    n_annotators: int = 20,
    votes_per_task: int = 10,
    spammer_fraction: float = 0.25,
    refine_preset: str = "paper",
    refine_lr: float | None = None,
    refine_epochs: int | None = None,
    tau: float = 0.5,
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
        detector_preset: Optimiser preset of the detector
            (:data:`crowdmed.training.patch_detector.DETECTOR_PRESETS`): ``"fast"`` (Adam)
            by default, because the paper's SGD (``"paper"``) needs many more epochs than a
            CPU run affords.
        radius: Matching and suppression radius in pixels (15 px suits the synthetic fields).
        candidate_threshold: Lower operating point: candidates scoring at least this go to
            the crowd, and test candidates at least this are re-scored.
        gold_rate: Share of the tasks that are gold questions.
        n_annotators: Simulated workers.
        votes_per_task: Votes per task (at least 10 in the paper's setting).
        spammer_fraction: Share of spammers among the workers.
        refine_preset: Training preset of the refinement and of the baselines
            (:data:`crowdmed.pipelines.refine.REFINE_PRESETS`): ``"paper"`` (SGD, momentum
            0.9, weight decay 5e-4, learning rate 5e-5, 100 full-batch epochs) or ``"fast"``.
        refine_lr: Learning rate of the refinement and of the baselines (``None``: the
            preset's).
        refine_epochs: Full-batch EM rounds / epochs of the refinement and of the baselines
            (``None``: the preset's).
        tau: Strength ``τ`` of AggNet's quiz trust prior (eq. 8; the paper's range [0.1, 1]).
        baselines: Also fine-tune AM-MV, AM-GLAD and AM-GT.
        tta: Test-time augmentation in the detection maps (8× slower).
        workdir: Folder for the task package and the votes; a temporary folder (deleted at
            the end) when omitted.
        random_state: Seed of every step.
        progress: Called as ``progress(step, done, total)`` when each step starts.

    Returns:
        Metrics, annotator table, inferred truth, test maps and candidates, timings.
    """
    settings = _LoopSettings(
        n_train=n_train,
        n_crowd=n_crowd,
        n_gold_fields=n_gold_fields,
        n_test=n_test,
        size=size,
        detector_epochs=detector_epochs,
        detector_preset=detector_preset,
        radius=radius,
        candidate_threshold=candidate_threshold,
        gold_rate=gold_rate,
        n_annotators=n_annotators,
        votes_per_task=votes_per_task,
        spammer_fraction=spammer_fraction,
        refine_preset=refine_preset,
        refine_lr=refine_lr,
        refine_epochs=refine_epochs,
        tau=tau,
        baselines=baselines,
        tta=tta,
        random_state=random_state,
    )
    clock = _StepClock(progress)
    tmp = tempfile.TemporaryDirectory(prefix="crowdmed-loop-") if workdir is None else None
    work = Path(tmp.name if tmp is not None else workdir)  # type: ignore[arg-type]
    try:
        return _run_steps(settings, work, clock, keep_package=tmp is None)
    finally:
        if tmp is not None:
            tmp.cleanup()


@dataclass(frozen=True)
class _LoopSettings:
    """The arguments of :func:`run_crowd_loop` that shape the run (stored in its result)."""

    n_train: int
    n_crowd: int
    n_gold_fields: int
    n_test: int
    size: tuple[int, int]
    detector_epochs: int
    detector_preset: str
    radius: float
    candidate_threshold: float
    gold_rate: float
    n_annotators: int
    votes_per_task: int
    spammer_fraction: float
    refine_preset: str
    refine_lr: float | None
    refine_epochs: int | None
    tau: float
    baselines: bool
    tta: bool
    random_state: int

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain values, ``size`` as a list."""
        return {**dataclasses.asdict(self), "size": list(self.size)}


class _StepClock:
    """Times the loop's steps and reports each one to ``progress`` as it starts."""

    def __init__(self, progress: LoopHook | None) -> None:
        self.progress = progress
        self.timings: dict[str, float] = {}
        self._started = time.perf_counter()
        self._current = ""

    def start(self, i: int) -> None:
        """Close the running step and start step ``i`` (``len(_STEPS)``: the end)."""
        now = time.perf_counter()
        if self._current:
            self.timings[self._current] = now - self._started
        self._started, self._current = now, _STEPS[i] if i < len(_STEPS) else ""
        if self.progress is not None and i < len(_STEPS):
            self.progress(_STEPS[i], i, len(_STEPS))


@dataclass
class _Fields:
    """The synthetic fields of each role."""

    train: SyntheticFields
    crowd: SyntheticFields
    gold: SyntheticFields
    test: SyntheticFields


@dataclass
class _Candidates:
    """The detector's candidates on the crowd, gold and test fields."""

    crowd: pd.DataFrame
    crowd_tp: np.ndarray
    gold_pool: pd.DataFrame
    test: pd.DataFrame
    test_tp: np.ndarray
    maps: dict[Any, np.ndarray]


@dataclass
class _CrowdData:
    """The imported crowd labels with each item's true label and detector patches."""

    labels: CrowdLabels
    positions: np.ndarray
    truth: np.ndarray
    patches: np.ndarray


def _run_steps(
    settings: _LoopSettings, work: Path, clock: _StepClock, *, keep_package: bool
) -> CrowdLoopResult:
    from crowdmed.pipelines.refine import scale_index

    clock.start(0)
    fields = _make_fields(settings)
    clock.start(1)
    detector = _train_detector(settings, fields.train)
    clock.start(2)
    cands = _detect_candidates(settings, detector, fields)
    clock.start(3)
    images = {**fields.crowd.as_dict(), **fields.gold.as_dict()}
    pkg = export_tasks(
        images,
        cands.crowd,
        work / "package",
        gold=cands.gold_pool,
        gold_rate=settings.gold_rate,
        patch_size=99,
        label_studio=True,
        random_state=settings.random_state,
    )
    clock.start(4)
    truth = _task_truth(pkg, cands)
    sim = _simulate_crowd(settings, pkg, truth, work / "votes.csv")
    clock.start(5)
    crowd = _import_votes(detector, images, pkg, truth, work / "votes.csv")
    base = detector.models[scale_index(detector, 0.33)]
    clock.start(6)
    refined = _refine(settings, base, crowd)
    models: dict[str, Any] = {"unrefined": base, "AggNet": refined.model}
    targets: dict[str, np.ndarray] = {"AggNet": refined.truth["label"].to_numpy()}
    clock.start(7)
    if settings.baselines:
        _fine_tune_baselines(settings, base, crowd, models, targets)
    clock.start(8)
    metrics, cand_table = _evaluate(settings, detector, fields.test, cands, models, targets, crowd)
    annotators = _annotator_table(sim, refined)
    truth_table = _truth_table(settings, pkg, crowd, refined)
    clock.start(len(_STEPS))
    return CrowdLoopResult(
        metrics=metrics,
        annotators=annotators,
        truth=truth_table,
        maps={str(k): v for k, v in cands.maps.items()},
        candidates=cand_table,
        package=pkg if keep_package else None,
        timings=clock.timings,
        settings=settings.as_dict(),
        test_images={str(k): v for k, v in fields.test.as_dict().items()},
        test_points=fields.test.points.reset_index(drop=True),
    )


def _make_fields(settings: _LoopSettings) -> _Fields:
    from crowdmed.pathology.synthetic import make_synthetic_fields

    s = settings
    n_all = s.n_train + s.n_crowd + s.n_gold_fields + s.n_test
    fields = make_synthetic_fields(n_all, size=s.size, random_state=s.random_state)
    split = np.cumsum([s.n_train, s.n_crowd, s.n_gold_fields])
    return _Fields(
        train=fields.subset(range(0, split[0])),
        crowd=fields.subset(range(split[0], split[1])),
        gold=fields.subset(range(split[1], split[2])),
        test=fields.subset(range(split[2], n_all)),
    )


def _train_detector(settings: _LoopSettings, train: SyntheticFields) -> MultiScaleDetector:
    from crowdmed.training.patch_detector import train_detector

    return train_detector(
        train.as_dict(),
        train.points,
        epochs=settings.detector_epochs,
        preset=settings.detector_preset,
        radius=settings.radius,
        random_state=settings.random_state,
        negatives_per_image=200,
    )


def _detect_candidates(
    settings: _LoopSettings, detector: MultiScaleDetector, fields: _Fields
) -> _Candidates:
    """Candidates of the crowd fields, the gold pool and the test candidates with their maps."""
    from crowdmed.pathology.detector import detect

    threshold, tta, radius = settings.candidate_threshold, settings.tta, settings.radius
    cands = detect(detector, fields.crowd.as_dict(), threshold=threshold, tta=tta)
    cands_tp = _tp(cands, fields.crowd.points, radius)
    gold_cands = detect(detector, fields.gold.as_dict(), threshold=threshold, tta=tta)
    gold_tp = _tp(gold_cands, fields.gold.points, radius).astype(bool)
    # gold questions: the reference points and the detector's false candidates
    pool = pd.concat(
        [
            fields.gold.points.assign(label=1),
            gold_cands.loc[~gold_tp, ["image", "x", "y"]].assign(label=0),
        ],
        ignore_index=True,
    )
    maps: dict[Any, np.ndarray] = {}
    test_cands = detect(detector, fields.test.as_dict(), threshold=threshold, tta=tta, maps=maps)
    test_tp = _tp(test_cands, fields.test.points, radius)
    return _Candidates(cands, cands_tp, pool, test_cands, test_tp, maps)


def _task_truth(pkg: TaskPackage, cands: _Candidates) -> pd.Series:
    """The true label of every task: matched candidates for real tasks, gold labels else."""
    m = pkg.manifest
    key = cands.crowd.assign(t=cands.crowd_tp).set_index(["image", "x", "y"])["t"]
    key = key[~key.index.duplicated()]
    truth = pd.Series(-1, index=m.index, dtype=np.int64)
    real = ~m["is_gold"].to_numpy()
    idx = pd.MultiIndex.from_frame(m.loc[real, ["image", "x", "y"]])
    truth[real] = key.reindex(idx).to_numpy()
    gold_labels = pkg.gold_labels()
    truth[~real] = gold_labels[~real]
    return truth


def _simulate_crowd(
    settings: _LoopSettings, pkg: TaskPackage, truth: pd.Series, votes_csv: Path
) -> SimulatedVotes:
    sim = simulate_votes(
        pkg.tasks,
        truth.to_numpy(),
        n_annotators=settings.n_annotators,
        votes_per_task=settings.votes_per_task,
        spammer_fraction=settings.spammer_fraction,
        random_state=settings.random_state,
    )
    sim.votes.to_csv(votes_csv, index=False)
    return sim


def _import_votes(
    detector: MultiScaleDetector,
    images: dict[str, np.ndarray],
    pkg: TaskPackage,
    truth: pd.Series,
    votes_csv: Path,
) -> _CrowdData:
    from crowdmed.pipelines.refine import detector_patches

    cl = read_votes(votes_csv, pkg).labels
    pos = pd.Index(pkg.tasks).get_indexer(cl.item_ids)
    item_truth = truth.to_numpy()[pos]
    x = detector_patches(detector, images, pkg.manifest.iloc[pos][["image", "x", "y"]])
    return _CrowdData(cl, pos, item_truth, x)


def _refine(settings: _LoopSettings, base: Any, crowd: _CrowdData) -> RefineResult:
    from crowdmed.pipelines.refine import refine

    return refine(
        base,
        crowd.patches,
        crowd.labels,
        preset=settings.refine_preset,
        lr=settings.refine_lr,
        epochs=settings.refine_epochs,
        tau=settings.tau,
        random_state=settings.random_state,
    )


def _fine_tune_baselines(
    settings: _LoopSettings,
    base: Any,
    crowd: _CrowdData,
    models: dict[str, Any],
    targets: dict[str, np.ndarray],
) -> None:
    """Fine-tune AM-MV, AM-GLAD and AM-GT; add their networks and targets in place."""
    from crowdmed.pipelines.refine import fine_tune

    for name, target in (("AM-MV", "mv"), ("AM-GLAD", "glad"), ("AM-GT", "gt")):
        r = fine_tune(
            base,
            crowd.patches,
            crowd.labels,
            target=target,
            truth=crowd.truth,
            preset=settings.refine_preset,
            lr=settings.refine_lr,
            epochs=settings.refine_epochs,
            random_state=settings.random_state,
        )
        models[name] = r.model
        targets[name] = r.truth["label"].to_numpy()


def _auc(scores: np.ndarray, truth: np.ndarray) -> float:
    from crowdmed.metrics import roc_auc

    return roc_auc(scores, truth) if len(np.unique(truth)) == 2 else float("nan")


def _metrics_row(name: str, res: Any, auc: float, truth_accuracy: float) -> dict[str, Any]:
    return {
        "model": name,
        "f1": res.f1,
        "precision": res.precision,
        "recall": res.recall,
        "auc": auc,
        "truth_accuracy": truth_accuracy,
    }


def _evaluate(
    settings: _LoopSettings,
    detector: MultiScaleDetector,
    test: SyntheticFields,
    cands: _Candidates,
    models: dict[str, Any],
    targets: dict[str, np.ndarray],
    crowd: _CrowdData,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every network as a second stage on the test candidates: metrics and probabilities."""
    import torch

    from crowdmed.metrics.points import match_points
    from crowdmed.pipelines.refine import detector_patches, predict_proba

    test_cands, test_truth, radius = cands.test, cands.test_tp, settings.radius
    x_test = detector_patches(detector, test.as_dict(), test_cands[["image", "x", "y"]])
    cand_table = test_cands.assign(tp=test_truth)
    det_res = match_points(test_cands[test_cands["score"] >= 0.5], test.points, radius=radius)
    auc = _auc(test_cands["score"].to_numpy(), test_truth)
    rows = [_metrics_row("detector (fused, 0.5)", det_res, auc, float("nan"))]
    order = ["unrefined", "AM-MV", "AM-GLAD", "AM-GT", "AggNet"]
    for name in [n for n in order if n in models]:
        with torch.no_grad():
            p = predict_proba(models[name], x_test)
        cand_table[f"p_{name}"] = p
        scored = test_cands.assign(score=p)
        res = match_points(scored[p >= 0.5], test.points, radius=radius)
        accuracy = float((targets[name] == crowd.truth).mean()) if name in targets else float("nan")
        rows.append(_metrics_row(name, res, _auc(p, test_truth), accuracy))
    return pd.DataFrame(rows), cand_table


def _annotator_table(sim: SimulatedVotes, refined: RefineResult) -> pd.DataFrame:
    est = refined.annotators.rename(
        columns={
            "sensitivity": "est_sensitivity",
            "specificity": "est_specificity",
            "spammer_score": "est_spammer_score",
        }
    )
    return sim.annotators.merge(est, on="annotator", how="left")


def _truth_table(
    settings: _LoopSettings, pkg: TaskPackage, crowd: _CrowdData, refined: RefineResult
) -> pd.DataFrame:
    from crowdmed.aggregation.classification.sens_spec import binary_majority_vote

    cl = crowd.labels
    mv = binary_majority_vote(cl.to_dense())  # eq. 2: ties go to the positive class
    return pd.DataFrame(
        {
            "task": cl.item_ids,
            "is_gold": pkg.manifest["is_gold"].to_numpy()[crowd.positions],
            "truth": crowd.truth,
            "p_mitosis": refined.truth["p_mitosis"].to_numpy(),
            "mv": mv,
        }
    )
