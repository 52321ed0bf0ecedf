"""Choosing an aggregator without gold: cross-validation over annotations."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from enum import Enum
from typing import Any, ClassVar

import numpy as np

from crowdmed._validation import check_option, check_random_state, interval
from crowdmed.aggregation.base import BaseAggregator
from crowdmed.aggregation.classification.majority_vote import soft_confusion
from crowdmed.data.labels import CrowdLabels

__all__ = [
    "AutoAggregator",
    "Criterion",
    "annotation_folds",
    "chance_corrected_agreement",
    "consensus_log_likelihood",
    "held_out_agreement",
    "held_out_log_likelihood",
]

#: Weight of the uniform distribution mixed into every annotator model before a logarithm,
#: so that a label the model calls impossible costs a finite ``log(ε / K)``.
UNIFORM_MIX = 1e-3

#: Candidates by default: every classification method that learns from the labels alone
#: (``gold-majority-vote`` needs gold; binary-only ones are left out on more classes).
DEFAULT_CANDIDATES = (
    "majority-vote",
    "wawa",
    "dawid-skene",
    "one-coin",
    "glad",
    "sens-spec",
    "kos",
    "zero-based-skill",
    "mace",
    "bcc",
    "mmsr",
)
_BINARY_ONLY = frozenset({"sens-spec", "kos"})
_NEEDS_GOLD = frozenset({"gold-majority-vote"})

#: Pseudo-labels of the pooled (all annotators) statistics added to each annotator's own in
#: :func:`chance_corrected_agreement` and :func:`consensus_log_likelihood`.
POOLED_STRENGTH = 5.0


class Criterion(str, Enum):
    """How :class:`AutoAggregator` scores a candidate on the held-out labels."""

    AGREEMENT = "agreement"
    KAPPA = "kappa"
    LIKELIHOOD = "likelihood"
    CONSENSUS = "consensus"


def _check_criterion(value: Any) -> str | None:
    check_option(value, Criterion, "criterion")  # raises with a "did you mean" hint
    return None


def _check_candidates(value: Any) -> str | None:
    if value is None:
        return None
    from crowdmed.aggregation import Method

    names = {m.value for m in Method}
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) == 0:
        return "None or a non-empty sequence of method names"
    bad = [v for v in value if v not in names or v in _NEEDS_GOLD]
    if bad:
        return f"method names that need no gold, among {sorted(names - _NEEDS_GOLD)}"
    return None


def annotation_folds(cl: CrowdLabels, n_folds: int, random_state: Any = None) -> np.ndarray:
    """Fold of every label for cross-validation over annotations.

    The labels of each item are shuffled and dealt to consecutive folds from a random start, so
    a fold holds at most ``ceil(n_i / n_folds)`` of the ``n_i`` labels of item ``i`` and every
    item keeps at least one label in each training set. Items with a single label are never
    held out (fold ``-1``).

    Args:
        cl: The labels.
        n_folds: Number of folds, at least 2.
        random_state: Seed or ``numpy.random.Generator``.

    Returns:
        Integer array of shape ``(n_labels,)`` with values in ``-1..n_folds-1``.

    Examples:
        >>> cl = CrowdLabels.from_dense(np.array([[0, 1, 1], [1, -1, -1]]))
        >>> annotation_folds(cl, 2, random_state=0)
        array([ 0,  1,  0, -1])
    """
    rng = check_random_state(random_state)
    order = np.lexsort((rng.random(cl.n_labels), cl.items))  # shuffled within each item
    counts = np.bincount(cl.items, minlength=cl.n_items)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_items = cl.items[order]
    rank = np.arange(cl.n_labels) - starts[sorted_items]
    offset = rng.integers(0, n_folds, size=cl.n_items)
    folds = np.empty(cl.n_labels, dtype=np.int64)
    folds[order] = (rank + offset[sorted_items]) % n_folds
    folds[counts[cl.items] < 2] = -1
    return folds


def _subset(cl: CrowdLabels, keep: np.ndarray) -> CrowdLabels:
    return CrowdLabels.from_triplets(
        cl.items[keep],
        cl.annotators[keep],
        cl.labels[keep],
        n_items=cl.n_items,
        n_annotators=cl.n_annotators,
        n_classes=cl.n_classes,
    )


def held_out_log_likelihood(
    agg: BaseAggregator, train: CrowdLabels, held_out: CrowdLabels
) -> np.ndarray:
    """Log-probability of each held-out label under a model fitted on the training labels.

    The held-out label ``l`` of annotator ``a`` on item ``i`` has probability
    ``Σ_k posteriors[i, k] · confusion[a, k, l]``: the fitted posterior of the item combined
    with the fitted annotator model, the method's own ``confusion_`` when it has one,
    otherwise the annotator's confusion against the method's posteriors on the training labels
    (half a pseudo-count per cell). ``UNIFORM_MIX`` of a uniform distribution is mixed in.

    Args:
        agg: An aggregator fitted on ``train``.
        train: The training labels.
        held_out: The held-out labels (same items, annotators and classes).

    Returns:
        Float array of shape ``(held_out.n_labels,)``.
    """
    post = np.asarray(agg.posteriors_, dtype=np.float64)
    k = post.shape[1]
    conf = getattr(agg, "confusion_", None)
    if not (isinstance(conf, np.ndarray) and conf.shape == (train.n_annotators, k, k)):
        conf = soft_confusion(train, post, smoothing=0.5)
    conf = (1.0 - UNIFORM_MIX) * np.clip(conf, 0.0, 1.0) + UNIFORM_MIX / k
    # P(label l | item i) = Σ_k post[i, k] conf[a, k, l], one held-out label at a time
    p = np.einsum("nk,nk->n", post[held_out.items], conf[held_out.annotators, :, held_out.labels])
    return np.log(np.maximum(p, 1e-300))


def held_out_agreement(agg: BaseAggregator, held_out: CrowdLabels) -> np.ndarray:
    """Probability that the fitted consensus gives each held-out label's class.

    The held-out label ``l`` on item ``i`` scores ``posteriors[i, l]``, the posterior fitted
    without it: the expected agreement between the consensus and a label it did not see. No
    annotator model enters, so a method gains nothing from a flexible one. When every
    annotator is right with the same probability ``q > 1/K`` whatever the class and labels
    are independent given the truth, the expected agreement of a hard consensus is
    ``(1 - q) / (K - 1) + accuracy · (q - (1 - q) / (K - 1))``, increasing in its accuracy.

    Args:
        agg: An aggregator fitted on the training labels.
        held_out: The held-out labels (same items, annotators and classes).

    Returns:
        Float array of shape ``(held_out.n_labels,)`` with values in ``[0, 1]``.

    Examples:
        >>> import types
        >>> agg = types.SimpleNamespace(posteriors_=np.array([[0.8, 0.2], [0.1, 0.9]]))
        >>> held = CrowdLabels.from_dense(np.array([[1], [1]]), n_classes=2)
        >>> held_out_agreement(agg, held)
        array([0.2, 0.9])
    """
    post = np.asarray(agg.posteriors_, dtype=np.float64)
    return post[held_out.items, held_out.labels]


def chance_corrected_agreement(
    agg: BaseAggregator, train: CrowdLabels, held_out: CrowdLabels
) -> np.ndarray:
    """:func:`held_out_agreement` minus the agreement expected by chance (Cohen's kappa's).

    The held-out label ``l`` of annotator ``a`` on item ``i`` scores
    ``posteriors[i, l] - Σ_k rate[a, k] · posteriors[i, k]``, where ``rate[a]`` is how often
    ``a`` gives each class in the training labels, with ``POOLED_STRENGTH`` pseudo-labels of
    the pooled rate of all annotators (which has half a pseudo-count per class). An annotator
    who gives the same class whatever the item then adds nothing on average, whatever the
    consensus.

    Args:
        agg: An aggregator fitted on ``train``.
        train: The training labels.
        held_out: The held-out labels (same items, annotators and classes).

    Returns:
        Float array of shape ``(held_out.n_labels,)`` with values in ``[-1, 1]``.
    """
    k = train.n_classes
    post = np.asarray(agg.posteriors_, dtype=np.float64)
    counts = np.bincount(
        train.annotators * k + train.labels, minlength=train.n_annotators * k
    ).reshape(train.n_annotators, k)
    pooled = (counts.sum(axis=0) + 0.5) / (train.n_labels + 0.5 * k)
    rate = (counts + POOLED_STRENGTH * pooled) / (
        counts.sum(axis=1, keepdims=True) + POOLED_STRENGTH
    )
    p = post[held_out.items]
    return p[np.arange(held_out.n_labels), held_out.labels] - np.einsum(
        "nk,nk->n", p, rate[held_out.annotators]
    )


def consensus_log_likelihood(
    agg: BaseAggregator, train: CrowdLabels, held_out: CrowdLabels
) -> np.ndarray:
    """Log-probability of each held-out label given the fitted hard consensus, one common model.

    The consensus ``c_i`` is the fitted ``labels_`` (argmax of ``posteriors_`` when absent).
    Every candidate is scored with the same annotator model, fitted on the training labels
    against its consensus: annotator ``a``'s counts ``n[a, k, l]`` of label ``l`` on items
    of consensus ``k``, plus ``POOLED_STRENGTH`` pseudo-labels of the pooled confusion
    matrix of all annotators (half a pseudo-count per cell), rows normalised. The held-out
    label ``l`` of annotator ``a`` on item ``i`` has probability ``confusion[a, c_i, l]``,
    mixed with ``UNIFORM_MIX`` of a uniform distribution.

    Args:
        agg: An aggregator fitted on ``train``.
        train: The training labels.
        held_out: The held-out labels (same items, annotators and classes).

    Returns:
        Float array of shape ``(held_out.n_labels,)``.
    """
    k = train.n_classes
    labels = getattr(agg, "labels_", None)
    if labels is None:
        labels = np.argmax(np.asarray(agg.posteriors_), axis=1)
    labels = np.asarray(labels, dtype=np.int64)
    cell = (train.annotators * k + labels[train.items]) * k + train.labels
    counts = np.bincount(cell, minlength=train.n_annotators * k * k).astype(np.float64)
    counts = counts.reshape(train.n_annotators, k, k)
    pooled = counts.sum(axis=0) + 0.5
    pooled /= pooled.sum(axis=1, keepdims=True)
    conf = counts + POOLED_STRENGTH * pooled
    conf /= conf.sum(axis=2, keepdims=True)
    conf = (1.0 - UNIFORM_MIX) * conf + UNIFORM_MIX / k
    return np.log(conf[held_out.annotators, labels[held_out.items], held_out.labels])


def _criterion_scores(
    agg: BaseAggregator, train: CrowdLabels, held_out: CrowdLabels
) -> dict[str, float]:
    """Sum over the held-out labels of every criterion's score."""
    post = np.asarray(agg.posteriors_)
    if post.shape != (train.n_items, train.n_classes) or not np.isfinite(post).all():
        raise ArithmeticError("its posteriors are not finite probabilities on these labels")
    return {
        Criterion.AGREEMENT.value: float(held_out_agreement(agg, held_out).sum()),
        Criterion.KAPPA.value: float(chance_corrected_agreement(agg, train, held_out).sum()),
        Criterion.LIKELIHOOD.value: float(held_out_log_likelihood(agg, train, held_out).sum()),
        Criterion.CONSENSUS.value: float(consensus_log_likelihood(agg, train, held_out).sum()),
    }


