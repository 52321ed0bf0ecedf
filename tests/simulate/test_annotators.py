"""Simulated annotators: confusion families, label sampling, sparse assignment, gold and quiz."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crowdmed.data import CrowdLabels
from crowdmed.simulate import (
    RODRIGUES_ACCURACIES,
    RODRIGUES_ADVERSARIAL_STRENGTH,
    SimulatedCrowd,
    adversarial_confusion,
    biased_confusion,
    binary_confusion,
    diagonal_confusion,
    rodrigues_crowd,
    simulate_crowd,
    simulate_labels,
    simulate_quiz,
    spammer_confusion,
)


def empirical_confusion(labels: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """Row-normalised counts of (annotator, true class, given label) over observed labels."""
    items, annotators = np.nonzero(labels >= 0)
    counts = np.zeros((labels.shape[1], n_classes, n_classes))
    np.add.at(counts, (annotators, truth[items], labels[items, annotators]), 1.0)
    return counts / counts.sum(axis=2, keepdims=True)


def accuracy(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Share of correct labels per annotator, shape (n_annotators,)."""
    seen = labels >= 0
    return ((labels == truth[:, None]) & seen).sum(axis=0) / seen.sum(axis=0)


# ---------------------------------------------------------------- confusion builders
# (builder, expected shape (n_annotators, K, K))
BUILDERS = [
    pytest.param(
        lambda: binary_confusion(sensitivity=[0.9, 0.6, 0.5], specificity=[0.8, 0.7, 0.5]),
        (3, 2, 2),
        id="binary",
    ),
    pytest.param(
        lambda: diagonal_confusion(4, 5, p=0.7, sigma=0.2, random_state=0), (4, 5, 5), id="diag"
    ),
    pytest.param(
        lambda: diagonal_confusion(4, 5, p=0.7, sigma=0.2, off_diagonal="random", random_state=0),
        (4, 5, 5),
        id="diag-random",
    ),
    pytest.param(lambda: spammer_confusion(2, 3), (2, 3, 3), id="spammer"),
    pytest.param(
        lambda: spammer_confusion(2, 6, distribution="random", random_state=0),
        (2, 6, 6),
        id="spammer-random",
    ),
    pytest.param(lambda: adversarial_confusion(3, 4, strength=0.7), (3, 4, 4), id="adv"),
    pytest.param(
        lambda: adversarial_confusion(3, 4, permutation="random", random_state=0),
        (3, 4, 4),
        id="adv-random",
    ),
    pytest.param(
        lambda: biased_confusion(2, 3, preferred_class=[0, 2], bias=[0.1, 0.5]),
        (2, 3, 3),
        id="biased",
    ),
    pytest.param(
        lambda: biased_confusion(3, 4, preferred_class=1, bias=0.3, base=spammer_confusion(3, 4)),
        (3, 4, 4),
        id="biased-base",
    ),
]


@pytest.mark.parametrize(("build", "shape"), BUILDERS)
def test_builders_shape_and_rows_sum_to_one(build, shape):
    conf = build()
    assert conf.shape == shape
    assert conf.dtype == np.float64
    assert (conf >= 0).all()
    assert (conf <= 1).all()
    np.testing.assert_allclose(conf.sum(axis=2), 1.0, atol=1e-12)


def test_binary_confusion_reference_values():
    # 2 annotators -> (2, 2, 2); row 0 = true negative, row 1 = true positive
    conf = binary_confusion(sensitivity=[0.9, 0.6], specificity=[0.8, 0.7])
    expected = [[[0.8, 0.2], [0.1, 0.9]], [[0.7, 0.3], [0.4, 0.6]]]
    np.testing.assert_allclose(conf, expected)
    np.testing.assert_allclose(conf[:, 1, 1], [0.9, 0.6])  # sensitivity, conventions.md
    np.testing.assert_allclose(conf[:, 0, 0], [0.8, 0.7])  # specificity
    # a number is shared by all annotators
    np.testing.assert_allclose(
        binary_confusion(sensitivity=0.75, specificity=[1.0, 0.5])[:, 1, 1], [0.75, 0.75]
    )
    assert binary_confusion(sensitivity=0.75, specificity=0.5).shape == (1, 2, 2)


