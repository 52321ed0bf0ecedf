"""Simulated classification annotators: labels, gold questions and quizzes drawn from confusions.

Labels follow the Dawid–Skene generative model: annotator ``a`` labels an item of true class
``k`` with class ``l`` with probability ``confusion[a, k, l]``, independently of the other
annotators and items. All sampling is vectorised (cumulative sums compared with uniform draws)
and all randomness comes from ``random_state``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from crowdmed._text import short_list
from crowdmed._validation import check_random_state
from crowdmed.data.labels import MISSING, CrowdLabels
from crowdmed.simulate._common import ROW_SUM_TOL, check_confusion, check_int, fill_off_diagonal
from crowdmed.simulate.confusion import adversarial_confusion
from crowdmed.typing import RandomState

__all__ = [
    "RODRIGUES_ACCURACIES",
    "RODRIGUES_ADVERSARIAL_STRENGTH",
    "SimulatedCrowd",
    "rodrigues_crowd",
    "simulate_crowd",
    "simulate_labels",
    "simulate_quiz",
]

#: Accuracies (diagonal of the confusion matrix) of the four diagonally dominant annotators of
#: :func:`rodrigues_crowd`.
RODRIGUES_ACCURACIES = (0.9, 0.8, 0.7, 0.6)
#: Flip probability of the adversarial fifth annotator of :func:`rodrigues_crowd`.
RODRIGUES_ADVERSARIAL_STRENGTH = 0.9

# Largest number of float cells compared at once when sampling (bounds memory for large K).
_CHUNK_CELLS = 1 << 22


class SimulatedCrowd(NamedTuple):
    """Labels of a simulated crowd together with the confusion matrices that produced them.

    Attributes:
        labels: Integer array of shape ``(n_items, n_annotators)``; ``-1`` marks a missing
            annotation.
        confusion: Float array of shape ``(n_annotators, n_classes, n_classes)``; rows sum
            to 1 (see docs/conventions.md).
    """

    labels: np.ndarray
    confusion: np.ndarray


# ---------------------------------------------------------------------------- checks
def _check_truth(truth: npt.ArrayLike, n_classes: int) -> np.ndarray:
    """Validate true classes, shape ``(n_items,)``, values in ``0..n_classes-1``."""
    t = np.asarray(truth)
    if t.ndim != 1:
        raise ValueError(f"`truth` must be a 1-D array of shape (n_items,); got shape {t.shape}.")
    if t.size == 0:
        raise ValueError("`truth` must contain at least one item; got an empty array.")
    if np.issubdtype(t.dtype, np.floating):
        if not np.all(t == np.round(t)):  # also rejects NaN
            raise TypeError("`truth` must hold integer class indices; got non-integer floats.")
    elif t.dtype == bool or not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"`truth` must be an integer array; got dtype {t.dtype}.")
    t = t.astype(np.int64)
    bad = (t < 0) | (t >= n_classes)
    if bad.any():
        raise ValueError(
            f"`truth` must hold classes in 0..{n_classes - 1} (n_classes = {n_classes}); got "
            f"{short_list(np.unique(t[bad]))}."
        )
    return t


def _check_assignment(
    n_items: int,
    n_annotators: int,
    labels_per_item: Any,
    assignment: npt.ArrayLike | None,
) -> tuple[int | None, np.ndarray | None]:
    """Validate ``labels_per_item`` / ``assignment``; at most one may be given."""
    if labels_per_item is not None and assignment is not None:
        raise ValueError(
            "Pass either `labels_per_item` or `assignment`, not both; got both. Drop one."
        )
    r = None
    if labels_per_item is not None:
        r = check_int(labels_per_item, "labels_per_item", minimum=1, maximum=n_annotators)
    mask = None
    if assignment is not None:
        mask = np.asarray(assignment)
        if mask.shape != (n_items, n_annotators):
            raise ValueError(
                f"`assignment` must have shape (n_items, n_annotators) = ({n_items}, "
                f"{n_annotators}); got {mask.shape}."
            )
        if mask.dtype != bool:
            if not np.issubdtype(mask.dtype, np.number) or not np.isin(mask, (0, 1)).all():
                raise TypeError(
                    f"`assignment` must be a boolean array (True = the annotator labels the "
                    f"item); got dtype {mask.dtype} with values other than 0 and 1."
                )
            mask = mask.astype(bool)
        empty = np.flatnonzero(~mask.any(axis=1))
        if len(empty):
            raise ValueError(
                f"`assignment` must give every item at least one annotator; items "
                f"{short_list(empty)} have none. Drop these items from `truth`."
            )
    return r, mask


def _check_prior(class_prior: npt.ArrayLike | None, n_classes: int) -> np.ndarray:
    """Validate a class prior of shape ``(n_classes,)``; uniform when ``None``."""
    if class_prior is None:
        return np.full(n_classes, 1.0 / n_classes)
    prior = np.asarray(class_prior, dtype=np.float64)
    if prior.shape != (n_classes,):
        raise ValueError(
            f"`class_prior` must have shape (n_classes,) = ({n_classes},); got {prior.shape}."
        )
    if not ((prior >= 0) & (prior <= 1)).all() or abs(prior.sum() - 1) > ROW_SUM_TOL:
        raise ValueError(
            f"`class_prior` must hold probabilities summing to 1; got {short_list(prior)} "
            f"(sum {prior.sum():.6g})."
        )
    return prior / prior.sum()


# ---------------------------------------------------------------------------- sampling
def _row_thresholds(conf: np.ndarray) -> np.ndarray:
    """Cumulative sums of every confusion row without the last column, ``(A * K, K - 1)``.

    Row ``a * K + k`` belongs to annotator ``a`` and true class ``k``. Class ``l`` is drawn
    when exactly ``l`` thresholds are ``<= u`` for ``u ~ U[0, 1)``. The thresholds from the
    last class with positive probability onwards are set to exactly 1, so rounding in the
    cumulative sum can never select a class of probability 0.
    """
    n_annotators, k = conf.shape[:2]
    cdf = np.cumsum(conf, axis=2)
    last = k - 1 - np.argmax(conf[:, :, ::-1] > 0, axis=2)
    cdf = np.where(np.arange(k) >= last[:, :, None], 1.0, cdf)
    return cdf[:, :, :-1].reshape(n_annotators * k, k - 1)


def _draw(thresholds: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Draw one label per entry of ``rows`` (indices into ``thresholds``) from uniforms ``u``."""
    out = np.empty(len(u), dtype=np.int64)
    step = max(1, _CHUNK_CELLS // max(1, thresholds.shape[1]))
    for start in range(0, len(u), step):  # chunks bound memory; each chunk is vectorised
        sl = slice(start, start + step)
        cdf = np.take(thresholds, rows[sl], axis=0)
        out[sl] = np.count_nonzero(u[sl, None] >= cdf, axis=1)
    return out


def _floyd_subsets(n: int, population: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniformly random ``size``-subsets of ``0..population-1``, sorted rows ``(n, size)``.

    Floyd's algorithm, vectorised over the ``n`` subsets: ``O(n * size**2)`` time and
    ``O(n * size)`` memory, independent of ``population``.
    """
    chosen = np.empty((n, size), dtype=np.int64)
    for j, top in enumerate(range(population - size, population)):
        cand = rng.integers(0, top + 1, size=n)
        taken = (chosen[:, :j] == cand[:, None]).any(axis=1)
        chosen[:, j] = np.where(taken, top, cand)
    chosen.sort(axis=1)
    return chosen


def _assigned_pairs(
    n_items: int,
    n_annotators: int,
    r: int | None,
    mask: np.ndarray | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``(item, annotator)`` index pairs that receive a label, sorted by item then annotator."""
    if mask is not None:
        items, annotators = np.nonzero(mask)
        return items, annotators
    if r is None or r == n_annotators:
        items = np.repeat(np.arange(n_items), n_annotators)
        return items, np.tile(np.arange(n_annotators), n_items)
    m = min(r, n_annotators - r)
    if m * m <= 8 * n_annotators:
        # few chosen (or few left out) per item: Floyd's algorithm, no (n_items, A) array
        subsets = _floyd_subsets(n_items, n_annotators, m, rng)
        if m == r:
            return np.repeat(np.arange(n_items), r), subsets.ravel()
        keep = np.ones((n_items, n_annotators), dtype=bool)
        np.put_along_axis(keep, subsets, False, axis=1)
    else:
        # the r smallest of i.i.d. uniform keys are a uniformly random r-subset
        keys = rng.random((n_items, n_annotators))
        chosen = np.argpartition(keys, r - 1, axis=1)[:, :r]
        keep = np.zeros((n_items, n_annotators), dtype=bool)
        np.put_along_axis(keep, chosen, True, axis=1)
    items, annotators = np.nonzero(keep)
    return items, annotators


def _simulate_triplets(
    truth: np.ndarray,
    conf: np.ndarray,
    r: int | None,
    mask: np.ndarray | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COO triplets ``(items, annotators, labels)`` of validated inputs."""
    n_annotators, n_classes = conf.shape[:2]
    items, annotators = _assigned_pairs(len(truth), n_annotators, r, mask, rng)
    u = rng.random(len(items))
    rows = annotators * n_classes + truth[items]
    return items, annotators, _draw(_row_thresholds(conf), rows, u)


def simulate_labels(
    truth: npt.ArrayLike,
    confusion: npt.ArrayLike,
    *,
    labels_per_item: int | None = None,
    assignment: npt.ArrayLike | None = None,
    random_state: RandomState = None,
) -> np.ndarray:
    """Draw annotator labels from confusion matrices (the Dawid–Skene generative model).

    Annotator ``a`` labels item ``i`` with class ``l`` with probability
    ``confusion[a, truth[i], l]``, independently of everything else. Who labels what:

    - neither argument: every annotator labels every item;
    - ``labels_per_item=r``: each item is labelled by ``r`` distinct annotators chosen
      uniformly at random, independently per item (Floyd's algorithm vectorised over items
      when ``r`` or ``A - r`` is small, else the ``r`` smallest of i.i.d. uniform keys), so
      annotators label about ``n_items * r / A`` items each but not exactly as many;
    - ``assignment``: exactly the given ``(item, annotator)`` pairs.

    Args:
        truth: Integer array of shape ``(n_items,)`` with the true class of each item, in
            ``0..n_classes-1``.
        confusion: Float array of shape ``(n_annotators, n_classes, n_classes)``;
            ``confusion[a, k, l] = P(annotator a says l | true class k)``, rows sum to 1.
        labels_per_item: Number of annotators per item, in ``1..n_annotators``.
        assignment: Boolean array of shape ``(n_items, n_annotators)``; ``True`` where the
            annotator labels the item. Every item needs at least one annotator.
        random_state: Seed or ``numpy.random.Generator``.

    Returns:
        Integer array of shape ``(n_items, n_annotators)``; ``-1`` marks a missing
        annotation.

    Raises:
        ValueError: If ``truth`` holds classes outside ``0..n_classes-1``, ``confusion`` has the
            wrong shape or rows that do not sum to 1, ``labels_per_item`` exceeds the number of
            annotators, both ``labels_per_item`` and ``assignment`` are given, or an item has
            no annotator in ``assignment``.
        TypeError: If ``truth`` is not integer, ``assignment`` is not boolean, or
            ``random_state`` is not a seed or Generator.

    Examples:
        >>> import numpy as np
        >>> from crowdmed.simulate import binary_confusion
        >>> perfect_and_flipper = binary_confusion(sensitivity=[1.0, 0.0], specificity=[1.0, 0.0])
        >>> simulate_labels(np.array([0, 1, 1]), perfect_and_flipper, random_state=0)
        array([[0, 1],
               [1, 0],
               [1, 0]])
        >>> conf = np.tile(np.eye(3), (5, 1, 1))
        >>> labels = simulate_labels(np.arange(3), conf, labels_per_item=2, random_state=0)
        >>> (labels != -1).sum(axis=1)
        array([2, 2, 2])
    """
    conf = check_confusion(confusion)
    n_annotators, n_classes = conf.shape[:2]
    t = _check_truth(truth, n_classes)
    n_items = len(t)
    r, mask = _check_assignment(n_items, n_annotators, labels_per_item, assignment)
    rng = check_random_state(random_state)
    items, annotators, labels = _simulate_triplets(t, conf, r, mask, rng)
    out = np.full((n_items, n_annotators), MISSING, dtype=np.int64)
    out[items, annotators] = labels
    return out


def simulate_quiz(
    confusion: npt.ArrayLike,
    *,
    n_questions: int,
    class_prior: npt.ArrayLike | None = None,
    random_state: RandomState = None,
) -> np.ndarray:
    """Measured accuracy of each annotator on a quiz of gold questions.

    One quiz of ``n_questions`` gold items, with true classes drawn from ``class_prior``, is
    answered by every annotator (a shared qualification test); annotator ``a`` answers a
    question of class ``k`` correctly with probability ``confusion[a, k, k]``. The expected
    accuracy is ``sum_k class_prior[k] * confusion[a, k, k]``: the mean of the diagonal for
    a uniform prior. The result is the quiz accuracy ``γ`` used as a trust prior by AggNet.

    Args:
        confusion: Float array of shape ``(n_annotators, n_classes, n_classes)``; rows sum
            to 1.
        n_questions: Number of gold questions (at least 1).
        class_prior: Float array of shape ``(n_classes,)`` summing to 1; ``None`` for uniform.
        random_state: Seed or ``numpy.random.Generator``.

    Returns:
        Float array of shape ``(n_annotators,)`` with the share of correct answers, in
        ``[0, 1]``.

    Raises:
        ValueError: If ``n_questions < 1`` or ``class_prior`` is not a distribution over the
            classes.

    References:
        Albarqouni et al. (2016). AggNet: deep learning from crowds for mitosis detection in
        breast cancer histology images. IEEE TMI. https://doi.org/10.1109/TMI.2016.2528120

    Examples:
        >>> import numpy as np
        >>> from crowdmed.simulate import binary_confusion
        >>> conf = binary_confusion(sensitivity=[1.0, 0.0, 1.0], specificity=[1.0, 0.0, 0.0])
        >>> simulate_quiz(conf, n_questions=10, class_prior=[0.0, 1.0], random_state=0)
        array([1., 0., 1.])
    """
    conf = check_confusion(confusion)
    n_classes = conf.shape[1]
    q = check_int(n_questions, "n_questions", minimum=1)
    prior = _check_prior(class_prior, n_classes)
    rng = check_random_state(random_state)
    # Counting is equivalent to answering question by question: the quiz holds counts[k]
    # items of class k, and annotator a gets each right with probability confusion[a, k, k].
    counts = rng.multinomial(q, prior)
    diag = np.clip(np.diagonal(conf, axis1=1, axis2=2), 0.0, 1.0)
    correct = rng.binomial(counts[None, :], diag)
    return correct.sum(axis=1) / q


def simulate_crowd(
    truth: npt.ArrayLike,
    confusion: npt.ArrayLike,
    *,
    labels_per_item: int | None = None,
    assignment: npt.ArrayLike | None = None,
    n_quiz: int = 0,
    n_gold: int = 0,
    random_state: RandomState = None,
) -> CrowdLabels:
    """Simulate a crowd: labels, gold items and quiz accuracies in one :class:`CrowdLabels`.

    The labels are those of :func:`simulate_labels` with the same ``random_state`` (they are
    drawn first); then ``n_gold`` distinct items chosen uniformly at random get their true
    class in ``gold``, and each annotator takes a quiz of ``n_quiz`` questions
    (:func:`simulate_quiz`, uniform class prior).

    Args:
        truth: Integer array of shape ``(n_items,)`` with the true class of each item, in
            ``0..n_classes-1``.
        confusion: Float array of shape ``(n_annotators, n_classes, n_classes)``; rows sum
            to 1.
        labels_per_item: Number of annotators per item, in ``1..n_annotators``; ``None`` with
            no ``assignment`` means every annotator labels every item.
        assignment: Boolean array of shape ``(n_items, n_annotators)``; ``True`` where the
            annotator labels the item. Every item needs at least one annotator.
        n_quiz: Number of quiz questions per annotator; ``0`` for no quiz
            (``quiz_accuracy`` is ``None``).
        n_gold: Number of items whose true class is revealed in ``gold``, in
            ``0..n_items``; ``0`` leaves ``gold`` as ``None``.
        random_state: Seed or ``numpy.random.Generator``.

    Returns:
        The labels with ``n_classes`` taken from ``confusion`` (classes nobody chose are
        kept), ``gold`` (``int64``, shape ``(n_items,)``, ``-1`` = not gold) and
        ``quiz_accuracy`` (``float64``, shape ``(n_annotators,)``). Every item has at least
        one label.

    Raises:
        ValueError: As :func:`simulate_labels`, or if ``n_gold`` exceeds the number of items
            or ``n_quiz`` is negative.

    Examples:
        >>> import numpy as np
        >>> from crowdmed.simulate import diagonal_confusion
        >>> truth = np.arange(100) % 3
        >>> conf = diagonal_confusion(6, 3, p=0.8, sigma=0.1, random_state=0)
        >>> cl = simulate_crowd(truth, conf, labels_per_item=3, n_gold=10, n_quiz=20,
        ...                     random_state=0)
        >>> cl
        CrowdLabels(n_items=100, n_annotators=6, n_classes=3, n_labels=300, n_gold=10, n_quiz=6)
        >>> bool((cl.gold[cl.gold >= 0] == truth[cl.gold >= 0]).all())
        True
    """
    conf = check_confusion(confusion)
    n_classes = conf.shape[1]
    t = _check_truth(truth, n_classes)
    n_quiz = check_int(n_quiz, "n_quiz", minimum=0)
    n_gold = check_int(n_gold, "n_gold", minimum=0, maximum=len(t))
    r, mask = _check_assignment(len(t), conf.shape[0], labels_per_item, assignment)
    rng = check_random_state(random_state)
    # stays in COO (no dense (n_items, n_annotators) array) so that large sparse crowds fit
    items, annotators, labels = _simulate_triplets(t, conf, r, mask, rng)
    gold = None
    if n_gold > 0:
        gold = np.full(len(t), MISSING, dtype=np.int64)
        idx = rng.choice(len(t), size=n_gold, replace=False)
        gold[idx] = t[idx]
    quiz = simulate_quiz(conf, n_questions=n_quiz, random_state=rng) if n_quiz > 0 else None
    return CrowdLabels.from_triplets(
        items,
        annotators,
        labels,
        n_items=len(t),
        n_annotators=conf.shape[0],
        n_classes=n_classes,
        gold=gold,
        quiz_accuracy=quiz,
    )


def rodrigues_crowd(
    truth: npt.ArrayLike,
    n_classes: int,
    *,
    labels_per_item: int | None = None,
    random_state: RandomState = None,
) -> SimulatedCrowd:
    """The "five annotators, one adversarial" simulated crowd of the crowd-layer experiments.

    A fixed, documented crowd of the kind used by Rodrigues & Pereira (2018) and AggNet
    (Albarqouni et al., 2016) to test learning from crowds (their exact matrices are not
    reproduced):

    - annotators 0–3 are diagonally dominant with accuracies :data:`RODRIGUES_ACCURACIES`
      ``= (0.9, 0.8, 0.7, 0.6)`` on every class; each row's error mass ``1 - accuracy`` is
      spread over the other classes in flat-Dirichlet shares drawn from ``random_state``, so
      every annotator has its own preferred confusions;
    - annotator 4 is adversarial: with probability :data:`RODRIGUES_ADVERSARIAL_STRENGTH`
      ``= 0.9`` it answers ``(k + 1) mod K`` for true class ``k`` (accuracy 0.1; for two
      classes it flips the label 90 % of the time).

    Majority vote is pulled down by the adversary and the weak annotators; a model of the
    confusions (Dawid–Skene, Crowd Layer, AggNet) can undo the adversary's flips.

    Args:
        truth: Integer array of shape ``(n_items,)`` with the true class of each item, in
            ``0..n_classes-1``.
        n_classes: Number of classes ``K`` (at least 2).
        labels_per_item: Number of annotators per item, in ``1..5``; ``None`` means every
            annotator labels every item.
        random_state: Seed or ``numpy.random.Generator`` (drives the error shares and the
            labels).

    Returns:
        ``SimulatedCrowd(labels, confusion)``: integer labels of shape ``(n_items, 5)`` with
        ``-1`` marking a missing annotation, and the float confusion matrices of shape
        ``(5, n_classes, n_classes)`` that produced them.

    Raises:
        ValueError: If ``truth`` holds classes outside ``0..n_classes-1`` or
            ``labels_per_item`` is not in ``1..5``.

    References:
        Rodrigues & Pereira (2018). Deep learning from crowds. AAAI.
        https://doi.org/10.1609/aaai.v32i1.11506

        Albarqouni et al. (2016). AggNet: deep learning from crowds for mitosis detection in
        breast cancer histology images. IEEE TMI. https://doi.org/10.1109/TMI.2016.2528120

    Examples:
        >>> import numpy as np
        >>> truth = np.arange(1000) % 3
        >>> crowd = rodrigues_crowd(truth, 3, random_state=0)
        >>> crowd.labels.shape, crowd.confusion.shape
        ((1000, 5), (5, 3, 3))
        >>> np.diagonal(crowd.confusion, axis1=1, axis2=2).round(2)
        array([[0.9, 0.9, 0.9],
               [0.8, 0.8, 0.8],
               [0.7, 0.7, 0.7],
               [0.6, 0.6, 0.6],
               [0.1, 0.1, 0.1]])
    """
    n_classes = check_int(n_classes, "n_classes", minimum=2)
    t = _check_truth(truth, n_classes)
    rng = check_random_state(random_state)
    diag = np.repeat(np.asarray(RODRIGUES_ACCURACIES, dtype=np.float64)[:, None], n_classes, 1)
    good = fill_off_diagonal(diag, uniform=False, rng=rng)
    bad = adversarial_confusion(1, n_classes, strength=RODRIGUES_ADVERSARIAL_STRENGTH)
    conf = np.concatenate([good, bad], axis=0)
    labels = simulate_labels(t, conf, labels_per_item=labels_per_item, random_state=rng)
    return SimulatedCrowd(labels=labels, confusion=conf)
