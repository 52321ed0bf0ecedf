"""Median and ordinal majority vote: hand-computed tables, tie rules, API."""

import numpy as np
import pytest

from crowdmed.aggregation import ORDINAL_METHODS, OrdinalMethod
from crowdmed.aggregation.ordinal import (
    GradedResponse,
    MedianVote,
    OrdinalMajorityVote,
    item_medians,
)
from crowdmed.data import CrowdLabels
from crowdmed.exceptions import NotFittedError

# (n_items=6, n_annotators=4), K = 5; -1 = missing. Hand-computed medians and modes per row.
LABELS = np.array(
    [
        [0, 2, 3, -1],  # sorted 0 2 3: median 2; modes 0, 2, 3 tied -> nearest 2
        [1, 4, -1, -1],  # 1 4: medians 1 | 4; modes tied, centre 2.5 -> 1 and 4 are 1.5 away
        [4, 4, 0, -1],  # 0 4 4: median 4; mode 4
        [1, 3, 3, 1],  # 1 1 3 3: medians 1 | 3; modes 1, 3 tied at distance 1 from 2
        [2, 2, 2, 2],  # unanimous
        [0, 1, 1, 4],  # 0 1 1 4: median 1; mode 1
    ]
)
LOWER = np.array([2, 1, 4, 1, 2, 1])
UPPER = np.array([2, 4, 4, 3, 2, 1])
MODE_NEAREST = np.array([2, 1, 4, 1, 2, 1])  # remaining ties -> lower class


def test_item_medians_table():
    lo, hi = item_medians(CrowdLabels.from_dense(LABELS, n_classes=5))
    np.testing.assert_array_equal(lo, LOWER)
    np.testing.assert_array_equal(hi, UPPER)


def test_median_vote_lower_middle_without_seed():
    mv = MedianVote().fit(LABELS)
    np.testing.assert_array_equal(mv.labels_, LOWER)
    np.testing.assert_allclose(mv.posteriors_[0], [1 / 3, 0, 1 / 3, 1 / 3, 0])
    assert mv.n_iter_ == 0
    assert mv.converged_
    assert mv.log_likelihoods_ == []


def test_median_vote_seeded_ties_draw_one_of_the_two_middles():
    draws = np.array([MedianVote(random_state=s).fit(LABELS).labels_ for s in range(40)])
    assert np.all((draws == LOWER) | (draws == UPPER))
    # Untied items never change; both middles of a tied item occur across seeds.
    np.testing.assert_array_equal(draws[:, [0, 2, 4, 5]], np.tile(LOWER[[0, 2, 4, 5]], (40, 1)))
    assert set(draws[:, 1]) == {1, 4}
    # The same seed gives the same draw.
    np.testing.assert_array_equal(
        MedianVote(random_state=7).fit(LABELS).labels_,
        MedianVote(random_state=7).fit(LABELS).labels_,
    )


def test_ordinal_majority_vote_table():
    np.testing.assert_array_equal(OrdinalMajorityVote().fit(LABELS).labels_, MODE_NEAREST)


def test_ordinal_majority_vote_tie_goes_to_the_median_side():
    # Classes 1 and 3 each have two votes; the fifth reader's 3 pulls the median to 3.
    labels = np.array([[1, 1, 3, 3, 4]])
    assert OrdinalMajorityVote().fit(labels, n_classes=5).labels_.tolist() == [3]


def test_gold_is_clamped_and_predict_matches_labels():
    gold = np.array([-1, 3, -1, -1, -1, -1])
    mv = MedianVote().fit(LABELS, gold=gold)
    assert mv.labels_[1] == 3
    np.testing.assert_array_equal(MedianVote().fit(LABELS).predict(LABELS), LOWER)
    np.testing.assert_array_equal(OrdinalMajorityVote().fit(LABELS).predict(LABELS), MODE_NEAREST)


def test_not_fitted_and_input_untouched():
    with pytest.raises(NotFittedError, match="This MedianVote instance is not fitted yet"):
        MedianVote().predict(LABELS)
    labels = LABELS.copy()
    OrdinalMajorityVote().fit(labels)
    np.testing.assert_array_equal(labels, LABELS)


def test_ordinal_registry():
    assert ORDINAL_METHODS[OrdinalMethod("graded-response")] is GradedResponse
    assert ORDINAL_METHODS[OrdinalMethod.MEDIAN] is MedianVote
    assert set(ORDINAL_METHODS) == set(OrdinalMethod)
