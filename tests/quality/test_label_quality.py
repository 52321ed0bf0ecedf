"""CROWDLAB consensus and label quality: hand-checked values, properties and errors."""

from __future__ import annotations

import numpy as np
import pytest

from crowdmed.data.labels import CrowdLabels
from crowdmed.quality import LabelQuality, label_quality

SQRT2 = np.sqrt(2.0)


def random_case(seed, n_items=120, n_annotators=7, n_classes=3):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n_items)
    labels = np.where(
        rng.random((n_items, n_annotators)) < 0.75,
        truth[:, None],
        rng.integers(0, n_classes, (n_items, n_annotators)),
    )
    labels = np.where(rng.random((n_items, n_annotators)) < 0.4, labels, -1)
    labels[:, 0] = np.where(labels[:, 0] < 0, truth, labels[:, 0])  # every item labelled
    probs = rng.dirichlet(np.ones(n_classes), n_items) * 0.5 + 0.5 * np.eye(n_classes)[truth]
    return labels, probs


def test_unanimous_annotators_by_hand():
    # (3 items, 2 annotators), K = 2: everyone agrees, the model is right on every item.
    labels = np.array([[0, 0], [1, 1], [0, 0]])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    lq = label_quality(labels, probs)
    # agreement 1 -> annotators put all their mass on their label; weights: annotators
    # 1 - 0/(1/3) = 1, model 1 * sqrt(mean labels per item) = sqrt(2).
    assert lq.model_weight == pytest.approx(SQRT2)
    np.testing.assert_allclose(lq.annotator_weight, [1.0, 1.0])
    expected_post = (probs * SQRT2 + 2 * np.eye(2)[[0, 1, 0]]) / (2 + SQRT2)
    np.testing.assert_allclose(lq.posteriors, expected_post)
    np.testing.assert_array_equal(lq.consensus, [0, 1, 0])
    np.testing.assert_allclose(lq.consensus_quality, expected_post[[0, 1, 2], [0, 1, 0]])
    np.testing.assert_allclose(lq.agreement, [1.0, 1.0, 1.0])
    # each label has the quality of its item's consensus; annotator quality mixes the mean
    # label quality (weight sqrt2 / (sqrt2 + 2 * 2/2)) with agreement 1
    w = SQRT2 / (SQRT2 + 2.0)
    mean_q = lq.consensus_quality.mean()
    np.testing.assert_allclose(lq.annotator_quality, [w * mean_q + (1 - w)] * 2)
    np.testing.assert_array_equal(lq.worst_class, [0, 0])  # ties: most chosen class (0, twice)


def test_majority_vote_tie_goes_to_the_model():
    # (2 items, 2 annotators): item 0 is a 0/1 tie; the model prefers class 1 there.
    labels = np.array([[0, 1], [1, 1]])
    probs = np.array([[0.3, 0.7], [0.2, 0.8]])
    lq = label_quality(labels, probs, consensus_method="majority_vote")
    np.testing.assert_array_equal(lq.consensus, [1, 1])
    np.testing.assert_allclose(lq.agreement, [0.5, 1.0])


def test_label_scores_follow_the_coo_order_and_dense_view():
    labels, probs = random_case(0)
    lq = label_quality(labels, probs)
    cl = lq.labels
    np.testing.assert_allclose(lq.label_scores, lq.posteriors[cl.items, cl.labels])
    dense = lq.label_score_matrix()
    assert np.array_equal(np.isnan(dense), labels < 0)
    frame = lq.items_frame()
    assert list(frame.columns) == ["consensus", "consensus_quality", "agreement", "n_annotations"]
    assert lq.annotators_frame().shape == (labels.shape[1], 5)


def test_dense_and_coo_inputs_agree():
    labels, probs = random_case(1)
    it, an = np.nonzero(labels >= 0)
    coo = CrowdLabels.from_triplets(it, an, labels[it, an], n_items=labels.shape[0])
    a, b = label_quality(labels, probs), label_quality(coo, probs)
    np.testing.assert_array_equal(a.consensus, b.consensus)
    np.testing.assert_allclose(a.annotator_quality, b.annotator_quality)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_posteriors_are_distributions_and_scores_in_unit_interval(seed):
    labels, probs = random_case(seed)
    lq = label_quality(labels, probs)
    assert isinstance(lq, LabelQuality)
    np.testing.assert_allclose(lq.posteriors.sum(axis=1), 1.0)
    for v in (lq.consensus_quality, lq.label_scores, lq.annotator_quality):
        assert np.all((v >= 0) & (v <= 1))


def test_permuting_items_and_annotators_permutes_the_outputs():
    labels, probs = random_case(3)
    rng = np.random.default_rng(0)
    pi, pa = rng.permutation(labels.shape[0]), rng.permutation(labels.shape[1])
    a = label_quality(labels, probs)
    b = label_quality(labels[pi][:, pa], probs[pi])
    np.testing.assert_array_equal(b.consensus, a.consensus[pi])
    np.testing.assert_allclose(b.consensus_quality, a.consensus_quality[pi])
    np.testing.assert_allclose(b.annotator_quality, a.annotator_quality[pa])
    np.testing.assert_array_equal(b.worst_class, a.worst_class[pa])


def test_calibration_picks_a_temperature_from_the_grid():
    labels, probs = random_case(4)
    lq = label_quality(labels, probs, calibrate=True)
    assert 0.1 <= lq.temperature <= 8.0
    np.testing.assert_allclose(lq.posteriors.sum(axis=1), 1.0)


def test_agreement_quality_is_the_vote_share():
    labels, probs = random_case(5)
    lq = label_quality(labels, probs, quality_method="agreement")
    np.testing.assert_allclose(lq.consensus_quality, lq.agreement)
    assert np.isnan(lq.model_weight)


@pytest.mark.parametrize(
    ("labels", "probs", "pattern"),
    [
        ([[0, 1], [1, 1]], [[0.5, 0.5]], r"`pred_probs` must have shape \(n_items, n_classes\)"),
        ([[0, 1], [1, 1]], [[0.5, 0.6], [0.5, 0.5]], r"`pred_probs` rows must sum to 1"),
        ([[0, -1], [-1, 1]], [[0.5, 0.5], [0.5, 0.5]], r"at least one item two or more labels"),
        ([[0, 2], [1, 1]], [[0.5, 0.5], [0.5, 0.5]], r"one column per class, at least 3"),
        ([[0, -1], [-1, -1]], [[0.5, 0.5], [0.5, 0.5]], r"have no labels"),
    ],
)
def test_bad_inputs(labels, probs, pattern):
    with pytest.raises(ValueError, match=pattern):
        label_quality(np.array(labels), np.array(probs))


def test_bad_option_suggests_the_closest():
    with pytest.raises(ValueError, match=r"Did you mean 'best_quality'"):
        label_quality(np.array([[0, 0], [1, 1]]), np.eye(2), consensus_method="best_qualty")