class AutoAggregator(BaseAggregator):
    """The classification aggregator whose consensus best predicts held-out labels, without gold.

    Each candidate method is scored by K-fold cross-validation over annotations
    (:func:`annotation_folds`): it is fitted on the labels outside a fold, and every label in
    the fold is compared with the fitted posterior of its item. The ``criterion`` decides how:

    - ``"agreement"`` (default): the mean probability the consensus gives the held-out
      label's class (:func:`held_out_agreement`), the expected agreement between the consensus
      and a label it did not see. It scores the consensus alone. It can be fooled by
      annotators who give one class whatever the item: when they are many, it prefers a
      consensus that gives that class too (``"kappa"`` does not).
    - ``"kappa"``: the same minus the agreement expected by chance from each annotator's
      rate of each class (:func:`chance_corrected_agreement`), so that an annotator who
      always gives one class rewards no consensus.
    - ``"likelihood"``: the mean held-out log-likelihood under the candidate's posterior and
      its own annotator model (:func:`held_out_log_likelihood`). It rewards the method that
      describes the annotators' labels best, which favours flexible annotator models.
    - ``"consensus"``: the mean held-out log-likelihood given the candidate's hard consensus
      under one annotator model common to all candidates (:func:`consensus_log_likelihood`).

    All four are computed from the same fits (``criterion_scores_``); the candidate with the
    highest score under ``criterion`` is refitted on all the labels. None of them is within
    0.5 point of the most accurate method on every real dataset of the benchmarks
    (``benchmarks/aggregation_auto.py``); the default was chosen there, as the one with the
    smallest largest and mean loss of accuracy. Fitted attributes of the
    chosen model (``confusion_``, ``skills_``, ...) are readable on this estimator.

    Args:
        candidates: Method names to choose from (see :class:`~crowdmed.aggregation.Method`);
            ``None`` for every method that needs no gold (binary-only methods join when
            ``K = 2``).
        criterion: ``"agreement"``, ``"kappa"``, ``"likelihood"`` or ``"consensus"`` (see
            above).
        n_folds: Number of folds, at least 2.
        random_state: Seed or ``numpy.random.Generator`` for the folds; the candidates that
            take one get a seed drawn from it. ``None`` draws fresh folds on every fit.

    Attributes:
        chosen_ (str): Name of the chosen method.
        scores_ (dict[str, float]): Score of every candidate under ``criterion``, averaged
            over the held-out labels (higher is better); ``-inf`` for a candidate whose fit
            failed.
        criterion_scores_ (dict[str, dict[str, float]]): The same for every criterion, by
            criterion name.
        errors_ (dict[str, str]): Why a candidate failed, by name.
        n_held_out_ (int): Number of labels held out over all folds (every label of items
            with two labels or more).
        estimator_ (BaseAggregator): The chosen method fitted on all the labels.
        posteriors_ (ndarray of shape (n_items, n_classes)): Those of ``estimator_``.
        labels_ (ndarray of shape (n_items,)): Argmax of ``posteriors_``.
        n_iter_ (int | None): Iterations of ``estimator_``.
        converged_ (bool | None): Whether ``estimator_`` converged.

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 1], [1, 1, 1], [0, 0, 0], [1, 0, 1]])
        >>> auto = AutoAggregator(candidates=["majority-vote", "dawid-skene"], random_state=0)
        >>> auto.fit(labels).chosen_ in ("majority-vote", "dawid-skene")
        True
        >>> sorted(auto.scores_), sorted(auto.criterion_scores_)
        (['dawid-skene', 'majority-vote'], ['agreement', 'consensus', 'kappa', 'likelihood'])
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "candidates": _check_candidates,
        "criterion": _check_criterion,
        "n_folds": interval(2, None, integer=True),
    }

    def __init__(
        self,
        *,
        candidates: Sequence[str] | None = None,
        criterion: str = "agreement",
        n_folds: int = 5,
        random_state: int | np.random.Generator | None = 0,
    ) -> None:
        self.candidates = candidates
        self.criterion = criterion
        self.n_folds = n_folds
        self.random_state = random_state

    def __getattr__(self, name: str) -> Any:
        # fitted attributes of the chosen model (confusion_, skills_ ...) read through
        if name.endswith("_") and not name.startswith("_") and "estimator_" in self.__dict__:
            return getattr(self.__dict__["estimator_"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _candidate_names(self, cl: CrowdLabels) -> list[str]:
        names = list(DEFAULT_CANDIDATES if self.candidates is None else self.candidates)
        if cl.n_classes != 2:
            names = [n for n in names if n not in _BINARY_ONLY]
        if not names:
            raise ValueError(
                f"`candidates` must include a method for K = {cl.n_classes} classes; got only "
                f"binary methods {list(self.candidates or [])}. Add e.g. 'dawid-skene'."
            )
        return names

    def _make(self, name: str, seed: Any) -> BaseAggregator:
        from crowdmed.aggregation import make_aggregator

        agg = make_aggregator(name)
        if "random_state" in agg.get_params():
            agg.set_params(random_state=seed)
        return agg

    def _fit(self, cl: CrowdLabels, gold: np.ndarray | None) -> None:
        for attr in ("estimator_", "chosen_", "scores_", "criterion_scores_", "errors_"):
            self.__dict__.pop(attr, None)
        criterion = Criterion(self.criterion).value
        rng = check_random_state(self.random_state)
        seed = int(rng.integers(2**31))
        names = self._candidate_names(cl)
        folds = annotation_folds(cl, self.n_folds, rng)
        splits = []
        for f in range(self.n_folds):
            held = folds == f
            if held.any():
                splits.append((_subset(cl, ~held), _subset(cl, held)))
        n_held = int(sum(h.n_labels for _, h in splits))
        by_criterion: dict[str, dict[str, float]] = {c.value: {} for c in Criterion}
        errors: dict[str, str] = {}
        for name in names:
            totals = dict.fromkeys(by_criterion, 0.0)
            try:
                for train, held in splits:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        agg = self._make(name, seed).fit(train, gold=gold)
                    for c, value in _criterion_scores(agg, train, held).items():
                        totals[c] += value
            except (ValueError, ArithmeticError, RuntimeError) as exc:
                # a method that cannot fit this data (or whose solver fails on it) is left out
                errors[name] = " ".join(str(exc).split())
                for c in by_criterion:
                    by_criterion[c][name] = float("-inf")
                continue
            for c in by_criterion:
                by_criterion[c][name] = totals[c] / n_held if n_held else 0.0
        fitted = [n for n in names if n not in errors]
        if not fitted:
            raise ValueError(
                f"`candidates` must include a method that can fit these labels; every one "
                f"failed: {errors}."
            )
        scores = by_criterion[criterion]
        # highest score; ties keep the order of the candidates
        chosen = max(fitted, key=lambda n: scores[n])
        estimator = self._make(chosen, seed)
        estimator.fit(cl, gold=gold, callback=self._callback)
        self.chosen_ = chosen
        self.scores_ = scores
        self.criterion_scores_ = by_criterion
        self.errors_ = errors
        self.n_held_out_ = n_held
        self.estimator_ = estimator
        self.posteriors_ = estimator.posteriors_
        self.n_iter_ = getattr(estimator, "n_iter_", None)
        self.converged_ = getattr(estimator, "converged_", None)
        self.log_likelihoods_ = list(getattr(estimator, "log_likelihoods_", []) or [])

    def _tie_random_state(self) -> Any:
        return self.__dict__["estimator_"]._tie_random_state()

    def _predict_proba(self, cl: CrowdLabels) -> np.ndarray:
        return self.__dict__["estimator_"]._predict_proba(cl)
