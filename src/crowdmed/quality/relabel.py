"""Which item to label next: how much one more annotation would improve the consensus.

Two scores for every item, labelled or not:

* ``"activelab"``: ActiveLab (Goh & Mueller 2023), cleanlab 2.9's
  ``get_active_learning_scores``. The CROWDLAB consensus quality of an item is averaged with
  ``1/K`` (what an unseen label is worth), with weights the item's annotator weights plus the
  model weight against the mean annotator weight; an unlabelled item uses the model's top
  probability. cleanlab ranks by this quality (low = label next); here
  ``scores = 1 - quality`` so that every method ranks high = label next. The temperature
  search counts vote shares by class index, as noted in :mod:`crowdmed.quality.label_quality`.
* ``"crowdmed"``: the expected gain in the accuracy of the CROWDLAB consensus (the one
  :func:`crowdmed.quality.label_quality` reports with ``calibrate=True``) from one more
  label, or per label from two more where two annotators are still available and
  ``K <= 16``, whichever is larger. The
  truth is drawn from CROWDLAB's own posterior (model weight plus annotator weights; while no
  item has two labels, ActiveLab's convention: model and label weigh 1, the label is one-hot).
  What an annotator would answer comes from per-annotator confusion matrices fitted by EM with
  the (temperature-calibrated) model as each item's prior, each shrunk towards the annotator's
  one-coin accuracy, itself shrunk towards the crowd's mean, so a reader with few labels is
  treated as an average reader. The new label is pooled into the consensus as CROWDLAB pools
  a label: with the annotator's CROWDLAB weight, ``p_consensus`` on the class it names. The
  next label comes from the annotators still available for the item (all who have not
  labelled it, or the ``available`` mask; their mean confusion matrix and weight), or from
  the single annotator ``assign=True`` chooses: the available one with the highest estimated
  accuracy. Items that neither one nor two more labels could change are ordered by ActiveLab's
  score (added with weight ``1e-6``).

Unlike ActiveLab's quality, the expected gain is low both for an item whose consensus is
already settled and for an item only unreliable annotators can still label, it accounts for
what each annotator tends to confuse, and it can be negative: a label from a reader who is
likely wrong may move the consensus away from the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from crowdmed._text import short_list
from crowdmed._validation import check_option
from crowdmed.data.labels import CrowdLabels
from crowdmed.quality._common import confusion_counts
from crowdmed.quality._crowdlab import (
    ConsensusMethod,
    Coo,
    QualityMethod,
    ScoreMethod,
    best_temperature,
    check_pred_probs,
    crowdlab,
    temperature_scale,
)

__all__ = [
    "AnnotatorConfusions",
    "RelabelMethod",
    "RelabelScores",
    "annotator_confusions",
    "relabel_scores",
]

#: Floor of probabilities inside logarithms.
_EPS = 1e-12
#: Weight of ActiveLab's score, which orders items that no one or two labels could change.
_TIE_BREAK = 1e-6
#: Largest number of classes for which the two-label look-ahead (K^2 outcomes) is computed.
_LOOKAHEAD_MAX_K = 16


class RelabelMethod(str, Enum):
    """How :func:`relabel_scores` scores an item."""

    #: Expected gain in CROWDLAB consensus accuracy (see the module docs).
    CROWDMED = "crowdmed"
    #: ActiveLab, the reference (cleanlab's ``get_active_learning_scores``).
    ACTIVELAB = "activelab"


@dataclass(frozen=True)
class RelabelScores:
    """Result of :func:`relabel_scores`.

    Attributes:
        scores: Float array of shape ``(n_items,)``: how much one more label is expected to
            improve the consensus; higher means label sooner.
        eligible: Bool array of shape ``(n_items,)``: some annotator can still label the item.
        annotator: Integer array of shape ``(n_items,)``: the suggested annotator
            (``assign=True``), else ``-1``; ``-1`` too where none is available.
        posteriors: Float array of shape ``(n_items, K)``: the current belief about each
            item's class: the CROWDLAB posterior of a labelled item, the calibrated model of an
            unlabelled one.
        reliability: Float array of shape ``(n_annotators,)``: estimated accuracy of each
            annotator (``"crowdmed"``) or their CROWDLAB weight (``"activelab"``).
        temperature: Temperature applied to ``pred_probs``.
        method: The method used.
    """

    scores: np.ndarray
    eligible: np.ndarray
    annotator: np.ndarray
    posteriors: np.ndarray
    reliability: np.ndarray
    temperature: float
    method: str

    def select(self, budget: int) -> np.ndarray:
        """Indices of the ``budget`` eligible items with the highest scores, best first.

        Ties keep the lower item index first.
        """
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
            raise ValueError(f"`budget` must be an integer >= 1; got {budget!r}.")
        idx = np.flatnonzero(self.eligible)
        order = idx[np.argsort(-self.scores[idx], kind="stable")]
        return order[: int(budget)]


# ----------------------------------------------------------------------------- inputs
def _check_relabel_labels(labels: Any, n_classes: int | None) -> CrowdLabels:
    """Labels that may leave items (and annotators) without any label."""
    if isinstance(labels, CrowdLabels):
        return labels
    m = np.asarray(labels)
    if m.ndim != 2:
        raise ValueError(
            "`labels` must be a CrowdLabels or an integer array of shape (n_items, "
            f"n_annotators) with -1 for a missing annotation; got shape {m.shape}."
        )
    if not (np.issubdtype(m.dtype, np.integer) or m.dtype == bool):
        raise TypeError(f"`labels` must be an integer array; got dtype {m.dtype}.")
    m = m.astype(np.int64)
    if (m < -1).any():
        raise ValueError(
            "`labels` must hold classes 0..K-1 or -1 for missing; got "
            f"{short_list(np.unique(m[m < -1]))}."
        )
    it, an = np.nonzero(m >= 0)
    return CrowdLabels.from_triplets(
        it, an, m[it, an], n_items=m.shape[0], n_annotators=m.shape[1], n_classes=n_classes
    )


class _Pool:
    """Who may still label which item: everyone who has not (default) or an explicit mask.

    The default pool is never materialised as an ``(n_items, n_annotators)`` matrix, so it
    scales to many annotators.
    """

    def __init__(self, available: Any, cl: CrowdLabels) -> None:
        self.cl = cl
        self.done = sp.csr_matrix(
            (np.ones(cl.n_labels), (cl.items, cl.annotators)),
            shape=(cl.n_items, cl.n_annotators),
        )
        self.mask: sp.csr_matrix | None = None
        if available is None:
            self.count = cl.n_annotators - cl.labels_per_item()
            return
        avail = sp.csr_matrix(available if sp.issparse(available) else np.asarray(available))
        if avail.shape != (cl.n_items, cl.n_annotators):
            raise ValueError(
                f"`available` must have shape (n_items, n_annotators) = ({cl.n_items}, "
                f"{cl.n_annotators}); got {avail.shape}."
            )
        avail = (avail != 0).astype(np.float64)
        self.mask = (avail - avail.multiply(self.done)).tocsr()  # not who already labelled
        self.mask.eliminate_zeros()
        self.count = np.diff(self.mask.indptr)

    def total(self, values: np.ndarray) -> np.ndarray:
        """Sum over each item's available annotators of ``values`` ``(n_annotators, d)``."""
        if self.mask is None:
            return values.sum(axis=0)[None, :] - self.done @ values
        return self.mask @ values

    def best(self, merit: np.ndarray) -> np.ndarray:
        """Per item, the available annotator of highest ``merit`` (lowest index on ties); -1."""
        cl = self.cl
        if self.mask is not None:
            shifted = self.mask.multiply(merit - merit.min() + 1.0).tocsr()
            best = np.asarray(shifted.argmax(axis=1)).ravel()
            return np.where(self.count > 0, best, -1)
        # default pool: the first annotator, in order of merit, who has not labelled the item
        order = np.lexsort((np.arange(cl.n_annotators), -merit))
        rank = np.empty(cl.n_annotators, dtype=np.int64)
        rank[order] = np.arange(cl.n_annotators)
        r = rank[cl.annotators]
        srt = np.lexsort((r, cl.items))
        items, r = cl.items[srt], r[srt]
        start = np.searchsorted(items, np.arange(cl.n_items))
        pos = np.arange(len(items)) - start[items]  # position within the item's sorted ranks
        first_gap = np.full(cl.n_items, cl.n_annotators, dtype=np.int64)
        np.minimum.at(first_gap, items[r != pos], pos[r != pos])
        first_free = np.minimum(first_gap, cl.labels_per_item())
        out = order[np.minimum(first_free, cl.n_annotators - 1)]
        return np.where(self.count > 0, out, -1)


