"""Cross-checks against cleanlab 2.9 ``multiannotator`` (CROWDLAB and ActiveLab)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

multiannotator = pytest.importorskip("cleanlab.multiannotator")
ma_utils = pytest.importorskip("cleanlab.internal.multiannotator_utils")

from crowdmed.data.labels import CrowdLabels  # noqa: E402
from crowdmed.quality import label_quality, relabel_scores  # noqa: E402

ATOL = 1e-6


def _aligned_value_counts(x, num_classes=None, **_):
    """Vote counts by class index (cleanlab 2.9 shifts float labels when a class is absent)."""
    return np.bincount(np.asarray(x).astype(np.int64), minlength=num_classes)


@pytest.fixture
def aligned_counts(monkeypatch):
    monkeypatch.setattr(multiannotator, "value_counts", _aligned_value_counts)
    monkeypatch.setattr(ma_utils, "value_counts", _aligned_value_counts)


def simulate(n_items, n_annotators, n_classes, density, seed):
    """Labels of annotators with accuracies in [0.4, 0.95] and a model with a noisy signal."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n_items)
    acc = rng.uniform(0.4, 0.95, n_annotators)
    shown = rng.random((n_items, n_annotators)) < density
    shown[np.arange(n_items), rng.integers(0, n_annotators, n_items)] = True
    right = rng.random((n_items, n_annotators)) < acc
    labels = np.where(right, truth[:, None], rng.integers(0, n_classes, (n_items, n_annotators)))
    labels = np.where(shown, labels, -1)
    logits = rng.normal(size=(n_items, n_classes)) + 2.0 * np.eye(n_classes)[truth]
    probs = np.exp(logits)
    return labels, probs / probs.sum(axis=1, keepdims=True)


def labelme(shared_data: Path):
    """LabelMe's real labels (59 annotators) and cross-validated logistic-regression probs."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    from sklearn.model_selection import cross_val_predict

    root = shared_data / "labelme_sentiment_pylearningcrowds" / "data" / "LabelMe"
    if not root.is_dir():
        pytest.skip(f"LabelMe not found at {root}")
    labels = np.loadtxt(root / "answers.txt", dtype=np.int64)
    x = np.load(root / "LabelMe_VGG_avg_train.npy")
    votes = np.stack([(labels == k).sum(axis=1) for k in range(8)], axis=1)
    target = votes.argmax(axis=1)  # majority vote as the classifier's training target
    clf = sklearn.LogisticRegression(C=0.05, max_iter=300)
    probs = cross_val_predict(clf, x / np.linalg.norm(x, axis=1, keepdims=True), target, cv=5,
                              method="predict_proba")  # fmt: skip
    return labels, probs


def reference(labels, probs, **kw):
    """cleanlab's result on the float-with-NaN matrix (annotators without labels dropped)."""
    kept = (labels >= 0).any(axis=0)
    floats = np.where(labels >= 0, labels, np.nan).astype(float)[:, kept]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = multiannotator.get_label_quality_multiannotator(floats, probs, verbose=False, **kw)
    return out, kept


def check_equal(ours, ref, kept, *, weights=True):
    lq = ref["label_quality"]
    np.testing.assert_array_equal(ours.consensus, lq["consensus_label"].to_numpy())
    np.testing.assert_allclose(ours.consensus_quality, lq["consensus_quality_score"], atol=ATOL)
    np.testing.assert_allclose(ours.agreement, lq["annotator_agreement"], atol=ATOL)
    np.testing.assert_array_equal(ours.n_annotations, lq["num_annotations"])
    detailed = ref["detailed_label_quality"].to_numpy()
    np.testing.assert_allclose(ours.label_score_matrix()[:, kept], detailed, atol=ATOL)
    stats = ref["annotator_stats"].sort_index()
    np.testing.assert_allclose(ours.annotator_quality[kept], stats["annotator_quality"], atol=ATOL)
    np.testing.assert_allclose(
        ours.annotator_agreement[kept], stats["agreement_with_consensus"], atol=ATOL
    )
    np.testing.assert_array_equal(ours.worst_class[kept], stats["worst_class"])
    np.testing.assert_array_equal(ours.n_labelled[kept], stats["num_examples_labeled"])
    if weights:
        np.testing.assert_allclose(ours.model_weight, ref["model_weight"], atol=ATOL)
        np.testing.assert_allclose(ours.annotator_weight[kept], ref["annotator_weight"], atol=ATOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("n_items", "n_annotators", "n_classes", "density"),
    [
        (300, 8, 3, 0.3),  # (300, 8): dense-ish, 3 classes
        (400, 40, 5, 0.05),  # (400, 40): sparse, ~3 labels per item, 5 classes
        (200, 5, 2, 0.5),  # (200, 5): binary
    ],
)
def test_crowdlab_matches_cleanlab_simulated(n_items, n_annotators, n_classes, density, seed):
    labels, probs = simulate(n_items, n_annotators, n_classes, density, seed)
    ref, kept = reference(labels, probs, return_weights=True)
    check_equal(label_quality(labels, probs), ref, kept)


