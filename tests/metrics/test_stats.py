"""Paired differences: t interval worked by hand, bootstrap, verdicts, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from crowdmed.metrics.stats import format_difference, holm, paired_difference


def test_t_interval_by_hand() -> None:
    # differences (shape (4,)): 0.02, 0.03, 0.01, 0.03; mean 0.0225
    a = np.array([0.80, 0.82, 0.81, 0.83])
    b = np.array([0.78, 0.79, 0.80, 0.80])
    d = np.array([0.02, 0.03, 0.01, 0.03])
    sd = np.sqrt(((d - 0.0225) ** 2).sum() / 3)  # 0.0095743
    half = stats.t.ppf(0.975, 3) * sd / 2.0  # t_{0.975,3} = 3.1824
    r = paired_difference(a, b)
    assert r.mean == pytest.approx(0.0225)
    assert r.low == pytest.approx(0.0225 - half)
    assert r.high == pytest.approx(0.0225 + half)
    assert r.low == pytest.approx(0.007265, abs=1e-6)
    assert (r.n, r.level, r.method, r.verdict) == (4, 0.95, "t", "better")
    # the same data seen as a distance: larger is worse
    assert paired_difference(a, b, higher_is_better=False).verdict == "worse"
    # reversed: the baseline is better
    assert paired_difference(b, a).verdict == "worse"
    assert paired_difference(b, a, higher_is_better=False).verdict == "better"


def test_t_interval_level_and_no_difference() -> None:
    # differences -1, 1, 0 -> mean 0, sd 1;
    # 90 % half-width t_{0.95,2}/sqrt(3) = 2.9200/1.7321 = 1.6859
    r = paired_difference([1.0, 3.0, 2.0], [2.0, 2.0, 2.0], level=0.90)
    assert r.mean == 0.0
    assert r.high == pytest.approx(stats.t.ppf(0.95, 2) / np.sqrt(3))
    assert r.high == pytest.approx(1.6859, abs=1e-4)
    assert r.verdict == "no difference detected"


def test_bootstrap_interval() -> None:
    # differences 1, 1, 1, 3: every resample mean lies in [1, 3]; the exact distribution of
    # the mean of 4 draws puts P(mean = 1) = (3/4)^4 = 0.316 > 0.025, so the lower end is 1
    a = np.array([2.0, 2.0, 2.0, 4.0])
    b = np.ones(4)
    r = paired_difference(a, b, method="bootstrap", rng=0)
    assert r.mean == 1.5
    assert r.low == 1.0
    # P(mean >= 2.5) = P(at least 3 of 4 draws are the 3) = 4·(1/4)^3·(3/4) + (1/4)^4 = 0.0508
    # and P(mean = 3) = 0.0039, so the 97.5 % quantile is 2.5
    assert r.high == 2.5
    assert r.verdict == "better"
    again = paired_difference(a, b, method="bootstrap", rng=np.random.default_rng(0))
    assert (again.low, again.high) == (r.low, r.high)


def test_single_pair_and_constant_differences() -> None:
    r = paired_difference([0.9], [0.8])
    assert r.n == 1
    assert np.isnan(r.low)
    assert np.isnan(r.high)
    assert r.verdict == "no difference detected"
    assert format_difference(r) == "+0.100 (n=1), no difference detected"
    c = paired_difference([0.9, 0.8], [0.8, 0.7])
    assert c.low == pytest.approx(0.1)
    assert c.high == pytest.approx(0.1)
    assert c.verdict == "better"


def test_format_difference() -> None:
    r = paired_difference([0.80, 0.82, 0.81, 0.83], [0.78, 0.79, 0.80, 0.80])
    assert format_difference(r) == "+0.022 [+0.007, +0.038], better"
    assert format_difference(r, digits=1, scale=100) == "+2.2 [+0.7, +3.8], better"
    assert r.as_dict()["verdict"] == "better"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"a": [1.0, 2.0], "b": [1.0]}, r"equal length .* got shapes \(2,\) and \(1,\)"),
        ({"a": [], "b": []}, "at least one pair"),
        ({"a": [1.0, np.nan], "b": [1.0, 2.0]}, r"positions \[1\]"),
        ({"a": [1.0], "b": [1.0], "level": 1.0}, r"`level` must be in \(0, 1\)"),
        ({"a": [1.0], "b": [1.0], "method": "boot"}, "Did you mean 'bootstrap'"),
        ({"a": [1.0], "b": [1.0], "n_resamples": 0}, "`n_resamples` must be a positive"),
    ],
)
def test_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        paired_difference(**kwargs)


def test_holm_by_hand() -> None:
    # m = 4, p (shape (4,)) = 0.01, 0.04, 0.03, 0.005. Sorted: 0.005, 0.01, 0.03, 0.04, times
    # 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04; running maximum: 0.02, 0.03, 0.06, 0.06.
    adj = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    # at alpha = 0.05 tests 0 and 3 are rejected; plain Bonferroni (x 4) rejects only test 3
    assert (adj <= 0.05).tolist() == [True, False, False, True]
    # capped at 1; ties: 0.02 x 2 = 0.04, then 0.02 x 1 raised to the running maximum
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    np.testing.assert_allclose(holm([0.02, 0.02]), [0.04, 0.04])
    # one test: unchanged; empty family: empty
    np.testing.assert_allclose(holm([0.3]), [0.3])
    assert holm([]).shape == (0,)


@pytest.mark.parametrize(
    ("p", "match"),
    [
        ([[0.1, 0.2]], r"1-D array; got shape \(1, 2\)"),
        ([0.1, 1.5], r"lie in \[0, 1\]; got \[1.5\] at positions \[1\]"),
        ([np.nan], r"lie in \[0, 1\]; got \[nan\]"),
    ],
)
def test_holm_errors(p: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        holm(p)
