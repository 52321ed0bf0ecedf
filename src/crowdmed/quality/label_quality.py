"""Model-informed consensus and label quality from many annotators (CROWDLAB).

CROWDLAB combines a classifier's out-of-sample predicted probabilities with the labels of many
annotators. Each item gets a consensus label and a consensus quality score, each individual
label a quality score, and each annotator a quality score and the class they are worst at.

The definitions are those of Goh, Tkachenko & Mueller (2022) as implemented in cleanlab 2.9's
``cleanlab.multiannotator.get_label_quality_multiannotator`` (the test reference): majority
vote with its tie-break order, annotator weights from the agreement between annotators
rescaled by the error of always guessing the most common consensus class, a model weight from
the model's error on items with two or more labels times ``sqrt(mean labels per item)``, and
posterior probabilities that average the model's prediction with one "vote" distribution per
annotator. Everything here runs on the COO triplets with ``np.bincount``: no loop over items
or annotators.

Differences from the reference: a final majority-vote tie (after the model, class-frequency and
annotator-agreement tie-breaks) is broken with ``random_state`` instead of the global NumPy
generator, and annotators without a label are allowed (their figures are ``NaN``; they count
for nothing, as if their column were dropped). Vote shares (the ``"agreement"`` posteriors and
the target of the temperature search) count each class in its own column; cleanlab 2.9 counts
the float labels with ``value_counts``, which shifts the counts to the left when a class is
missing from an item, so its ``calibrate_probs`` and ``quality_method="agreement"`` results
differ from these (they agree once that helper counts by class index).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from crowdmed._validation import check_labels, check_option, check_random_state
from crowdmed.data.labels import CrowdLabels
from crowdmed.quality._common import soft_reference, with_n_classes
from crowdmed.typing import LabelsLike, RandomState

__all__ = ["ConsensusMethod", "LabelQuality", "QualityMethod", "ScoreMethod", "label_quality"]

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


@dataclass(frozen=True)
class LabelQuality:
    """Result of :func:`label_quality`.

    Attributes:
        labels: The labels as COO triplets; ``label_scores`` follows their order.
        consensus: Integer array of shape ``(n_items,)``: consensus class index.
        consensus_quality: Float array of shape ``(n_items,)`` in [0, 1]; low means the
            consensus is likely wrong.
        agreement: Float array of shape ``(n_items,)``: fraction of the item's annotators who
            gave the consensus label.
        n_annotations: Integer array of shape ``(n_items,)``.
        label_scores: Float array of shape ``(n_labels,)``: quality of each individual label.
        annotator_quality: Float array of shape ``(n_annotators,)``; ``NaN`` for an annotator
            who never labelled an item that someone else labelled too.
        annotator_agreement: Float array of shape ``(n_annotators,)``: fraction of the
            annotator's labels equal to the consensus.
        worst_class: Integer array of shape ``(n_annotators,)``: among the classes the
            annotator chose, the one whose labels agree least with the consensus; ``-1`` for
            an annotator without labels.
        n_labelled: Integer array of shape ``(n_annotators,)``.
        posteriors: Float array of shape ``(n_items, K)``, rows sum to 1: the CROWDLAB
            posterior (the vote shares for ``quality_method="agreement"``).
        model_weight: Weight of the classifier relative to one annotator (``NaN`` for
            ``quality_method="agreement"``).
        annotator_weight: Float array of shape ``(n_annotators,)`` (``NaN`` for an annotator
            without labels, and for ``quality_method="agreement"``).
        temperature: Temperature applied to ``pred_probs`` (1 unless ``calibrate=True``).
    """

    labels: CrowdLabels
    consensus: np.ndarray
    consensus_quality: np.ndarray
    agreement: np.ndarray
    n_annotations: np.ndarray
    label_scores: np.ndarray
    annotator_quality: np.ndarray
    annotator_agreement: np.ndarray
    worst_class: np.ndarray
    n_labelled: np.ndarray
    posteriors: np.ndarray
    model_weight: float
    annotator_weight: np.ndarray
    temperature: float

    def label_score_matrix(self) -> np.ndarray:
        """Label scores in the dense view, shape ``(n_items, n_annotators)``; ``NaN`` = none."""
        cl = self.labels
        out = np.full((cl.n_items, cl.n_annotators), np.nan)
        out[cl.items, cl.annotators] = self.label_scores
        return out

    def items_frame(self) -> pd.DataFrame:
        """One row per item (index ``item``): consensus (a class value) and its figures."""
        cl = self.labels
        return pd.DataFrame(
            {
                "consensus": cl.classes[self.consensus],
                "consensus_quality": self.consensus_quality,
                "agreement": self.agreement,
                "n_annotations": self.n_annotations,
            },
            index=pd.Index(cl.item_ids, name="item"),
        )

    def annotators_frame(self) -> pd.DataFrame:
        """One row per annotator (index ``annotator``), in the annotators' order."""
        cl = self.labels
        worst = np.array(
            [cl.classes[k] if k >= 0 else None for k in self.worst_class], dtype=object
        )
        return pd.DataFrame(
            {
                "annotator_quality": self.annotator_quality,
                "agreement_with_consensus": self.annotator_agreement,
                "worst_class": worst,
                "n_labels": self.n_labelled,
                "weight": self.annotator_weight,
            },
            index=pd.Index(cl.annotator_ids, name="annotator"),
        )


