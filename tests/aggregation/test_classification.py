"""Reference values, properties and recovery for the classification aggregators."""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from crowdmed.aggregation import (
    GLAD,
    BinarySensSpec,
    DawidSkene,
    MajorityVote,
    OneCoinDawidSkene,
    WeightedMajorityVote,
    argmax_ties,
)
from crowdmed.exceptions import ConvergenceWarning

# Random label matrices often contain an annotator with no labels; that warning is expected.
pytestmark = pytest.mark.filterwarnings("ignore:Annotators .* did not label any items")


def fit(est, labels, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(labels, **kw)


# ----------------------------------------------------------------------------- reference values
# Each case: labels of shape (n_items, n_annotators), -1 = missing; expected vote shares.
MV_CASES = [
    # (3, 3): plain majority
    ([[0, 0, 1], [1, 1, -1], [2, 2, 2]], [[2 / 3, 1 / 3, 0], [0, 1, 0], [0, 0, 1]]),
    # (2, 2): a tie and a single label
    ([[0, 1], [-1, 1]], [[0.5, 0.5], [0, 1]]),
]


@pytest.mark.parametrize(("labels", "expected"), MV_CASES)
def test_majority_vote_reference(labels, expected):
    mv = MajorityVote().fit(np.array(labels), n_classes=len(expected[0]))
    np.testing.assert_allclose(mv.posteriors_, expected)


def test_majority_vote_ties_lowest_index_without_seed():
    # (1, 2): tie between classes 0 and 1 -> lowest index
    assert MajorityVote().fit(np.array([[1, 0]])).labels_.tolist() == [0]


def test_majority_vote_ties_seeded_and_reproducible():
    labels = np.tile([[0, 1]], (200, 1))  # (200, 2): every item tied
    a = MajorityVote(random_state=7).fit(labels).labels_
    b = MajorityVote(random_state=7).fit(labels).labels_
    np.testing.assert_array_equal(a, b)
    assert 0.35 < a.mean() < 0.65  # both classes drawn


def test_argmax_ties_reference():
    p = np.array([[0.3, 0.3, 0.4], [0.5, 0.5, 0.0]])  # (2, 3)
    assert argmax_ties(p).tolist() == [2, 0]


def test_wawa_reference():
    # (4, 3): MV labels are [0, 1, 1, 1]; annotator accuracies 3/4, 3/4, 1/2.
    labels = np.array([[0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]])
    w = WeightedMajorityVote().fit(labels)
    np.testing.assert_allclose(w.skills_, [0.75, 0.75, 0.5])
    # item 0: weight 1.5 for class 0, 0.5 for class 1
    np.testing.assert_allclose(w.posteriors_[0], [0.75, 0.25])


def test_dawid_skene_hand_computed_first_step():
    """One EM iteration by hand: (2 items, 2 annotators), smoothing 0."""
    labels = np.array([[0, 0], [0, 1]])
    ds = fit(DawidSkene(max_iter=1, smoothing=0.0), labels)
    # MV posteriors: [1, 0] and [.5, .5]; prior = [.75, .25].
    # Annotator 0 always says 0: its row for each class is [1, ~0].
    # Annotator 1, class 0: counts l=0: 1, l=1: .5 -> [2/3, 1/3];
    #              class 1: l=0: 0 -> ~0, l=1: .5 -> [~0, 1].
    np.testing.assert_allclose(ds.confusion_[0], [[1, 0], [1, 0]], atol=1e-9)
    np.testing.assert_allclose(ds.confusion_[1], [[2 / 3, 1 / 3], [0, 1]], atol=1e-9)
    np.testing.assert_allclose(ds.priors_, [0.75, 0.25])
    # item 1: class 0: .75 * 1 * 1/3 = .25 ; class 1: .25 * 1 * 1 -> but annotator 0 says 0
    # with P(0 | class 1) = 1 too: class 1 = .25. Posterior [.5, .5].
    np.testing.assert_allclose(ds.posteriors_[1], [0.5, 0.5], atol=1e-9)


def test_one_coin_reference():
    # (4, 3): annotators 0 and 1 always agree with the majority, annotator 2 half the time.
    labels = np.array([[0, 0, 1], [1, 1, 1], [0, 0, 0], [1, 1, 0]])
    oc = fit(OneCoinDawidSkene(smoothing=0.0), labels)
    np.testing.assert_allclose(oc.skills_, [1, 1, 0.5], atol=1e-6)
    np.testing.assert_array_equal(oc.labels_, [0, 1, 0, 1])


# (TP, FN, TN, FP, tau, gamma, prior, expected alpha, expected beta), worked by hand from
# Albarqouni et al. (2016) eq. 8: alpha = (1 + tau*gamma) TP / ((1 + tau*gamma) TP + FN)
SENS_SPEC_CASES = [
    # the paper's form: 6*8 / (6*8 + 2) = 0.96 and 6*9 / (6*9 + 1) = 54/55
    (8, 2, 9, 1, 10.0, 0.5, "aggnet", 0.96, 54 / 55),
    # the Beta pseudo-count option: (8 + 5) / (10 + 10) = 0.65, (9 + 5) / (10 + 10) = 0.7
    (8, 2, 9, 1, 10.0, 0.5, "beta", 0.65, 0.7),
    # tau in the paper's range: 1.05*3 / (1.05*3 + 1) = 3.15/4.15, 1.05*2 / (1.05*2 + 2)
    (3, 1, 2, 2, 0.1, 0.5, "aggnet", 3.15 / 4.15, 2.1 / 4.1),
    # no quiz (gamma NaN): eq. 6, 3/4 and 2/4
    (3, 1, 2, 2, 0.5, np.nan, "aggnet", 0.75, 0.5),
]


@pytest.mark.parametrize(
    ("tp", "fn", "tn", "fp", "tau", "gamma", "prior", "alpha", "beta"), SENS_SPEC_CASES
)
def test_sens_spec_trust_prior_eq8_by_hand(tp, fn, tn, fp, tau, gamma, prior, alpha, beta):
    """One M-step from gold-clamped posteriors is eq. 8 on the hand-counted TP/FN/TN/FP."""
    # annotator 0 labels tp + fn gold positives (tp of them 1) and tn + fp gold negatives;
    # annotator 1 agrees with the gold on every item (it only keeps the matrix two columns)
    y0 = [1] * tp + [0] * fn + [0] * tn + [1] * fp
    gold = np.array([1] * (tp + fn) + [0] * (tn + fp))
    labels = np.column_stack([y0, gold])  # (n_items, 2)
    est = BinarySensSpec(max_iter=1, tau=tau, prior=prior)
    m = fit(est, labels, gold=gold, quiz_accuracy=np.array([gamma, np.nan]))
    assert m.sensitivity_[0] == pytest.approx(alpha, abs=1e-12)
    assert m.specificity_[0] == pytest.approx(beta, abs=1e-12)


def test_sens_spec_default_tau_in_paper_range_and_prior_is_aggnet():
    est = BinarySensSpec()
    assert 0.1 <= est.tau <= 1.0
    assert est.prior == "aggnet"


@pytest.mark.parametrize("quiz", [np.nan, 0.9])
def test_sens_spec_unknown_annotator_gets_half(quiz):
    """Unknown alpha/beta are 0.5, also when the annotator has a quiz score (paper II-B)."""
    # annotator 2 labelled only item 0, whose posterior is ~1: specificity is undetermined.
    labels = np.array([[1, 1, 1], [0, 0, -1], [1, 1, -1]])
    m = fit(
        BinarySensSpec(tau=1.0),
        labels,
        gold=np.array([1, 0, 1]),
        quiz_accuracy=np.array([np.nan, np.nan, quiz]),
    )
    assert m.specificity_[2] == 0.5
    assert m.sensitivity_[2] > 0.99


def test_sens_spec_beta_prior_reads_quiz_from_crowdlabels():
    from crowdmed.data import CrowdLabels

    cl = CrowdLabels.from_dense(
        np.array([[1, 1, 0], [0, 0, 1], [1, 0, 1]]), quiz_accuracy=[1.0, 1.0, 0.0]
    )
    m = fit(BinarySensSpec(tau=50, prior="beta"), cl)
    np.testing.assert_allclose(m.quiz_accuracy_, [1.0, 1.0, 0.0])
    assert m.sensitivity_[2] < 0.2
    assert m.specificity_[2] < 0.2


def test_sens_spec_initialisation_is_eq2_vote_then_one_m_step():
    """max_iter=0: mu from eq. 2 (ties positive), alpha/beta from eq. 6 on those labels."""
    # (4, 2); item 1 is a tie (one 1, one 0) -> positive under eq. 2
    labels = np.array([[1, 1], [1, 0], [0, 0], [0, -1]])
    m = BinarySensSpec(max_iter=0, init="aggnet").fit(labels)
    np.testing.assert_array_equal(m.posteriors_[:, 1], [1, 1, 0, 0])
    # mu = [1, 1, 0, 0]: annotator 0: TP 2, FN 0, TN 2, FP 0; annotator 1: TP 1, FN 1, TN 1
    np.testing.assert_allclose(m.sensitivity_, [1.0, 0.5], atol=1e-9)
    np.testing.assert_allclose(m.specificity_, [1.0, 1.0], atol=1e-9)


def test_binary_majority_vote_eq2_ties_positive():
    from crowdmed.aggregation.classification.sens_spec import binary_majority_vote

    # (5, 4): ybar = 0.5, 0.25, 0.75, 1/3, no labels
    y = np.array([[1, 0, -1, -1], [1, 0, 0, 0], [1, 1, 1, 0], [0, 1, 0, -1], [-1] * 4])
    np.testing.assert_array_equal(binary_majority_vote(y), [1, 0, 1, 0, -1])


def test_glad_gradient_matches_finite_differences():
    """The vectorised M-step gradient equals a finite-difference gradient of its objective."""
    from scipy.optimize import approx_fprime

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(12, 4))
    g = fit(GLAD(max_iter=1), labels)
    from crowdmed.data import CrowdLabels

    cl = CrowdLabels.from_dense(labels)
    post = g.posteriors_
    captured = {}

    import scipy.optimize as so

    real_minimize = so.minimize

    def spy(fun, x0, **kw):
        captured["fun"] = fun
        captured["x0"] = x0
        return real_minimize(fun, x0, **kw)

    import crowdmed.aggregation.classification.glad as glad_mod

    glad_mod.minimize = spy
    try:
        g2 = GLAD(max_iter=1)
        g2._validate_data(cl)
        g2._m_step(cl, post)
    finally:
        glad_mod.minimize = real_minimize
    fun, x0 = captured["fun"], captured["x0"] + rng.normal(0, 0.3, size=captured["x0"].shape)
    analytic = fun(x0)[1]
    numeric = approx_fprime(x0, lambda x: fun(x)[0], 1e-6)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- gold clamping
