"""CROWDLAB kernels shared by the label-quality and relabelling modules.

Options, checks and the bincount computations of :mod:`crowdmed.quality.label_quality` and
:mod:`crowdmed.quality.relabel`. Everything works on COO triplets with ``np.bincount``; see
:func:`crowdmed.quality.label_quality` for the definitions and the references.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from crowdmed.data.labels import CrowdLabels
from crowdmed.quality._common import soft_reference

__all__ = [
    "ConsensusMethod",
    "Coo",
    "QualityMethod",
    "ScoreMethod",
    "Stats",
    "best_temperature",
    "check_pred_probs",
    "crowdlab",
    "score_labels",
    "temperature_scale",
    "worst_class",
]

#: Lower clip of weights and of the most-likely-class error (cleanlab's CLIPPING_LOWER_BOUND).
_CLIP = 1e-6
#: Lower clip of probabilities before a logarithm in the temperature search.
_TINY = 1e-30
#: Temperatures tried first by the calibration search, then refined around the best.
_COARSE_TEMPERATURES = (0.1, 0.2, 0.5, 0.8, 1.0, 2.0, 3.0, 5.0, 8.0)
_FINE_STEPS = 4


class ConsensusMethod(str, Enum):
    """How the consensus label is chosen."""

    #: The class with the highest CROWDLAB posterior; majority vote where it ties.
    BEST_QUALITY = "best_quality"
    #: Majority vote, ties broken by the model, then as described in :func:`label_quality`.
    MAJORITY_VOTE = "majority_vote"


class QualityMethod(str, Enum):
    """How the quality of a consensus label is scored."""

    #: Score under the posterior that weighs the model and every annotator (CROWDLAB).
    CROWDLAB = "crowdlab"
    #: Fraction of the item's annotators who agree with the consensus.
    AGREEMENT = "agreement"


class ScoreMethod(str, Enum):
    """How a label is scored against a posterior row ``p`` (cleanlab's ``rank`` methods)."""

    #: ``p[label]``.
    SELF_CONFIDENCE = "self_confidence"
    #: ``(p[label] - max over other classes of p + 1) / 2``.
    NORMALIZED_MARGIN = "normalized_margin"


# ----------------------------------------------------------------------------- array kernels
@dataclass(frozen=True)
class Coo:
    """Checked triplets with the per-item and per-annotator counts the kernels reuse."""

    it: np.ndarray
    an: np.ndarray
    lab: np.ndarray
    n_items: int
    n_annotators: int
    n_classes: int
    counts: np.ndarray  # (n_items, K) votes per class
    n: np.ndarray  # (n_items,) labels per item
    n_per_annotator: np.ndarray  # (n_annotators,)

    @classmethod
    def build(cls, cl: CrowdLabels, n_classes: int) -> Coo:
        n_items, n_ann = cl.n_items, cl.n_annotators
        it, an, lab = cl.items, cl.annotators, cl.labels
        counts = np.bincount(it * n_classes + lab, minlength=n_items * n_classes)
        return cls(
            it,
            an,
            lab,
            n_items,
            n_ann,
            n_classes,
            counts.reshape(n_items, n_classes).astype(np.float64),
            np.bincount(it, minlength=n_items),
            np.bincount(an, minlength=n_ann),
        )


def score_labels(
    post: np.ndarray, rows: np.ndarray, cls_: np.ndarray, method: ScoreMethod
) -> np.ndarray:
    """Score label ``cls_[j]`` against posterior row ``post[rows[j]]``."""
    own = post[rows, cls_]
    if method is ScoreMethod.SELF_CONFIDENCE:
        return own
    other = post[rows].copy()
    other[np.arange(len(rows)), cls_] = -np.inf
    return (own - other.max(axis=1) + 1.0) / 2.0


def _majority_vote(c: Coo, pred_probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Majority vote with cleanlab's tie-break order, vectorised over items.

    Ties go, in turn, to the class the model finds most likely, the class chosen least often
    over the whole data set, the class whose annotators agree most with the untied majority
    votes, and finally a random class drawn with ``rng``.
    """
    counts = c.counts
    cand = counts == counts.max(axis=1, keepdims=True)
    untied = cand.sum(axis=1) == 1

    def keep_best(values: np.ndarray, largest: bool) -> None:
        fill = -np.inf if largest else np.inf
        masked = np.where(cand, values, fill)
        best = masked.max(axis=1) if largest else masked.min(axis=1)
        cand[...] = cand & (masked == best[:, None])

    if not untied.all():
        keep_best(pred_probs, largest=True)
    if (cand.sum(axis=1) > 1).any():
        keep_best(np.broadcast_to(counts.sum(axis=0), counts.shape), largest=False)
    if (cand.sum(axis=1) > 1).any():
        mv_untied = counts.argmax(axis=1)
        sel = untied[c.it]
        hit = np.bincount(
            c.an[sel], weights=c.lab[sel] == mv_untied[c.it[sel]], minlength=c.n_annotators
        )
        tot = np.bincount(c.an[sel], minlength=c.n_annotators)
        with np.errstate(invalid="ignore", divide="ignore"):
            agree = hit / tot
        known = tot > 0
        agree[~known] = agree[known].mean() if known.any() else np.nan
        key = c.it * c.n_classes + c.lab
        size = c.n_items * c.n_classes
        mean_agree = np.bincount(key, weights=agree[c.an], minlength=size).reshape(counts.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_agree = mean_agree / counts
        keep_best(np.nan_to_num(mean_agree, nan=-np.inf), largest=True)
    if (cand.sum(axis=1) > 1).any():
        keep_best(rng.random(counts.shape), largest=True)
    return cand.argmax(axis=1)


def _annotator_agreement(c: Coo) -> np.ndarray:
    """Mean agreement of each annotator with the others on the items they share.

    Per label, the share of the item's other labels equal to it, averaged over the annotator's
    labels with weight ``n_i - 1``. ``NaN`` for an annotator without labels; an annotator who
    shares no item with anyone gets the mean of the others.
    """
    same = c.counts[c.it, c.lab] - 1.0
    w = c.n[c.it] - 1.0
    num = np.bincount(c.an, weights=same, minlength=c.n_annotators)
    den = np.bincount(c.an, weights=w, minlength=c.n_annotators)
    with np.errstate(invalid="ignore", divide="ignore"):
        agree = num / den
    labelled = c.n_per_annotator > 0
    overlap = den > 0
    lonely = labelled & ~overlap
    if lonely.any():
        agree[lonely] = agree[overlap].mean() if overlap.any() else np.nan
    agree[~labelled] = np.nan
    return agree


@dataclass(frozen=True)
class Stats:
    agreement: np.ndarray
    quality: np.ndarray
    posteriors: np.ndarray
    model_weight: float
    annotator_weight: np.ndarray


def _consensus_stats(
    c: Coo,
    pred_probs: np.ndarray,
    consensus: np.ndarray,
    ann_agree: np.ndarray,
    quality_method: QualityMethod,
    score_method: ScoreMethod,
) -> Stats:
    """Agreement, CROWDLAB posteriors and weights, and consensus quality for one consensus."""
    k = c.n_classes
    agreement = np.bincount(c.it, weights=c.lab == consensus[c.it], minlength=c.n_items) / c.n
    rows = np.arange(c.n_items)
    if quality_method is QualityMethod.AGREEMENT:
        post = c.counts / c.n[:, None]
        nan_w = np.full(c.n_annotators, np.nan)
        return Stats(agreement, agreement.copy(), post, float("nan"), nan_w)
    multi = c.n != 1
    p_consensus = agreement[multi].mean()
    p_other = (1.0 - p_consensus) / (k - 1)
    cons_multi = consensus[multi]
    most_common = np.bincount(cons_multi, minlength=k).argmax()
    base_error = max(float(np.mean(cons_multi != most_common)), _CLIP)
    ann_w = np.clip(1.0 - (1.0 - ann_agree) / base_error, _CLIP, None)  # NaN stays NaN
    model_error = float(np.mean(pred_probs[multi].argmax(axis=1) != cons_multi))
    model_w = max(1.0 - model_error / base_error, _CLIP) * np.sqrt(np.mean(c.n))
    w_lab = ann_w[c.an]
    total = np.bincount(c.it, weights=w_lab, minlength=c.n_items)
    said = np.bincount(c.it * k + c.lab, weights=w_lab, minlength=c.n_items * k).reshape(-1, k)
    # each annotator puts p_consensus on the class they chose and p_other on every other class
    post = pred_probs * model_w + said * p_consensus + (total[:, None] - said) * p_other
    post /= (total + model_w)[:, None]
    quality = score_labels(post, rows, consensus, score_method)
    return Stats(agreement, quality, post, float(model_w), ann_w)


def worst_class(c: Coo, consensus: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Per annotator, the chosen class with the lowest agreement with the consensus.

    Ties go to the class the annotator chose most often, then to the one with the highest mean
    consensus quality, then to the lowest class index.
    """
    k = c.n_classes
    key = c.an * k + c.lab
    size = c.n_annotators * k
    n = np.bincount(key, minlength=size).reshape(-1, k).astype(np.float64)
    hit = np.bincount(key, weights=c.lab == consensus[c.it], minlength=size).reshape(-1, k)
    qsum = np.bincount(key, weights=quality[c.it], minlength=size).reshape(-1, k)
    chosen = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(chosen, hit / np.where(chosen, n, 1.0), np.inf)
        mean_q = np.where(chosen, qsum / np.where(chosen, n, 1.0), -np.inf)
    cand = chosen & (acc == acc.min(axis=1, keepdims=True))
    for values in (n, mean_q):
        masked = np.where(cand, values, -np.inf)
        cand &= masked == masked.max(axis=1, keepdims=True)
    worst = cand.argmax(axis=1)
    worst[~chosen.any(axis=1)] = -1
    return worst


def temperature_scale(pred_probs: np.ndarray, temperature: float) -> np.ndarray:
    """Sharpen (``T < 1``) or soften (``T > 1``) probabilities: ``p ** (1 / T)`` renormalised."""
    p = np.clip(pred_probs, _TINY, None)
    p = p / p.sum(axis=1, keepdims=True)
    e = np.exp(np.log(p) / max(temperature, 1e-6))
    e /= e.sum(axis=1, keepdims=True)
    return e / e.sum(axis=1, keepdims=True)


def best_temperature(c: Coo, pred_probs: np.ndarray) -> float:
    """Temperature minimising the cross-entropy between the vote shares and the predictions.

    A coarse grid, then a finer grid between the neighbours of the best coarse value (the
    search of cleanlab's ``find_best_temp_scaler``).
    """
    shares = c.counts / c.n[:, None]
    with np.errstate(divide="ignore"):
        log_p = np.where(pred_probs > 0, np.log(np.where(pred_probs > 0, pred_probs, 1.0)), -np.inf)
    log_k = np.log(c.n_classes)

    def loss(t: float) -> float:
        e = np.exp(log_p / max(t, 1e-6))
        q = np.clip(e / e.sum(axis=1, keepdims=True), _TINY, None)
        return float(np.mean(-(shares * np.log(q)).sum(axis=1) / log_k))

    coarse = _COARSE_TEMPERATURES
    best = int(np.argmin([loss(t) for t in coarse]))
    fine = np.array([])
    if best != 0:
        fine = np.linspace(coarse[best - 1], coarse[best], _FINE_STEPS, endpoint=False)
    if best != len(coarse) - 1:
        up = np.linspace(coarse[best], coarse[best + 1], _FINE_STEPS + 1, endpoint=True)
        fine = np.append(fine, up)
    return float(fine[int(np.argmin([loss(t) for t in fine]))])


# ----------------------------------------------------------------------------- checks
def check_pred_probs(pred_probs: Any, n_items: int, n_classes: int, name: str) -> np.ndarray:
    """Validate classifier probabilities: shape ``(n_items, K >= n_classes)``, rows sum to 1."""
    pp = soft_reference(pred_probs, n_items, name)
    if pp.shape[1] < max(n_classes, 2):
        raise ValueError(
            f"`{name}` must have one column per class, at least {max(n_classes, 2)}; got "
            f"{pp.shape[1]} columns. Give the classifier every class the annotators used."
        )
    return pp


def crowdlab(
    c: Coo,
    pp: np.ndarray,
    consensus_method: ConsensusMethod,
    quality_method: QualityMethod,
    score_method: ScoreMethod,
    rng: np.random.Generator,
) -> tuple[np.ndarray, Stats, np.ndarray]:
    """Consensus, its statistics and the annotators' mutual agreement (labelled items only)."""
    mv = _majority_vote(c, pp, rng)
    ann_agree = _annotator_agreement(c)
    stats = _consensus_stats(c, pp, mv, ann_agree, quality_method, score_method)
    consensus = mv
    if consensus_method is ConsensusMethod.BEST_QUALITY:
        post = stats.posteriors
        top = post == post.max(axis=1, keepdims=True)
        consensus = np.where(top.sum(axis=1) == 1, top.argmax(axis=1), mv)
        stats = _consensus_stats(c, pp, consensus, ann_agree, quality_method, score_method)
    return consensus, stats, ann_agree
