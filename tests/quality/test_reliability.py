"""Confusion matrices, sensitivity/specificity, accuracy and the spammer score."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from crowdmed.data import CrowdLabels
from crowdmed.quality import (
    annotator_accuracy,
    confusion_matrices,
    reader_operating_points,
    sensitivity_specificity,
    spammer_score,
)

nan = np.nan
pytestmark = pytest.mark.filterwarnings("ignore:Annotators .* did not label any items")
FAST = settings(max_examples=40, deadline=None)


@st.composite
def label_matrices(draw: st.DrawFn, min_classes: int = 2, max_classes: int = 4):
    """Dense (n_items, n_annotators) matrix with -1 for missing; every item has a label."""
    k = draw(st.integers(min_classes, max_classes))
    n_items = draw(st.integers(2, 8))
    n_annotators = draw(st.integers(1, 5))
    m = draw(hnp.arrays(np.int64, (n_items, n_annotators), elements=st.integers(-1, k - 1)))
    fill = draw(hnp.arrays(np.int64, n_items, elements=st.integers(0, k - 1)))
    empty = (m < 0).all(axis=1)
    m[empty, 0] = fill[empty]
    return m, k


# ---------------------------------------------------------------- confusion_matrices
# (labels (n_items, n_annotators), reference, smoothing, expected (n_annotators, K, K))
CONFUSION_CASES = [
    pytest.param(  # 4 items x 2 annotators, K = 2, hard reference
        [[0, 0], [0, 1], [1, 1], [1, -1]],
        [0, 0, 1, 1],
        0.0,
        [[[1, 0], [0, 1]], [[0.5, 0.5], [0, 1]]],
        id="hard",
    ),
    pytest.param(  # 4 x 2, item 1 has no reference and is skipped
        [[0, 0], [0, 1], [1, 1], [1, -1]],
        [0, -1, 1, 1],
        0.0,
        [[[1, 0], [0, 1]], [[1, 0], [0, 1]]],
        id="unknown-skipped",
    ),
    pytest.param(  # 2 items x 1 annotator, posteriors as soft counts
        [[0], [1]],
        [[0.8, 0.2], [0.4, 0.6]],
        0.0,
        [[[0.8 / 1.2, 0.4 / 1.2], [0.25, 0.75]]],
        id="soft",
    ),
    pytest.param(  # 4 x 1, K = 3: true class 2 never seen -> NaN row
        [[0], [1], [2], [2]],
        [0, 1, 1, -1],
        0.0,
        [[[1, 0, 0], [0, 0.5, 0.5], [nan, nan, nan]]],
        id="no-evidence-nan",
    ),
    pytest.param(  # same with one pseudo-count: rows (2,1,1)/4, (1,2,2)/5, uniform
        [[0], [1], [2], [2]],
        [0, 1, 1, -1],
        1.0,
        [[[0.5, 0.25, 0.25], [0.2, 0.4, 0.4], [1 / 3, 1 / 3, 1 / 3]]],
        id="smoothing",
    ),
    pytest.param(  # 2 x 2, posteriors with a third class nobody chose
        [[0, 0], [1, 0]],
        [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]],
        0.0,
        [
            [[1, 0, 0], [0, 1, 0], [0, 1, 0]],
            [[1, 0, 0], [1, 0, 0], [1, 0, 0]],
        ],
        id="extra-class",
    ),
]


@pytest.mark.parametrize(("labels", "reference", "smoothing", "expected"), CONFUSION_CASES)
def test_confusion_matrices_reference_values(labels, reference, smoothing, expected):
    conf = confusion_matrices(np.array(labels), np.array(reference), smoothing=smoothing)
    np.testing.assert_allclose(conf, np.array(expected, dtype=float), atol=1e-12)


def test_confusion_matrices_accepts_crowdlabels_and_long_frame():
    dense = np.array([[0, 0], [0, 1], [1, 1], [1, -1]])
    ref = np.array([0, 0, 1, 1])
    expected = confusion_matrices(dense, ref)
    cl = CrowdLabels.from_dense(dense, annotator_ids=["a", "b"])
    np.testing.assert_array_equal(confusion_matrices(cl, ref), expected)
    frame = cl.to_long(decode=False)
    np.testing.assert_array_equal(confusion_matrices(frame, ref), expected)


def test_confusion_matrices_does_not_modify_inputs():
    dense = np.array([[0, 0], [0, 1], [1, 1], [1, -1]])
    post = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.0, 1.0]])
    dense0, post0 = dense.copy(), post.copy()
    confusion_matrices(dense, post, smoothing=0.5)
    np.testing.assert_array_equal(dense, dense0)
    np.testing.assert_array_equal(post, post0)


@pytest.mark.parametrize(
    ("reference", "match"),
    [
        ([0, 1, 1], r"`reference` must have shape \(n_items,\) = \(4,\); got \(3,\)"),
        ([0, 1, 2, 1], r"class indices in -1\.\.1 \(K = 2 classes"),
        ([0, 1, -2, 1], r"class indices in -1\.\.1"),
        ([0.0, 1.5, 1.0, 0.0], r"integer class indices"),
        ([0.0, nan, 1.0, 0.0], r"must not contain NaN"),
        ([[0.5, 0.4]] * 4, r"rows must sum to 1"),
        ([[1.5, -0.5]] * 4, r"must be non-negative"),
        ([[0.5, 0.5]] * 3, r"must have shape \(n_items, n_classes\) = \(4, K\)"),
        ([[1.0]] * 4, r"one column per class, K = 2"),
        ([[[1.0]]] * 4, r"hard labels of shape \(n_items,\)"),
        ([[nan, nan]] * 4, r"must be finite"),
    ],
)
def test_confusion_matrices_rejects_bad_reference(reference, match):
    labels = np.array([[0, 0], [0, 1], [1, 1], [1, -1]])
    with pytest.raises(ValueError, match=match):
        confusion_matrices(labels, np.array(reference))


@pytest.mark.parametrize("smoothing", [-0.1, nan, np.inf])
def test_confusion_matrices_rejects_bad_smoothing(smoothing):
    with pytest.raises(ValueError, match=r"`smoothing` must be a finite number >= 0"):
        confusion_matrices(np.array([[0], [1]]), np.array([0, 1]), smoothing=smoothing)


def test_confusion_matrices_rejects_non_numeric_smoothing():
    with pytest.raises(TypeError, match=r"`smoothing` must be a number; got str"):
        confusion_matrices(np.array([[0], [1]]), np.array([0, 1]), smoothing="1")


@FAST
@given(label_matrices(), st.data())
def test_confusion_rows_are_distributions_or_nan(mk, data):
    m, k = mk
    ref = data.draw(hnp.arrays(np.int64, m.shape[0], elements=st.integers(-1, k - 1)))
    cl = CrowdLabels.from_dense(m, n_classes=k)
    conf = confusion_matrices(cl, ref)
    assert conf.shape == (m.shape[1], k, k)
    sums = conf.sum(axis=2)
    # a row is NaN exactly when the annotator labelled no item of that reference class
    seen = np.array(
        [[((m[:, a] >= 0) & (ref == c)).any() for c in range(k)] for a in range(m.shape[1])]
    )
    np.testing.assert_array_equal(np.isnan(sums), ~seen)
    np.testing.assert_allclose(sums[seen], 1.0)
    smoothed = confusion_matrices(cl, ref, smoothing=0.1)
    np.testing.assert_allclose(smoothed.sum(axis=2), 1.0)


@FAST
@given(label_matrices(), st.data())
def test_confusion_permutes_with_annotators_and_classes(mk, data):
    m, k = mk
    ref = data.draw(hnp.arrays(np.int64, m.shape[0], elements=st.integers(-1, k - 1)))
    conf = confusion_matrices(CrowdLabels.from_dense(m, n_classes=k), ref)
    perm_a = np.array(data.draw(st.permutations(range(m.shape[1]))))
    permuted = confusion_matrices(CrowdLabels.from_dense(m[:, perm_a], n_classes=k), ref)
    np.testing.assert_array_equal(permuted, conf[perm_a])
    perm_c = np.array(data.draw(st.permutations(range(k))))  # class c becomes perm_c[c]
    relabel = np.where(m >= 0, perm_c[np.maximum(m, 0)], -1)
    ref2 = np.where(ref >= 0, perm_c[np.maximum(ref, 0)], -1)
    conf2 = confusion_matrices(CrowdLabels.from_dense(relabel, n_classes=k), ref2)
    inv = np.argsort(perm_c)
    np.testing.assert_allclose(conf2[:, perm_c][:, :, perm_c], conf, equal_nan=True)
    np.testing.assert_allclose(conf2, conf[:, inv][:, :, inv], equal_nan=True)


@FAST
@given(label_matrices(), st.data())
def test_confusion_hard_equals_one_hot_posteriors(mk, data):
    m, k = mk
    ref = data.draw(hnp.arrays(np.int64, m.shape[0], elements=st.integers(0, k - 1)))
    cl = CrowdLabels.from_dense(m, n_classes=k)
    np.testing.assert_allclose(
        confusion_matrices(cl, ref), confusion_matrices(cl, np.eye(k)[ref]), equal_nan=True
    )


# ---------------------------------------------------------------- sensitivity_specificity
def test_sensitivity_specificity_reference_values():
    # 4 items x 2 annotators; items 0, 1 positive, 2, 3 negative
    labels = np.array([[1, 1], [1, 0], [0, 0], [1, -1]])
    sens, spec = sensitivity_specificity(labels, np.array([1, 1, 0, 0]))
    np.testing.assert_allclose(sens, [1.0, 0.5])  # a0: 2/2, a1: 1/2
    np.testing.assert_allclose(spec, [0.5, 1.0])  # a0: 1/2, a1: 1/1
    sens0, spec0 = sensitivity_specificity(labels, np.array([1, 1, 0, 0]), positive=0)
    np.testing.assert_array_equal(sens0, spec)
    np.testing.assert_array_equal(spec0, sens)


def test_sensitivity_specificity_soft_and_unknown():
    # 3 items x 2 annotators; annotator 1 saw no positive item -> NaN sensitivity
    labels = np.array([[1, -1], [0, 0], [1, 1]])
    post = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    sens, spec = sensitivity_specificity(labels, post)
    np.testing.assert_allclose(sens, [1.0, 1.0])  # a0: (1 + 0.5)/1.5; a1: 0.5/0.5
    np.testing.assert_allclose(spec, [1 / 1.5, 1 / 1.5])  # a0: 1/(1 + 0.5); a1 the same
    sens, spec = sensitivity_specificity(labels, np.array([1, 0, -1]))
    np.testing.assert_allclose(sens, [1.0, nan])
    np.testing.assert_allclose(spec, [1.0, 1.0])


def test_sensitivity_specificity_single_observed_class():
    # everybody said 0 (K inferred as 1): still binary, the positive item was missed
    sens, spec = sensitivity_specificity(np.array([[0], [0]]), np.array([0, 1]))
    np.testing.assert_array_equal(sens, [0.0])
    np.testing.assert_array_equal(spec, [1.0])


def test_sensitivity_specificity_rejects_multiclass_and_bad_positive():
    with pytest.raises(ValueError, match=r"`labels` must be binary \(K = 2\).*got K = 3"):
        sensitivity_specificity(np.array([[0], [2]]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"`positive` must be the index of the positive class"):
        sensitivity_specificity(np.array([[0], [1]]), np.array([0, 1]), positive=2)
    with pytest.raises(ValueError, match=r"`reference` must have one column per class, K = 2"):
        sensitivity_specificity(np.array([[0], [0]]), np.ones((2, 1)))
    with pytest.raises(ValueError, match=r"`reference` must have two columns for binary"):
        sensitivity_specificity(np.array([[0], [1]]), np.full((2, 3), 1 / 3))


@FAST
@given(label_matrices(max_classes=2), st.data())
def test_binary_spammer_score_is_youden_squared(mk, data):
    m, _ = mk
    ref = data.draw(hnp.arrays(np.int64, m.shape[0], elements=st.integers(-1, 1)))
    cl = CrowdLabels.from_dense(m, n_classes=2)
    sens, spec = sensitivity_specificity(cl, ref)
    score = spammer_score(confusion_matrices(cl, ref))
    np.testing.assert_allclose(score, (sens + spec - 1) ** 2, atol=1e-12, equal_nan=True)


# ---------------------------------------------------------------- annotator_accuracy
# (labels (n_items, n_annotators), reference (n_items,) or (n_items, K), expected (n_annotators,))
ACCURACY_CASES = [
    pytest.param([[0, 0, -1], [1, 0, -1], [1, 1, 2]], [0, 1, -1], [1.0, 0.5, nan], id="hard-3x3"),
    pytest.param(  # a0: (0.5 + 1 + 0)/3, a1: (0.5 + 0 + 0)/3, a2: 1
        [[0, 0, -1], [1, 0, -1], [1, 1, 2]],
        [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        [0.5, 1 / 6, 1.0],
        id="soft-3x3",
    ),
    pytest.param([[1, 0], [0, 0]], [-1, -1], [nan, nan], id="no-reference"),
]


@pytest.mark.parametrize(("labels", "reference", "expected"), ACCURACY_CASES)
def test_annotator_accuracy_reference_values(labels, reference, expected):
    acc = annotator_accuracy(np.array(labels), np.array(reference))
    np.testing.assert_allclose(acc, expected, atol=1e-12)


@FAST
@given(label_matrices(), st.data())
def test_annotator_accuracy_matches_dense_computation(mk, data):
    m, k = mk
    ref = data.draw(hnp.arrays(np.int64, m.shape[0], elements=st.integers(-1, k - 1)))
    acc = annotator_accuracy(CrowdLabels.from_dense(m, n_classes=k), ref)
    valid = (m >= 0) & (ref[:, None] >= 0)
    hits = (m == ref[:, None]) & valid
    with np.errstate(invalid="ignore"):
        expected = hits.sum(axis=0) / valid.sum(axis=0)
    np.testing.assert_allclose(acc, expected, equal_nan=True)


def test_annotator_accuracy_rejects_wrong_length():
    with pytest.raises(ValueError, match=r"`reference` must have shape \(n_items,\) = \(3,\)"):
        annotator_accuracy(np.array([[0], [1], [1]]), np.array([0, 1]))


# ---------------------------------------------------------------- spammer_score
def _pairwise_score(conf: np.ndarray) -> np.ndarray:
    """The definition, written out: sum over class pairs of squared row differences."""
    k = conf.shape[1]
    total = sum(
        np.sum((conf[:, c] - conf[:, d]) ** 2, axis=1)
        for c, d in itertools.combinations(range(k), 2)
    )
    return total / (k * (k - 1))


# (confusion (n_annotators, K, K), expected (n_annotators,))
SPAMMER_CASES = [
    pytest.param([[[0.9, 0.1], [0.2, 0.8]]], [0.49], id="binary-good"),  # (0.8 + 0.9 - 1)^2
    pytest.param([[[0.7, 0.3], [0.7, 0.3]]], [0.0], id="binary-spammer"),
    pytest.param([[[0.0, 1.0], [1.0, 0.0]]], [1.0], id="binary-adversarial"),
    pytest.param([np.eye(3)], [1.0], id="identity-3"),
    pytest.param([np.eye(3)[[2, 0, 1]]], [1.0], id="permutation-3"),
    pytest.param([[[0.2, 0.5, 0.3]] * 3], [0.0], id="identical-rows-3"),
    # pairs: (0,1) 2, (0,2) 6/9, (1,2) 6/9 -> (30/9) / 6 = 5/9
    pytest.param([[[1, 0, 0], [0, 1, 0], [1 / 3, 1 / 3, 1 / 3]]], [5 / 9], id="hand-3"),
    pytest.param([[[1.0, 0.0], [nan, nan]]], [nan], id="nan-row"),
]


@pytest.mark.parametrize(("confusion", "expected"), SPAMMER_CASES)
def test_spammer_score_reference_values(confusion, expected):
    np.testing.assert_allclose(
        spammer_score(np.array(confusion, dtype=float)), expected, atol=1e-12
    )


@st.composite
def confusions(draw: st.DrawFn):
    k = draw(st.integers(2, 5))
    n = draw(st.integers(1, 4))
    raw = draw(hnp.arrays(np.float64, (n, k, k), elements=st.floats(0.0, 1.0, allow_nan=False)))
    raw += 1e-3
    return raw / raw.sum(axis=2, keepdims=True)


@FAST
@given(confusions(), st.data())
def test_spammer_score_properties(conf, data):
    score = spammer_score(conf)
    np.testing.assert_allclose(score, _pairwise_score(conf), atol=1e-12)
    assert np.all((score >= 0) & (score <= 1))
    k = conf.shape[1]
    # identical rows -> 0
    spam = np.repeat(conf[:, :1, :], k, axis=1)
    np.testing.assert_allclose(spammer_score(spam), 0.0, atol=1e-12)
    # relabelling the true classes or the answers does not change the score
    perm = np.array(data.draw(st.permutations(range(k))))
    np.testing.assert_allclose(spammer_score(conf[:, perm]), score, atol=1e-12)
    np.testing.assert_allclose(spammer_score(conf[:, :, perm]), score, atol=1e-12)
    # permuting annotators permutes the scores
    order = np.array(data.draw(st.permutations(range(conf.shape[0]))))
    np.testing.assert_allclose(spammer_score(conf[order]), score[order], atol=1e-12)


@pytest.mark.parametrize(
    ("confusion", "match"),
    [
        (np.eye(2), r"`confusion` must have shape \(n_annotators, K, K\); got \(2, 2\)"),
        (np.ones((1, 2, 3)) / 3, r"`confusion` must have shape \(n_annotators, K, K\)"),
        (np.ones((1, 1, 1)), r"at least K = 2 classes"),
        (np.array([[[0.5, 0.6], [0.5, 0.5]]]), r"rows must sum to 1.*annotator 0, true class 0"),
        (np.array([[[1.5, -0.5], [0.5, 0.5]]]), r"probabilities in \[0, 1\]"),
        (np.array([[[np.inf, 0.0], [0.5, 0.5]]]), r"must not contain infinite values"),
    ],
)
def test_spammer_score_rejects_bad_confusion(confusion, match):
    with pytest.raises(ValueError, match=match):
        spammer_score(confusion)


def test_spammer_score_accepts_nested_lists():
    assert spammer_score([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]]]).tolist() == [
        1.0,
        0.0,
    ]


# ---------------------------------------------------------------- reader_operating_points
def test_reader_operating_points_hand_worked_soft_counts() -> None:
    """3 items x 1 reader with posteriors: Beta posteriors with closed-form quantiles."""
    # reader says [1, 1, 0]; P(positive) = [1, 1, 0.5]
    # sensitivity: 2 hits of 2.5 soft positives -> Beta(2.5, 1), quantile q ** (1 / 2.5)
    # specificity: 0.5 hit of 0.5 soft negative -> Beta(1, 0.5), quantile 1 - (1 - q) ** 2
    labels = np.array([[1], [1], [0]])
    posteriors = np.array([[0.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
    table = reader_operating_points(labels, posteriors)
    row = table.iloc[0]
    assert list(table.columns) == [
        "annotator",
        "n_positive",
        "n_negative",
        "sensitivity",
        "sensitivity_low",
        "sensitivity_high",
        "specificity",
        "specificity_low",
        "specificity_high",
    ]
    np.testing.assert_allclose(
        row[["n_positive", "n_negative", "sensitivity", "specificity"]].astype(float),
        [2.5, 0.5, 0.8, 1.0],
    )
    np.testing.assert_allclose(
        [row["sensitivity_low"], row["sensitivity_high"]], [0.025**0.4, 0.975**0.4], rtol=1e-9
    )
    np.testing.assert_allclose(
        [row["specificity_low"], row["specificity_high"]],
        [1 - 0.975**2, 1 - 0.025**2],
        rtol=1e-9,
    )


def test_reader_operating_points_level_and_positive() -> None:
    """A 50 % interval of Beta(2.5, 1) is [0.25, 0.75] ** 0.4; positive=0 swaps the rates."""
    labels = np.array([[1], [1], [0]])
    posteriors = np.array([[0.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
    row = reader_operating_points(labels, posteriors, level=0.5).iloc[0]
    np.testing.assert_allclose(
        [row["sensitivity_low"], row["sensitivity_high"]], [0.25**0.4, 0.75**0.4], rtol=1e-9
    )
    swapped = reader_operating_points(labels, posteriors, positive=0).iloc[0]
    assert swapped["sensitivity"] == pytest.approx(1.0)
    assert swapped["specificity"] == pytest.approx(0.8)
    assert swapped["n_positive"] == pytest.approx(0.5)


def test_reader_operating_points_hard_reference_and_no_evidence() -> None:
    """Hard reference: integer counts; a reader without negatives has NaN specificity."""
    # 4 items x 3 readers; reader 2 labelled only positives
    labels = np.array([[1, 1, 1], [1, 0, -1], [0, 0, -1], [1, -1, -1]])
    table = reader_operating_points(labels, np.array([1, 1, 0, 0]))
    np.testing.assert_array_equal(table["n_positive"], [2, 2, 1])
    np.testing.assert_array_equal(table["n_negative"], [2, 1, 0])
    np.testing.assert_allclose(table["sensitivity"], [1.0, 0.5, 1.0])
    np.testing.assert_allclose(table["specificity"][:2], [0.5, 1.0])
    assert table.loc[2, ["specificity", "specificity_low", "specificity_high"]].isna().all()
    # x = 1 of n = 2: Beta(1.5, 1.5) is symmetric around 1/2
    assert table.loc[1, "sensitivity_low"] == pytest.approx(1 - table.loc[1, "sensitivity_high"])
    # x = 1 of n = 1: Beta(1.5, 0.5); P(p < low) = 0.025 checked with the regularised beta
    from scipy.special import betainc

    assert betainc(1.5, 0.5, table.loc[2, "sensitivity_low"]) == pytest.approx(0.025)
    sens, spec = sensitivity_specificity(labels, np.array([1, 1, 0, 0]))
    np.testing.assert_allclose(table["sensitivity"], sens)
    np.testing.assert_allclose(table["specificity"], spec)


def test_reader_operating_points_ids_from_long_table() -> None:
    """The annotator column holds the ids of a long table."""
    long = pd.DataFrame(
        {"item": ["a", "a", "b", "b"], "annotator": ["r1", "r2", "r1", "r2"], "label": [1, 1, 0, 1]}
    )
    table = reader_operating_points(long, np.array([1, 0]))
    assert list(table["annotator"]) == ["r1", "r2"]
    np.testing.assert_allclose(table["specificity"], [1.0, 0.0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"positive": 2}, r"`positive` must be the index of the positive class"),
        ({"level": 1.0}, r"`level` must be a probability in \(0, 1\)"),
        ({"level": 0}, r"`level` must be a probability in \(0, 1\)"),
    ],
)
def test_reader_operating_points_errors(kwargs: dict, match: str) -> None:
    """Bad options give one-line ValueErrors."""
    with pytest.raises(ValueError, match=match):
        reader_operating_points(np.array([[0], [1]]), np.array([0, 1]), **kwargs)


def test_reader_operating_points_multiclass_error() -> None:
    """More than two classes is refused."""
    with pytest.raises(ValueError, match=r"`labels` must be binary"):
        reader_operating_points(np.array([[0], [1], [2]]), np.array([0, 1, 2]))
