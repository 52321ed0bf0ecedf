"""Refine a mitosis patch classifier with crowd votes: AggNet's aggregation layer and baselines.

:func:`refine` puts AggNet's EM aggregation layer (:class:`crowdmed.nn.AggNetEM`) on top of a
trained patch network (the 0.33-scale model of the detector) and fine-tunes it on the crowd's
raw votes with a small learning rate, one full-batch step per epoch over the whole vote set
(E-step with the network's current probabilities, one gradient step on the expected
log-likelihood, M-step of every annotator's sensitivity and specificity with the quiz trust
prior), as in Albarqouni et al. (2016). It returns the refined network, the inferred truth of
every task and each annotator's sensitivity, specificity and spammer score.

:func:`fine_tune` gives the paper's baselines with the same network and schedule: the augmented
model fine-tuned on majority-vote labels (AM-MV), on GLAD's labels (AM-GLAD) or on the reference
labels (AM-GT). Both reuse :class:`crowdmed.training.CrowdClassifier` (methods ``aggnet`` and
``dl-true``). The training settings come from a preset (:data:`REFINE_PRESETS`): ``"paper"``
(the default) is the paper's refinement, SGD with momentum 0.9, weight decay 5e-4, learning
rate 5e-5, the whole crowd set as one batch, 100 epochs.

Kept epoch: the paper retrains the augmented models "for 100 epochs, but pick[s] the best
performing model for each" (section III, 6) without naming the criterion or the data it is
measured on (the validation split it describes, section III, 1, is that of the initial model),
so the refinement and the AM-* baselines keep the weights of the last epoch
(``settings["kept_epoch"]``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import nn

from crowdmed.data.labels import CrowdLabels
from crowdmed.nn.layers import AggNetEM
from crowdmed.quality import spammer_score
from crowdmed.training import CrowdClassifier

__all__ = [
    "REFINE_PRESETS",
    "RefineResult",
    "detector_patches",
    "fine_tune",
    "model_inputs",
    "predict_proba",
    "refine",
    "scale_index",
    "with_model",
]

#: ``progress(epoch, epochs, metrics)``, called after every epoch.
EpochHook = Callable[[int, int, dict[str, float]], None]

# each baseline trains on fixed hard labels (computed here) with the plain loss
_BASELINES = {"mv": "dl-true", "glad": "dl-true", "gt": "dl-true"}

#: Training settings of the refinement (and of the AM-* baselines). ``"paper"``: Albarqouni et
#: al. (2016), section III-2 and III-5: SGD with momentum 0.9 and weight decay 5e-4 (the
#: settings of the initial training), learning rate 5e-5, the whole crowd set as one batch,
#: 100 epochs. ``"fast"``: Adam at 1e-3 for 50 full-batch epochs (moves a small network
#: further in fewer steps; not the paper's).
REFINE_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"lr": 5e-5, "epochs": 100, "momentum": 0.9, "weight_decay": 5e-4},
    "fast": {"lr": 1e-3, "epochs": 50, "momentum": None, "weight_decay": 0.0},
}


def _preset(preset: str, **given: Any) -> dict[str, Any]:
    """The preset's settings, overridden by the ones given (not ``None``)."""
    if preset not in REFINE_PRESETS:
        raise ValueError(f"`preset` must be one of {list(REFINE_PRESETS)}; got {preset!r}.")
    out = dict(REFINE_PRESETS[preset])
    out.update({k: v for k, v in given.items() if v is not None})
    return out


@dataclass
class RefineResult:
    """A refined (or fine-tuned) network and what was learnt about the crowd.

    Attributes:
        model: The refined network (a copy; the input network is unchanged).
        method: ``"aggnet"``, ``"am-mv"``, ``"am-glad"`` or ``"am-gt"``.
        truth: One row per item: ``item``, ``p_mitosis`` (the posterior of the aggregation
            layer for ``aggnet``, the training target otherwise), ``label`` (0/1) and ``gold``
            (``-1`` = not gold).
        annotators: One row per annotator: ``annotator, n_votes, sensitivity, specificity,
            spammer_score, quiz_accuracy`` (empty for the baselines but AM-GLAD's abilities).
        history: One record per epoch (``epoch, loss, seconds`` and validation metrics).
        settings: The training settings.
    """

    model: nn.Module
    method: str
    truth: pd.DataFrame
    annotators: pd.DataFrame
    history: list[dict[str, float]]
    settings: dict[str, Any] = field(default_factory=dict)