@pytest.mark.parametrize("cls", [DawidSkene, OneCoinDawidSkene, GLAD, BinarySensSpec, MajorityVote])
def test_gold_items_are_clamped(cls):
    labels = np.array([[0, 0, 0], [1, 1, 0], [0, 1, 1], [1, 1, 1]])
    gold = np.array([1, -1, -1, -1])  # everyone says 0 on item 0, but it is a 1
    m = fit(cls(), labels, gold=gold)
    np.testing.assert_allclose(m.posteriors_[0], [0, 1])


def test_gold_changes_annotator_estimates():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 300)
    good = truth.copy()
    flip = np.where(rng.random(300) < 0.4, 1 - truth, truth)
    labels = np.stack([good, flip, flip], axis=1)  # two poor annotators agree with each other
    gold = np.where(np.arange(300) < 60, truth, -1)
    with_gold = fit(DawidSkene(), labels, gold=gold)
    acc_gold = (with_gold.labels_ == truth).mean()
    assert acc_gold >= (fit(DawidSkene(), labels).labels_ == truth).mean()


# ----------------------------------------------------------------------------- properties
label_matrices = st.integers(2, 4).flatmap(
    lambda k: arrays(
        np.int64,
        st.tuples(st.integers(1, 12), st.integers(1, 5)),
        elements=st.integers(-1, k - 1),
    ).map(lambda m: (m, k))
)