def _labelled_coo(cl: CrowdLabels, k: int) -> tuple[np.ndarray, Coo]:
    """The labelled items alone, re-indexed (as cleanlab receives them), and their indices."""
    rows = np.flatnonzero(cl.labels_per_item() > 0)
    new_index = np.full(cl.n_items, -1)
    new_index[rows] = np.arange(len(rows))
    sub = CrowdLabels.from_triplets(
        new_index[cl.items], cl.annotators, cl.labels,
        n_items=len(rows), n_annotators=cl.n_annotators, n_classes=k,
    )  # fmt: skip
    return rows, Coo.build(sub, k)


def _check_inputs(labels: Any, pred_probs: Any) -> tuple[CrowdLabels, np.ndarray]:
    """Checked labels and probabilities, the labels widened to the model's classes."""
    pp_raw = np.asarray(pred_probs)
    cl = _check_relabel_labels(labels, pp_raw.shape[1] if pp_raw.ndim == 2 else None)
    pp = check_pred_probs(pp_raw, cl.n_items, cl.n_classes, "pred_probs")
    if pp.shape[1] > cl.n_classes:
        cl = CrowdLabels.from_triplets(
            cl.items, cl.annotators, cl.labels, n_items=cl.n_items,
            n_annotators=cl.n_annotators, n_classes=pp.shape[1], item_ids=cl.item_ids,
            annotator_ids=cl.annotator_ids,
        )  # fmt: skip
    return cl, pp


