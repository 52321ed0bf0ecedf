"""Continuous readings: input forms, checks, and the mean and median baselines."""

import numpy as np
import pandas as pd
import pytest

from crowdmed.aggregation.continuous import (
    ContinuousLabels,
    ContinuousMean,
    ContinuousMedian,
    check_continuous,
)
from crowdmed.exceptions import NotFittedError

# (n_items=4, n_annotators=3); NaN = missing. Hand-computed means and medians per row.
VALUES = np.array(
    [
        [1.0, 2.0, np.nan],  # mean 1.5, median 1.5
        [0.0, 4.0, 9.0],  # mean 13/3, median 4
        [np.nan, np.nan, -2.0],  # one reading
        [5.0, 1.0, 2.0],  # mean 8/3, median 2
    ]
)
MEANS = np.array([1.5, 13 / 3, -2.0, 8 / 3])
MEDIANS = np.array([1.5, 4.0, -2.0, 2.0])


def test_dense_to_triplets_and_back():
    cl = check_continuous(VALUES)
    assert isinstance(cl, ContinuousLabels)
    assert (cl.n_items, cl.n_annotators, cl.n_labels) == (4, 3, 9)
    np.testing.assert_array_equal(cl.to_dense(), VALUES)  # NaN positions equal too


@pytest.mark.parametrize(
    ("model", "expected"), [(ContinuousMean, MEANS), (ContinuousMedian, MEDIANS)]
)
def test_baselines_table(model, expected):
    est = model().fit(VALUES)
    np.testing.assert_allclose(est.labels_, expected, rtol=1e-12)
    np.testing.assert_allclose(est.predict(VALUES), expected, rtol=1e-12)
    assert est.n_iter_ == 0
    assert est.converged_
    assert est.log_likelihoods_ == []


def test_long_table_with_value_column():
    df = pd.DataFrame(
        {"item": ["b", "a", "a"], "annotator": ["x", "x", "y"], "value": [3.0, 1.0, 2.0]}
    )
    est = ContinuousMean().fit(df)
    assert list(est.item_ids_) == ["a", "b"]
    np.testing.assert_allclose(est.labels_, [1.5, 3.0])


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (np.array([[1.0, np.inf]]), ValueError, "must be finite or NaN"),
        (np.array([[1.0, 2.0], [np.nan, np.nan]]), ValueError, r"Items \[1\] have no readings"),
        (np.array([1.0, 2.0]), ValueError, r"shape \(n_items, n_annotators\)"),
        ("labels.csv", TypeError, "must be a float array"),
        (
            pd.DataFrame({"item": [1, 1], "annotator": ["a", "a"], "label": [1.0, 2.0]}),
            ValueError,
            r"Each \(item, annotator\) pair must occur once",
        ),
        (
            pd.DataFrame({"item": [1], "worker": ["a"], "label": [1.0]}),
            ValueError,
            "must have the columns 'item', 'annotator'",
        ),
        (
            pd.DataFrame({"item": [1, 2], "annotator": ["a", "a"], "label": [1.0, None]}),
            ValueError,
            r"rows \[1\] do not",
        ),
    ],
)
def test_input_errors(labels, error, match):
    with pytest.raises(error, match=match):
        check_continuous(labels)


def test_not_fitted():
    with pytest.raises(NotFittedError, match="This ContinuousMedian instance is not fitted yet"):
        ContinuousMedian().predict(VALUES)


def test_unknown_annotator_in_predict():
    df = pd.DataFrame({"item": [1, 1], "annotator": ["a", "b"], "label": [1.0, 2.0]})
    est = ContinuousMean().fit(df)
    new = pd.DataFrame({"item": [2], "annotator": ["c"], "label": [1.0]})
    with pytest.raises(ValueError, match=r"unknown annotators \[c\]"):
        est.predict(new)


def test_continuous_registry():
    from crowdmed.aggregation.continuous import CONTINUOUS_METHODS, ContinuousMethod

    assert set(CONTINUOUS_METHODS) == set(ContinuousMethod)
    assert CONTINUOUS_METHODS[ContinuousMethod("median")] is ContinuousMedian