# ----------------------------------------------------------------------------- array kernels
@dataclass(frozen=True)
class _Coo:
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
    def build(cls, cl: CrowdLabels, n_classes: int) -> _Coo:
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


def _score(post: np.ndarray, rows: np.ndarray, cls_: np.ndarray, method: ScoreMethod) -> np.ndarray:
    """Score label ``cls_[j]`` against posterior row ``post[rows[j]]``."""
    own = post[rows, cls_]
    if method is ScoreMethod.SELF_CONFIDENCE:
        return own
    other = post[rows].copy()
    other[np.arange(len(rows)), cls_] = -np.inf
    return (own - other.max(axis=1) + 1.0) / 2.0


def _majority_vote(c: _Coo, pred_probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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


def _annotator_agreement(c: _Coo) -> np.ndarray:
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
class _Stats:
    agreement: np.ndarray
    quality: np.ndarray
    posteriors: np.ndarray
    model_weight: float
    annotator_weight: np.ndarray


def _consensus_stats(
    c: _Coo,
    pred_probs: np.ndarray,
    consensus: np.ndarray,
    ann_agree: np.ndarray,
    quality_method: QualityMethod,
    score_method: ScoreMethod,
) -> _Stats:
    """Agreement, CROWDLAB posteriors and weights, and consensus quality for one consensus."""
    k = c.n_classes
    agreement = np.bincount(c.it, weights=c.lab == consensus[c.it], minlength=c.n_items) / c.n
    rows = np.arange(c.n_items)
    if quality_method is QualityMethod.AGREEMENT:
        post = c.counts / c.n[:, None]
        nan_w = np.full(c.n_annotators, np.nan)
        return _Stats(agreement, agreement.copy(), post, float("nan"), nan_w)
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
    quality = _score(post, rows, consensus, score_method)
    return _Stats(agreement, quality, post, float(model_w), ann_w)


def _worst_class(c: _Coo, consensus: np.ndarray, quality: np.ndarray) -> np.ndarray:
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


def _temperature_scale(pred_probs: np.ndarray, temperature: float) -> np.ndarray:
    """Sharpen (``T < 1``) or soften (``T > 1``) probabilities: ``p ** (1 / T)`` renormalised."""
    p = np.clip(pred_probs, _TINY, None)
    p = p / p.sum(axis=1, keepdims=True)
    e = np.exp(np.log(p) / max(temperature, 1e-6))
    e /= e.sum(axis=1, keepdims=True)
    return e / e.sum(axis=1, keepdims=True)


def _best_temperature(c: _Coo, pred_probs: np.ndarray) -> float:
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


# ----------------------------------------------------------------------------- public API
def check_pred_probs(pred_probs: Any, n_items: int, n_classes: int, name: str) -> np.ndarray:
    """Validate classifier probabilities: shape ``(n_items, K >= n_classes)``, rows sum to 1."""
    pp = soft_reference(pred_probs, n_items, name)
    if pp.shape[1] < max(n_classes, 2):
        raise ValueError(
            f"`{name}` must have one column per class, at least {max(n_classes, 2)}; got "
            f"{pp.shape[1]} columns. Give the classifier every class the annotators used."
        )
    return pp


def _crowdlab(
    c: _Coo,
    pp: np.ndarray,
    consensus_method: ConsensusMethod,
    quality_method: QualityMethod,
    score_method: ScoreMethod,
    rng: np.random.Generator,
) -> tuple[np.ndarray, _Stats, np.ndarray]:
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


def label_quality(
    labels: LabelsLike,
    pred_probs: npt.ArrayLike,
    *,
    consensus_method: str | ConsensusMethod = "best_quality",
    quality_method: str | QualityMethod = "crowdlab",
    score_method: str | ScoreMethod = "self_confidence",
    calibrate: bool = False,
    random_state: RandomState = None,
) -> LabelQuality:
    """Consensus labels and quality scores of items, labels and annotators (CROWDLAB).

    Args:
        labels: A :class:`~crowdmed.data.CrowdLabels` (the COO triplets ``(item, annotator,
            label)``), an integer array of shape ``(n_items, n_annotators)`` with ``-1``
            marking a missing annotation, or a long ``DataFrame``. Every item needs a label,
            and at least one item two labels.
        pred_probs: Float array of shape ``(n_items, K)`` whose rows sum to 1: a classifier's
            out-of-sample (e.g. cross-validated) predicted probabilities.
        consensus_method: ``"best_quality"`` (argmax of the CROWDLAB posterior) or
            ``"majority_vote"``.
        quality_method: ``"crowdlab"`` or ``"agreement"`` (see :class:`QualityMethod`).
        score_method: How a label is scored against a posterior row (see
            :class:`ScoreMethod`).
        calibrate: Temperature-scale ``pred_probs`` first, to best match the vote shares.
        random_state: Seed or Generator for a majority-vote tie that survives every
            tie-break.

    Returns:
        The consensus and every quality figure, see :class:`LabelQuality`.

    Raises:
        ValueError: If ``pred_probs`` does not match the labels, an item has no label, or no
            item has two labels.

    References:
        Goh, Tkachenko & Mueller (2022), "CROWDLAB: Supervised learning to infer consensus
        labels and quality scores for data with multiple annotators".
        https://doi.org/10.48550/arXiv.2210.06812

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 0], [1, 1, -1], [0, -1, 1], [1, 1, 0], [2, 2, 2], [2, -1, 2]])
        >>> probs = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1],
        ...                   [0.5, 0.4, 0.1], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]])
        >>> lq = label_quality(labels, probs)
        >>> lq.consensus
        array([0, 1, 1, 1, 2, 2])
        >>> np.round(lq.consensus_quality, 3)
        array([0.836, 0.743, 0.533, 0.595, 0.836, 0.713])
        >>> np.round(lq.annotator_quality, 3), lq.worst_class
        (array([0.765, 0.888, 0.731]), array([0, 1, 0]))
    """
    cm = check_option(consensus_method, ConsensusMethod, "consensus_method")
    qm = check_option(quality_method, QualityMethod, "quality_method")
    sm = check_option(score_method, ScoreMethod, "score_method")
    cl = check_labels(labels, min_classes=1)
    pp = check_pred_probs(pred_probs, cl.n_items, cl.n_classes, "pred_probs")
    cl = with_n_classes(cl, pp.shape[1])
    c = _Coo.build(cl, pp.shape[1])
    if not (c.n > 1).any():
        raise ValueError(
            "`labels` must give at least one item two or more labels; got one label per item. "
            "With one label per item, score labels with the model alone (pred_probs[i, label])."
        )
    temperature = 1.0
    if calibrate:
        temperature = _best_temperature(c, pp)
        pp = _temperature_scale(pp, temperature)
    rng = check_random_state(random_state)
    consensus, stats, _ = _crowdlab(c, pp, cm, qm, sm, rng)
    label_scores = _score(stats.posteriors, c.it, c.lab, sm)
    labelled = c.n_per_annotator > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        lqs = np.bincount(c.an, weights=label_scores, minlength=c.n_annotators) / c.n_per_annotator
        agree_all = (
            np.bincount(c.an, weights=c.lab == consensus[c.it], minlength=c.n_annotators)
            / c.n_per_annotator
        )
        sel = (c.n != 1)[c.it]
        hit = np.bincount(
            c.an[sel], weights=c.lab[sel] == consensus[c.it[sel]], minlength=c.n_annotators
        )
        agree_multi = hit / np.bincount(c.an[sel], minlength=c.n_annotators)
    if qm is QualityMethod.CROWDLAB:
        frac = np.mean(c.n) / labelled.sum()
        w = stats.model_weight / (stats.model_weight + np.nansum(stats.annotator_weight) * frac)
        annotator_quality = w * lqs + (1.0 - w) * agree_multi
    else:
        annotator_quality = agree_multi
    worst = _worst_class(c, consensus, stats.quality)
    return LabelQuality(
        labels=cl,
        consensus=consensus,
        consensus_quality=stats.quality,
        agreement=stats.agreement,
        n_annotations=c.n,
        label_scores=label_scores,
        annotator_quality=annotator_quality,
        annotator_agreement=agree_all,
        worst_class=worst,
        n_labelled=c.n_per_annotator,
        posteriors=stats.posteriors,
        model_weight=stats.model_weight,
        annotator_weight=stats.annotator_weight,
        temperature=temperature,
    )