def test_diagonal_confusion_without_noise_is_p_and_uniform_off_diagonal():
    # sigma = 0: diagonal exactly p, the rest spread equally over K - 1 = 3 classes
    conf = diagonal_confusion(2, 4, p=0.7, sigma=0.0, random_state=0)
    expected = np.full((4, 4), 0.1) + np.eye(4) * 0.6
    np.testing.assert_allclose(conf, np.stack([expected, expected]))


def test_diagonal_confusion_clips_to_zeta_and_one():
    conf = diagonal_confusion(50, 3, p=0.6, sigma=1.0, zeta=0.4, random_state=0)
    diag = np.diagonal(conf, axis1=1, axis2=2)
    assert diag.min() == pytest.approx(0.4)
    assert diag.max() == pytest.approx(1.0)
    # default zeta = 1 / K: never worse than chance on any class
    low = diagonal_confusion(20, 4, p=0.0, sigma=0.1, random_state=0)
    np.testing.assert_allclose(np.diagonal(low, axis1=1, axis2=2), 0.25)


def test_diagonal_confusion_mean_and_spread_modes():
    conf = diagonal_confusion(400, 3, p=0.75, sigma=0.05, random_state=1)
    assert np.diagonal(conf, axis1=1, axis2=2).mean() == pytest.approx(0.75, abs=0.01)
    # the Gaussian draws come first: both spread modes share the diagonal for one seed
    rand = diagonal_confusion(400, 3, p=0.75, sigma=0.05, off_diagonal="random", random_state=1)
    np.testing.assert_allclose(
        np.diagonal(rand, axis1=1, axis2=2), np.diagonal(conf, axis1=1, axis2=2)
    )
    off = rand[:, ~np.eye(3, dtype=bool)]
    assert off.std() > 0.02  # random shares, not equal ones
    np.testing.assert_allclose(conf[:, 0, 1], conf[:, 0, 2])  # uniform shares


def test_spammer_rows_identical():
    conf = spammer_confusion(3, 4, distribution="random", random_state=0)
    np.testing.assert_array_equal(conf, np.repeat(conf[:, :1], 4, axis=1))
    assert not np.allclose(conf[0, 0], 0.25)
    np.testing.assert_allclose(spammer_confusion(2, 4), 0.25)


def test_adversarial_reference_and_derangements():
    # K = 3, shift: k -> k + 1 mod 3
    conf = adversarial_confusion(1, 3, strength=0.9)
    np.testing.assert_allclose(conf[0], [[0.1, 0.9, 0], [0, 0.1, 0.9], [0.9, 0, 0.1]])
    # random: each annotator follows a permutation (one 1 per row and column) without fixed
    # points
    perm = adversarial_confusion(200, 5, permutation="random", random_state=0)
    np.testing.assert_array_equal(perm.sum(axis=1), 1.0)
    np.testing.assert_array_equal(np.diagonal(perm, axis1=1, axis2=2), 0.0)
    assert len({tuple(p.argmax(axis=1)) for p in perm}) > 10
    # K = 2: both modes are the swap; strength per annotator
    swap = adversarial_confusion(2, 2, strength=[1.0, 0.25], permutation="random", random_state=0)
    np.testing.assert_allclose(swap, [[[0, 1], [1, 0]], [[0.75, 0.25], [0.25, 0.75]]])


def test_biased_reference_values():
    # K = 3, preferred class 2, bias 0.25 on a perfect annotator
    conf = biased_confusion(1, 3, preferred_class=2, bias=0.25)
    np.testing.assert_allclose(conf[0], [[0.75, 0, 0.25], [0, 0.75, 0.25], [0, 0, 1]])
    # mixing a uniform spammer with a point mass on class 0
    mixed = biased_confusion(1, 2, preferred_class=0, bias=0.5, base=spammer_confusion(1, 2))
    np.testing.assert_allclose(mixed[0], [[0.75, 0.25], [0.75, 0.25]])
    per_annotator = biased_confusion(2, 2, preferred_class=[0, 1], bias=[1.0, 1.0])
    np.testing.assert_allclose(per_annotator, [[[1, 0], [1, 0]], [[0, 1], [0, 1]]])


