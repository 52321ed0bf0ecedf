"""Graded-response annotator model: reference values, gradients, EM bookkeeping, recovery."""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr

from crowdmed.aggregation import DawidSkene, MajorityVote
from crowdmed.aggregation.ordinal import (
    GradedResponse,
    MedianVote,
    OrdinalMajorityVote,
    ordinal_confusion,
)
from crowdmed.aggregation.ordinal.graded_response import Link
from crowdmed.data import CrowdLabels, load_dataset
from crowdmed.exceptions import ConvergenceWarning, NotFittedError
from crowdmed.simulate import simulate_ordinal_readers

# P(l | k) = F((τ_{l+1} − b − k)/s) − F((τ_l − b − k)/s), computed by hand from Φ values.
# Each case: thresholds (K-1,), offset b, noise s, link, true class k, expected row (K,).
PHI = {0.25: 0.598706, 0.5: 0.691462, 0.75: 0.773373, 1.0: 0.841345, 1.5: 0.933193}
CONFUSION_CASES = [
    # K = 3, unbiased unit-noise reader, true class 0: Φ(.5), Φ(1.5) − Φ(.5), 1 − Φ(1.5)
    ([0.5, 1.5], 0.0, 1.0, "probit", 0, [PHI[0.5], PHI[1.5] - PHI[0.5], 1 - PHI[1.5]]),
    # K = 3, true class 1: symmetric row 1 − Φ(.5), 2Φ(.5) − 1, 1 − Φ(.5)
    ([0.5, 1.5], 0.0, 1.0, "probit", 1, [1 - PHI[0.5], 2 * PHI[0.5] - 1, 1 - PHI[0.5]]),
    # K = 3, lenient reader b = 0.5, class 0: Φ(0), Φ(1) − Φ(0), 1 − Φ(1)
    ([0.5, 1.5], 0.5, 1.0, "probit", 0, [0.5, PHI[1.0] - 0.5, 1 - PHI[1.0]]),
    # K = 3, noisy reader s = 2, class 0: Φ(.25), Φ(.75) − Φ(.25), 1 − Φ(.75)
    ([0.5, 1.5], 0.0, 2.0, "probit", 0, [PHI[0.25], PHI[0.75] - PHI[0.25], 1 - PHI[0.75]]),
    # K = 2, logit, class 0: σ(.5), 1 − σ(.5)
    ([0.5], 0.0, 1.0, "logit", 0, [0.622459, 0.377541]),
    # K = 2, logit, strict reader b = −1.5, class 1: σ(1), 1 − σ(1)
    ([0.5], -1.5, 1.0, "logit", 1, [0.731059, 0.268941]),
]


@pytest.mark.parametrize(("tau", "b", "s", "link", "k", "expected"), CONFUSION_CASES)
def test_confusion_reference_values(tau, b, s, link, k, expected):
    conf = ordinal_confusion(np.array(tau), np.array([b]), np.array([s]), link=link)
    assert conf.shape == (1, len(tau) + 1, len(tau) + 1)
    np.testing.assert_allclose(conf[0, k], expected, atol=2e-6)
    np.testing.assert_allclose(conf.sum(axis=2), 1.0, atol=1e-12)


def test_confusion_upper_tail_keeps_precision():
    # A very lenient reader: P(class 0 | class 0) = Φ(−29.5) ≈ 1e-191, far below 1 − Φ's
    # resolution; the survival-function difference keeps it.
    conf = ordinal_confusion(np.array([0.5]), np.array([30.0]), np.array([1.0]))
    np.testing.assert_allclose(conf[0, 0, 0], ndtr(-29.5), rtol=1e-10)
    assert conf[0, 0, 0] > 0


def test_higher_offset_rates_higher():
    tau = np.array([0.5, 1.5, 2.5, 3.5])
    conf = ordinal_confusion(tau, np.array([-0.5, 0.0, 0.5]), np.ones(3))
    mean_rating = conf @ np.arange(5)  # (A, K): expected reported class per true class
    assert np.all(np.diff(mean_rating, axis=0) > 0)
    assert np.all(np.diff(mean_rating, axis=1) > 0)


