"""Raykar bias-and-precision and scale-and-bias models: likelihood, EM, recovery, baselines."""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from crowdmed.aggregation.continuous import (
    ContinuousMean,
    ContinuousMedian,
    RaykarRegression,
    ScaleBiasRegression,
)
from crowdmed.exceptions import ConvergenceWarning, NotFittedError
from crowdmed.simulate import simulate_continuous_readers

MODELS = [RaykarRegression, ScaleBiasRegression]

# 8 readers: biases in {-1, -0.5, 0, 0.5, 1}, precisions 0.2-4 (noise sd 0.5-2.2).
BIAS = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, -1.0, 0.5, 0.0])
PRECISION = np.array([4.0, 1.0, 0.25, 2.0, 1.0, 0.5, 4.0, 0.2])
SCALE = np.array([1.0, 0.8, 1.2, 1.0, 0.6, 1.4, 1.0, 1.0])

# (n_items=5, n_annotators=3) readings; NaN = missing.
SMALL = np.array(
    [
        [1.0, 2.1, 0.2],
        [2.0, 3.0, 1.1],
        [3.0, 3.9, np.nan],
        [4.0, 5.1, 3.2],
        [np.nan, 0.4, -1.0],
    ]
)


def _marginal_loglik(est, values):
    """Σ_i log N(y_i; s m + b, diag(1/λ) + s sᵀ/λ0) with dense covariances (scipy)."""
    total = 0.0
    for row in values:
        seen = ~np.isnan(row)
        s, b, lam = est.scale_[seen], est.bias_[seen], est.precision_[seen]
        cov = np.diag(1 / lam) + np.outer(s, s) / est.prior_precision_
        total += stats.multivariate_normal(s * est.prior_mean_ + b, cov).logpdf(row[seen])
    return total


@pytest.mark.parametrize("model", MODELS)
def test_log_likelihood_matches_dense_gaussian(model):
    sim = simulate_continuous_readers(40, BIAS[:4], PRECISION[:4], scale=SCALE[:4], random_state=1)
    values = sim.values.copy()
    values[np.random.default_rng(0).random(values.shape) < 0.3] = np.nan
    values[np.isnan(values).all(axis=1), 0] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = model(prior_strength=0.0, max_iter=25, tol=0.0).fit(values)
    # With no prior the recorded value is the marginal log-likelihood of the final parameters.
    np.testing.assert_allclose(est.log_likelihoods_[-1], _marginal_loglik(est, values), rtol=1e-10)


