"""The per-annotator quality table written to annotators.csv."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crowdmed.data import CrowdLabels
from crowdmed.quality import (
    annotator_accuracy,
    annotator_table,
    confusion_matrices,
    sensitivity_specificity,
    spammer_score,
)

nan = np.nan

# 4 items x 3 annotators, binary
LABELS = np.array([[0, 0, 1], [1, 1, 1], [0, 0, 0], [1, -1, 0]])
POSTERIORS = np.array([[0.9, 0.1], [0.2, 0.8], [1.0, 0.0], [0.4, 0.6]])


def test_annotator_table_binary_reference_values():
    table = annotator_table(LABELS, POSTERIORS, gold=np.array([0, -1, -1, -1]))
    assert list(table.columns) == [
        "n_labels",
        "consensus_agreement",
        "soft_accuracy",
        "sensitivity",
        "specificity",
        "spammer_score",
        "n_gold",
        "gold_accuracy",
    ]
    assert table.index.name == "annotator"
    assert table.index.tolist() == [0, 1, 2]
    # consensus = argmax = (0, 1, 0, 1)
    np.testing.assert_array_equal(table["n_labels"], [4, 3, 4])
    np.testing.assert_allclose(table["consensus_agreement"], [1.0, 1.0, 0.5])
    # a0: (0.9 + 0.8 + 1.0 + 0.6)/4; a1: (0.9 + 0.8 + 1.0)/3; a2: (0.1 + 0.8 + 1.0 + 0.4)/4
    np.testing.assert_allclose(table["soft_accuracy"], [3.3 / 4, 2.7 / 3, 2.3 / 4])
    # a2 soft sensitivity: true-1 mass 0.1 + 0.8 + 0.0 + 0.6 = 1.5, said 1 on 0.1 + 0.8
    assert table.loc[2, "sensitivity"] == pytest.approx(0.9 / 1.5)
    np.testing.assert_array_equal(table["n_gold"], [1, 1, 1])
    assert table["n_gold"].dtype == np.int64
    np.testing.assert_allclose(table["gold_accuracy"], [1.0, 1.0, 0.0])


def test_annotator_table_agrees_with_the_functions():
    table = annotator_table(LABELS, POSTERIORS)
    conf = confusion_matrices(LABELS, POSTERIORS)
    np.testing.assert_allclose(table["spammer_score"], spammer_score(conf))
    sens, spec = sensitivity_specificity(LABELS, POSTERIORS)
    np.testing.assert_allclose(table["sensitivity"], sens)
    np.testing.assert_allclose(table["specificity"], spec)
    np.testing.assert_allclose(table["soft_accuracy"], annotator_accuracy(LABELS, POSTERIORS))
    consensus = POSTERIORS.argmax(axis=1)
    np.testing.assert_allclose(table["consensus_agreement"], annotator_accuracy(LABELS, consensus))
    assert "gold_accuracy" not in table.columns
    assert "quiz_accuracy" not in table.columns


def test_annotator_table_multiclass_ids_gold_and_quiz():
    # 3 items x 2 annotators, K = 3, ids kept in the given (unsorted) order
    cl = CrowdLabels.from_dense(
        np.array([[0, 2], [1, 1], [2, -1]]),
        annotator_ids=["zoe", "amy"],
        gold=[0, -1, -1],
        quiz_accuracy=[0.9, nan],
    )
    post = np.eye(3)
    table = annotator_table(cl, post)
    assert table.index.tolist() == ["zoe", "amy"]
    assert "sensitivity" not in table.columns
    assert list(table.columns)[-3:] == ["n_gold", "gold_accuracy", "quiz_accuracy"]
    np.testing.assert_allclose(table["consensus_agreement"], [1.0, 0.5])
    np.testing.assert_allclose(table["gold_accuracy"], [1.0, 0.0])
    np.testing.assert_allclose(table["quiz_accuracy"], [0.9, nan])
    # zoe: identity confusion -> 1; amy: rows (0,0,1), (0,1,0), NaN -> NaN
    np.testing.assert_allclose(table["spammer_score"], [1.0, nan])


def test_annotator_table_ties_go_to_lowest_class_and_empty_gold():
    table = annotator_table(
        np.array([[0, 1], [1, 1]]), np.array([[0.5, 0.5], [0.0, 1.0]]), gold=np.array([-1, -1])
    )
    np.testing.assert_allclose(table["consensus_agreement"], [1.0, 0.5])
    np.testing.assert_array_equal(table["n_gold"], [0, 0])
    assert table["gold_accuracy"].isna().all()


def test_annotator_table_from_long_frame_writes_csv(tmp_path):
    frame = pd.DataFrame(
        {
            "item": ["x", "x", "y", "y"],
            "annotator": ["r1", "r2", "r1", "r2"],
            "label": ["benign", "benign", "malignant", "benign"],
        }
    )
    table = annotator_table(frame, np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert table.index.tolist() == ["r1", "r2"]
    path = tmp_path / "annotators.csv"
    table.to_csv(path)
    back = pd.read_csv(path, index_col="annotator")
    pd.testing.assert_frame_equal(back, table, check_dtype=False)


@pytest.mark.parametrize(
    ("posteriors", "match"),
    [
        (np.full((3, 2), 0.5), r"`posteriors` must have shape \(n_items, n_classes\) = \(4, K\)"),
        (np.array([0, 1, 0, 1]), r"`posteriors` must have shape \(n_items, n_classes\)"),
        (np.full((4, 2), 0.6), r"`posteriors` rows must sum to 1"),
    ],
)
def test_annotator_table_errors(posteriors, match):
    with pytest.raises(ValueError, match=match):
        annotator_table(LABELS, posteriors)
