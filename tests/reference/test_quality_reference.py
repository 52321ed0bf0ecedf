"""Cross-checks of crowdmed.quality against independent implementations.

* scikit-learn: ``cohen_kappa_score`` (every weighting) and ``confusion_matrix``.
* crowd-kit (test extra): ``alpha_krippendorff`` (nltk's AnnotationTask) and per-worker
  accuracy.
* ``krippendorff`` and ``statsmodels``: used only when installed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from crowdmed.data import CrowdLabels
from crowdmed.quality import (
    annotator_accuracy,
    cohen_kappa_matrix,
    confusion_matrices,
    fleiss_kappa,
    krippendorff_alpha,
)

pytestmark = pytest.mark.filterwarnings("ignore:Annotators .* did not label any items")

# Krippendorff (2011) section C, one row per unit: shape (12 units, 4 observers)
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, -1, -1, -1],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, -1, 3],
        [-1, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, -1],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, -1],
    ]
).T


def random_labels(seed: int, n_items: int = 40, n_annotators: int = 6, k: int = 4) -> np.ndarray:
    """Dense (n_items, n_annotators) labels, about 30 % missing, every item labelled."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n_items)
    noisy = rng.random((n_items, n_annotators)) < rng.uniform(0.1, 0.6, n_annotators)
    m = np.where(noisy, rng.integers(0, k, (n_items, n_annotators)), truth[:, None])
    m[rng.random(m.shape) < 0.3] = -1
    m[(m < 0).all(axis=1), 0] = truth[(m < 0).all(axis=1)]
    return m


def to_crowdkit_frame(m: np.ndarray) -> pd.DataFrame:
    items, annotators = np.nonzero(m >= 0)
    return pd.DataFrame(
        {
            "task": [f"t{i}" for i in items],
            "worker": [f"w{a}" for a in annotators],
            "label": m[items, annotators],
        }
    )


# ---------------------------------------------------------------- scikit-learn
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohen_kappa_matrix_matches_sklearn(seed, weights):
    metrics = pytest.importorskip("sklearn.metrics")
    k = 4
    m = random_labels(seed, k=k)
    if seed == 3:  # add an annotator who always says 0 and one with a single label
        m = np.column_stack([m, np.zeros(len(m), int), np.r_[1, -np.ones(len(m) - 1, int)]])
    ours = cohen_kappa_matrix(CrowdLabels.from_dense(m, n_classes=k), weights=weights)
    n_ann = m.shape[1]
    for a in range(n_ann):
        for b in range(a + 1, n_ann):
            both = (m[:, a] >= 0) & (m[:, b] >= 0)
            if both.sum() < 2:
                assert np.isnan(ours[a, b])
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # sklearn's 0/0
                ref = metrics.cohen_kappa_score(
                    m[both, a], m[both, b], labels=np.arange(k), weights=weights
                )
            np.testing.assert_allclose(ours[a, b], ref, atol=1e-10, equal_nan=True)


@pytest.mark.parametrize("seed", range(3))
def test_confusion_matrices_match_sklearn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    k = 4
    m = random_labels(seed, k=k)
    rng = np.random.default_rng(100 + seed)
    ref = np.where(rng.random(len(m)) < 0.2, -1, rng.integers(0, k, len(m)))
    ours = confusion_matrices(CrowdLabels.from_dense(m, n_classes=k), ref)
    for a in range(m.shape[1]):
        ok = (m[:, a] >= 0) & (ref >= 0)
        counts = metrics.confusion_matrix(ref[ok], m[ok, a], labels=np.arange(k))
        seen = counts.sum(axis=1) > 0
        np.testing.assert_allclose(
            ours[a][seen], counts[seen] / counts[seen].sum(axis=1, keepdims=True), atol=1e-12
        )
        assert np.isnan(ours[a][~seen]).all()


# ---------------------------------------------------------------- crowd-kit / nltk
@pytest.mark.parametrize("seed", range(3))
def test_krippendorff_alpha_matches_crowdkit(seed):
    data_metrics = pytest.importorskip("crowdkit.metrics.data")
    distance = pytest.importorskip("nltk.metrics.distance")
    for m in (KRIPPENDORFF_2011, random_labels(seed)):
        frame = to_crowdkit_frame(m)
        assert krippendorff_alpha(m) == pytest.approx(
            data_metrics.alpha_krippendorff(frame), abs=1e-10
        )
        assert krippendorff_alpha(m, level="interval") == pytest.approx(
            data_metrics.alpha_krippendorff(frame, distance.interval_distance), abs=1e-10
        )


@pytest.mark.parametrize("seed", range(3))
def test_annotator_accuracy_matches_crowdkit(seed):
    utils = pytest.importorskip("crowdkit.aggregation.utils")
    m = random_labels(seed)
    rng = np.random.default_rng(200 + seed)
    ref = np.where(rng.random(len(m)) < 0.3, -1, rng.integers(0, 4, len(m)))
    true = pd.Series(ref, index=[f"t{i}" for i in range(len(m))])
    true = true[true >= 0]
    theirs = utils.get_accuracy(to_crowdkit_frame(m), true, by="worker")
    ours = pd.Series(annotator_accuracy(m, ref), index=[f"w{a}" for a in range(m.shape[1])])
    pd.testing.assert_series_equal(
        ours[theirs.index], theirs.astype(float), check_names=False, atol=1e-12
    )


# ---------------------------------------------------------------- optional packages
@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_krippendorff_alpha_matches_krippendorff_package(level):
    krippendorff = pytest.importorskip("krippendorff")
    shifted = [np.where(r >= 0, r + 1, -1) for r in (random_labels(s, k=5) for s in range(5))]
    for m in [KRIPPENDORFF_2011, *shifted]:  # values 1..5, -1 missing
        data = np.where(m >= 0, m, np.nan).T.astype(float)  # (coders, units), NaN missing
        ref = krippendorff.alpha(
            reliability_data=data, level_of_measurement=level, value_domain=np.arange(1, 6)
        )
        assert krippendorff_alpha(m, level=level) == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_fleiss_kappa_matches_statsmodels(seed):
    inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, 30)
    m = np.where(rng.random((30, 5)) < 0.7, truth[:, None], rng.integers(0, 3, (30, 5)))
    table, _ = inter_rater.aggregate_raters(m)
    assert fleiss_kappa(m) == pytest.approx(inter_rater.fleiss_kappa(table), abs=1e-12)
