"""Voting consensus: majority vote, soft masks, label voting."""

from __future__ import annotations

import numpy as np
import pytest

from crowdmed.aggregation.segmentation.votes import (
    label_frequencies,
    majority_vote_labels,
    majority_vote_masks,
    mean_masks,
)

# (masks of shape (n_raters, n_voxels), ties, expected majority) — checked by hand.
MAJORITY_CASES = [
    ([[1, 1, 0], [1, 0, 0], [0, 1, 0]], "background", [True, True, False]),  # 3 raters
    ([[1, 1, 0, 0], [1, 0, 1, 0]], "background", [True, False, False, False]),  # ties -> 0
    ([[1, 1, 0, 0], [1, 0, 1, 0]], "foreground", [True, True, True, False]),  # ties -> 1
]


@pytest.mark.parametrize(("masks", "ties", "expected"), MAJORITY_CASES)
def test_majority_vote_masks(masks: list, ties: str, expected: list) -> None:
    arr = np.array(masks, dtype=bool)
    before = arr.copy()
    assert majority_vote_masks(arr, ties=ties).tolist() == expected
    np.testing.assert_array_equal(arr, before)  # input not modified


def test_mean_masks_3d_and_list_input() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((4, 3, 5, 2)) < 0.5
    np.testing.assert_allclose(mean_masks(list(masks)), masks.mean(axis=0))
    assert majority_vote_masks(masks).shape == (3, 5, 2)


def test_label_voting() -> None:
    labels = np.array([[0, 1, 2, -1], [0, 2, 2, -1], [1, 2, 0, 3]])
    np.testing.assert_allclose(label_frequencies(labels)[:, 3], [0, 0, 0, 1])
    assert majority_vote_labels(labels).tolist() == [0, 2, 2, 3]
    tie = np.array([[0, 1], [1, 1]])
    assert majority_vote_labels(tie).tolist() == [-1, 1]
    assert majority_vote_labels(tie, undecided=None).tolist() == [0, 1]
    assert majority_vote_labels(tie, undecided=2).tolist() == [2, 1]


@pytest.mark.parametrize(
    ("func", "masks", "match"),
    [
        (majority_vote_masks, [np.zeros((2, 2)), np.zeros((3, 2))], r"rater 1's mask has shape"),
        (mean_masks, [np.zeros(3), np.array([0, 0.5, 1])], r"rater 1's mask has values other"),
        (mean_masks, np.zeros((1, 4)), r"at least 2 raters"),
        (majority_vote_labels, [np.zeros(3), np.array([0, 0.5, 1])], r"rater 1's label map"),
    ],
)
def test_bad_input(func: object, masks: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        func(masks)  # type: ignore[operator]