@pytest.mark.parametrize(
    "options",
    [
        {"consensus_method": "majority_vote"},
        {"score_method": "normalized_margin"},
    ],
)
def test_crowdlab_options_match_cleanlab(options):
    labels, probs = simulate(300, 10, 4, 0.25, seed=5)
    kw = dict(options)
    if "score_method" in kw:
        kw = {"label_quality_score_kwargs": {"method": kw.pop("score_method")}}
    ref, kept = reference(labels, probs, return_weights=True, **kw)
    check_equal(label_quality(labels, probs, **options), ref, kept)


@pytest.mark.usefixtures("aligned_counts")
def test_calibration_and_agreement_match_cleanlab_with_aligned_counts():
    labels, probs = simulate(300, 10, 4, 0.25, seed=7)
    ref, kept = reference(labels, probs, return_weights=True, calibrate_probs=True)
    ours = label_quality(labels, probs, calibrate=True)
    check_equal(ours, ref, kept)
    ref, kept = reference(labels, probs, quality_method="agreement")
    check_equal(label_quality(labels, probs, quality_method="agreement"), ref, kept, weights=False)


def test_cleanlab_vote_counts_are_shifted_when_a_class_is_absent():
    """Why the calibration check patches cleanlab: its float vote counts lose the class index."""
    counts = ma_utils.value_counts(np.array([3.0, 0.0, 3.0]), num_classes=4)
    assert counts.tolist() == [1, 2, 0, 0]  # class 3's two votes land in column 1


def test_coo_input_and_unlabelled_annotator_match_cleanlab():
    labels, probs = simulate(300, 12, 3, 0.25, seed=3)
    moved = labels[:, 5] < 0
    labels[moved, 5] = labels[moved, 4]  # keep every item labelled once column 4 is emptied
    labels[:, 4] = -1  # an annotator with no label: cleanlab needs the column dropped
    ref, kept = reference(labels, probs, return_weights=True)
    it, an = np.nonzero(labels >= 0)
    coo = CrowdLabels.from_triplets(it, an, labels[it, an], n_items=300, n_annotators=12)
    with pytest.warns(UserWarning, match="did not label any"):
        ours = label_quality(coo, probs)
    check_equal(ours, ref, kept)
    assert np.isnan(ours.annotator_quality[4])
    assert ours.worst_class[4] == -1


def test_crowdlab_matches_cleanlab_on_labelme(shared_data):
    labels, probs = labelme(shared_data)
    ref, kept = reference(labels, probs, return_weights=True)
    check_equal(label_quality(labels, probs), ref, kept)


# ----------------------------------------------------------------------------- ActiveLab
def activelab_reference(labels, probs):
    """cleanlab's scores for the labelled and the unlabelled items, in item order."""
    has = (labels >= 0).any(axis=1)
    kept = (labels >= 0).any(axis=0)
    floats = np.where(labels >= 0, labels, np.nan).astype(float)[has][:, kept]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labelled, unlabelled = multiannotator.get_active_learning_scores(
            floats, probs[has], probs[~has] if (~has).any() else None
        )
    out = np.empty(len(labels))
    out[has] = labelled
    out[~has] = unlabelled
    return out


@pytest.mark.usefixtures("aligned_counts")
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("single", [False, True])
def test_activelab_matches_cleanlab(seed, single):
    labels, probs = simulate(400, 10, 4, 0.15, seed)
    labels[:60] = -1  # unlabelled items
    if single:  # one label per labelled item: cleanlab's branch without calibration
        labels = np.where(np.cumsum(labels >= 0, axis=1) == 1, labels, -1)
    ours = relabel_scores(labels, probs, method="activelab")
    np.testing.assert_allclose(1.0 - ours.scores, activelab_reference(labels, probs), atol=ATOL)


@pytest.mark.usefixtures("aligned_counts")
def test_activelab_matches_cleanlab_on_labelme(shared_data):
    labels, probs = labelme(shared_data)
    ours = relabel_scores(labels, probs, method="activelab")
    np.testing.assert_allclose(1.0 - ours.scores, activelab_reference(labels, probs), atol=ATOL)