def usable(m):
    """At least one label per item."""
    return (m >= 0).any(axis=1).all()


PROP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
ALL_MODELS = [MajorityVote, WeightedMajorityVote, DawidSkene, OneCoinDawidSkene, GLAD]


@PROP
@given(label_matrices, st.sampled_from(ALL_MODELS))
def test_prop_posteriors_are_distributions(mk, cls):
    m, k = mk
    if not usable(m):
        return
    p = fit(cls(), m, n_classes=k).posteriors_
    assert p.shape == (m.shape[0], k)
    assert np.all(p >= 0)
    assert np.all(p <= 1)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)


@PROP
@given(label_matrices, st.sampled_from(ALL_MODELS), st.randoms(use_true_random=False))
def test_prop_permutation_equivariance(mk, cls, rnd):
    m, k = mk
    if not usable(m):
        return
    rows = list(range(m.shape[0]))
    cols = list(range(m.shape[1]))
    rnd.shuffle(rows)
    rnd.shuffle(cols)
    # A fixed number of iterations: in symmetric, ambiguous cases EM drifts away from an
    # unstable fixed point, and the stopping iteration could depend on summation order.
    params = {} if cls in (MajorityVote, WeightedMajorityVote) else {"max_iter": 10, "tol": 0}
    p = fit(cls(**params), m, n_classes=k).posteriors_
    q = fit(cls(**params), m[rows][:, cols], n_classes=k).posteriors_
    np.testing.assert_allclose(q, p[rows], atol=1e-6)