# ----------------------------------------------------------------------------- ActiveLab
def _activelab(cl: CrowdLabels, pp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """ActiveLab quality (low = label next), posteriors, annotator weights and temperature."""
    k = pp.shape[1]
    n = cl.labels_per_item()
    labelled = n > 0
    scores = np.empty(cl.n_items)
    post = pp.copy()
    weights = np.full(cl.n_annotators, np.nan)
    temperature, model_w, mean_w = 1.0, 1.0, 1.0
    if labelled.any():
        rows, c = _labelled_coo(cl, k)
        pp_l = pp[rows]
        has_labels = c.n_per_annotator > 0
        if (c.n == 1).all():
            quality = pp_l[np.arange(len(rows)), c.lab[np.argsort(c.it, kind="stable")]]
            weights[has_labels] = 1.0
        else:
            temperature = best_temperature(c, pp_l)
            pp_l = temperature_scale(pp_l, temperature)
            # a majority-vote tie that survives every tie-break is broken with a fixed seed,
            # so the scores are deterministic
            _, stats, _ = crowdlab(
                c, pp_l, ConsensusMethod.BEST_QUALITY, QualityMethod.CROWDLAB,
                ScoreMethod.SELF_CONFIDENCE, np.random.default_rng(0),
            )  # fmt: skip
            quality, model_w, weights = stats.quality, stats.model_weight, stats.annotator_weight
            post[rows] = stats.posteriors
        mean_w = float(np.nanmean(weights[has_labels]))
        item_w = np.bincount(c.it, weights=np.nan_to_num(weights)[c.an], minlength=len(rows))
        total = item_w + model_w
        scores[rows] = (quality * total + mean_w / k) / (total + mean_w)
    if (~labelled).any():
        rest = temperature_scale(pp[~labelled], temperature)
        post[~labelled] = rest
        scores[~labelled] = (rest.max(axis=1) * model_w + mean_w / k) / (model_w + mean_w)
    return scores, post, weights, temperature


# ----------------------------------------------------------------------------- crowdmed
def _m_step(cl: CrowdLabels, post: np.ndarray, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Soft confusion counts, shrunk to a one-coin matrix itself shrunk to the crowd's mean."""
    k = post.shape[1]
    eye = np.eye(k)
    counts = confusion_counts(cl, post)  # counts[a, k, l]: soft count of true k, said l
    hits = np.einsum("akk->a", counts)
    n_a = counts.sum(axis=(1, 2))
    crowd_acc = hits.sum() / max(n_a.sum(), _EPS)
    acc = (hits + strength * crowd_acc) / (n_a + strength)
    coin = acc[:, None, None] * eye + ((1.0 - acc) / (k - 1))[:, None, None] * (1.0 - eye)
    conf = (counts + strength * coin) / (counts.sum(axis=2, keepdims=True) + strength)
    return conf, acc


def _fit_confusions(
    cl: CrowdLabels,
    log_prior: np.ndarray,
    n_iter: int,
    strength: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM for per-annotator confusion matrices with the model as the class prior of each item.

    Returns:
        Posteriors ``(n_items, K)``, confusions ``(n_annotators, K, K)`` (rows: true class)
        and accuracies ``(n_annotators,)``.
    """
    k = log_prior.shape[1]
    it, an, lab = cl.items, cl.annotators, cl.labels
    votes = np.bincount(it * k + lab, minlength=cl.n_items * k).reshape(-1, k)
    post = np.exp(log_prior) * (1.0 + votes)  # start: the model nudged by the votes
    post /= post.sum(axis=1, keepdims=True)
    if n_iter == 0:  # the start and its M-step
        conf, acc = _m_step(cl, post, strength)
    for _ in range(n_iter):
        conf, acc = _m_step(cl, post, strength)
        # E-step in log space: products of many small probabilities underflow
        log_conf = np.log(np.clip(conf, _EPS, None))
        log_post = log_prior.copy()
        said = log_conf[an, :, lab]  # (n_labels, K): log P(this label | true class k)
        for j in range(k):
            log_post[:, j] += np.bincount(it, weights=said[:, j], minlength=cl.n_items)
        log_post -= log_post.max(axis=1, keepdims=True)
        post = np.exp(log_post)
        post /= post.sum(axis=1, keepdims=True)
    return post, conf, acc


def _log_prior(pp: np.ndarray, temperature: float) -> np.ndarray:
    """Log of the temperature-scaled model probabilities: each item's class prior in EM."""
    return np.log(np.clip(temperature_scale(pp, temperature), _EPS, None))


def _temperature(cl: CrowdLabels, pp: np.ndarray) -> float:
    """CROWDLAB's temperature for ``pp`` (1 while no item has two labels)."""
    if not (cl.labels_per_item() > 1).any():
        return 1.0
    rows, c = _labelled_coo(cl, pp.shape[1])
    return best_temperature(c, pp[rows])


def _crowdlab_state(
    cl: CrowdLabels, pp: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """CROWDLAB's posterior and the weights that a new label would be pooled with.

    Returns:
        Posteriors ``(n_items, K)``, each item's total weight (model plus its annotators),
        annotator weights (``NaN`` without labels), the share ``p_consensus`` that a label
        puts on the class it names, and the temperature. While no item has two labels the
        weights cannot be estimated; ActiveLab's convention then holds: model and every
        annotator weigh 1 and a label is one-hot.
    """
    k = pp.shape[1]
    n = cl.labels_per_item()
    weights = np.where(np.bincount(cl.annotators, minlength=cl.n_annotators) > 0, 1.0, np.nan)
    if not (n > 1).any():
        post = pp.copy()
        rows = cl.items
        post[rows] = (pp[rows] + np.eye(k)[cl.labels]) / 2.0
        return post, 1.0 + n, weights, 1.0, 1.0
    rows, c = _labelled_coo(cl, k)
    temperature = best_temperature(c, pp[rows])
    post = temperature_scale(pp, temperature)
    _, stats, _ = crowdlab(
        c, post[rows], ConsensusMethod.BEST_QUALITY, QualityMethod.CROWDLAB,
        ScoreMethod.SELF_CONFIDENCE, np.random.default_rng(0),
    )  # fmt: skip
    post[rows] = stats.posteriors
    total = np.full(cl.n_items, stats.model_weight)
    total[rows] += np.bincount(
        c.it, weights=np.nan_to_num(stats.annotator_weight)[c.an], minlength=len(rows)
    )
    p_consensus = float(stats.agreement[c.n != 1].mean())
    return post, total, stats.annotator_weight, p_consensus, temperature


def _accuracy_gain(
    post: np.ndarray,
    total: np.ndarray,
    p_consensus: float,
    readers: list[tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """Expected gain in consensus accuracy from one more label per reader (CROWDLAB's pooling).

    ``readers`` holds, per new label, its confusion matrices ``(n, K, K)`` and weights
    ``(n,)``: the label is drawn from the confusion row of the true class (drawn from
    ``post``); the new consensus is the top class of ``post`` pooled with the labels, each
    with its weight, as CROWDLAB pools an annotator's label.
    """
    n, k = post.shape
    rows = np.arange(n)
    share = np.full((k, k), (1.0 - p_consensus) / max(k - 1, 1))
    np.fill_diagonal(share, p_consensus)
    pooled = total[:, None] * post
    after = np.zeros(n)
    for said in np.ndindex(*(k,) * len(readers)):
        shift = sum(w[:, None] * share[lab] for lab, (_, w) in zip(said, readers, strict=True))
        top = (pooled + shift).argmax(axis=1)
        chance = post[rows, top]
        for lab, (conf, _) in zip(said, readers, strict=True):
            chance = chance * conf[rows, top, lab]
        after += chance
    return after - post.max(axis=1)


def _crowdmed(
    cl: CrowdLabels,
    pp: np.ndarray,
    pool: _Pool,
    assign: bool,
    n_iter: int,
    strength: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    k = pp.shape[1]
    post, total, weights, p_consensus, temperature = _crowdlab_state(cl, pp)
    # who is likely to say what: EM confusion matrices with the calibrated model as prior
    em_post, conf, _acc = _fit_confusions(cl, _log_prior(pp, temperature), n_iter, strength)
    # an annotator's worth: accuracy weighted by how often each class occurs
    reliability = np.einsum("k,akk->a", em_post.mean(axis=0), conf)
    known = np.isfinite(weights)
    w = np.where(known, weights, np.mean(weights[known]) if known.any() else 1.0)
    # the average available annotator: mean confusion matrix and weight over the pool
    flat = np.column_stack([conf.reshape(cl.n_annotators, k * k), w])
    pool_sum, pool_n = pool.total(flat), pool.count.astype(np.float64)
    chosen = np.full(cl.n_items, -1)
    if assign:
        # the first label comes from the chosen annotator, a second from the rest of the pool
        chosen = pool.best(reliability)
        first = (conf[np.maximum(chosen, 0)], w[np.maximum(chosen, 0)])
        pool_sum = pool_sum - flat[np.maximum(chosen, 0)] * (chosen >= 0)[:, None]
        pool_n = pool_n - (chosen >= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = pool_sum / pool_n[:, None]
    average = (
        np.nan_to_num(mean[:, :-1], nan=1.0 / k).reshape(cl.n_items, k, k),
        np.nan_to_num(mean[:, -1], nan=1.0),
    )
    if not assign:
        first = average
    gain = _accuracy_gain(post, total, p_consensus, [first])
    if k <= _LOOKAHEAD_MAX_K:
        two = _accuracy_gain(post, total, p_consensus, [first, average]) / 2.0
        gain = np.where(pool.count >= 2, np.maximum(gain, two), gain)
    # once no one or two labels could change an item's consensus, ActiveLab's order decides
    gain = gain + _TIE_BREAK * (1.0 - _activelab(cl, pp)[0])
    gain = np.where(pool.count > 0, gain, 0.0)
    return gain, post, reliability, chosen, temperature


# ----------------------------------------------------------------------------- public
def relabel_scores(
    labels: CrowdLabels | npt.ArrayLike,
    pred_probs: npt.ArrayLike,
    *,
    method: str | RelabelMethod = "crowdmed",
    available: npt.ArrayLike | sp.spmatrix | None = None,
    assign: bool = False,
    n_iter: int = 20,
    prior_strength: float = 4.0,
) -> RelabelScores:
    """Score every item by how much one more annotation would improve its consensus.

    Args:
        labels: A :class:`~crowdmed.data.CrowdLabels` (COO triplets) or an integer array of
            shape ``(n_items, n_annotators)`` with ``-1`` marking a missing annotation. Items
            and annotators without any label are allowed.
        pred_probs: Float array of shape ``(n_items, K)`` whose rows sum to 1: a classifier's
            out-of-sample predicted probabilities for every item, labelled or not.
        method: ``"crowdmed"`` or ``"activelab"`` (see :class:`RelabelMethod`).
        available: Bool array (dense or SciPy sparse) of shape ``(n_items, n_annotators)``:
            who may label which item. Everyone by default. Annotators who already labelled an
            item are never available for it.
        assign: Also choose the annotator: the available one with the highest estimated
            accuracy; ``"crowdmed"`` then scores the item for that annotator (its two-label
            look-ahead takes the second label from the other available annotators).
        n_iter: EM iterations of the ``"crowdmed"`` confusion matrices.
        prior_strength: Pseudo-labels pulling each confusion row towards the annotator's
            one-coin accuracy, and that accuracy towards the crowd's mean.

    Returns:
        The scores, see :class:`RelabelScores`.

    Raises:
        ValueError: If ``pred_probs`` does not have one row per item summing to 1 and one
            column per class, or ``available`` has the wrong shape.

    References:
        Goh & Mueller (2023), "ActiveLab: Active Learning with Re-Labeling by Multiple
        Annotators". https://doi.org/10.48550/arXiv.2301.11856

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, -1], [0, 1, -1], [-1, -1, -1], [1, 1, 1]])
        >>> probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.6, 0.4], [0.2, 0.8]])
        >>> r = relabel_scores(labels, probs)
        >>> r.select(2)
        array([1, 2])
        >>> bool(r.eligible[3])  # all three annotators labelled item 3
        False
    """
    m = check_option(method, RelabelMethod, "method")
    cl, pp = _check_inputs(labels, pred_probs)
    pool = _Pool(available, cl)
    eligible = pool.count > 0
    if m is RelabelMethod.ACTIVELAB:
        quality, post, weights, temperature = _activelab(cl, pp)
        chosen = np.full(cl.n_items, -1)
        if assign:
            chosen = pool.best(np.nan_to_num(weights, nan=0.0))
        return RelabelScores(1.0 - quality, eligible, chosen, post, weights, temperature, m.value)
    gain, post, rel, chosen, temperature = _crowdmed(cl, pp, pool, assign, n_iter, prior_strength)
    return RelabelScores(gain, eligible, chosen, post, rel, temperature, m.value)


@dataclass(frozen=True)
class AnnotatorConfusions:
    """Result of :func:`annotator_confusions`.

    Attributes:
        posteriors: Float array of shape ``(n_items, K)``: P(true class | labels, model);
            rows sum to 1. An unlabelled item keeps the (calibrated) model's probabilities.
        consensus: Integer array of shape ``(n_items,)``: the argmax of ``posteriors``
            (the lower class on ties).
        confusion: Float array of shape ``(n_annotators, K, K)``:
            ``confusion[a, k, l] = P(annotator a says l | true class k)``; rows sum to 1.
        accuracy: Float array of shape ``(n_annotators,)``: each annotator's one-coin
            accuracy, shrunk towards the crowd's mean (an annotator without labels gets
            the mean).
        temperature: Temperature applied to ``pred_probs`` (1 without calibration).
    """

    posteriors: np.ndarray
    consensus: np.ndarray
    confusion: np.ndarray
    accuracy: np.ndarray
    temperature: float


def annotator_confusions(
    labels: CrowdLabels | npt.ArrayLike,
    pred_probs: npt.ArrayLike,
    *,
    calibrate: bool = True,
    n_iter: int = 20,
    prior_strength: float = 4.0,
) -> AnnotatorConfusions:
    """Per-annotator confusion matrices fitted by EM with a classifier as each item's prior.

    The model :func:`relabel_scores` (``method="crowdmed"``) uses to predict what an
    annotator would answer. Dawid–Skene EM in which the class prior of item ``i`` is the
    classifier's (temperature-scaled) ``pred_probs[i]`` instead of one prior shared by all
    items. Each confusion row is shrunk towards the annotator's one-coin matrix with
    ``prior_strength`` pseudo-labels, and the one-coin accuracy towards the crowd's mean, so
    an annotator with few labels is treated as an average one.

    Args:
        labels: A :class:`~crowdmed.data.CrowdLabels` (COO triplets) or an integer array of
            shape ``(n_items, n_annotators)`` with ``-1`` marking a missing annotation. Items
            and annotators without any label are allowed.
        pred_probs: Float array of shape ``(n_items, K)`` whose rows sum to 1: a classifier's
            out-of-sample predicted probabilities for every item.
        calibrate: Temperature-scale ``pred_probs`` first, to best match the vote shares
            (CROWDLAB's temperature, as :func:`relabel_scores` uses; 1 while no item has two
            labels).
        n_iter: Number of EM iterations (``0``: the posteriors are the model times one plus
            the vote counts, normalised, and the confusion matrices their M-step).
        prior_strength: Pseudo-labels of the shrinkage, ``> 0``.

    Returns:
        The posteriors, consensus and confusion matrices, see :class:`AnnotatorConfusions`.

    Raises:
        ValueError: If ``pred_probs`` does not have one row per item summing to 1 and one
            column per class, ``n_iter`` is not an integer ``>= 0`` or ``prior_strength`` is
            not positive.

    References:
        Dawid & Skene (1979). https://doi.org/10.2307/2346806

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 1], [1, 1, 0], [0, -1, 0], [-1, -1, -1]])
        >>> probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
        >>> r = annotator_confusions(labels, probs, calibrate=False)
        >>> r.consensus
        array([0, 1, 0, 1])
        >>> bool(r.accuracy[2] < r.accuracy[0])  # annotator 2 disagrees with the others
        True
    """
    if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 0:
        raise ValueError(f"`n_iter` must be an integer >= 0; got {n_iter!r}.")
    if not np.isfinite(prior_strength) or prior_strength <= 0:
        raise ValueError(f"`prior_strength` must be a positive number; got {prior_strength!r}.")
    cl, pp = _check_inputs(labels, pred_probs)
    temperature = _temperature(cl, pp) if calibrate else 1.0
    post, conf, acc = _fit_confusions(
        cl, _log_prior(pp, temperature), int(n_iter), float(prior_strength)
    )
    return AnnotatorConfusions(post, post.argmax(axis=1), conf, acc, float(temperature))
