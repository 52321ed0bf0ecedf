"""ZeroBasedSkill: hand-checked tables, learning-rate schedule, recovery."""

import numpy as np
import pytest

from crowdmed.aggregation import MajorityVote, ZeroBasedSkill
from crowdmed.exceptions import ConvergenceWarning
from crowdmed.simulate import diagonal_confusion, simulate_labels

# (n_items=4, n_annotators=3), binary.
LABELS = np.array([[0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 1]])


def test_fixed_point_by_hand():
    z = ZeroBasedSkill().fit(LABELS)
    # Iteration 1: equal skills = majority vote [0, 1, 0, 1]; accuracies 4/4, 3/4, 2/4, and
    # lr = 1 moves the skills onto them. Iteration 2: the weighted vote gives the same labels.
    np.testing.assert_allclose(z.skills_, [1.0, 0.75, 0.5])
    np.testing.assert_array_equal(z.labels_, [0, 1, 0, 1])
    # item 3 = [1, 0, 1]: class 1 gets 1 + 0.5, class 0 gets 0.75.
    np.testing.assert_allclose(z.posteriors_[3], [0.75 / 2.25, 1.5 / 2.25])
    assert z.n_iter_ == 2
    assert z.converged_
    assert z.skill_changes_[-1] == 0.0


def test_learning_rate_schedule_by_hand():
    # lr 0.5, halved at iteration 2: s1 = s0 + 0.5 (acc - s0); s2 = s1 + 0.25 (acc - s1)
    # (the labels stay those of the majority vote, so acc stays [1, 0.75, 0.5]).
    with pytest.warns(ConvergenceWarning, match=r"did not converge in max_iter=2"):
        z = ZeroBasedSkill(lr_init=0.5, lr_steps_to_reduce=2, max_iter=2).fit(LABELS)
    s0 = 0.5 + 1e-5
    acc = np.array([1.0, 0.75, 0.5])
    s1 = s0 + 0.5 * (acc - s0)
    np.testing.assert_allclose(z.skills_, s1 + 0.25 * (acc - s1))


def test_zero_iterations_is_majority_vote():
    z = ZeroBasedSkill(max_iter=0).fit(LABELS)
    np.testing.assert_allclose(z.posteriors_, MajorityVote().fit(LABELS).posteriors_)
    assert z.n_iter_ == 0
    assert not z.converged_


def test_gold_is_clamped():
    z = ZeroBasedSkill().fit(LABELS, gold=[1, -1, -1, -1])
    np.testing.assert_array_equal(z.posteriors_[0], [0.0, 1.0])
    # Consensus [1, 1, 0, 1]: the annotators' columns [0, 1, 0, 1], [0, 1, 0, 0] and
    # [1, 0, 0, 1] agree with it 3, 2 and 3 times of 4 (and the weighted vote keeps it).
    np.testing.assert_allclose(z.skills_, [0.75, 0.5, 0.75])


def test_bad_learning_rate():
    with pytest.raises(ValueError, match=r"`lr_reduce_factor` of ZeroBasedSkill must be"):
        ZeroBasedSkill(lr_reduce_factor=0.0).fit(LABELS)


def test_recovers_accuracies_and_beats_majority_vote():
    rng = np.random.default_rng(0)
    n, k = 3000, 3
    truth = rng.integers(0, k, n)
    conf = np.concatenate(
        [
            diagonal_confusion(4, k, p=0.9, sigma=0.03, random_state=1),
            diagonal_confusion(6, k, p=0.45, sigma=0.03, zeta=0.34, random_state=2),
        ]
    )
    labels = simulate_labels(truth, conf, labels_per_item=5, random_state=3)
    z = ZeroBasedSkill().fit(labels)
    acc = (z.labels_ == truth).mean()
    assert acc >= (MajorityVote().fit(labels).labels_ == truth).mean()
    # Skills are the accuracies against the consensus, close to the true ones when the
    # consensus is mostly right.
    true_acc = np.trace(conf, axis1=1, axis2=2) / k
    assert np.abs(z.skills_ - true_acc).max() < 0.05 + (1 - acc)