# ---------------------------------------------------------------- simulate_labels
def test_empirical_confusion_matches_on_20k_items():
    k = 4
    conf = np.concatenate(
        [
            diagonal_confusion(3, k, p=0.7, sigma=0.15, off_diagonal="random", random_state=0),
            biased_confusion(1, k, preferred_class=3, bias=0.4),
            adversarial_confusion(1, k, strength=0.6),
        ]
    )
    truth = np.random.default_rng(1).integers(0, k, size=20_000)
    labels = simulate_labels(truth, conf, random_state=2)
    assert labels.shape == (20_000, 5)
    assert labels.dtype == np.int64
    assert labels.min() >= 0  # dense: every annotator labels every item
    assert np.abs(empirical_confusion(labels, truth, k) - conf).max() < 0.02


def test_empirical_confusion_binary_sparse():
    conf = binary_confusion(sensitivity=[0.9, 0.7, 0.55], specificity=[0.6, 0.95, 0.8])
    truth = np.random.default_rng(0).integers(0, 2, size=30_000)
    labels = simulate_labels(truth, conf, labels_per_item=2, random_state=0)
    assert np.abs(empirical_confusion(labels, truth, 2) - conf).max() < 0.02


def test_zero_probability_classes_never_drawn():
    conf = np.array([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.0, 0.5]]])
    truth = np.tile(np.arange(3), 3000)
    labels = simulate_labels(truth, conf, random_state=0)[:, 0]
    assert (labels[truth == 0] == 1).all()
    assert (labels[truth == 1] == 2).all()
    assert set(np.unique(labels[truth == 2])) == {0, 2}


@pytest.mark.parametrize(
    ("n_annotators", "r"),
    [
        (20, 3),  # few chosen: Floyd's algorithm
        (20, 18),  # few left out: Floyd on the complement
        (40, 20),  # neither: random keys
        (5, 1),
        (5, 5),
    ],
)
def test_sparse_assignment_exactly_r_distinct_annotators(n_annotators, r):
    truth = np.arange(3000) % 3
    conf = diagonal_confusion(n_annotators, 3, p=0.8, sigma=0.1, random_state=0)
    labels = simulate_labels(truth, conf, labels_per_item=r, random_state=0)
    # one cell per (item, annotator) pair, so r labels per row means r distinct annotators
    np.testing.assert_array_equal((labels >= 0).sum(axis=1), r)
    per_annotator = (labels >= 0).sum(axis=0)
    expected = 3000 * r / n_annotators
    assert np.abs(per_annotator - expected).max() < 6 * np.sqrt(expected) + 1


def test_sparse_assignment_subsets_are_uniform():
    # 4 annotators, 2 per item -> 6 possible pairs, each with probability 1/6
    conf = np.tile(np.eye(2), (4, 1, 1))
    labels = simulate_labels(np.zeros(30_000, dtype=int), conf, labels_per_item=2, random_state=0)
    codes = ((labels >= 0) * (1 << np.arange(4))).sum(axis=1)
    _, counts = np.unique(codes, return_counts=True)
    assert len(counts) == 6
    np.testing.assert_allclose(counts / 30_000, 1 / 6, atol=0.01)


def test_given_assignment_mask_is_followed():
    rng = np.random.default_rng(0)
    mask = rng.random((500, 6)) < 0.4
    mask[:, 0] = True  # every item has an annotator
    conf = diagonal_confusion(6, 3, p=0.8, sigma=0.1, random_state=0)
    labels = simulate_labels(np.arange(500) % 3, conf, assignment=mask, random_state=0)
    np.testing.assert_array_equal(labels >= 0, mask)
    # 0/1 integers are accepted too
    same = simulate_labels(np.arange(500) % 3, conf, assignment=mask.astype(int), random_state=0)
    np.testing.assert_array_equal(same, labels)