# Wawa's weights come from tie-broken majority labels (lowest class index wins), so relabelling
# the classes can change them: it is left out here on purpose.
@PROP
@given(
    label_matrices,
    st.sampled_from([MajorityVote, DawidSkene, OneCoinDawidSkene, GLAD]),
    st.randoms(use_true_random=False),
)
def test_prop_class_relabeling(mk, cls, rnd):
    m, k = mk
    if not usable(m):
        return
    perm = list(range(k))
    rnd.shuffle(perm)
    perm = np.array(perm)
    relabeled = np.where(m >= 0, perm[np.maximum(m, 0)], -1)
    p = fit(cls(), m, n_classes=k).posteriors_
    q = fit(cls(), relabeled, n_classes=k).posteriors_
    np.testing.assert_allclose(q[:, perm], p, atol=1e-6)


@PROP
@given(st.integers(0, 2**32 - 1), st.integers(2, 4), st.sampled_from(ALL_MODELS))
def test_prop_unanimous_items_keep_label(seed, k, cls):
    """Annotators better than chance (diagonal >= 0.7): an item all of them agree on keeps it.

    (With a handful of items, EM can also settle in the label-swapped mode where everyone is
    adversarial; the property is about realistic crowds, not that degenerate case.)
    """
    rng = np.random.default_rng(seed)
    n_ann = 5
    conf = np.empty((n_ann, k, k))
    for a in range(n_ann):
        acc = rng.uniform(0.7, 0.95)
        conf[a] = (1 - acc) / (k - 1)
        conf[a][np.diag_indices(k)] = acc
    labels, _ = simulate(conf, 40, np.full(k, 1 / k), rng, p_label=0.8)
    observed = labels >= 0
    first = np.where(observed, labels, -1).max(axis=1)
    unanimous = (observed.sum(axis=1) >= 2) & np.all(~observed | (labels == first[:, None]), axis=1)
    est = fit(cls(), labels, n_classes=k)
    np.testing.assert_array_equal(est.labels_[unanimous], first[unanimous])


@PROP
@given(label_matrices, st.sampled_from(ALL_MODELS))
def test_prop_all_missing_annotator_changes_nothing(mk, cls):
    m, k = mk
    if not usable(m):
        return
    extra = np.hstack([m, np.full((m.shape[0], 1), -1)])
    p = fit(cls(), m, n_classes=k).posteriors_
    q = fit(cls(), extra, n_classes=k).posteriors_
    np.testing.assert_allclose(q, p, atol=1e-8)


@PROP
@given(label_matrices, st.sampled_from([DawidSkene, OneCoinDawidSkene]))
def test_prop_zero_iterations_is_majority_vote(mk, cls):
    m, k = mk
    if not usable(m):
        return
    p = cls(max_iter=0).fit(m, n_classes=k).posteriors_
    np.testing.assert_allclose(p, MajorityVote().fit(m, n_classes=k).posteriors_)


@PROP
@given(label_matrices)
def test_prop_glad_zero_iterations_ranks_like_majority_vote(mk):
    m, k = mk
    if not usable(m):
        return
    p = GLAD(max_iter=0).fit(m, n_classes=k).posteriors_
    mv = MajorityVote().fit(m, n_classes=k).posteriors_
    # equal abilities: posterior order follows the vote counts
    votes = mv * (m >= 0).sum(axis=1, keepdims=True)
    for i in range(m.shape[0]):
        order = np.argsort(votes[i], kind="stable")
        assert np.all(np.diff(p[i][order]) >= -1e-12)


