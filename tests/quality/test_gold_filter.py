"""Gold accuracy and honeypot filtering of annotators."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from crowdmed.data import CrowdLabels
from crowdmed.quality import filter_annotators, gold_accuracy

nan = np.nan
pytestmark = pytest.mark.filterwarnings("ignore:Annotators .* did not label any items")

# 4 items x 3 annotators; items 0 and 1 are gold with classes 0 and 1
LABELS = np.array([[0, 0, 1], [1, 1, 0], [1, 0, 0], [0, 0, 1]])
GOLD = np.array([0, 1, -1, -1])


# ---------------------------------------------------------------- gold_accuracy
# (labels (n_items, n_annotators), gold (n_items,), expected (n_annotators,))
GOLD_CASES = [
    pytest.param(LABELS, GOLD, [1.0, 1.0, 0.0], id="4x3"),
    # a0: 0 right, 1 right; a1: 1 wrong, 1 right; a2: answered only item 1, wrong
    pytest.param([[0, 1, -1], [1, 1, 0], [1, 0, 0]], [0, 1, -1], [1.0, 0.5, 0.0], id="3x3"),
    # a1 answered no gold item -> NaN
    pytest.param([[0, -1], [1, 1]], [0, -1], [1.0, nan], id="no-gold-answer"),
]


@pytest.mark.parametrize(("labels", "gold", "expected"), GOLD_CASES)
def test_gold_accuracy_reference_values(labels, gold, expected):
    np.testing.assert_allclose(gold_accuracy(np.array(labels), np.array(gold)), expected)


def test_gold_accuracy_reads_labels_gold_and_argument_wins():
    cl = CrowdLabels.from_dense(LABELS, gold=GOLD)
    np.testing.assert_allclose(gold_accuracy(cl), [1.0, 1.0, 0.0])
    # item 2 as the only gold item, class 1: a0 right, a1 and a2 wrong
    np.testing.assert_allclose(gold_accuracy(cl, gold=np.array([-1, -1, 1, -1])), [1, 0, 0])


@pytest.mark.parametrize(
    ("gold", "match"),
    [
        (None, r"`gold` must be given when the labels carry no gold; got None"),
        (
            [-1, -1, -1, -1],
            r"`gold` must give the true class of at least one item; got -1 for all 4",
        ),
        ([0, 1], r"`gold` must have shape \(n_items,\) = \(4,\); got \(2,\)"),
        ([0, 3, -1, -1], r"`gold` must hold class indices in -1\.\.1"),
    ],
)
def test_gold_accuracy_errors(gold, match):
    with pytest.raises(ValueError, match=match):
        gold_accuracy(LABELS, None if gold is None else np.array(gold))


# ---------------------------------------------------------------- filter_annotators
def test_filter_annotators_drops_low_gold_accuracy():
    cl = CrowdLabels.from_dense(LABELS, annotator_ids=["ann", "bob", "cy"], gold=GOLD)
    kept = filter_annotators(cl)
    assert kept.annotator_ids.tolist() == ["ann", "bob"]
    np.testing.assert_array_equal(kept.to_dense(), LABELS[:, :2])
    np.testing.assert_array_equal(kept.gold, GOLD)  # gold stays with the labels
    assert kept.item_ids.tolist() == [0, 1, 2, 3]


def test_filter_annotators_threshold_is_inclusive():
    # 3 items x 2 annotators, all gold: a0 2/3 right, a1 1/3 right
    labels = np.array([[0, 1], [1, 0], [0, 1]])
    gold = np.array([0, 1, 1])
    kept = filter_annotators(labels, gold=gold, min_gold_accuracy=2 / 3)
    assert kept.annotator_ids.tolist() == [0]
    kept = filter_annotators(labels, gold=gold, min_gold_accuracy=1 / 3)
    assert kept.annotator_ids.tolist() == [0, 1]


def test_filter_annotators_min_gold_items_keeps_unjudged():
    # a2 answered one gold item (wrong): judged with min_gold_items=1, kept with 2
    labels = np.array([[0, 0, -1], [1, 1, 0], [1, 0, 0]])
    gold = np.array([0, 1, -1])
    assert filter_annotators(labels, gold=gold).annotator_ids.tolist() == [0, 1]
    kept = filter_annotators(labels, gold=gold, min_gold_items=2)
    assert kept.annotator_ids.tolist() == [0, 1, 2]


def test_filter_annotators_falls_back_to_quiz_accuracy():
    # a2 answered no gold item: judged by its quiz; a3 has neither and is kept
    labels = np.array([[0, 0, -1, -1], [1, 1, 0, 1], [1, 0, 0, 0]])
    gold = np.array([0, -1, -1])
    for quiz, expected in [
        ([nan, nan, 0.5, nan], [0, 1, 3]),
        ([nan, nan, 0.9, nan], [0, 1, 2, 3]),
        ([0.0, 0.0, nan, nan], [0, 1, 2, 3]),  # gold answers take precedence over the quiz
    ]:
        cl = CrowdLabels.from_dense(labels, gold=gold, quiz_accuracy=quiz)
        assert filter_annotators(cl).annotator_ids.tolist() == expected
        np.testing.assert_array_equal(
            filter_annotators(cl).quiz_accuracy, np.asarray(quiz)[expected]
        )


def test_filter_annotators_quiz_only():
    cl = CrowdLabels.from_dense(LABELS, quiz_accuracy=[0.8, 0.6, nan])
    assert filter_annotators(cl).annotator_ids.tolist() == [0, 2]


def test_filter_annotators_warns_about_items_left_without_labels():
    labels = np.array([[0, 1], [1, 1], [-1, 1]])  # item 2 only labelled by a1 (gold acc 1/2)
    with pytest.warns(UserWarning, match=r"Items \[2\] lost all their labels"):
        kept = filter_annotators(labels, gold=np.array([0, 1, -1]))
    assert kept.annotator_ids.tolist() == [0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_gold_accuracy": 1.5}, r"`min_gold_accuracy` must be a number in \[0, 1\]; got 1.5"),
        ({"min_gold_accuracy": "0.7"}, r"`min_gold_accuracy` must be a number in \[0, 1\]"),
        ({"min_gold_items": 0}, r"`min_gold_items` must be an integer >= 1; got 0"),
        ({"min_gold_items": 1.5}, r"`min_gold_items` must be an integer >= 1; got 1.5"),
        (
            {"min_gold_accuracy": 1.0, "gold": np.array([0, 0, -1, -1])},
            r"`min_gold_accuracy` must leave at least one annotator with labels; got 1.0, which "
            r"removes all 3 annotators \(best accuracy 0.5\)",
        ),
    ],
)
def test_filter_annotators_errors(kwargs, match):
    kwargs.setdefault("gold", GOLD)
    with pytest.raises(ValueError, match=match):
        filter_annotators(LABELS, **kwargs)


def test_filter_annotators_without_gold_or_quiz():
    with pytest.raises(ValueError, match=r"`gold` must be given when the labels carry no gold"):
        filter_annotators(LABELS)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_filter_annotators_matches_gold_accuracy(data):
    k = data.draw(st.integers(2, 3))
    n_items, n_ann = data.draw(st.integers(2, 8)), data.draw(st.integers(1, 5))
    m = data.draw(hnp.arrays(np.int64, (n_items, n_ann), elements=st.integers(-1, k - 1)))
    m[:, 0] = np.maximum(m[:, 0], 0)  # every item labelled; annotator 0 labels everything
    gold = data.draw(hnp.arrays(np.int64, n_items, elements=st.integers(-1, k - 1)))
    gold[0] = m[0, 0]  # at least one gold item, answered right by annotator 0
    threshold = data.draw(st.sampled_from([0.0, 0.5, 0.7, 1.0]))
    cl = CrowdLabels.from_dense(m, n_classes=k)
    acc = gold_accuracy(cl, gold)
    keep = np.isnan(acc) | (acc >= threshold)
    if not (keep & (m >= 0).any(axis=0)).any():
        with pytest.raises(ValueError, match=r"must leave at least one annotator"):
            filter_annotators(cl, gold=gold, min_gold_accuracy=threshold)
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Items .* lost all their labels", UserWarning)
        kept = filter_annotators(cl, gold=gold, min_gold_accuracy=threshold)
    np.testing.assert_array_equal(kept.annotator_ids, np.flatnonzero(keep))
    np.testing.assert_array_equal(kept.to_dense(), m[:, keep])
