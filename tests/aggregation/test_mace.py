"""MACE: E-step against a brute-force reference, objective bookkeeping, recovery."""

import itertools
import warnings

import numpy as np
import pytest

from crowdmed.aggregation import MACE, MajorityVote
from crowdmed.exceptions import ConvergenceWarning
from crowdmed.simulate import diagonal_confusion, simulate_labels, spammer_confusion

# (n_items=5, n_annotators=3), K = 3.
LABELS = np.array([[0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 1, 1], [2, 2, 0]])


class FixedMACE(MACE):
    """MACE whose start is given (for hand calculations)."""

    theta = np.array([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])  # [P(spam), P(not spam)]
    strategy = np.array([[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3], [0.1, 0.1, 0.8]])

    def _init_params(self, rng, n_annotators, n_classes):
        return self.theta, self.strategy


def brute_force_posteriors(labels, theta, strategy):
    """P(T_i = k | labels) by explicit products over annotators (uniform class prior)."""
    n, a = labels.shape
    k = strategy.shape[1]
    post = np.ones((n, k)) / k
    for i, j, t in itertools.product(range(n), range(a), range(k)):
        lab = labels[i, j]
        if lab >= 0:
            post[i, t] *= theta[j, 0] * strategy[j, lab] + theta[j, 1] * (lab == t)
    return post / post.sum(axis=1, keepdims=True)


def test_first_e_step_matches_brute_force():
    m = FixedMACE(max_iter=0, n_restarts=1).fit(LABELS)
    ref = brute_force_posteriors(LABELS, FixedMACE.theta, FixedMACE.strategy)
    np.testing.assert_allclose(m.posteriors_, ref, rtol=1e-12)
    np.testing.assert_allclose(m.competence_, [0.8, 0.5, 0.1])
    # confusion = θ I + (1 - θ) ξ; annotator 2, true class 2: 0.1 + 0.9 · 0.8.
    assert m.confusion_[2, 2, 2] == pytest.approx(0.82)
    np.testing.assert_allclose(m.confusion_.sum(axis=2), 1.0)


def test_em_m_step_by_hand():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = FixedMACE(method="em", max_iter=1, n_restarts=1, smoothing=0.0).fit(LABELS)
    post = brute_force_posteriors(LABELS, FixedMACE.theta, FixedMACE.strategy)
    # P(annotator j not spamming on its label l of item i) = post[i, l] θ / ((1-θ) ξ_l + θ).
    know = np.zeros(3)
    spam_by_label = np.zeros((3, 3))
    for i, j in itertools.product(range(5), range(3)):
        lab = LABELS[i, j]
        th, xi = FixedMACE.theta[j], FixedMACE.strategy[j]
        p = post[i, lab] * th[1] / (th[0] * xi[lab] + th[1])
        know[j] += p
        spam_by_label[j, lab] += 1 - p
    strategy = spam_by_label / spam_by_label.sum(axis=1, keepdims=True)
    theta = np.stack([5 - know, know], axis=1) / 5
    ref = brute_force_posteriors(LABELS, theta, strategy)
    np.testing.assert_allclose(m.posteriors_, ref, rtol=1e-10)
    np.testing.assert_allclose(m.competence_, know / 5, rtol=1e-12)


@pytest.mark.parametrize("method", ["vb", "em"])
def test_objective_never_decreases(method):
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 4, size=(80, 6))
    labels[labels.max(axis=1) < 0, 0] = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # EM creeps: gains of 1e-8
        m = MACE(method=method, max_iter=300, tol=1e-12, n_restarts=3).fit(labels)
    assert np.all(np.diff(m.log_likelihoods_) >= -1e-8)
    assert m.n_iter_ == len(m.log_likelihoods_)
    assert m.log_likelihoods_[-1] == max(m.restart_objectives_)
    assert len(m.restart_objectives_) == 3


def test_restarts_differ_and_seed_reproduces():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=(30, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MACE(max_iter=2, n_restarts=4, random_state=5).fit(labels)
        b = MACE(max_iter=2, n_restarts=4, random_state=5).fit(labels)
    assert len(set(a.restart_objectives_)) == 4  # unlike crowd-kit's identical restarts
    assert a.restart_objectives_ == b.restart_objectives_


def test_bad_method_suggests():
    with pytest.raises(ValueError, match=r"`method` must be one of \['vb', 'em'\]; got 'ev'"):
        MACE(method="ev").fit(LABELS)


@pytest.mark.parametrize("method", ["vb", "em"])
def test_finds_spammers_and_beats_majority_vote(method):
    rng = np.random.default_rng(0)
    n, k = 3000, 4
    truth = rng.integers(0, k, n)
    conf = np.concatenate(
        [
            diagonal_confusion(5, k, p=0.85, sigma=0.05, random_state=1),
            spammer_confusion(5, k, distribution="random", random_state=2),
        ]
    )
    labels = simulate_labels(truth, conf, labels_per_item=5, random_state=3)
    m = MACE(method=method).fit(labels)
    assert m.competence_[:5].min() > 0.7
    assert m.competence_[5:].max() < 0.1
    assert (m.labels_ == truth).mean() > (MajorityVote().fit(labels).labels_ == truth).mean()
    # The spammers' strategies are their favourite-button distributions.
    assert np.abs(m.strategy_[5:] - conf[5:, 0]).max() < 0.05