def test_same_seed_same_output_different_seed_different():
    truth = np.arange(400) % 4
    conf = diagonal_confusion(6, 4, p=0.6, sigma=0.1, random_state=0)
    a = simulate_labels(truth, conf, labels_per_item=3, random_state=7)
    b = simulate_labels(truth, conf, labels_per_item=3, random_state=7)
    c = simulate_labels(truth, conf, labels_per_item=3, random_state=8)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    np.testing.assert_array_equal(
        diagonal_confusion(3, 4, p=0.6, sigma=0.2, off_diagonal="random", random_state=3),
        diagonal_confusion(3, 4, p=0.6, sigma=0.2, off_diagonal="random", random_state=3),
    )
    assert not np.array_equal(
        diagonal_confusion(3, 4, p=0.6, sigma=0.2, random_state=3),
        diagonal_confusion(3, 4, p=0.6, sigma=0.2, random_state=4),
    )
    # a Generator is used as is and advanced
    gen = np.random.default_rng(7)
    np.testing.assert_array_equal(
        simulate_labels(truth, conf, labels_per_item=3, random_state=gen), a
    )
    assert not np.array_equal(simulate_labels(truth, conf, labels_per_item=3, random_state=gen), a)


def test_no_global_rng_and_inputs_unchanged():
    truth = np.arange(100) % 3
    conf = diagonal_confusion(4, 3, p=0.7, sigma=0.1, random_state=0)
    truth_copy, conf_copy = truth.copy(), conf.copy()
    state = np.random.get_state()[1].copy()
    simulate_crowd(truth, conf, labels_per_item=2, n_gold=5, n_quiz=5, random_state=0)
    rodrigues_crowd(truth, 3, random_state=0)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    np.testing.assert_array_equal(truth, truth_copy)
    np.testing.assert_array_equal(conf, conf_copy)


def test_all_annotators_equals_no_assignment():
    truth = np.arange(300) % 2
    conf = binary_confusion(sensitivity=[0.8, 0.7, 0.6], specificity=[0.9, 0.8, 0.7])
    np.testing.assert_array_equal(
        simulate_labels(truth, conf, labels_per_item=3, random_state=0),
        simulate_labels(truth, conf, random_state=0),
    )


def test_spammer_labels_independent_of_truth():
    k = 4
    truth = np.random.default_rng(0).integers(0, k, size=20_000)
    conf = np.concatenate(
        [spammer_confusion(2, k), spammer_confusion(2, k, distribution="random", random_state=1)]
    )
    labels = simulate_labels(truth, conf, random_state=0)
    np.testing.assert_allclose(accuracy(labels[:, :2], truth), 1 / k, atol=0.015)
    # the label distribution given the truth is the same for every true class
    emp = empirical_confusion(labels, truth, k)
    assert np.abs(emp - emp.mean(axis=1, keepdims=True)).max() < 0.02


def test_adversarial_near_zero_accuracy_at_full_strength():
    truth = np.arange(5000) % 3
    labels = simulate_labels(truth, adversarial_confusion(2, 3, strength=1.0), random_state=0)
    np.testing.assert_array_equal(accuracy(labels, truth), 0.0)
    np.testing.assert_array_equal(labels[:, 0], (truth + 1) % 3)
    weak = simulate_labels(truth, adversarial_confusion(1, 3, strength=0.8), random_state=0)
    assert accuracy(weak, truth)[0] == pytest.approx(0.2, abs=0.02)


@settings(max_examples=40, deadline=None)
@given(
    n_items=st.integers(1, 30),
    n_annotators=st.integers(1, 8),
    n_classes=st.integers(2, 5),
    data=st.data(),
)
def test_property_labels_valid_and_r_per_item(n_items, n_annotators, n_classes, data):
    r = data.draw(st.integers(1, n_annotators))
    seed = data.draw(st.integers(0, 2**32 - 1))
    truth = np.arange(n_items) % n_classes
    conf = spammer_confusion(n_annotators, n_classes, distribution="random", random_state=seed)
    labels = simulate_labels(truth, conf, labels_per_item=r, random_state=seed)
    assert labels.shape == (n_items, n_annotators)
    assert labels.min() >= -1
    assert labels.max() < n_classes
    np.testing.assert_array_equal((labels >= 0).sum(axis=1), r)


