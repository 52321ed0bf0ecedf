"""Common checks every aggregator must pass (our version of sklearn's check_estimator)."""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest

from crowdmed.aggregation import (
    BCC,
    GLAD,
    KOS,
    MACE,
    METHODS,
    MMSR,
    AutoAggregator,
    BinarySensSpec,
    DawidSkene,
    MajorityVote,
    OneCoinDawidSkene,
    WeightedMajorityVote,
    ZeroBasedSkill,
    make_aggregator,
)
from crowdmed.data import CrowdLabels
from crowdmed.exceptions import ConvergenceWarning, NotFittedError

ALL = [MajorityVote, WeightedMajorityVote, DawidSkene, OneCoinDawidSkene, GLAD, BinarySensSpec]
# GoldMajorityVote needs gold to fit: its common checks are in test_gold_mv.py.


class Auto(AutoAggregator):
    """AutoAggregator with four candidates and three folds (fast common checks)."""

    def __init__(
        self,
        *,
        candidates=("majority-vote", "dawid-skene", "one-coin", "glad"),
        n_folds=3,
        random_state=0,
    ):
        super().__init__(candidates=candidates, n_folds=n_folds, random_state=random_state)


ALL += [KOS, ZeroBasedSkill, MACE, MMSR, BCC, Auto]

# (n_items=6, n_annotators=4), binary so that every aggregator applies; -1 = missing.
LABELS = np.array(
    [
        [0, 0, 1, -1],
        [1, 1, 1, 0],
        [0, -1, 0, 0],
        [1, 0, 1, 1],
        [-1, 1, 1, 1],
        [0, 0, -1, 1],
    ]
)


def quiet_fit(est, labels, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(labels, **kw)


@pytest.fixture(params=ALL, ids=lambda c: c.__name__)
def est(request):
    return request.param()


def test_fit_returns_self(est):
    assert quiet_fit(est, LABELS) is est


def test_fit_twice_same_result(est):
    p1 = quiet_fit(est, LABELS).posteriors_.copy()
    p2 = quiet_fit(est, LABELS).posteriors_
    np.testing.assert_array_equal(p1, p2)


def _fitted(est) -> dict:
    return {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_")}


def test_refit_replaces_previous_fit(est):
    """A fit on other data (more items, one more annotator, flipped labels) leaves no trace."""
    other = np.hstack([np.vstack([LABELS, 1 - np.abs(LABELS)]), np.ones((12, 1), dtype=int)])
    quiet_fit(est, other)
    before = _fitted(est)
    quiet_fit(est, LABELS)
    fresh = quiet_fit(type(est)(**est.get_params()), LABELS)
    assert _fitted(est).keys() == _fitted(fresh).keys() == before.keys()
    assert est.posteriors_.shape == (6, 2)
    for name, value in _fitted(fresh).items():
        if isinstance(value, (np.ndarray, list, tuple, float, int, np.generic)):
            try:  # numbers compare as floats (NaN equals NaN), anything else as objects
                got, want = np.asarray(getattr(est, name), float), np.asarray(value, float)
            except (TypeError, ValueError):
                got, want = np.asarray(getattr(est, name), object), np.asarray(value, object)
            np.testing.assert_array_equal(got, want, err_msg=name)
    assert not np.array_equal(before["posteriors_"][:6], est.posteriors_)


def test_input_not_modified(est):
    labels = LABELS.copy()
    quiet_fit(est, labels)
    np.testing.assert_array_equal(labels, LABELS)


def test_clone_round_trips(est):
    sklearn_base = pytest.importorskip("sklearn.base")
    est.set_params(random_state=3)
    clone = sklearn_base.clone(est)
    assert type(clone) is type(est)
    assert clone.get_params() == est.get_params()
    assert not hasattr(clone, "posteriors_")


def test_deepcopy_of_fitted(est):
    quiet_fit(est, LABELS)
    np.testing.assert_array_equal(copy.deepcopy(est).posteriors_, est.posteriors_)


def test_not_fitted_message(est):
    msg = f"This {type(est).__name__} instance is not fitted yet. Call 'fit' first."
    with pytest.raises(NotFittedError, match=msg):
        est.predict_proba(LABELS)


def test_posteriors_are_distributions(est):
    p = quiet_fit(est, LABELS).posteriors_
    assert p.shape == (6, 2)
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_labels_are_argmax_of_posteriors(est):
    quiet_fit(est, LABELS)
    np.testing.assert_array_equal(est.labels_, est.posteriors_.argmax(axis=1))


def test_fit_labels_equal_fit_predict(est):
    a = quiet_fit(est, LABELS).labels_.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        b = type(est)().fit_predict(LABELS)
    np.testing.assert_array_equal(a, b)


def test_predict_proba_on_fit_data_matches_posteriors(est):
    if isinstance(est, GLAD):
        pytest.skip("GLAD's item difficulties are per item: new items use the prior")
    if isinstance(est, KOS):
        pytest.skip("KOS's messages are per label: new items use the annotators' reliabilities")
    quiet_fit(est, LABELS)
    if isinstance(est, AutoAggregator) and est.chosen_ in ("glad", "kos"):
        pytest.skip(f"AutoAggregator chose {est.chosen_} (see above)")
    np.testing.assert_allclose(est.predict_proba(LABELS), est.posteriors_, atol=1e-10)


def test_single_item(est):
    """B = 1: one item still works."""
    p = quiet_fit(est, LABELS[1:2], n_classes=2).posteriors_
    assert p.shape == (1, 2)
    np.testing.assert_allclose(p.sum(), 1.0)


def test_accepts_all_label_forms(est):
    cl = CrowdLabels.from_dense(LABELS)
    df = cl.to_long()
    a = quiet_fit(type(est)(), LABELS).posteriors_
    b = quiet_fit(type(est)(), cl).posteriors_
    c = quiet_fit(type(est)(), df).posteriors_
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a, c)


def test_unknown_param_error(est):
    with pytest.raises(ValueError, match=r"`bogus` is not a parameter of"):
        est.set_params(bogus=1)


def test_repr_shows_changed_params():
    assert repr(DawidSkene(max_iter=5)) == "DawidSkene(max_iter=5)"
    assert repr(MajorityVote()) == "MajorityVote()"


@pytest.mark.parametrize("cls", [DawidSkene, OneCoinDawidSkene, GLAD, BinarySensSpec])
@pytest.mark.parametrize(
    ("param", "value", "match"),
    [
        ("max_iter", -1, r"`max_iter` of \w+ must be an integer in \[0, inf\]; got -1"),
        ("max_iter", 2.5, r"`max_iter` of \w+ must be an integer"),
        ("tol", -1e-3, r"`tol` of \w+ must be a number in \[0, inf\]"),
    ],
)
def test_bad_hyperparameters(cls, param, value, match):
    with pytest.raises(ValueError, match=match):
        cls(**{param: value}).fit(LABELS)


def test_bad_init_suggests():
    with pytest.raises(
        ValueError,
        match=(
            r"`init` must be one of \['majority_vote', 'random'\]; got 'majority'. "
            r"Did you mean 'majority_vote'"
        ),
    ):
        DawidSkene(init="majority").fit(LABELS)


def test_make_aggregator_names():
    for name, cls in METHODS.items():
        assert type(make_aggregator(name.value)) is cls
    with pytest.raises(ValueError, match=r"Did you mean 'dawid-skene'"):
        make_aggregator("dawid-skeen")


def test_convergence_warning_when_max_iter_reached():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(40, 5))
    with pytest.warns(
        ConvergenceWarning, match=r"did not converge in max_iter=2 .*Increase max_iter"
    ):
        DawidSkene(max_iter=2).fit(labels)


