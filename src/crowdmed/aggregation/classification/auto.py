"""Choosing an aggregator without gold: cross-validation over annotations."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from crowdmed._validation import check_random_state, interval
from crowdmed.aggregation.base import BaseAggregator
from crowdmed.aggregation.classification.majority_vote import soft_confusion
from crowdmed.data.labels import CrowdLabels

__all__ = ["AutoAggregator", "annotation_folds", "held_out_log_likelihood"]

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


class AutoAggregator(BaseAggregator):
    """The classification aggregator that best predicts held-out labels, chosen without gold.

    Each candidate method is scored by K-fold cross-validation over annotations
    (:func:`annotation_folds`): it is fitted on the labels outside a fold, and each label in
    the fold is predicted from the fitted posterior of its item combined with the fitted model
    of its annotator (:func:`held_out_log_likelihood`). The score of a method is the mean
    log-probability of the held-out labels; the method with the highest score is refitted on
    all the labels. Fitted attributes of the chosen model (``confusion_``, ``skills_``, ...)
    are readable on this estimator.

    Args:
        candidates: Method names to choose from (see :class:`~crowdmed.aggregation.Method`);
            ``None`` for every method that needs no gold (binary-only methods join when
            ``K = 2``).
        n_folds: Number of folds, at least 2.
        random_state: Seed or ``numpy.random.Generator`` for the folds; the candidates that
            take one get a seed drawn from it. ``None`` draws fresh folds on every fit.

    Attributes:
        chosen_ (str): Name of the chosen method.
        scores_ (dict[str, float]): Mean held-out log-likelihood per label of every candidate
            (higher is better); ``-inf`` for a candidate whose fit failed.
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
        >>> sorted(auto.scores_)
        ['dawid-skene', 'majority-vote']
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "candidates": _check_candidates,
        "n_folds": interval(2, None, integer=True),
    }

    def __init__(
        self,
        *,
        candidates: Sequence[str] | None = None,
        n_folds: int = 5,
        random_state: int | np.random.Generator | None = 0,
    ) -> None:
        self.candidates = candidates
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
        for attr in ("estimator_", "chosen_", "scores_", "errors_"):
            self.__dict__.pop(attr, None)
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
        scores: dict[str, float] = {}
        errors: dict[str, str] = {}
        for name in names:
            total = 0.0
            try:
                for train, held in splits:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        agg = self._make(name, seed).fit(train, gold=gold)
                    total += float(held_out_log_likelihood(agg, train, held).sum())
            except (ValueError, ArithmeticError, RuntimeError) as exc:
                # a method that cannot fit this data (or whose solver fails on it) is left out
                errors[name] = " ".join(str(exc).split())
                scores[name] = float("-inf")
                continue
            scores[name] = total / n_held if n_held else 0.0
        fitted = [n for n in names if n not in errors]
        if not fitted:
            raise ValueError(
                f"`candidates` must include a method that can fit these labels; every one "
                f"failed: {errors}."
            )
        # highest score; ties keep the order of the candidates
        chosen = max(fitted, key=lambda n: scores[n])
        estimator = self._make(chosen, seed)
        estimator.fit(cl, gold=gold, callback=self._callback)
        self.chosen_ = chosen
        self.scores_ = scores
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