# ---------------------------------------------------------------- quiz
def test_quiz_accuracy_matches_diagonal_mean():
    conf = diagonal_confusion(6, 4, p=0.7, sigma=0.15, random_state=0)
    gamma = simulate_quiz(conf, n_questions=40_000, random_state=0)
    assert gamma.shape == (6,)
    np.testing.assert_allclose(gamma, np.diagonal(conf, axis1=1, axis2=2).mean(axis=1), atol=0.01)
    # a skewed prior weights the per-class accuracies
    prior = np.array([0.7, 0.1, 0.1, 0.1])
    skew = simulate_quiz(conf, n_questions=40_000, class_prior=prior, random_state=0)
    np.testing.assert_allclose(skew, np.diagonal(conf, axis1=1, axis2=2) @ prior, atol=0.01)


def test_quiz_reference_values():
    # class 1 only: sensitivity is the accuracy
    conf = binary_confusion(sensitivity=[1.0, 0.0, 1.0], specificity=[1.0, 0.0, 0.0])
    gamma = simulate_quiz(conf, n_questions=7, class_prior=[0.0, 1.0], random_state=0)
    np.testing.assert_array_equal(gamma, [1.0, 0.0, 1.0])
    few = simulate_quiz(diagonal_confusion(5, 3, p=0.5, sigma=0.1, random_state=0), n_questions=4)
    assert set(np.unique(few * 4)) <= {0, 1, 2, 3, 4}  # multiples of 1 / n_questions


# ---------------------------------------------------------------- simulate_crowd
def test_simulate_crowd_gold_quiz_and_labels():
    truth = np.arange(200) % 3
    conf = diagonal_confusion(5, 3, p=0.8, sigma=0.1, random_state=0)
    cl = simulate_crowd(truth, conf, labels_per_item=2, n_gold=15, n_quiz=10, random_state=4)
    assert isinstance(cl, CrowdLabels)
    assert (cl.n_items, cl.n_annotators, cl.n_classes, cl.n_labels) == (200, 5, 3, 400)
    np.testing.assert_array_equal(cl.labels_per_item(), 2)
    is_gold = cl.gold >= 0
    assert is_gold.sum() == 15
    np.testing.assert_array_equal(cl.gold[is_gold], truth[is_gold])
    assert cl.quiz_accuracy.shape == (5,)
    assert ((cl.quiz_accuracy * 10) % 1 == 0).all()
    # labels are drawn first: the same as simulate_labels with the same seed
    np.testing.assert_array_equal(
        cl.to_dense(), simulate_labels(truth, conf, labels_per_item=2, random_state=4)
    )


def test_simulate_crowd_defaults_and_unused_classes():
    truth = np.zeros(10, dtype=int)
    conf = np.tile(np.eye(4), (2, 1, 1))  # classes 1..3 are never chosen
    cl = simulate_crowd(truth, conf, random_state=0)
    assert cl.gold is None
    assert cl.quiz_accuracy is None
    assert cl.n_classes == 4
    every = simulate_crowd(truth, conf, n_gold=10, random_state=0)
    np.testing.assert_array_equal(every.gold, truth)