def model_inputs(patches: npt.ArrayLike, size: int = 33) -> np.ndarray:
    """Network inputs from RGB context crops: resample to ``size`` × ``size`` and rescale.

    A task package stores full-resolution context crops; a 99-pixel crop resampled to 33
    pixels is the 0.33-scale view the 0.33-scale network was trained on (bilinear, corner
    pixels aligned like :func:`crowdmed.pathology.patches.rescale_image`).

    Args:
        patches: ``uint8`` array of shape ``(N, H, W, 3)``.
        size: Side of the network's input.

    Returns:
        ``float32`` array of shape ``(N, 3, size, size)`` in ``[0, 1]``.
    """
    from crowdmed.pathology.patches import rescale_image

    arr = np.asarray(patches)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"`patches` must have shape (N, H, W, 3); got {arr.shape}.")
    out = np.empty((len(arr), 3, size, size), dtype=np.float32)
    for i, p in enumerate(arr):
        r = rescale_image(p.astype(np.float32) / 255.0, shape=(size, size))
        out[i] = np.clip(r, 0.0, 1.0).transpose(2, 0, 1)
    return out


def predict_proba(model: nn.Module, patches: npt.ArrayLike, batch_size: int = 512) -> np.ndarray:
    """Mitosis probability ``(N,)`` of a patch network on inputs ``(N, 3, 33, 33)``."""
    x = torch.as_tensor(np.asarray(patches, dtype=np.float32))
    was = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for s in range(0, len(x), batch_size):
                out.append(torch.softmax(model(x[s : s + batch_size]), 1)[:, 1])
    finally:
        model.train(was)
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def _check_inputs(patches: Any, labels: CrowdLabels) -> np.ndarray:
    if not isinstance(labels, CrowdLabels):
        raise TypeError(
            f"`labels` must be CrowdLabels (see crowdmed.crowdsourcing.read_votes); got "
            f"{type(labels).__name__}."
        )
    x = np.asarray(patches, dtype=np.float32)
    if x.ndim != 4 or len(x) != labels.n_items:
        raise ValueError(
            f"`patches` must have shape (n_items={labels.n_items}, C, H, W), one per item of "
            f"`labels`; got {x.shape}."
        )
    if labels.n_classes != 2:
        raise ValueError(
            f"`labels` must be binary (not mitosis / mitosis); got {labels.n_classes} classes."
        )
    return x


def _classifier(
    model: nn.Module,
    method: str,
    n: int,
    *,
    lr: float,
    epochs: int,
    batch_size: int | None,
    tau: float,
    random_state: int,
    progress: EpochHook | None,
    momentum: float | None = None,
    weight_decay: float = 0.0,
) -> CrowdClassifier:
    return CrowdClassifier(
        copy.deepcopy(model),
        method=method,
        epochs=epochs,
        batch_size=n if batch_size is None else batch_size,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        patience=None,
        tau=tau,
        random_state=random_state,
        progress=progress if progress is not None else False,
    )


def _gold(labels: CrowdLabels) -> np.ndarray:
    return labels.gold if labels.gold is not None else np.full(labels.n_items, -1, np.int64)


