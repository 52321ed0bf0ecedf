"""GoldMajorityVote: hand-checked tables, the common checks (with gold), recovery."""

import copy
import warnings

import numpy as np
import pytest

from crowdmed.aggregation import GoldMajorityVote, MajorityVote, make_aggregator
from crowdmed.data import CrowdLabels
from crowdmed.exceptions import NotFittedError
from crowdmed.simulate import diagonal_confusion, simulate_labels

# (n_items=4, n_annotators=3); -1 = missing. Gold known for items 0 and 1.
LABELS = np.array([[0, 0, 1], [1, 0, 1], [1, 0, -1], [0, 1, -1]])
GOLD = np.array([0, 1, -1, -1])


def test_skills_and_votes_by_hand():
    g = GoldMajorityVote().fit(LABELS, gold=GOLD)
    # annotator 0: 2/2 right; 1: item 0 right, item 1 wrong; 2: item 0 wrong, item 1 right.
    np.testing.assert_array_equal(g.skills_, [1.0, 0.5, 0.5])
    np.testing.assert_array_equal(g.n_gold_, [2, 2, 2])
    # item 0: class 0 gets 1 + 0.5, class 1 gets 0.5 -> shares 0.75 / 0.25.
    np.testing.assert_allclose(g.posteriors_[0], [0.75, 0.25])
    # item 2: class 1 gets 1, class 0 gets 0.5.
    np.testing.assert_allclose(g.posteriors_[2], [1 / 3, 2 / 3])
    np.testing.assert_array_equal(g.labels_, [0, 1, 1, 0])


def test_gold_items_are_voted_not_clamped():
    # Gold says item 0 is 1 but the (perfect on item 1) annotators vote 0.
    labels = np.array([[0, 0], [1, 1]])
    g = GoldMajorityVote().fit(labels, gold=[1, 1])
    np.testing.assert_array_equal(g.skills_, [0.5, 0.5])
    assert g.labels_[0] == 0


@pytest.mark.parametrize(
    ("default_skill", "expected"),
    [
        (None, 0.75),  # mean of the annotators with gold (1.0 and 0.5)
        (0.0, 0.0),
        (0.3, 0.3),
    ],
)
def test_annotator_without_gold(default_skill, expected):
    # (n_items=3, n_annotators=3): annotator 2 labels only item 2, which has no gold.
    labels = np.array([[0, 0, -1], [1, 0, -1], [1, 1, 0]])
    g = GoldMajorityVote(default_skill=default_skill).fit(labels, gold=[0, 1, -1])
    assert np.isnan(g.skills_[2])
    assert g.weights_[2] == pytest.approx(expected)


def test_needs_gold():
    with pytest.raises(ValueError, match=r"`gold` must hold the true class of at least one item"):
        GoldMajorityVote().fit(LABELS)
    with pytest.raises(ValueError, match=r"`gold` must hold the true class"):
        GoldMajorityVote().fit(LABELS, gold=[-1, -1, -1, -1])


def test_bad_default_skill():
    with pytest.raises(ValueError, match=r"`default_skill` of GoldMajorityVote must be a number"):
        GoldMajorityVote(default_skill=1.5).fit(LABELS, gold=GOLD)


# ------------------------------------------------------------------ the common checks, with gold
def test_common_checks():
    est = GoldMajorityVote()
    labels = LABELS.copy()
    assert est.fit(labels, gold=GOLD) is est
    np.testing.assert_array_equal(labels, LABELS)  # input not modified
    p1 = est.posteriors_.copy()
    np.testing.assert_array_equal(est.fit(labels, gold=GOLD).posteriors_, p1)
    np.testing.assert_allclose(est.posteriors_.sum(axis=1), 1.0)
    np.testing.assert_array_equal(est.labels_, est.posteriors_.argmax(axis=1))
    np.testing.assert_allclose(est.predict_proba(LABELS), est.posteriors_, atol=1e-12)
    np.testing.assert_array_equal(copy.deepcopy(est).posteriors_, est.posteriors_)
    cl = CrowdLabels.from_dense(LABELS)
    for form in (cl, cl.to_long()):
        np.testing.assert_allclose(GoldMajorityVote().fit(form, gold=GOLD).posteriors_, p1)
    single = GoldMajorityVote().fit(LABELS[:1], gold=[0], n_classes=2)
    assert single.posteriors_.shape == (1, 2)


def test_clone_and_not_fitted():
    sklearn_base = pytest.importorskip("sklearn.base")
    est = GoldMajorityVote(default_skill=0.2, random_state=3)
    clone = sklearn_base.clone(est)
    assert clone.get_params() == est.get_params()
    with pytest.raises(NotFittedError, match=r"This GoldMajorityVote instance is not fitted yet"):
        clone.predict_proba(LABELS)
    assert type(make_aggregator("gold-majority-vote")) is GoldMajorityVote


def test_recovers_accuracies_and_beats_majority_vote():
    rng = np.random.default_rng(0)
    n, k = 4000, 3
    truth = rng.integers(0, k, n)
    good = diagonal_confusion(6, k, p=0.9, sigma=0.05, random_state=1)
    poor = diagonal_confusion(6, k, p=0.4, sigma=0.05, zeta=0.34, random_state=2)
    conf = np.concatenate([good, poor])
    labels = simulate_labels(truth, conf, labels_per_item=5, random_state=3)
    gold = np.where(rng.random(n) < 0.5, truth, -1)
    g = GoldMajorityVote().fit(labels, gold=gold)
    true_acc = np.trace(conf, axis1=1, axis2=2) / k  # uniform classes
    assert np.abs(g.skills_ - true_acc).max() < 0.05
    unknown = gold < 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mv = MajorityVote().fit(labels).labels_
    assert (g.labels_[unknown] == truth[unknown]).mean() >= (mv[unknown] == truth[unknown]).mean()