@PROP
@given(label_matrices, st.sampled_from([DawidSkene, OneCoinDawidSkene, GLAD]), st.floats(0, 1))
def test_prop_log_likelihood_never_decreases(mk, cls, smoothing):
    m, k = mk
    if not usable(m):
        return
    est = cls(max_iter=30, tol=0)
    if cls is not GLAD:
        est.set_params(smoothing=smoothing)
    ll = np.array(fit(est, m, n_classes=k).log_likelihoods_)
    assert np.all(np.diff(ll) >= -1e-8 * np.maximum(1, np.abs(ll[1:])))


@PROP
@given(
    arrays(np.int64, st.tuples(st.integers(1, 12), st.integers(1, 5)), elements=st.integers(-1, 1))
)
def test_prop_sens_spec_monotone_and_mv_start(m):
    if not usable(m):
        return
    from crowdmed.aggregation.classification.sens_spec import binary_majority_vote

    # MAP-EM (Beta prior) and plain EM (no quiz) never decrease their objective
    est = BinarySensSpec(max_iter=20, tol=0, tau=3.0, prior="beta")
    ll = np.array(fit(est, m, n_classes=2, quiz_accuracy=np.full(m.shape[1], 0.8)).log_likelihoods_)
    assert np.all(np.diff(ll) >= -1e-8 * np.maximum(1, np.abs(ll[1:])))
    ll = np.array(fit(BinarySensSpec(max_iter=20, tol=0), m, n_classes=2).log_likelihoods_)
    assert np.all(np.diff(ll) >= -1e-8 * np.maximum(1, np.abs(ll[1:])))
    # max_iter=0 is the soft vote, or with init="aggnet" the eq. 2 majority vote
    p0 = BinarySensSpec(max_iter=0).fit(m, n_classes=2).posteriors_
    np.testing.assert_allclose(p0, MajorityVote().fit(m, n_classes=2).posteriors_)
    p0 = BinarySensSpec(max_iter=0, init="aggnet").fit(m, n_classes=2).posteriors_
    mv = binary_majority_vote(m)
    labelled = mv >= 0
    np.testing.assert_array_equal(p0[labelled, 1], mv[labelled])


# ----------------------------------------------------------------------------- recovery
def simulate(confusion, n_items, prior, rng, p_label=1.0):
    """Labels drawn from known confusion matrices (n_annotators, K, K)."""
    k = confusion.shape[1]
    truth = rng.choice(k, size=n_items, p=prior)
    cum = confusion[:, truth, :].cumsum(axis=2)  # (A, n, K)
    u = rng.random((confusion.shape[0], n_items, 1))
    labels = (u > cum).sum(axis=2).T  # (n, A)
    labels = np.minimum(labels, k - 1)
    labels[rng.random(labels.shape) > p_label] = -1
    keep = (labels >= 0).any(axis=1)
    return labels[keep], truth[keep]


def random_confusions(n_annotators, k, rng):
    conf = np.empty((n_annotators, k, k))
    for a in range(n_annotators):
        acc = rng.uniform(0.55, 0.95)
        noise = rng.dirichlet(np.ones(k - 1) * 2, size=k)
        for c in range(k):
            row = np.insert(noise[c] * (1 - acc), c, acc)
            conf[a, c] = row
    return conf


def test_dawid_skene_recovers_confusion_matrices():
    rng = np.random.default_rng(42)
    k, n_ann, n_items = 3, 8, 6000
    conf = random_confusions(n_ann, k, rng)
    conf[0] = conf[0][:, [1, 2, 0]]  # an adversarial annotator (systematic flips)
    labels, truth = simulate(conf, n_items, np.array([0.5, 0.3, 0.2]), rng, p_label=0.7)
    ds = DawidSkene(max_iter=300).fit(labels)
    assert np.abs(ds.confusion_ - conf).max() < 0.05
    np.testing.assert_allclose(ds.priors_, [0.5, 0.3, 0.2], atol=0.03)
    mv_acc = (MajorityVote(random_state=0).fit(labels).labels_ == truth).mean()
    ds_acc = (ds.labels_ == truth).mean()
    assert ds_acc >= mv_acc


