"""Cohen's kappa matrix, Fleiss' kappa and Krippendorff's alpha."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from crowdmed.data import CrowdLabels
from crowdmed.quality import cohen_kappa_matrix, fleiss_kappa, krippendorff_alpha

nan = np.nan
pytestmark = pytest.mark.filterwarnings("ignore:Annotators .* did not label any items")
FAST = settings(max_examples=40, deadline=None)


@st.composite
def label_matrices(draw: st.DrawFn, complete: bool = False, max_classes: int = 4):
    """Dense (n_items, n_annotators) matrix with -1 for missing; every item has a label."""
    k = draw(st.integers(2, max_classes))
    n_items = draw(st.integers(2, 9))
    n_annotators = draw(st.integers(2, 5))
    low = 0 if complete else -1
    m = draw(hnp.arrays(np.int64, (n_items, n_annotators), elements=st.integers(low, k - 1)))
    fill = draw(hnp.arrays(np.int64, n_items, elements=st.integers(0, k - 1)))
    empty = (m < 0).all(axis=1)
    m[empty, 0] = fill[empty]
    return m, k


def _relabel(m: np.ndarray, perm: np.ndarray) -> np.ndarray:
    return np.where(m >= 0, perm[np.maximum(m, 0)], -1)


# ---------------------------------------------------------------- cohen_kappa_matrix
def test_cohen_kappa_matrix_reference_values():
    # 4 items x 3 annotators
    labels = np.array([[0, 0, 1], [1, 1, -1], [0, 1, 0], [1, 1, 1]])
    kappa = cohen_kappa_matrix(labels)
    # a-b: 4 shared, p_o = 3/4, p_e = (2*1 + 2*3)/16 = 1/2 -> 0.5
    # a-c: items 0, 2, 3, p_o = 2/3, p_e = 4/9 -> 0.4
    # b-c: items 0, 2, 3, p_o = 1/3, p_e = 5/9 -> -0.5
    expected = np.array([[1.0, 0.5, 0.4], [0.5, 1.0, -0.5], [0.4, -0.5, 1.0]])
    np.testing.assert_allclose(kappa, expected, atol=1e-12)


# 4 items x 2 annotators, K = 3: a = (0, 1, 2, 2), b = (0, 2, 2, 1); margins (1, 1, 2) each
# unweighted: p_o = 1/2, p_e = 6/16 -> 0.2
# linear: sum w*O = 2, sum w*E = 14/4 -> 1 - 4/7 = 3/7
# quadratic: sum w*O = 2, sum w*E = 22/4 -> 1 - 4/11 = 7/11
@pytest.mark.parametrize(
    ("weights", "expected"), [(None, 0.2), ("linear", 3 / 7), ("quadratic", 7 / 11)]
)
def test_cohen_kappa_matrix_weighted_reference_values(weights, expected):
    labels = np.array([[0, 0], [1, 2], [2, 2], [2, 1]])
    kappa = cohen_kappa_matrix(labels, weights=weights)
    np.testing.assert_allclose(kappa, [[1.0, expected], [expected, 1.0]], atol=1e-12)


def test_cohen_kappa_matrix_undefined_is_nan():
    # 4 items x 4 annotators
    labels = np.array(
        [
            [0, 0, 1, -1],  # c and d share one item only -> NaN
            [0, 0, 0, 1],
            [0, 0, -1, -1],
            [-1, -1, 1, -1],
        ]
    )
    kappa = cohen_kappa_matrix(labels)
    assert np.isnan(kappa[0, 1])  # a and b: both always 0 -> p_e = 1, undefined
    assert np.isnan(kappa[2, 3])
    assert np.isnan(kappa[3, 2])
    assert np.isnan(kappa[0, 3])  # one shared item
    assert np.isnan(kappa[3, 3])  # d has a single label
    np.testing.assert_array_equal(np.diag(kappa)[:3], 1.0)
    # a and c: items 0, 1: a = (0, 0), c = (1, 0): p_o = 1/2, p_e = 1/2 -> 0
    assert kappa[0, 2] == pytest.approx(0.0)


def test_cohen_kappa_matrix_rejects_unknown_weights():
    with pytest.raises(ValueError, match=r"`weights` must be one of .*Did you mean 'quadratic'"):
        cohen_kappa_matrix(np.array([[0, 1], [1, 1]]), weights="quadratc")


@FAST
@given(label_matrices(), st.sampled_from([None, "linear", "quadratic"]), st.data())
def test_cohen_kappa_matrix_properties(mk, weights, data):
    m, k = mk
    kappa = cohen_kappa_matrix(CrowdLabels.from_dense(m, n_classes=k), weights=weights)
    np.testing.assert_array_equal(kappa, kappa.T)
    assert np.all(np.isnan(kappa) | (kappa <= 1 + 1e-12))
    n_labels = (m >= 0).sum(axis=0)
    np.testing.assert_array_equal(np.diag(kappa), np.where(n_labels >= 2, 1.0, nan))
    shared = (m >= 0).astype(int).T @ (m >= 0).astype(int)
    assert np.isnan(kappa[shared < 2]).all()
    perm = np.array(data.draw(st.permutations(range(m.shape[1]))))
    permuted = cohen_kappa_matrix(CrowdLabels.from_dense(m[:, perm], n_classes=k), weights=weights)
    np.testing.assert_allclose(permuted, kappa[np.ix_(perm, perm)], atol=1e-12, equal_nan=True)


@FAST
@given(label_matrices(), st.data())
def test_unweighted_kappa_ignores_class_names(mk, data):
    m, k = mk
    perm = np.array(data.draw(st.permutations(range(k))))
    a = cohen_kappa_matrix(CrowdLabels.from_dense(m, n_classes=k))
    b = cohen_kappa_matrix(CrowdLabels.from_dense(_relabel(m, perm), n_classes=k))
    np.testing.assert_allclose(a, b, atol=1e-12, equal_nan=True)


# ---------------------------------------------------------------- fleiss_kappa
# Fleiss' table as reproduced on Wikipedia ("Fleiss' kappa", worked example):
# 10 items x 5 categories, 14 raters per item; P_bar = 0.378, P_e = 0.213, kappa = 0.210.
WIKIPEDIA_COUNTS = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def _counts_to_dense(counts: np.ndarray) -> np.ndarray:
    """(n_items, K) counts -> (n_items, max raters) dense labels; short rows padded with -1."""
    width = counts.sum(axis=1).max()
    rows = [np.repeat(np.arange(counts.shape[1]), r) for r in counts]
    return np.stack([np.pad(r, (0, width - len(r)), constant_values=-1) for r in rows])


def _classic_fleiss(counts: np.ndarray) -> float:
    """Fleiss (1971) for a constant number of raters n, written from the paper."""
    n_items, _ = counts.shape
    n = counts.sum(axis=1)[0]
    p_j = counts.sum(axis=0) / (n_items * n)
    p_i = (np.sum(counts * counts, axis=1) - n) / (n * (n - 1))
    p_bar, p_e = p_i.mean(), np.sum(p_j**2)
    return float((p_bar - p_e) / (1 - p_e))


def test_fleiss_kappa_wikipedia_example():
    labels = _counts_to_dense(WIKIPEDIA_COUNTS)  # (10, 14)
    assert labels.shape == (10, 14)
    assert fleiss_kappa(labels) == pytest.approx(0.20993, abs=5e-6)
    assert round(fleiss_kappa(labels), 3) == 0.210


# (counts (n_items, K), expected kappa)
FLEISS_CASES = [
    # P_o = (1 + 1 + 0 + 1/3)/4 = 7/12; p = (11/24, 13/24); P_e = 290/576 -> 23/143
    pytest.param([[3, 0], [0, 3], [1, 1], [1, 2]], 23 / 143, id="varying-raters"),
    # the single-label item (last row) is ignored
    pytest.param([[3, 0], [0, 3], [1, 1], [1, 2], [0, 1]], 23 / 143, id="single-label-ignored"),
    pytest.param([[2, 0], [0, 2]], 1.0, id="perfect"),
    # P_o = 0, p = (1/2, 1/2), P_e = 1/2 -> -1
    pytest.param([[1, 1], [1, 1]], -1.0, id="perfect-disagreement"),
    pytest.param([[3, 0], [2, 0]], nan, id="one-class-nan"),
]


@pytest.mark.parametrize(("counts", "expected"), FLEISS_CASES)
def test_fleiss_kappa_reference_values(counts, expected):
    labels = _counts_to_dense(np.array(counts))
    np.testing.assert_allclose(fleiss_kappa(labels), expected, atol=1e-12)


@FAST
@given(label_matrices(complete=True), st.data())
def test_fleiss_kappa_equals_classic_formula_with_constant_raters(mk, data):
    m, k = mk
    counts = np.stack([np.bincount(row, minlength=k) for row in m])
    expected = _classic_fleiss(counts) if np.sum((counts.sum(0) / counts.sum()) ** 2) < 1 else nan
    got = fleiss_kappa(CrowdLabels.from_dense(m, n_classes=k))
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # which annotator gave which label does not matter; class names do not matter
    shuffled = np.array([data.draw(st.permutations(row)) for row in m])
    np.testing.assert_allclose(fleiss_kappa(shuffled), got, atol=1e-12)
    perm = np.array(data.draw(st.permutations(range(k))))
    np.testing.assert_allclose(fleiss_kappa(_relabel(m, perm)), got, atol=1e-12)


def test_fleiss_kappa_needs_overlap():
    with pytest.raises(ValueError, match=r"at least one item labelled by two or more annotators"):
        fleiss_kappa(np.array([[0, -1], [-1, 1]]))


# ---------------------------------------------------------------- krippendorff_alpha
# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 observers x
# 12 units, values 1-5, missing marked -1. Stored one row per unit, i.e. shape (12, 4).
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, -1, -1, -1],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, -1, 3],
        [-1, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, -1],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, -1],
    ]
).T


@pytest.mark.parametrize(
    ("level", "expected"),
    [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)],
)
def test_krippendorff_alpha_paper_example(level, expected):
    assert KRIPPENDORFF_2011.shape == (12, 4)
    assert krippendorff_alpha(KRIPPENDORFF_2011, level=level) == pytest.approx(expected, abs=5e-4)


# (labels (n_items, n_annotators), level, expected)
ALPHA_CASES = [
    # coincidences o = [[2, 1], [1, 2]], n = 6: alpha = 1 - 5 * 2 / 18 = 4/9
    pytest.param([[0, 0], [0, 1], [1, 1]], "nominal", 4 / 9, id="nominal-3x2"),
    # with two values every level gives the same alpha
    pytest.param([[0, 0], [0, 1], [1, 1]], "interval", 4 / 9, id="interval-3x2"),
    pytest.param([[0, 0], [0, 1], [1, 1]], "ordinal", 4 / 9, id="ordinal-3x2"),
    # a unit with one value is not pairable and changes nothing
    pytest.param([[0, 0], [0, 1], [1, 1], [1, -1]], "nominal", 4 / 9, id="single-ignored"),
    pytest.param([[0, 0, 0], [2, 2, -1], [1, 1, 1]], "ordinal", 1.0, id="perfect"),
    pytest.param([[1, 1], [1, 1]], "nominal", nan, id="one-value-nan"),
]


@pytest.mark.parametrize(("labels", "level", "expected"), ALPHA_CASES)
def test_krippendorff_alpha_reference_values(labels, level, expected):
    got = krippendorff_alpha(np.array(labels), level=level)
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_krippendorff_alpha_interval_uses_numeric_class_values():
    labels = np.array([[0, 0, 1], [1, 2, 2], [0, 1, -1], [2, 2, 2]])  # (4, 3), K = 3
    values = np.array([0, 1, 10])
    cl = CrowdLabels.from_dense(labels, classes=values)
    # the same data written with the values themselves as (mostly unused) class indices
    direct = np.where(labels >= 0, values[np.maximum(labels, 0)], -1)
    for level in ("interval", "ratio"):
        assert krippendorff_alpha(cl, level=level) == pytest.approx(
            krippendorff_alpha(direct, level=level), abs=1e-12
        )
    # non-numeric classes use the class indices
    named = CrowdLabels.from_dense(labels, classes=["low", "mid", "high"])
    assert krippendorff_alpha(named, level="interval") == pytest.approx(
        krippendorff_alpha(labels, level="interval"), abs=1e-12
    )


def test_krippendorff_alpha_errors():
    with pytest.raises(ValueError, match=r"`level` must be one of .*Did you mean 'nominal'"):
        krippendorff_alpha(np.array([[0, 1], [1, 1]]), level="nominl")
    with pytest.raises(ValueError, match=r"at least one item labelled by two or more"):
        krippendorff_alpha(np.array([[0, -1], [-1, 1]]))
    signed = CrowdLabels.from_dense(np.array([[0, 1], [2, 2]]), classes=[-1, 0, 1])
    with pytest.raises(ValueError, match=r"`level` 'ratio' must have non-negative class values"):
        krippendorff_alpha(signed, level="ratio")


@FAST
@given(label_matrices(), st.sampled_from(["nominal", "ordinal", "interval"]), st.data())
def test_krippendorff_alpha_properties(mk, level, data):
    m, k = mk
    cl = CrowdLabels.from_dense(m, n_classes=k)
    if not ((m >= 0).sum(axis=1) >= 2).any():
        return
    alpha = krippendorff_alpha(cl, level=level)
    assert np.isnan(alpha) or alpha <= 1 + 1e-12
    perm = np.array(data.draw(st.permutations(range(m.shape[1]))))
    permuted = krippendorff_alpha(CrowdLabels.from_dense(m[:, perm], n_classes=k), level=level)
    np.testing.assert_allclose(permuted, alpha, atol=1e-12)
    if level == "nominal":
        classes = np.array(data.draw(st.permutations(range(k))))
        relabelled = CrowdLabels.from_dense(_relabel(m, classes), n_classes=k)
        np.testing.assert_allclose(krippendorff_alpha(relabelled), alpha, atol=1e-12)
    # perfect agreement: every annotator copies the first label of the item
    first = m[np.arange(m.shape[0]), np.argmax(m >= 0, axis=1)]
    perfect = np.where(m >= 0, first[:, None], -1)
    pairable = (perfect >= 0).sum(axis=1) >= 2
    if len(np.unique(first[pairable])) >= 2:
        assert krippendorff_alpha(perfect, level=level) == pytest.approx(1.0)