# ---------------------------------------------------------------- rodrigues_crowd
def test_rodrigues_crowd_contents():
    truth = np.random.default_rng(0).integers(0, 3, size=20_000)
    crowd = rodrigues_crowd(truth, 3, random_state=0)
    assert isinstance(crowd, SimulatedCrowd)
    labels, conf = crowd
    assert labels.shape == (20_000, 5)
    assert conf.shape == (5, 3, 3)
    np.testing.assert_allclose(conf.sum(axis=2), 1.0)
    expected_acc = [*RODRIGUES_ACCURACIES, 1 - RODRIGUES_ADVERSARIAL_STRENGTH]
    np.testing.assert_allclose(np.diagonal(conf, axis1=1, axis2=2), np.c_[expected_acc] * [1, 1, 1])
    np.testing.assert_allclose(accuracy(labels, truth), expected_acc, atol=0.015)
    # the adversary answers k + 1 mod K when it errs
    wrong = labels[:, 4] != truth
    np.testing.assert_array_equal(labels[wrong, 4], (truth[wrong] + 1) % 3)
    assert np.abs(empirical_confusion(labels, truth, 3) - conf).max() < 0.02
    sparse = rodrigues_crowd(truth[:100], 3, labels_per_item=3, random_state=0)
    np.testing.assert_array_equal((sparse.labels >= 0).sum(axis=1), 3)