@pytest.mark.parametrize("link", ["probit", "logit"])
@pytest.mark.parametrize("regularization", [0.0, 0.5])
def test_m_step_gradient_matches_finite_differences(link, regularization):
    rng = np.random.default_rng(3)
    n_ann, k = 3, 4
    counts = rng.random((n_ann, k, k)) * 10
    # [softmax logits of the location gaps (K-2), offsets (A), log noise (A)]
    theta = np.concatenate(
        [rng.normal(0, 0.5, k - 2), rng.normal(0, 0.5, n_ann), rng.normal(0, 0.3, n_ann)]
    )
    est = GradedResponse(regularization=regularization)
    lk = Link(link)

    def f(t):
        return est._objective(t, counts, 7.0, lk)[0]

    _, grad = est._objective(theta, counts, 7.0, lk)
    num = np.array([(f(theta + 1e-6 * e) - f(theta - 1e-6 * e)) / 2e-6 for e in np.eye(theta.size)])
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------- EM bookkeeping
# (n_items=8, n_annotators=4), K = 4; reader 3 rates one class higher; -1 = missing.
LABELS = np.array(
    [
        [0, 0, 1, 1],
        [1, 1, 1, 2],
        [2, 1, 2, 3],
        [3, 3, -1, 3],
        [0, 1, 0, 1],
        [2, 2, 2, 3],
        [1, -1, 1, 2],
        [3, 2, 3, 3],
    ]
)


def quiet(est, labels, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(labels, **kw)


def test_fit_returns_self_and_attributes():
    gr = GradedResponse()
    assert gr.fit(LABELS) is gr
    assert gr.posteriors_.shape == (8, 4)
    np.testing.assert_allclose(gr.posteriors_.sum(axis=1), 1.0)
    np.testing.assert_array_equal(gr.labels_, gr.posteriors_.argmax(axis=1))
    assert gr.thresholds_.shape == (3,)
    assert np.all(np.diff(gr.thresholds_) > 0)
    assert gr.offsets_.shape == gr.noise_.shape == (4,)
    assert abs(gr.offsets_.mean()) < 1e-12  # identified: mean offset 0
    assert np.all(gr.noise_ > 0)
    assert gr.offsets_.argmax() == 3  # the lenient reader
    assert gr.locations_[0] == 0.0
    assert gr.locations_[-1] == 3.0
    assert np.all(np.diff(gr.locations_) > 0)
    np.testing.assert_allclose(gr.thresholds_, (gr.locations_[:-1] + gr.locations_[1:]) / 2)
    fixed = GradedResponse(locations="fixed").fit(LABELS)
    np.testing.assert_allclose(fixed.locations_, np.arange(4.0), atol=1e-12)
    np.testing.assert_allclose(fixed.thresholds_, [0.5, 1.5, 2.5], atol=1e-12)
    uniform = GradedResponse(class_prior="uniform").fit(LABELS)
    np.testing.assert_array_equal(uniform.priors_, np.full(4, 0.25))
    assert gr.converged_
    assert gr.n_iter_ == len(gr.log_likelihoods_)


def test_log_likelihood_never_decreases():
    sim = simulate_ordinal_readers(
        120, [-1, 0, 0.5, 1, -0.5], [1.0, 1.5, 0.8, 1.2, 2.0], random_state=5
    )
    gr = quiet(GradedResponse(max_iter=60, tol=0.0), sim.labels)
    assert np.all(np.diff(gr.log_likelihoods_) >= -1e-9)
    assert gr.n_iter_ == 60


def test_convergence_warning_and_max_iter_zero():
    with pytest.warns(ConvergenceWarning, match="did not converge in max_iter=2"):
        GradedResponse(max_iter=2, tol=0.0).fit(LABELS)
    gr0 = GradedResponse(max_iter=0).fit(LABELS)
    np.testing.assert_array_equal(gr0.labels_, MajorityVote().fit(LABELS).labels_)
    assert gr0.n_iter_ == 0
    assert gr0.log_likelihoods_ == []


def test_inputs_agree_and_are_not_modified():
    labels = LABELS.copy()
    dense = GradedResponse().fit(labels)
    np.testing.assert_array_equal(labels, LABELS)
    cl = CrowdLabels.from_dense(LABELS)
    coo = GradedResponse().fit(cl)
    items, annotators = np.nonzero(LABELS >= 0)
    long = pd.DataFrame(
        {"item": items, "annotator": annotators, "label": LABELS[items, annotators]}
    )
    table = GradedResponse().fit(long)
    np.testing.assert_allclose(coo.posteriors_, dense.posteriors_, atol=1e-12)
    np.testing.assert_allclose(table.posteriors_, dense.posteriors_, atol=1e-12)


def test_fit_twice_clone_and_params():
    gr = GradedResponse(link="logit", regularization=0.2)
    p1 = gr.fit(LABELS).posteriors_.copy()
    np.testing.assert_array_equal(gr.fit(LABELS).posteriors_, p1)
    clone = type(gr)(**gr.get_params())
    np.testing.assert_array_equal(clone.fit(LABELS).posteriors_, p1)
    assert copy.deepcopy(gr).get_params() == gr.get_params()
    assert gr.set_params(m_step_iter=5).m_step_iter == 5
    with pytest.raises(ValueError, match="`severity` is not a parameter of GradedResponse"):
        gr.set_params(severity=1)


def test_not_fitted_and_bad_params():
    with pytest.raises(NotFittedError, match="This GradedResponse instance is not fitted yet"):
        GradedResponse().predict_proba(LABELS)
    with pytest.raises(ValueError, match="Did you mean 'probit'"):
        GradedResponse(link="probt").fit(LABELS)
    with pytest.raises(ValueError, match="`class_prior` must be one of"):
        GradedResponse(class_prior="flat").fit(LABELS)
    with pytest.raises(ValueError, match="`regularization` of GradedResponse must be a number"):
        GradedResponse(regularization=-1.0).fit(LABELS)
    with pytest.raises(ValueError, match="`m_step_iter` of GradedResponse must be an integer"):
        GradedResponse(m_step_iter=0).fit(LABELS)


def test_predict_proba_is_the_final_e_step():
    gr = GradedResponse().fit(LABELS)
    np.testing.assert_allclose(gr.predict_proba(LABELS), gr.posteriors_, atol=1e-12)


def test_reversing_the_scale_mirrors_the_fit():
    # Class k -> K-1-k: posteriors mirror and offsets change sign (the model is symmetric).
    gr = GradedResponse().fit(LABELS)
    rev = GradedResponse().fit(np.where(LABELS >= 0, 3 - LABELS, -1))
    np.testing.assert_allclose(rev.posteriors_[:, ::-1], gr.posteriors_, atol=1e-4)
    np.testing.assert_allclose(rev.offsets_, -gr.offsets_, atol=1e-3)
    np.testing.assert_allclose(rev.noise_, gr.noise_, atol=1e-3)


def test_permuting_annotators_permutes_parameters():
    perm = np.array([2, 0, 3, 1])
    gr = GradedResponse().fit(LABELS)
    gp = GradedResponse().fit(LABELS[:, perm])
    np.testing.assert_allclose(gp.offsets_, gr.offsets_[perm], atol=1e-5)
    np.testing.assert_allclose(gp.posteriors_, gr.posteriors_, atol=1e-6)


def test_annotator_without_labels_changes_nothing():
    gr = GradedResponse().fit(LABELS)
    with pytest.warns(UserWarning, match="did not label any items"):
        ge = GradedResponse().fit(np.hstack([LABELS, np.full((8, 1), -1)]))
    np.testing.assert_allclose(ge.posteriors_, gr.posteriors_, atol=1e-6)
    np.testing.assert_allclose(ge.offsets_[:4], gr.offsets_, atol=1e-5)
    assert ge.offsets_[4] == 0.0
    assert ge.noise_[4] == 1.0


def test_gold_items_are_clamped():
    gold = np.full(8, -1)
    gold[1] = 3
    gr = GradedResponse().fit(LABELS, gold=gold)
    np.testing.assert_array_equal(gr.posteriors_[1], [0, 0, 0, 1])


# --------------------------------------------------------------------- simulated readers
# 8 readers with severity offsets in {-1, -0.5, 0, 0.5, 1} and noise 0.8-1.6; K = 5.
OFFSETS = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, -1.0, 0.5, 0.0])
NOISE = np.array([1.0, 1.5, 1.2, 0.8, 1.4, 1.0, 1.6, 1.1])