def test_em_bookkeeping():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=(40, 5))
    ds = DawidSkene(max_iter=500, tol=1e-8).fit(labels)
    assert ds.converged_
    assert ds.n_iter_ == len(ds.log_likelihoods_)
    assert 1 < ds.n_iter_ < 500


def test_bad_gold_shape():
    with pytest.raises(
        ValueError, match=r"`gold` must have shape \(n_items,\) = \(6,\); got \(3,\)"
    ):
        DawidSkene().fit(LABELS, gold=[0, 1, 0])


def test_sens_spec_rejects_multiclass():
    with pytest.raises(ValueError, match=r"needs binary labels \(2 classes\); got 3 classes"):
        BinarySensSpec().fit(np.array([[0, 1, 2], [2, 1, 0]]))


def test_predict_rejects_other_annotators():
    ds = quiet_fit(DawidSkene(), LABELS)
    with pytest.raises(ValueError, match=r"must come from the 4 annotators seen in fit; got 3"):
        ds.predict_proba(LABELS[:, :3])


def test_long_frame_input_uses_ids():
    df = pd.DataFrame(
        {
            "item": ["x", "x", "y", "y"],
            "annotator": ["a", "b", "a", "b"],
            "label": ["no", "no", "yes", "no"],
        }
    )
    mv = MajorityVote().fit(df)
    assert list(mv.item_ids_) == ["x", "y"]
    assert list(mv.classes_) == ["no", "yes"]


@pytest.mark.parametrize("cls", [DawidSkene, OneCoinDawidSkene, GLAD, BinarySensSpec])
def test_callback_sees_every_iteration(cls):
    seen = []
    est = quiet_fit(cls(max_iter=4, tol=0), LABELS, callback=lambda i, ll: seen.append((i, ll)))
    assert [i for i, _ in seen] == [1, 2, 3, 4]
    assert [ll for _, ll in seen] == est.log_likelihoods_
    assert not hasattr(est, "_callback")


def test_row_logsumexp_matches_scipy():
    from scipy.special import logsumexp

    from crowdmed.aggregation.base import row_logsumexp

    rng = np.random.default_rng(0)
    x = rng.normal(scale=300, size=(50, 4))  # large magnitudes: needs the max shift
    x[0] = [-np.inf, 0.0, -np.inf, 1.0]
    np.testing.assert_allclose(row_logsumexp(x)[:, 0], logsumexp(x, axis=1), rtol=1e-12)