# ---------------------------------------------------------------- errors
CONF3 = diagonal_confusion(3, 3, p=0.8, sigma=0.0, random_state=0)
TRUTH = np.array([0, 1, 2, 1])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: binary_confusion(sensitivity=[0.9, 1.2], specificity=[0.8, 0.8]),
            ValueError,
            r"`sensitivity` must lie in \[0, 1\]; got \[1\.2\]",
        ),
        (
            lambda: binary_confusion(sensitivity=[0.9, -0.1], specificity=[0.8, 0.8]),
            ValueError,
            r"`sensitivity` must lie in \[0, 1\]",
        ),
        (
            lambda: binary_confusion(sensitivity=[0.9], specificity=[0.8, np.nan]),
            ValueError,
            r"`specificity` must lie in \[0, 1\]; got \[nan\]",
        ),
        (
            lambda: binary_confusion(sensitivity=[0.9, 0.8], specificity=[0.8, 0.8, 0.7]),
            ValueError,
            r"must have the same length .*got 2 and 3",
        ),
        (
            lambda: diagonal_confusion(3, 1, p=0.8, sigma=0.1),
            ValueError,
            r"`n_classes` must be an integer at least 2; got 1",
        ),
        (
            lambda: diagonal_confusion(3, 3, p=80, sigma=0.1),
            ValueError,
            r"`p` must lie in \[0, 1\]; got \[80\.0\]. Pass probabilities, not percentages",
        ),
        (
            lambda: diagonal_confusion(3, 3, p=0.8, sigma=-1.0),
            ValueError,
            r"`sigma` must be a finite number >= 0; got -1\.0",
        ),
        (
            lambda: diagonal_confusion(3.0, 3, p=0.8, sigma=0.1),
            TypeError,
            r"`n_annotators` must be an integer; got 3\.0",
        ),
        (
            lambda: diagonal_confusion(3, 3, p=0.8, sigma=0.1, off_diagonal="unifrom"),
            ValueError,
            r"`off_diagonal` must be one of \['uniform', 'random'\]; got 'unifrom'. "
            r"Did you mean 'uniform'\?",
        ),
        (
            lambda: spammer_confusion(0, 3),
            ValueError,
            r"`n_annotators` must be an integer at least 1; got 0",
        ),
        (
            lambda: adversarial_confusion(2, 3, strength=[0.5, 0.5, 0.5]),
            ValueError,
            r"`strength` must be a number or have shape \(2,\) \(one per annotator\)",
        ),
        (
            lambda: biased_confusion(2, 3, preferred_class=3, bias=0.2),
            ValueError,
            r"`preferred_class` must lie in 0\.\.2; got \[3\]",
        ),
        (
            lambda: biased_confusion(2, 3, preferred_class=1, bias=0.2, base=CONF3),
            ValueError,
            r"`base` must have shape \(2, 3, 3\); got \(3, 3, 3\)",
        ),
        (
            lambda: simulate_labels(TRUTH, CONF3, labels_per_item=4),
            ValueError,
            r"`labels_per_item` must be an integer in 1\.\.3; got 4",
        ),
        (
            lambda: simulate_labels(TRUTH, CONF3, labels_per_item=0),
            ValueError,
            r"`labels_per_item` must be an integer in 1\.\.3; got 0",
        ),
        (
            lambda: simulate_labels(np.array([0, 3, 1, -1]), CONF3),
            ValueError,
            r"`truth` must hold classes in 0\.\.2 \(n_classes = 3\); got \[-1, 3\]",
        ),
        (
            lambda: simulate_labels(np.array([0.5, 1.0]), CONF3),
            TypeError,
            r"`truth` must hold integer class indices",
        ),
        (
            lambda: simulate_labels(np.array([], dtype=int), CONF3),
            ValueError,
            r"`truth` must contain at least one item",
        ),
        (
            lambda: simulate_labels(TRUTH, CONF3[0]),
            ValueError,
            r"`confusion` must have shape \(n_annotators, n_classes, n_classes\); got shape "
            r"\(3, 3\). Use confusion\[None\] for a single annotator",
        ),
        (
            lambda: simulate_labels(TRUTH, CONF3[:, :2, :]),
            ValueError,
            r"`confusion` must have shape \(n_annotators, n_classes, n_classes\); got shape "
            r"\(3, 2, 3\)",
        ),
        (
            lambda: simulate_labels(TRUTH, CONF3.transpose(0, 2, 1) * [1, 1, 0.5]),
            ValueError,
            r"Each row of `confusion` must sum to 1 .*Transpose if",
        ),
        (
            lambda: simulate_labels(TRUTH, -CONF3),
            ValueError,
            r"`confusion` must hold probabilities in \[0, 1\]",
        ),
        (
            lambda: simulate_labels(TRUTH, np.ones((1, 1, 1))),
            ValueError,
            r"`confusion` must have at least 2 classes; got 1",
        ),
        (
            lambda: simulate_labels(
                TRUTH, CONF3, labels_per_item=1, assignment=np.ones((4, 3), bool)
            ),
            ValueError,
            r"Pass either `labels_per_item` or `assignment`, not both",
        ),
        (
            lambda: simulate_labels(TRUTH, CONF3, assignment=np.eye(4, 3, dtype=bool)),
            ValueError,
            r"`assignment` must give every item at least one annotator; items \[3\] have none",
        ),
        (
            lambda: simulate_labels(TRUTH, CONF3, assignment=np.ones((3, 3), bool)),
            ValueError,
            r"`assignment` must have shape \(n_items, n_annotators\) = \(4, 3\); got \(3, 3\)",
        ),
        (
            lambda: simulate_labels(TRUTH, CONF3, assignment=np.full((4, 3), 2)),
            TypeError,
            r"`assignment` must be a boolean array",
        ),
        (
            lambda: simulate_labels(TRUTH, CONF3, random_state="seed"),
            TypeError,
            r"`random_state` must be None, an int or a numpy Generator; got str",
        ),
        (
            lambda: simulate_quiz(CONF3, n_questions=0),
            ValueError,
            r"`n_questions` must be an integer at least 1; got 0",
        ),
        (
            lambda: simulate_quiz(CONF3, n_questions=5, class_prior=[0.5, 0.6, 0.1]),
            ValueError,
            r"`class_prior` must hold probabilities summing to 1",
        ),
        (
            lambda: simulate_crowd(TRUTH, CONF3, n_gold=5),
            ValueError,
            r"`n_gold` must be an integer in 0\.\.4; got 5",
        ),
        (
            lambda: simulate_crowd(TRUTH, CONF3, n_quiz=-1),
            ValueError,
            r"`n_quiz` must be an integer at least 0; got -1",
        ),
        (
            lambda: rodrigues_crowd(TRUTH, 2),
            ValueError,
            r"`truth` must hold classes in 0\.\.1 \(n_classes = 2\); got \[2\]",
        ),
        (
            lambda: rodrigues_crowd(TRUTH, 3, labels_per_item=6),
            ValueError,
            r"`labels_per_item` must be an integer in 1\.\.5; got 6",
        ),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