@pytest.mark.parametrize("model", MODELS)
def test_log_likelihood_never_decreases(model):
    sim = simulate_continuous_readers(
        100, BIAS, PRECISION, scale=SCALE, labels_per_item=4, random_state=2
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = model(max_iter=40, tol=0.0).fit(sim.values)
    assert np.all(np.diff(est.log_likelihoods_) >= -1e-8)
    assert est.n_iter_ == len(est.log_likelihoods_) > 10


def test_posterior_is_precision_weighted_mean():
    # One item, known parameters: E[z] = (λ0 m + Σ λ_a (y_a − b_a)) / (λ0 + Σ λ_a).
    est = RaykarRegression().fit(SMALL)
    y = SMALL[0]
    num = est.prior_precision_ * est.prior_mean_ + np.sum(est.precision_ * (y - est.bias_))
    den = est.prior_precision_ + est.precision_.sum()
    np.testing.assert_allclose(est.labels_[0], num / den, rtol=1e-12)
    np.testing.assert_allclose(est.posterior_variances_[0], 1 / den, rtol=1e-12)
    np.testing.assert_allclose(est.predict(SMALL), est.labels_, rtol=1e-12)


def test_identification_and_special_cases():
    rr = RaykarRegression().fit(SMALL)
    assert abs(rr.bias_.mean()) < 1e-12
    np.testing.assert_array_equal(rr.scale_, 1.0)
    no_bias = RaykarRegression(bias=False).fit(SMALL)
    np.testing.assert_array_equal(no_bias.bias_, 0.0)
    sb = ScaleBiasRegression().fit(SMALL)
    assert abs(sb.scale_.mean() - 1) < 1e-12
    assert abs(sb.bias_.mean()) < 1e-12


def test_max_iter_zero_gives_the_mean():
    for model in MODELS:
        est = model(max_iter=0).fit(SMALL)
        np.testing.assert_allclose(est.labels_, np.nanmean(SMALL, axis=1))
        assert est.n_iter_ == 0
        assert est.log_likelihoods_ == []


def test_convergence_warning():
    with pytest.warns(ConvergenceWarning, match="did not converge in max_iter=1"):
        RaykarRegression(max_iter=1, tol=0.0).fit(SMALL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_raykar_recovers_bias_and_precision(seed):
    """300 items, 8 readers. Measured over seeds 0-2: bias error ≤ 0.19, precision ≤ 27%."""
    sim = simulate_continuous_readers(300, BIAS, PRECISION, random_state=seed)
    rr = RaykarRegression().fit(sim.values)
    assert rr.converged_
    truth_bias = BIAS - BIAS.mean()  # identified up to the mean
    assert np.corrcoef(rr.bias_, truth_bias)[0, 1] > 0.95
    assert np.abs(rr.bias_ - truth_bias).max() < 0.25
    assert np.corrcoef(np.log(rr.precision_), np.log(PRECISION))[0, 1] > 0.95
    assert np.abs(np.log(rr.precision_ / PRECISION)).max() < 0.35
    mae = {
        name: np.abs(est.fit(sim.values).labels_ - sim.truth).mean()
        for name, est in [("mean", ContinuousMean()), ("median", ContinuousMedian())]
    }
    mae_rr = np.abs(rr.labels_ - sim.truth).mean()
    # Measured: 0.20-0.23 against 0.34-0.39 for the mean and the median.
    assert mae_rr < 0.75 * min(mae.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scale_bias_recovers_scales(seed):
    """Measured over seeds 0-2: scale error ≤ 0.12 (scales normalised to mean 1)."""
    sim = simulate_continuous_readers(300, BIAS, PRECISION, scale=SCALE, random_state=seed)
    sb = ScaleBiasRegression().fit(sim.values)
    truth_scale = SCALE / SCALE.mean()
    assert np.abs(sb.scale_ - truth_scale).max() < 0.15
    truth_bias = BIAS - BIAS.mean()
    assert np.abs(sb.bias_ - truth_bias).max() < 0.25
    mae_sb = np.abs(sb.labels_ - sim.truth).mean()
    mae_mean = np.abs(ContinuousMean().fit(sim.values).labels_ - sim.truth).mean()
    mae_median = np.abs(ContinuousMedian().fit(sim.values).labels_ - sim.truth).mean()
    assert mae_sb < 0.75 * min(mae_mean, mae_median)


@pytest.mark.parametrize("model", MODELS)
def test_common_checks(model):
    est = model()
    values = SMALL.copy()
    assert est.fit(values) is est
    np.testing.assert_array_equal(values, SMALL)  # input untouched (NaN-aware)
    first = est.labels_.copy()
    np.testing.assert_array_equal(est.fit(SMALL).labels_, first)
    clone = model(**est.get_params())
    np.testing.assert_array_equal(clone.fit(SMALL).labels_, first)
    assert copy.deepcopy(est).get_params() == est.get_params()
    with pytest.raises(NotFittedError, match=f"This {model.__name__} instance is not fitted"):
        model().predict(SMALL)
    with pytest.raises(ValueError, match=f"`tol` of {model.__name__} must be a number"):
        model(tol=-1.0).fit(SMALL)
    with pytest.raises(ValueError, match="must come from the 3 annotators seen in fit"):
        est.predict(SMALL[:, :2])


@pytest.mark.parametrize("model", MODELS)
def test_long_table_equals_dense(model):
    items, annotators = np.nonzero(~np.isnan(SMALL))
    long = pd.DataFrame(
        {
            "item": [f"i{i}" for i in items],
            "annotator": [f"r{a}" for a in annotators],
            "label": SMALL[items, annotators],
        }
    )
    dense = model().fit(SMALL)
    table = model().fit(long)
    np.testing.assert_allclose(table.labels_, dense.labels_, rtol=1e-12)
    assert list(table.annotator_ids_) == ["r0", "r1", "r2"]
    # predict maps a long table's annotators to those of the fit, whatever their order.
    part = long[long["item"] == "i0"].iloc[::-1]
    np.testing.assert_allclose(table.predict(part), dense.labels_[:1], rtol=1e-12)


def test_bias_parameter_checked():
    with pytest.raises(ValueError, match="`bias` of RaykarRegression must be True or False"):
        RaykarRegression(bias="yes").fit(SMALL)


@pytest.mark.parametrize("model", MODELS)
def test_identical_readings_keep_their_value(model):
    # Every reading is 1: no spread to estimate a scale from, the consensus stays 1.
    est = model().fit(np.ones((3, 2)))
    np.testing.assert_allclose(est.labels_, 1.0, rtol=1e-9)
    np.testing.assert_allclose(est.scale_, 1.0)


@pytest.mark.parametrize("model", MODELS)
def test_single_item(model):
    # B = 1: the consensus of one item read by two readers lies between their readings.
    est = model().fit(np.array([[1.0, 2.0]]))
    assert 1.0 <= est.labels_[0] <= 2.0
    assert np.all(est.precision_ > 0)


def test_em_reaches_the_maximum_likelihood_found_by_a_generic_optimiser():
    # Independent check: maximise the dense Gaussian marginal likelihood with L-BFGS over
    # (m, log λ0, b with mean 0, log λ) and compare with the EM fixed point.
    from scipy import optimize

    sim = simulate_continuous_readers(30, [0.5, -0.5, 0.0], [4.0, 1.0, 0.5], random_state=3)
    y = sim.values

    def negll(p):
        m, log_l0, b1, b2 = p[:4]
        b = np.array([b1, b2, -b1 - b2])
        lam = np.exp(p[4:])
        cov = np.diag(1 / lam) + np.exp(-log_l0)
        return -stats.multivariate_normal(m + b, cov).logpdf(y).sum()

    res = optimize.minimize(negll, np.zeros(7), method="L-BFGS-B")
    est = RaykarRegression(prior_strength=0.0, tol=1e-12, max_iter=2000).fit(y)
    np.testing.assert_allclose(-res.fun, est.log_likelihoods_[-1], rtol=1e-6)
    np.testing.assert_allclose(est.bias_[:2], res.x[2:4], atol=2e-3)
    np.testing.assert_allclose(np.log(est.precision_), res.x[4:], atol=5e-3)