def test_one_coin_and_glad_recover_skill_order():
    rng = np.random.default_rng(7)
    k, n_items = 4, 3000
    skills = np.array([0.9, 0.8, 0.6, 0.4, 0.3])
    conf = np.stack(
        [np.full((k, k), (1 - s) / (k - 1)) + np.eye(k) * (s - (1 - s) / (k - 1)) for s in skills]
    )
    labels, truth = simulate(conf, n_items, np.full(k, 1 / k), rng)
    oc = OneCoinDawidSkene(max_iter=200).fit(labels)
    np.testing.assert_allclose(oc.skills_, skills, atol=0.05)
    g = fit(GLAD(max_iter=50), labels)
    assert list(np.argsort(-g.alphas_)) == [0, 1, 2, 3, 4]
    mv_acc = (MajorityVote(random_state=0).fit(labels).labels_ == truth).mean()
    assert (oc.labels_ == truth).mean() >= mv_acc
    assert (g.labels_ == truth).mean() >= mv_acc


def test_sens_spec_recovers_sensitivity_and_specificity():
    rng = np.random.default_rng(11)
    n_items = 30000
    sens = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    spec = np.array([0.85, 0.9, 0.6, 0.55, 0.5])
    conf = np.stack([[[b, 1 - b], [1 - a, a]] for a, b in zip(sens, spec, strict=False)])
    labels, _truth = simulate(conf, n_items, np.array([0.7, 0.3]), rng, p_label=0.8)
    m = BinarySensSpec(max_iter=1000, tol=1e-9).fit(labels)
    np.testing.assert_allclose(m.sensitivity_, sens, atol=0.05)
    np.testing.assert_allclose(m.specificity_, spec, atol=0.05)
    assert m.prevalence_ == pytest.approx(0.3, abs=0.03)


def test_sens_spec_recovers_sensitivity_and_specificity_with_quizzes():
    """Simulated annotators who also took a quiz: eq. 8 recovers alpha and beta.

    Eq. 8 multiplies TP by (1 + tau*gamma), so its fixed point on a large sample is
    alpha' = (1 + tau*gamma) alpha / ((1 + tau*gamma) alpha + 1 - alpha): close to alpha at
    tau = 0.1 (the lower end of the paper's range).
    """
    rng = np.random.default_rng(12)
    n_items, n_quiz, tau = 30000, 20, 0.1
    sens = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    spec = np.array([0.85, 0.9, 0.6, 0.55, 0.5])
    conf = np.stack([[[b, 1 - b], [1 - a, a]] for a, b in zip(sens, spec, strict=True)])
    labels, _truth = simulate(conf, n_items, np.array([0.7, 0.3]), rng, p_label=0.8)
    # quiz: n_quiz gold questions, half positive, answered with the annotator's own alpha/beta
    hits = rng.binomial(n_quiz // 2, sens) + rng.binomial(n_quiz // 2, spec)
    gamma = hits / n_quiz
    m = BinarySensSpec(max_iter=1000, tol=1e-9, tau=tau).fit(labels, quiz_accuracy=gamma)
    np.testing.assert_allclose(m.sensitivity_, sens, atol=0.05)
    np.testing.assert_allclose(m.specificity_, spec, atol=0.05)
    boost = 1 + tau * gamma
    np.testing.assert_allclose(m.sensitivity_, boost * sens / (boost * sens + 1 - sens), atol=0.03)
    np.testing.assert_allclose(m.specificity_, boost * spec / (boost * spec + 1 - spec), atol=0.03)


def test_no_convergence_warning_at_defaults_on_easy_data():
    rng = np.random.default_rng(5)
    conf = random_confusions(5, 2, rng)
    labels, _ = simulate(conf, 500, np.array([0.5, 0.5]), rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        DawidSkene().fit(labels)
        OneCoinDawidSkene().fit(labels)
        BinarySensSpec().fit(labels)


def test_sens_spec_beta_prior_pulls_towards_quiz_accuracy():
    """Few labels: the Beta pseudo-count prior moves α, β towards γ, more so for larger τ."""
    rng = np.random.default_rng(2)
    conf = np.stack([[[0.9, 0.1], [0.1, 0.9]]] * 3 + [[[0.5, 0.5], [0.5, 0.5]]])
    labels, _ = simulate(conf, 40, np.array([0.5, 0.5]), rng)
    quiz = np.array([0.9, 0.9, 0.9, 0.2])
    est = [
        fit(BinarySensSpec(tau=t, prior="beta"), labels, quiz_accuracy=quiz)
        for t in (0.0, 10.0, 1000.0)
    ]
    gaps = [abs(e.sensitivity_[3] - 0.2) for e in est]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 0.05
