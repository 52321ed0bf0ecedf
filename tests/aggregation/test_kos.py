"""KOS: one iteration by hand, binary check, recovery with adversarial annotators."""

import warnings

import numpy as np
import pytest

from crowdmed.aggregation import KOS, MajorityVote
from crowdmed.exceptions import ConvergenceWarning
from crowdmed.simulate import binary_confusion, simulate_labels


class OnesKOS(KOS):
    """KOS whose starting annotator messages are all 1 (for hand calculations)."""

    def _init_messages(self, cl):
        return np.ones(cl.n_labels)


def test_one_iteration_by_hand():
    # (n_items=3, n_annotators=3); A = +1 for class 1.
    labels = np.array([[1, 1, 0], [0, 0, 1], [1, 1, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        kos = OnesKOS(max_iter=1).fit(labels)
    # x_{i→j} = Σ_{j'≠j} A_ij': item 0 → (0, 0, 2), item 1 → (0, 0, -2), item 2 → (2, 2, 2).
    # y_{j→i} = Σ_{i'≠i} A_i'j x_{i'→j}: annotators 0 and 1 → (2, 2, 0); annotator 2 (who
    # disagreed on items 0 and 1) → (0, 0, -4). Divided by 4: scores Σ_j A_ij y_{j→i}.
    np.testing.assert_allclose(kos.scores_, [1.0, -1.0, -1.0])
    np.testing.assert_array_equal(kos.labels_, [1, 0, 0])
    np.testing.assert_array_equal(kos.posteriors_, [[0, 1], [1, 0], [1, 0]])
    # Reliabilities Σ_i A_ij x_{i→j}, with the item messages of those normalised y: item 0
    # sends (0.5, 0.5, 1), item 1 (-0.5, -0.5, -1), item 2 (-1, -1, 0); so annotators 0 and 1
    # get 0.5 + 0.5 - 1 = 0 and annotator 2 gets -1 - 1 + 0 = -2, divided by 2.
    np.testing.assert_allclose(kos.reliabilities_, [0.0, 0.0, -1.0])


def test_zero_score_is_a_tie():
    np.testing.assert_array_equal(KOS._decide(np.array([0.0, 2.0, -1.0]))[:, 1], [0.5, 1, 0])


def test_binary_only():
    with pytest.raises(ValueError, match=r"KOS needs binary labels \(2 classes\); got 3 classes"):
        KOS().fit(np.array([[0, 1, 2], [2, 1, 0]]))


def test_seed_changes_only_the_start():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 400)
    conf = binary_confusion(sensitivity=np.full(20, 0.8), specificity=np.full(20, 0.8))
    labels = simulate_labels(truth, conf, labels_per_item=5, random_state=1)
    a = KOS(random_state=1).fit(labels).labels_
    b = KOS(random_state=2).fit(labels).labels_
    np.testing.assert_array_equal(a, b)  # converged to the same decisions


def test_recovers_adversaries_and_beats_majority_vote():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 3000)
    sens = np.r_[rng.uniform(0.65, 0.95, 20), np.full(10, 0.15)]
    spec = np.r_[rng.uniform(0.65, 0.95, 20), np.full(10, 0.15)]
    labels = simulate_labels(
        truth, binary_confusion(sensitivity=sens, specificity=spec), labels_per_item=7,
        random_state=1,
    )  # fmt: skip
    kos = KOS().fit(labels)
    assert kos.converged_
    assert (kos.reliabilities_[20:] < 0).all()
    assert (kos.reliabilities_[:20] > 0).all()
    acc = (kos.labels_ == truth).mean()
    assert acc > (MajorityVote().fit(labels).labels_ == truth).mean() + 0.05
    # New items: the annotators' overall reliabilities decide.
    assert (kos.predict(labels) == truth).mean() > 0.9


def test_gold_is_clamped():
    labels = np.array([[1, 1, 0], [0, 0, 1], [1, 1, 1], [0, 1, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        kos = KOS(max_iter=5).fit(labels, gold=[0, -1, -1, 1])
    np.testing.assert_array_equal(kos.labels_[[0, 3]], [0, 1])
