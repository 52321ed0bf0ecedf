"""BCC: the first update by hand, ELBO bookkeeping, recovery of confusion matrices."""

import warnings

import numpy as np
import pytest

from crowdmed.aggregation import BCC, DawidSkene, MajorityVote
from crowdmed.exceptions import ConvergenceWarning
from crowdmed.simulate import diagonal_confusion, simulate_labels

# (n_items=4, n_annotators=3), binary.
LABELS = np.array([[0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 1, -1]])


def test_zero_iterations_by_hand():
    bcc = BCC(max_iter=0).fit(LABELS)
    np.testing.assert_allclose(bcc.posteriors_, MajorityVote().fit(LABELS).posteriors_)
    # Soft counts from the vote shares (2/3, 1/3), (1/3, 2/3), (1, 0), (0, 1) plus the
    # prior [[2, 1], [1, 2]]: annotator 2 said 1 on item 0 and 0 on items 1 and 2.
    np.testing.assert_allclose(
        bcc.confusion_alpha_[2], [[2 + 1 / 3 + 1, 1 + 2 / 3], [1 + 2 / 3, 2 + 1 / 3]]
    )
    # Class prior: 1 + column sums of the shares = 1 + (2, 2).
    np.testing.assert_allclose(bcc.class_alpha_, [3.0, 3.0])
    np.testing.assert_allclose(bcc.priors_, [0.5, 0.5])


def test_first_e_step_by_hand():
    from scipy.special import digamma

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        bcc = BCC(max_iter=1).fit(LABELS)
    alpha = BCC(max_iter=0).fit(LABELS).confusion_alpha_
    e_log = digamma(alpha) - digamma(alpha.sum(axis=2, keepdims=True))
    # Item 3 = [1, 1, -]: q(k) ∝ exp(E log κ_k + E log π_0[k, 1] + E log π_1[k, 1]), κ ~ Dir(3, 3).
    log_q = e_log[0, :, 1] + e_log[1, :, 1]
    q = np.exp(log_q - log_q.max())
    np.testing.assert_allclose(bcc.posteriors_[3], q / q.sum(), rtol=1e-12)


def test_elbo_never_decreases():
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 4, size=(60, 7))
    labels[labels.max(axis=1) < 0, 0] = 1
    bcc = BCC(max_iter=200, tol=1e-12).fit(labels)
    assert np.all(np.diff(bcc.log_likelihoods_) >= -1e-9)
    assert bcc.n_iter_ == len(bcc.log_likelihoods_)
    assert bcc.converged_


def test_recovers_confusion_and_beats_majority_vote():
    rng = np.random.default_rng(0)
    n, k = 6000, 3
    truth = rng.integers(0, k, n)
    conf = diagonal_confusion(8, k, p=0.7, sigma=0.15, zeta=0.4, off_diagonal="random",
                              random_state=1)  # fmt: skip
    labels = simulate_labels(truth, conf, labels_per_item=4, random_state=2)
    bcc = BCC().fit(labels)
    assert np.abs(bcc.confusion_ - conf).max() < 0.05
    assert (bcc.labels_ == truth).mean() >= (MajorityVote().fit(labels).labels_ == truth).mean()
    # With this much data the priors hardly matter: BCC ≈ Dawid–Skene.
    ds = DawidSkene().fit(labels)
    assert np.abs(bcc.posteriors_ - ds.posteriors_).max() < 0.05


def test_bad_prior():
    with pytest.raises(ValueError, match=r"`prior_diagonal` of BCC must be a number in \(0, inf\]"):
        BCC(prior_diagonal=0).fit(LABELS)
