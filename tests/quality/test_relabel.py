"""What to label next: hand-checked values, the annotator pool, assignment and errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from crowdmed.data.labels import CrowdLabels
from crowdmed.quality import RelabelScores, label_quality, relabel_scores
from crowdmed.quality.relabel import _accuracy_gain, annotator_confusions


def crowd(seed, n_items=150, n_annotators=6, n_classes=3):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n_items)
    acc = np.linspace(0.55, 0.95, n_annotators)
    right = rng.random((n_items, n_annotators)) < acc
    labels = np.where(right, truth[:, None], rng.integers(0, n_classes, (n_items, n_annotators)))
    labels = np.where(rng.random((n_items, n_annotators)) < 0.35, labels, -1)
    probs = rng.dirichlet(np.ones(n_classes), n_items) * 0.6 + 0.4 * np.eye(n_classes)[truth]
    return labels, probs, truth, acc


def test_activelab_by_hand_when_every_item_has_one_label():
    # (3 items, 2 annotators) K = 2, one label each, item 2 unlabelled: the quality of a
    # labelled item is the model's probability of its label; weights are all 1, so
    # score = (q * (1 + 1) + 1/2) / 3; an unlabelled item: (max p + 1/2) / 2.
    labels = np.array([[0, -1], [-1, 1], [-1, -1]])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    r = relabel_scores(labels, probs, method="activelab")
    quality = np.array([(0.9 * 2 + 0.5) / 3, (0.4 * 2 + 0.5) / 3, (0.7 + 0.5) / 2])
    np.testing.assert_allclose(r.scores, 1.0 - quality)
    np.testing.assert_array_equal(r.select(3), [1, 2, 0])


def test_accuracy_gain_by_hand():
    # K = 2, belief [0.6, 0.4], one-hot labels (p_consensus = 1), the label weighs 1.
    # Item 0 (total weight 1), a perfect reader: the label always wins, so the consensus
    # becomes the truth: 1.0 - 0.6. Item 1, a reader answering at random: label 0 keeps
    # class 0 (right w.p. 0.6 * 0.5), label 1 flips to class 1 (right w.p. 0.4 * 0.5):
    # 0.5 - 0.6 < 0. Item 2 (total weight 10): one label cannot flip [6, 4]: 0.
    post = np.array([[0.6, 0.4]] * 3)
    perfect, coin = np.eye(2), np.full((2, 2), 0.5)
    conf = np.stack([perfect, coin, perfect])
    total, new_w = np.array([1.0, 1.0, 10.0]), np.ones(3)
    gain = _accuracy_gain(post, total, 1.0, [(conf, new_w)])
    np.testing.assert_allclose(gain, [0.4, -0.1, 0.0], atol=1e-12)
    # two labels (gain of both together): item 0 as before; item 1 flips only on (1, 1):
    # 3 * 0.6 * 0.25 + 0.4 * 0.25 - 0.6 = -0.05; item 2 with total weight 1.5: the pair
    # (1, 1) flips [0.9, 0.6 + 2]: 0.4 again.
    total2 = np.array([1.0, 1.0, 1.5])
    two = _accuracy_gain(post, total2, 1.0, [(conf, new_w)] * 2)
    np.testing.assert_allclose(two, [0.4, -0.05, 0.4], atol=1e-12)
    # two different readers on item 0 (total weight 1): a coin first, then a perfect reader
    # of weight 2. The perfect label (weight 2) outvotes the coin's (weight 1) and the
    # belief (weight 1), so the consensus becomes the truth: 0.4.
    mixed = _accuracy_gain(
        post[:1], total[:1], 1.0, [(coin[None], np.ones(1)), (perfect[None], np.full(1, 2.0))]
    )
    np.testing.assert_allclose(mixed, [0.4], atol=1e-12)


def test_posteriors_are_the_crowdlab_consensus():
    # the score is computed under the posterior of the consensus label_quality reports
    labels, probs, _, _ = crowd(4)
    labels = labels[(labels >= 0).any(axis=1)]
    probs = probs[: len(labels)]
    r = relabel_scores(labels, probs)
    lq = label_quality(labels, probs, calibrate=True, random_state=0)
    assert (r.posteriors.argmax(axis=1) != probs.argmax(axis=1)).sum() > 5  # not the model
    np.testing.assert_array_equal(r.posteriors.argmax(axis=1), lq.consensus)


def test_scores_for_every_item_and_no_annotator_twice():
    labels, probs, _, _ = crowd(0)
    labels[:5] = -1  # unlabelled items
    labels[5] = [0, 1, 2, 0, 1, 2]  # everyone labelled item 5
    r = relabel_scores(labels, probs, assign=True)
    assert isinstance(r, RelabelScores)
    assert r.scores.shape == (len(labels),)
    assert np.isfinite(r.scores).all()
    assert not r.eligible[5]
    assert r.annotator[5] == -1
    assert 5 not in r.select(len(labels))
    rows = np.flatnonzero(r.eligible)
    assert (labels[rows, r.annotator[rows]] == -1).all()  # never one who already labelled


def test_assign_picks_the_most_reliable_free_annotator():
    labels, probs, _, acc = crowd(1, n_items=400)
    r = relabel_scores(labels, probs, assign=True)
    order = np.argsort(-r.reliability, kind="stable")
    assert np.corrcoef(r.reliability, acc)[0, 1] > 0.8  # the EM recovers who is reliable
    for i in np.flatnonzero(r.eligible)[:50]:
        free = [a for a in order if labels[i, a] < 0]
        assert r.annotator[i] == free[0]


def test_available_mask_restricts_the_pool_and_matches_the_default():
    labels, probs, _, _ = crowd(2)
    everyone = np.ones(labels.shape, dtype=bool)
    a = relabel_scores(labels, probs, assign=True)
    b = relabel_scores(labels, probs, assign=True, available=sp.csr_matrix(everyone))
    np.testing.assert_allclose(a.scores, b.scores)
    np.testing.assert_array_equal(a.annotator, b.annotator)
    only_first = np.zeros(labels.shape, dtype=bool)
    only_first[:, 0] = True
    c = relabel_scores(labels, probs, assign=True, available=only_first)
    np.testing.assert_array_equal(c.eligible, labels[:, 0] < 0)
    assert (c.annotator[c.eligible] == 0).all()


def test_coo_input_equals_dense():
    labels, probs, _, _ = crowd(3)
    it, an = np.nonzero(labels >= 0)
    coo = CrowdLabels.from_triplets(
        it, an, labels[it, an], n_items=labels.shape[0], n_annotators=labels.shape[1]
    )
    for method in ("crowdmed", "activelab"):
        np.testing.assert_allclose(
            relabel_scores(coo, probs, method=method).scores,
            relabel_scores(labels, probs, method=method).scores,
        )


def test_certain_items_score_low_and_disputed_items_high():
    # (4 items, 3 annotators): item 0 unanimous with the model, item 1 a 1-1 tie on a
    # 50/50 model; the tie is worth more than the settled item.
    labels = np.array([[0, 0, -1], [0, 1, -1], [1, 1, -1], [0, 0, -1]])
    probs = np.array([[0.95, 0.05], [0.5, 0.5], [0.1, 0.9], [0.9, 0.1]])
    r = relabel_scores(labels, probs)
    assert r.select(1)[0] == 1
    assert r.scores[1] > 5 * r.scores[0]


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"probs": np.full((2, 2), 0.5)}, ValueError, r"`pred_probs` must have shape"),
        ({"probs": np.full((3, 2), 0.6)}, ValueError, r"rows must sum to 1"),
        ({"method": "activelb"}, ValueError, r"Did you mean 'activelab'"),
        ({"available": np.ones((2, 2))}, ValueError, r"`available` must have shape"),
    ],
)
def test_bad_inputs(kwargs, error, pattern):
    labels = np.array([[0, 1], [1, -1], [-1, -1]])
    probs = kwargs.pop("probs", np.full((3, 2), 0.5))
    with pytest.raises(error, match=pattern):
        relabel_scores(labels, probs, **kwargs)


def test_select_refuses_a_budget_below_one():
    r = relabel_scores(np.array([[0, 1], [1, -1]]), np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match=r"`budget` must be an integer >= 1; got 0"):
        r.select(0)


def test_annotator_confusions_start_by_hand():
    # (3 items, 3 annotators) K = 2, no EM iteration: the model times (1 + votes), normalised.
    # Item 0: [0.5, 0.5] * (1 + [2, 1]) = [1.5, 1.0] -> [0.6, 0.4]; item 1: [0.2, 0.8] *
    # [1, 2] -> [0.2, 1.6] / 1.8; item 2 unlabelled keeps the model [0.3, 0.7].
    labels = np.array([[0, 0, 1], [1, -1, -1], [-1, -1, -1]])
    probs = np.array([[0.5, 0.5], [0.2, 0.8], [0.3, 0.7]])
    r = annotator_confusions(labels, probs, calibrate=False, n_iter=0)
    np.testing.assert_allclose(r.posteriors, [[0.6, 0.4], [0.2 / 1.8, 1.6 / 1.8], [0.3, 0.7]])
    np.testing.assert_array_equal(r.consensus, [0, 1, 1])
    assert r.temperature == 1.0


def test_annotator_confusions_recover_the_readers_and_match_relabel_scores():
    labels, probs, truth, acc = crowd(5, n_items=600)
    r = annotator_confusions(labels, probs)
    np.testing.assert_allclose(r.posteriors.sum(axis=1), 1.0)
    np.testing.assert_allclose(r.confusion.sum(axis=2), 1.0)
    # a wrong answer is drawn from all K = 3 classes, so a reader is right w.p. a + (1 - a) / 3
    assert np.abs(r.accuracy - (acc + (1.0 - acc) / 3.0)).max() < 0.05
    assert np.mean(r.consensus == truth) > np.mean(probs.argmax(axis=1) == truth)
    # the same model relabel_scores uses: its temperature and its reliability figures
    s = relabel_scores(labels, probs)
    assert r.temperature == s.temperature
    assert r.temperature == relabel_scores(labels, probs, method="activelab").temperature
    reliability = np.einsum("k,akk->a", r.posteriors.mean(axis=0), r.confusion)
    np.testing.assert_allclose(reliability, s.reliability)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"n_iter": -1}, r"`n_iter` must be an integer >= 0; got -1"),
        ({"n_iter": 2.5}, r"`n_iter` must be an integer >= 0; got 2.5"),
        ({"prior_strength": 0.0}, r"`prior_strength` must be a positive number; got 0.0"),
    ],
)
def test_annotator_confusions_bad_inputs(kwargs, pattern):
    labels = np.array([[0, 1], [1, -1], [-1, -1]])
    with pytest.raises(ValueError, match=pattern):
        annotator_confusions(labels, np.full((3, 2), 0.5), **kwargs)
    with pytest.raises(ValueError, match=r"`pred_probs` must have shape"):
        annotator_confusions(labels, np.full((2, 2), 0.5))