def refine(
    model: nn.Module,
    patches: npt.ArrayLike,
    labels: CrowdLabels,
    *,
    quiz: npt.ArrayLike | None = None,
    preset: str = "paper",
    lr: float | None = None,
    epochs: int | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    tau: float = 0.5,
    batch_size: int | None = None,
    random_state: int = 0,
    progress: EpochHook | None = None,
) -> RefineResult:
    """Refine a patch network with AggNet's aggregation layer on crowd votes.

    Args:
        model: Trained patch network mapping ``(B, 3, 33, 33)`` to logits ``(B, 2)`` (the
            0.33-scale model of the detector); it is copied, not changed.
        patches: Float array of shape ``(n_items, 3, 33, 33)`` in ``[0, 1]``, one per item
            of ``labels`` (same order).
        labels: Binary crowd labels (class 1 = mitosis), e.g. from
            :func:`crowdmed.crowdsourcing.read_votes`.
        quiz: Float array of shape ``(n_annotators,)`` with each annotator's quiz accuracy
            ``γ`` (``NaN`` = none); ``labels.quiz_accuracy`` when omitted.
        preset: ``"paper"`` (the reproduction default: SGD, momentum 0.9, weight decay 5e-4,
            learning rate 5e-5, 100 epochs, as in the paper) or ``"fast"`` (Adam at 1e-3, 50
            epochs); see :data:`REFINE_PRESETS`. The arguments below override it.
        lr: Learning rate (small: the network is refined, not retrained).
        epochs: Number of EM rounds; each is one gradient step on the whole vote set (with
            the default ``batch_size``) followed by the M-step.
        momentum: SGD momentum; ``None`` in the preset means Adam.
        weight_decay: Weight decay.
        tau: Strength ``τ`` of AggNet's quiz trust prior (eq. 8; the paper's range
            ``[0.1, 1]``). The layer starts from the eq. 2 majority vote and one M-step.
        batch_size: Mini-batch size; ``None`` for full-batch steps as in the paper.
        random_state: Seed of the data order and dropout.
        progress: Called after every epoch as ``progress(epoch, epochs, metrics)``.

    Returns:
        The refined network, inferred truth (posterior ``μ`` of every item) and annotators.
        The network is that of the last epoch: the paper keeps "the best performing model"
        of its 100 epochs but names no criterion (see the module docstring).

    Raises:
        ValueError: If the patches and labels do not match or the labels are not binary.
        TypeError: If ``labels`` is not :class:`~crowdmed.CrowdLabels`.
    """
    x = _check_inputs(patches, labels)
    run = _preset(preset, lr=lr, epochs=epochs, momentum=momentum, weight_decay=weight_decay)
    q = labels.quiz_accuracy if quiz is None else np.asarray(quiz, dtype=np.float64)
    clf = _classifier(
        model,
        "aggnet",
        len(x),
        lr=run["lr"],
        epochs=run["epochs"],
        batch_size=batch_size,
        tau=tau,
        random_state=random_state,
        progress=progress,
        momentum=run["momentum"],
        weight_decay=run["weight_decay"],
    )
    clf.fit(x, labels, quiz_accuracy=q)
    head = clf.head_
    if not isinstance(head, AggNetEM):  # pragma: no cover - method 'aggnet' builds one
        raise RuntimeError("The aggnet fit did not build an AggNetEM head.")
    net = clf.network.eval()
    with torch.no_grad():
        logits = torch.cat([net(torch.as_tensor(x[s : s + 512])) for s in range(0, len(x), 512)])
        mu = head.posteriors(logits, torch.as_tensor(labels.to_dense())).double().numpy()
    al, be = head.sensitivity.numpy(), head.specificity.numpy()
    conf = np.stack([np.stack([be, 1 - be], -1), np.stack([1 - al, al], -1)], axis=1)
    n_votes = np.bincount(labels.annotators, minlength=labels.n_annotators)
    annotators = pd.DataFrame(
        {
            "annotator": labels.annotator_ids,
            "n_votes": n_votes,
            "sensitivity": conf[:, 1, 1],
            "specificity": conf[:, 0, 0],
            "spammer_score": spammer_score(conf),
            "quiz_accuracy": np.full(labels.n_annotators, np.nan) if q is None else q,
        }
    )
    truth = pd.DataFrame(
        {
            "item": labels.item_ids,
            "p_mitosis": mu,
            "label": (mu >= 0.5).astype(np.int64),
            "gold": _gold(labels),
        }
    )
    settings = {
        "preset": preset,
        **run,
        "optimizer": "adam" if run["momentum"] is None else "sgd",
        "kept_epoch": clf.best_epoch_,
        "tau": tau,
        "batch_size": batch_size or len(x),
        "random_state": random_state,
    }
    return RefineResult(net, "aggnet", truth, annotators, clf.history_, settings)


