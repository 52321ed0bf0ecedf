import numpy as np
import pytest

from crowdmed.metrics import roc_auc

# (scores, truth, expected AUC), each a 1-D case checkable by hand
CASES = [
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
    ([0.2, 0.2, 0.2, 0.2], [0, 1, 0, 1], 0.5),  # all tied
    ([0.9, 0.8, 0.1], [0, 0, 1], 0.0),
]


@pytest.mark.parametrize(("scores", "truth", "expected"), CASES)
def test_roc_auc_reference(scores, truth, expected):
    assert roc_auc(scores, truth) == pytest.approx(expected)


def test_roc_auc_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * truth, 2)  # with ties
    assert roc_auc(scores, truth) == pytest.approx(metrics.roc_auc_score(truth, scores))


def test_roc_auc_single_class_is_nan():
    assert np.isnan(roc_auc([0.1, 0.2], [1, 1]))


def test_roc_auc_bad_input():
    with pytest.raises(ValueError, match=r"must be 1-D of equal length; got \(2,\) and \(3,\)"):
        roc_auc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match=r"`truth` must hold 0 \(negative\) or 1"):
        roc_auc([0.1, 0.2], [0, 2])