def _accuracies(labels_hat, truth):
    return (labels_hat == truth).mean(), (np.abs(labels_hat - truth) <= 1).mean()


@pytest.mark.parametrize("locations", ["free", "fixed"])
def test_recovers_offsets_and_beats_the_baselines(locations):
    """300 items, 8 readers, K = 5, seeds 0-2.

    Measured (free / fixed locations): offset correlation ≥ 0.992, largest offset error 0.18 /
    0.18, largest noise error (log ratio) 0.11 / 0.12; exact accuracy 0.77-0.78 against
    0.67 for the best baseline.
    """
    exact = {m: [] for m in ("gr", "mv", "omv", "median", "ds")}
    within = {m: [] for m in exact}
    for seed in range(3):
        sim = simulate_ordinal_readers(300, OFFSETS, NOISE, n_classes=5, random_state=seed)
        gr = GradedResponse(locations=locations, max_iter=300).fit(sim.labels)
        truth_offsets = OFFSETS - OFFSETS.mean()  # identified up to the mean
        assert np.corrcoef(gr.offsets_, truth_offsets)[0, 1] > 0.95
        assert np.abs(gr.offsets_ - truth_offsets).max() < 0.25
        assert np.abs(np.log(gr.noise_ / NOISE)).max() < 0.25
        fits = {
            "gr": gr,
            "mv": MajorityVote().fit(sim.labels),
            "omv": OrdinalMajorityVote().fit(sim.labels),
            "median": MedianVote().fit(sim.labels),
            "ds": DawidSkene().fit(sim.labels),
        }
        for name, est in fits.items():
            e, w = _accuracies(est.labels_, sim.truth)
            exact[name].append(e)
            within[name].append(w)
        for name in ("mv", "omv", "median", "ds"):
            assert exact["gr"][-1] > exact[name][-1], (seed, name)
            assert within["gr"][-1] >= within[name][-1], (seed, name)
    for name in ("mv", "omv", "median", "ds"):
        # Paired over seeds: better on average by a margin on exact accuracy, and strictly
        # better pooled on within-one accuracy.
        assert np.mean(exact["gr"]) - np.mean(exact[name]) > 0.04, name
        assert np.mean(within["gr"]) > np.mean(within[name]), name


