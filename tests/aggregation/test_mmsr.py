"""M-MSR: pair covariances and trimmed means by hand, signs, recovery, memory at 1M labels."""

import numpy as np
import pytest

from crowdmed.aggregation import MMSR, MajorityVote
from crowdmed.aggregation.classification.mmsr import _Pairs
from crowdmed.data import CrowdLabels
from crowdmed.simulate import adversarial_confusion, diagonal_confusion, simulate_labels


def test_pair_covariance_by_hand():
    # (n_items=4, n_annotators=3), K = 2: annotators 0 and 1 share items 0-2 and agree on 2 of
    # them, C = (2 · 2/3 - 1) / (2 - 1) = 1/3; annotator 2 shares item 3 with annotator 0 and
    # disagrees, C = -1. Annotators 1 and 2 share nothing: no entry.
    labels = np.array([[0, 0, -1], [1, 1, -1], [0, 1, -1], [1, -1, 0]])
    pairs = _Pairs(CrowdLabels.from_dense(labels))
    np.testing.assert_array_equal(pairs.cols, [0, 0, 1, 2])  # sorted by column
    np.testing.assert_array_equal(pairs.rows, [1, 2, 0, 0])
    np.testing.assert_array_equal(pairs.n_common, [3, 1, 3, 1])
    np.testing.assert_allclose(pairs.cov, [1 / 3, -1.0, 1 / 3, -1.0], rtol=1e-12)
    np.testing.assert_array_equal(pairs.per_col, [2, 1, 1])


def crowdkit_trimmed_mean(x, f, a, n_tasks):
    """crowd-kit's ``_remove_largest_and_smallest_F_value`` and mean, for ``f >= 0``."""
    y = np.sort(x)
    y = y[y >= a] if np.sum(y < a) < f else y[f:]
    y = y[y <= a] if np.sum(y > a) < f else y[: len(y) - f]
    if len(y) == 1 and y[0] == 0:
        y = np.array([1 / np.sqrt(n_tasks)])
    return y.mean() if len(y) else a


@pytest.mark.parametrize("f", [0, 1, 3])
def test_half_step_matches_crowdkit_rule(f):
    rng = np.random.default_rng(f)
    labels = rng.integers(-1, 3, size=(40, 12))
    labels[labels.max(axis=1) < 0, 0] = 0
    cl = CrowdLabels.from_dense(labels)
    pairs = _Pairs(cl)
    other = rng.uniform(0.2, 1.0, cl.n_annotators)
    own = rng.uniform(0.2, 1.0, cl.n_annotators)
    got = MMSR._half_step(pairs, other, own, f, cl.n_items)
    for j in range(cl.n_annotators):
        col = pairs.cols == j
        ref = crowdkit_trimmed_mean(
            pairs.abs_cov[col] / other[pairs.rows[col]], f, own[j], cl.n_items
        )
        assert got[j] == pytest.approx(ref, rel=1e-12), j


@pytest.mark.parametrize("f", [0, 1, 3])
def test_half_step_leaves_out_co_annotators_estimated_at_zero(f):
    # A co-annotator whose estimate is 0 gives |C_ij| / 0: its ratio is left out of the
    # trimmed mean (crowd-kit's rule on the remaining ratios), where NaN would poison it.
    rng = np.random.default_rng(10 + f)
    labels = rng.integers(-1, 3, size=(40, 12))
    labels[labels.max(axis=1) < 0, 0] = 0
    cl = CrowdLabels.from_dense(labels)
    pairs = _Pairs(cl)
    other = rng.uniform(0.2, 1.0, cl.n_annotators)
    other[[2, 5]] = 0.0
    own = rng.uniform(0.2, 1.0, cl.n_annotators)
    got = MMSR._half_step(pairs, other, own, f, cl.n_items)
    assert np.isfinite(got).all()
    for j in range(cl.n_annotators):
        col = (pairs.cols == j) & (other[pairs.rows] > 0)
        ref = crowdkit_trimmed_mean(
            pairs.abs_cov[col] / other[pairs.rows[col]], f, own[j], cl.n_items
        )
        assert got[j] == pytest.approx(ref, rel=1e-12), j


def one_coin(n_annotators, k, accuracy):
    conf = np.full((n_annotators, k, k), 0.0)
    conf[:] = ((1 - accuracy) / (k - 1))[:, None, None]
    idx = np.arange(k)
    conf[:, idx, idx] = accuracy[:, None]
    return conf


def test_recovers_one_coin_skills():
    rng = np.random.default_rng(0)
    k = 3
    acc = rng.uniform(0.5, 0.95, 15)
    truth = rng.integers(0, k, 5000)
    labels = simulate_labels(truth, one_coin(15, k, acc), labels_per_item=6, random_state=1)
    m = MMSR().fit(labels)
    assert m.converged_
    assert np.abs(m.skills_ - acc).max() < 0.05
    np.testing.assert_allclose(m.weights_, np.log(m.skills_ * (k - 1) / (1 - m.skills_)))
    assert (m.labels_ == truth).mean() >= (MajorityVote().fit(labels).labels_ == truth).mean()


def test_adversaries_get_negative_weights():
    rng = np.random.default_rng(1)
    k = 3
    truth = rng.integers(0, k, 4000)
    conf = np.concatenate(
        [
            diagonal_confusion(10, k, p=0.8, sigma=0.05, random_state=2),
            adversarial_confusion(6, k, strength=0.9),
        ]
    )
    labels = simulate_labels(truth, conf, labels_per_item=6, random_state=3)
    m = MMSR().fit(labels)
    assert (m.weights_[10:] < 0).all()
    assert (m.skills_[10:] < 1 / k).all()
    assert (m.weights_[:10] > 0).all()
    assert (m.labels_ == truth).mean() > (MajorityVote().fit(labels).labels_ == truth).mean()


def test_annotator_sharing_nothing_has_unknown_skill():
    # (n_items=4, n_annotators=3): annotator 2 labels only item 3, alone.
    labels = np.array([[0, 0, -1], [1, 1, -1], [0, 1, -1], [-1, -1, 1]])
    m = MMSR().fit(labels)
    assert m.skills_[2] == pytest.approx(0.5)
    assert m.weights_[2] == pytest.approx(0.0)
    np.testing.assert_allclose(m.posteriors_[3], [0.5, 0.5])


def test_n_trim_is_f():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, size=(30, 8))  # every pair shares every item: 7 co-annotators
    assert MMSR().fit(labels).n_trim_ == 7 // 2 - 1
    assert MMSR(n_trim=0).fit(labels).n_trim_ == 0
    with pytest.raises(ValueError, match=r"`n_trim` of MMSR must be an integer in \[0, inf\]"):
        MMSR(n_trim=-1).fit(labels)


@pytest.mark.slow
def test_one_million_labels_under_one_gigabyte():
    import tracemalloc

    rng = np.random.default_rng(0)
    n_items, per_item, n_ann, k = 100_000, 10, 1000, 5
    items = np.repeat(np.arange(n_items), per_item)
    ann = np.argsort(rng.random((n_items, n_ann)), axis=1)[:, :per_item].ravel()
    truth = rng.integers(0, k, n_items)
    acc = rng.uniform(0.4, 0.9, n_ann)
    right = rng.random(len(items)) < acc[ann]
    wrong = (truth[items] + rng.integers(1, k, len(items))) % k
    cl = CrowdLabels.from_triplets(items, ann, np.where(right, truth[items], wrong), n_classes=k)
    tracemalloc.start()
    m = MMSR().fit(cl)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 30
    assert (m.labels_ == truth).mean() > 0.95