def fine_tune(
    model: nn.Module,
    patches: npt.ArrayLike,
    labels: CrowdLabels,
    *,
    target: str,
    truth: npt.ArrayLike | None = None,
    preset: str = "paper",
    lr: float | None = None,
    epochs: int | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    batch_size: int | None = None,
    random_state: int = 0,
    progress: EpochHook | None = None,
) -> RefineResult:
    """Fine-tune a patch network on aggregated labels (the paper's AM-* baselines).

    Args:
        model: Trained patch network (copied, not changed).
        patches: Float array of shape ``(n_items, 3, 33, 33)``, one per item of ``labels``.
        labels: Binary crowd labels.
        target: ``"mv"`` (the majority vote of the paper's eq. 2, ``ȳ ≥ 0.5 → 1``: ties go
            to the positive class), ``"glad"`` (GLAD's labels,
            :class:`crowdmed.aggregation.GLAD`) or ``"gt"`` (the reference labels ``truth``).
        truth: Integer array of shape ``(n_items,)`` with the reference labels (for ``"gt"``).
        preset: ``"paper"`` or ``"fast"``, as in :func:`refine`.
        lr: Learning rate.
        epochs: Number of epochs.
        momentum: SGD momentum; ``None`` in the preset means Adam.
        weight_decay: Weight decay.
        batch_size: Mini-batch size; ``None`` for full-batch steps.
        random_state: Seed.
        progress: Called after every epoch as ``progress(epoch, epochs, metrics)``.

    Returns:
        The fine-tuned network (of the last epoch, as in :func:`refine`) and its training
        targets.
    """
    from crowdmed.aggregation import GLAD, MajorityVote
    from crowdmed.aggregation.classification.sens_spec import binary_majority_vote

    if target not in _BASELINES:
        raise ValueError(f"`target` must be one of {list(_BASELINES)}; got {target!r}.")
    x = _check_inputs(patches, labels)
    run = _preset(preset, lr=lr, epochs=epochs, momentum=momentum, weight_decay=weight_decay)
    annotators = pd.DataFrame({"annotator": labels.annotator_ids})
    if target == "gt":
        if truth is None:
            raise ValueError("`truth` (reference labels of the items) is needed for target 'gt'.")
        y = np.asarray(truth).astype(np.int64)
        if y.shape != (labels.n_items,) or not np.isin(y, (0, 1)).all():
            raise ValueError(f"`truth` must be 0/1 of shape ({labels.n_items},).")
        p1 = y.astype(np.float64)
        fit_labels: Any = y
    elif target == "glad":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = GLAD(random_state=random_state).fit(labels)
        p1 = g.posteriors_[:, 1]
        fit_labels = g.labels_
        annotators["ability"] = g.alphas_
        annotators["skill"] = g.skills_
    else:
        p1 = MajorityVote().fit(labels).posteriors_[:, 1]
        fit_labels = binary_majority_vote(labels.to_dense())
    clf = _classifier(
        model,
        _BASELINES[target],
        len(x),
        lr=run["lr"],
        epochs=run["epochs"],
        batch_size=batch_size,
        tau=0.5,
        random_state=random_state,
        progress=progress,
        momentum=run["momentum"],
        weight_decay=run["weight_decay"],
    )
    clf.fit(x, fit_labels, n_classes=2)
    lab = fit_labels
    truth_table = pd.DataFrame(
        {"item": labels.item_ids, "p_mitosis": p1, "label": np.asarray(lab), "gold": _gold(labels)}
    )
    settings = {
        "preset": preset,
        **run,
        "optimizer": "adam" if run["momentum"] is None else "sgd",
        "kept_epoch": clf.best_epoch_,
        "batch_size": batch_size or len(x),
        "random_state": random_state,
    }
    return RefineResult(
        clf.network.eval(), f"am-{target}", truth_table, annotators, clf.history_, settings
    )


# ---------------------------------------------------------------------- detector helpers
def scale_index(detector: Any, scale: float = 0.33) -> int:
    """Index of the detector's network for ``scale`` (the closest scale within 0.05).

    Raises:
        ValueError: If the detector has no network at that scale.
    """
    scales = np.asarray(detector.scales, dtype=np.float64)
    i = int(np.argmin(np.abs(scales - scale)))
    if abs(scales[i] - scale) > 0.05:
        raise ValueError(
            f"The detector has no network at scale {scale}; its scales are "
            f"{scales.tolist()}. Pass one of them as `scale` (--scale)."
        )
    return i


def detector_patches(
    detector: Any, images: Mapping[Any, np.ndarray], points: pd.DataFrame, *, scale: float = 0.33
) -> np.ndarray:
    """Inputs of the detector's ``scale`` network at ``points``: ``(N, 3, 33, 33)`` ``float32``.

    The fields go through the detector's own preparation (stain normalisation when it has
    one) and are rescaled as for its detection maps, so the patches are exactly what that
    network sees at those points.

    Args:
        detector: A :class:`~crowdmed.pathology.MultiScaleDetector`.
        images: RGB fields keyed by the names in ``points.image``.
        points: Table ``image, x, y`` in full-scale pixels.
        scale: The network's image scale.
    """
    from crowdmed.pathology.patches import extract_patches

    i = scale_index(detector, scale)
    names = pd.unique(points["image"])
    missing = [n for n in names if n not in images]
    if missing:
        raise ValueError(f"Points name images {missing[:5]} that were not given.")
    prepared = {n: detector.prepare(images[n]) for n in names}
    return extract_patches(prepared, points, size=33, scale=detector.scales[i])


def with_model(detector: Any, model: nn.Module, *, scale: float = 0.33) -> Any:
    """A copy of ``detector`` whose ``scale`` network is ``model`` (e.g. a refined one)."""
    out = copy.copy(detector)
    out.models = list(detector.models)
    out.models[scale_index(detector, scale)] = model.eval()
    out.settings = {
        **detector.settings,
        "refined_scale": detector.scales[scale_index(detector, scale)],
    }
    return out