def test_lidc_malignancy_fit():
    cl = load_dataset("lidc_malignancy")
    gr = GradedResponse().fit(cl)
    assert gr.converged_
    assert gr.posteriors_.shape == (1866, 5)
    # R1..R4 are reading slots, not people: exchangeable, so their offsets are small
    # (measured: at most 0.3 grades).
    assert np.abs(gr.offsets_).max() < 0.35
    assert np.all(np.diff(gr.locations_) > 0)
    # With a learned prior the noisy readers' consensus is drawn to the most frequent grade
    # (3): measured 70 % of nodules.
    assert gr.priors_.argmax() == 2


def test_m_step_from_item_partitions_equals_the_full_m_step():
    # Sufficient statistics are sums over items: two halves added give the same M-step.
    cl = CrowdLabels.from_dense(LABELS)
    post = np.random.default_rng(0).dirichlet(np.ones(4), size=8)
    full = GradedResponse()
    full._init_params(4, 4)
    full._m_step(cl, post)
    parts = GradedResponse()
    parts._init_params(4, 4)
    counts = np.zeros((4, 4, 4))
    label_counts = np.zeros((4, 4), dtype=np.int64)
    for half in (slice(0, 4), slice(4, 8)):
        sub = CrowdLabels.from_dense(LABELS[half], n_classes=4)
        counts += (sub.incidence_t() @ post[half]).reshape(4, 4, 4).transpose(0, 2, 1)
        label_counts += sub.label_counts()
    parts._m_step_from_stats(counts, label_counts, post.sum(axis=0), 8)
    np.testing.assert_allclose(parts.thresholds_, full.thresholds_, rtol=1e-10)
    np.testing.assert_allclose(parts.offsets_, full.offsets_, atol=1e-10)
    np.testing.assert_allclose(parts.priors_, full.priors_, rtol=1e-12)


@pytest.mark.parametrize("link", ["probit", "logit"])
def test_single_item_and_two_classes(link):
    # B = 1: one item, three readers, K = 2.
    gr = GradedResponse(link=link).fit(np.array([[0, 1, 1]]))
    assert gr.posteriors_.shape == (1, 2)
    np.testing.assert_allclose(gr.posteriors_.sum(), 1.0)
    assert gr.thresholds_.shape == (1,)
    assert np.all(np.isfinite(gr.offsets_))
    assert np.all(gr.noise_ > 0)


def test_unused_classes_do_not_derail_the_fit():
    """K = 10 with only classes 2-5 true, 4 readers; measured 0.815-0.865 against 0.68-0.745."""
    for seed in range(3):
        sim = simulate_ordinal_readers(
            200, [-0.5, 0.0, 0.5, 0.2], [0.7] * 4, n_classes=10,
            priors=[0, 0, 1, 1, 1, 1, 0, 0, 0, 0], random_state=seed,
        )  # fmt: skip
        gr = GradedResponse().fit(sim.labels, n_classes=10)
        med = MedianVote().fit(sim.labels, n_classes=10)
        assert (gr.labels_ == sim.truth).mean() > (med.labels_ == sim.truth).mean() + 0.05


def test_uniform_prior_keeps_lidc_consensus_near_the_median():
    cl = load_dataset("lidc_malignancy")
    gr = GradedResponse(class_prior="uniform").fit(cl)
    med = MedianVote().fit(cl).labels_
    # Measured: 73 % equal, every class used, 7 nodules two grades apart.
    assert (gr.labels_ == med).mean() > 0.65
    assert np.all(np.bincount(gr.labels_, minlength=5) > 80)
    assert (np.abs(gr.labels_ - med) <= 1).mean() > 0.99
